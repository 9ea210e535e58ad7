//! Allocation-cycle benchmark (`cargo bench --bench allocator`), dependency-free.
//!
//! For each configuration (agents × frameworks over a few roles, agents of
//! `cpus:16;mem:64GiB;disk:100000;ports:[31000-32000]`):
//!
//! * **first cycle**: every agent is free and gets offered (one allocation per agent); between
//!   repetitions the offers are recovered without filters, outside the timed region;
//! * **declining round**: each offer is declined with a 1 h filter, so each round hands every
//!   agent to the next framework in DRF order that hasn't refused it (Mesos's `DeclineOffers`
//!   benchmark shape, whose figure is per round);
//! * **steady cycle**: every framework has declined every agent with a 1 h filter, so a cycle
//!   evaluates every framework on every agent and offers nothing (Mesos's
//!   `DeclineOffers` benchmark shape);
//! * **event cycle**: `allocate_agents` over one agent in that steady state (what a recovered
//!   offer or a revive triggers).
//!
//! Prints min and median over the repetitions. Pass `--quick` (or set `ALLOC_BENCH_QUICK=1`) for
//! a short run.

use std::time::{Duration, Instant};

use drove_master::allocator::synthetic::SyntheticCluster;

struct Stats {
    min: Duration,
    median: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        min: samples.first().copied().unwrap_or_default(),
        median: samples.get(samples.len() / 2).copied().unwrap_or_default(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(label: &str, s: &Stats, reps: usize) {
    println!(
        "  {label:<34} min {:>9.3} ms   median {:>9.3} ms   ({reps} reps)",
        ms(s.min),
        ms(s.median)
    );
}

fn bench(agents: usize, frameworks: usize, roles: usize, reps: usize, max_declining_rounds: usize) {
    println!("{agents} agents x {frameworks} frameworks ({roles} roles)");
    let spec = SyntheticCluster::new(agents, frameworks, roles);

    let t = Instant::now();
    let mut alloc = spec.build();
    println!(
        "  {:<34} {:>13.3} ms",
        "build (add frameworks + agents)",
        ms(t.elapsed())
    );

    let t0 = Instant::now();
    let mut first = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let offers = alloc.allocate(t0);
        first.push(t.elapsed());
        assert_eq!(offers.len(), agents, "every agent is offered");
        SyntheticCluster::decline(&mut alloc, &offers, None, t0);
    }
    report("first cycle (all agents offered)", &stats(first), reps);

    // Declining rounds (Mesos's DeclineOffers shape): every offer is declined with a 1 h filter,
    // so each round offers every agent to the next framework in DRF order that has not refused
    // it yet. After `frameworks` rounds every framework holds a filter on every agent.
    let refuse = Duration::from_secs(3600);
    let mut declining = Vec::new();
    let t = Instant::now();
    loop {
        let c = Instant::now();
        let offers = alloc.allocate(t0);
        declining.push(c.elapsed());
        if offers.is_empty() || declining.len() > max_declining_rounds {
            break;
        }
        SyntheticCluster::decline(&mut alloc, &offers, Some(refuse), t0);
    }
    let rounds = declining.len();
    let setup = t.elapsed();
    report(
        "declining round (decline all, 1 h)",
        &stats(declining),
        rounds,
    );
    println!(
        "  {:<34} {:>13.3} ms   ({} filters)",
        "  all rounds incl. declines",
        ms(setup),
        alloc.filter_count()
    );
    if rounds <= frameworks {
        return;
    }

    let mut steady = Vec::with_capacity(reps);
    for i in 0..reps {
        let now = t0 + Duration::from_secs(1 + i as u64);
        let t = Instant::now();
        let offers = alloc.allocate(now);
        steady.push(t.elapsed());
        assert!(offers.is_empty(), "steady state offers nothing");
    }
    report("steady cycle (all filtered)", &stats(steady), reps);

    let name = SyntheticCluster::agent_name(agents / 2);
    let mut event = Vec::with_capacity(reps * 10);
    for i in 0..reps * 10 {
        let now = t0 + Duration::from_secs(1 + i as u64);
        let t = Instant::now();
        let offers = alloc.allocate_agents(&[name.as_str()], now);
        event.push(t.elapsed());
        assert!(offers.is_empty());
    }
    report(
        "event cycle (1 agent, all filtered)",
        &stats(event),
        reps * 10,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("ALLOC_BENCH_QUICK").is_some_and(|v| v == "1");
    let reps = if quick { 3 } else { 11 };
    bench(1_000, 10, 2, reps, usize::MAX);
    bench(10_000, 100, 4, reps, usize::MAX);
    if !quick {
        // Mesos's published configuration (HierarchicalAllocator_BENCHMARK_Test DeclineOffers).
        // Only the first rounds: the full steady state would hold 10 M filters.
        bench(10_000, 1_000, 10, 5, 30);
    }
}
