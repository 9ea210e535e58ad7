use std::collections::HashMap;
use std::time::{Duration, Instant};

use drove_proto::resources::{Ranges, Resources};

use super::synthetic::SyntheticCluster;
use super::*;

fn res(text: &str) -> Resources {
    Resources::parse(text).expect("test resources parse")
}

fn allocator() -> Allocator {
    Allocator::new(AllocatorConfig {
        seed: Some(7),
        ..AllocatorConfig::default()
    })
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Number of agents each framework received.
fn counts(offers: &[Allocation]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for o in offers {
        *m.entry(o.framework.clone()).or_insert(0) += 1;
    }
    m
}

fn frameworks_of(offers: &[Allocation]) -> Vec<&str> {
    offers.iter().map(|o| o.framework.as_str()).collect()
}

#[test]
fn drf_equal_weights_split_evenly() {
    let mut a = allocator();
    a.add_framework("f1", "r", true, false);
    a.add_framework("f2", "r", true, false);
    for i in 0..20 {
        a.add_agent(&format!("a{i}"), res("cpus:4;mem:4096"), &[]);
    }
    let offers = a.allocate(Instant::now());
    assert_eq!(offers.len(), 20);
    let c = counts(&offers);
    assert_eq!(c["f1"], 10);
    assert_eq!(c["f2"], 10);
    let now = Instant::now();
    let r1 = a.framework_report("f1", now).expect("f1");
    let r2 = a.framework_report("f2", now).expect("f2");
    assert!((r1.share - 0.5).abs() < 1e-9, "{}", r1.share);
    assert!((r1.share - r2.share).abs() < 1e-9);
}

#[test]
fn drf_equal_weights_across_roles() {
    let mut a = allocator();
    a.add_framework("f1", "r1", true, false);
    a.add_framework("f2", "r2", true, false);
    for i in 0..30 {
        a.add_agent(&format!("a{i}"), res("cpus:4;mem:4096"), &[]);
    }
    let c = counts(&a.allocate(Instant::now()));
    assert_eq!((c["f1"], c["f2"]), (15, 15));
}

#[test]
fn drf_weight_two_gets_twice() {
    let mut a = allocator();
    a.set_role_weight("heavy", 2.0).expect("valid weight");
    a.add_framework("h", "heavy", true, false);
    a.add_framework("l", "light", true, false);
    for i in 0..30 {
        a.add_agent(&format!("a{i}"), res("cpus:4;mem:4096"), &[]);
    }
    let c = counts(&a.allocate(Instant::now()));
    assert_eq!((c["h"], c["l"]), (20, 10));
    let r = a.framework_report("h", Instant::now()).expect("h");
    assert_eq!(r.role_weight, 2.0);
    assert!((r.role_share - (20.0 / 30.0) / 2.0).abs() < 1e-9);
    assert!(a.set_role_weight("x", 0.0).is_err());
    assert!(a.set_role_weight("x", f64::NAN).is_err());
    assert!(a.set_role_weight("x", -1.0).is_err());
}

#[test]
fn drf_uses_dominant_resource() {
    // f1 already holds a memory-heavy allocation: its dominant share (mem) is larger, so f2
    // receives the next agent even though f1 holds fewer cpus.
    let mut a = allocator();
    a.add_framework("f1", "r", true, false);
    a.add_framework("f2", "r", true, false);
    a.add_agent(
        "big",
        res("cpus:1;mem:8000"),
        &[("f1", res("cpus:1;mem:8000"))],
    );
    a.add_agent("cpu", res("cpus:8;mem:100"), &[("f2", res("cpus:4;mem:0"))]);
    // f1: mem 8000/8100 ≈ 0.99; f2: cpus 4/9 ≈ 0.44.
    let offers = a.allocate(Instant::now());
    assert_eq!(frameworks_of(&offers), vec!["f2"]);
    assert_eq!(offers[0].resources, res("cpus:4;mem:100"));
}

#[test]
fn declined_offer_hides_same_or_smaller_until_bigger() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096;ports:[31000-31009]"), &[]);
    let offers = a.allocate(t0);
    assert_eq!(offers.len(), 1);
    // ACCEPT using part of it; the unused part comes back with a filter.
    let task = res("cpus:1;mem:1024;ports:[31000-31000]");
    let mut unused = offers[0].resources.clone();
    unused.subtract(&task);
    a.recover("f", "a", &unused, Some(secs(30)), t0);
    assert_eq!(a.agent_free("a"), Some(unused.clone()));
    // The same offer is hidden.
    assert!(a.allocate(t0 + secs(1)).is_empty());
    assert!(a.allocate_agents(&["a"], t0 + secs(2)).is_empty());
    // A smaller one too (another task of f starts through other means).
    a.allocate_used("f", "a", &res("cpus:1;mem:512"));
    assert!(a.allocate(t0 + secs(3)).is_empty());
    a.recover("f", "a", &res("cpus:1;mem:512"), None, t0 + secs(4));
    assert!(a.allocate(t0 + secs(4)).is_empty());
    // The first task ends: the free resources are now bigger than what was refused.
    a.recover("f", "a", &task, None, t0 + secs(5));
    let offers = a.allocate(t0 + secs(5));
    assert_eq!(frameworks_of(&offers), vec!["f"]);
    assert_eq!(
        offers[0].resources,
        res("cpus:4;mem:4096;ports:[31000-31009]")
    );
}

#[test]
fn filter_is_per_framework_and_per_agent() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f1", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096"), &[]);
    a.add_agent("b", res("cpus:4;mem:4096"), &[]);
    let offers = a.allocate(t0);
    assert_eq!(offers.len(), 2);
    // f1 declines only agent a.
    a.recover("f1", "a", &res("cpus:4;mem:4096"), Some(secs(60)), t0);
    a.recover("f1", "b", &res("cpus:4;mem:4096"), None, t0);
    let offers = a.allocate(t0 + secs(1));
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent, "b");
    // Another framework isn't affected by f1's filter.
    a.add_framework("f2", "r", true, false);
    let offers = a.allocate(t0 + secs(1));
    assert_eq!(frameworks_of(&offers), vec!["f2"]);
    assert_eq!(offers[0].agent, "a");
}

#[test]
fn filters_expire_with_filter_min_floor() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096"), &[]);
    let all = res("cpus:4;mem:4096");
    assert_eq!(a.allocate(t0).len(), 1);
    a.recover("f", "a", &all, Some(secs(5)), t0);
    assert!(a.allocate(t0 + secs(4)).is_empty());
    let report = a.framework_report("f", t0 + secs(4)).expect("f");
    assert_eq!(report.filters.len(), 1);
    assert_eq!(report.filters[0].agent, "a");
    assert_eq!(report.filters[0].expires_at, t0 + secs(5));
    assert_eq!(a.allocate(t0 + secs(5)).len(), 1);
    assert!(a
        .framework_report("f", t0 + secs(5))
        .expect("f")
        .filters
        .is_empty());
    assert_eq!(a.filter_count(), 0);

    // refuse 100 ms lasts filter_min = 1 s.
    let t1 = t0 + secs(10);
    a.recover("f", "a", &all, Some(Duration::from_millis(100)), t1);
    assert!(a.allocate(t1 + Duration::from_millis(500)).is_empty());
    assert_eq!(a.allocate(t1 + secs(1)).len(), 1);

    // refuse 0 installs no filter.
    let t2 = t0 + secs(20);
    a.recover("f", "a", &all, Some(Duration::ZERO), t2);
    assert_eq!(a.allocate(t2).len(), 1);

    // An absurd refusal is capped rather than overflowing.
    a.recover("f", "a", &all, Some(Duration::MAX), t2);
    let r = a.framework_report("f", t2).expect("f");
    assert_eq!(r.filters[0].expires_at, t2 + MAX_FILTER_DURATION);
}

#[test]
fn revive_clears_filters() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096"), &[]);
    a.allocate(t0);
    a.recover("f", "a", &res("cpus:4;mem:4096"), Some(secs(3600)), t0);
    assert!(a.allocate(t0 + secs(1)).is_empty());
    a.revive("f", t0 + secs(2));
    assert_eq!(a.filter_count(), 0);
    assert_eq!(a.allocate(t0 + secs(2)).len(), 1);
}

#[test]
fn suppress_and_revive() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("quiet", "r", true, false);
    a.add_framework("busy", "r", true, false);
    a.suppress("quiet");
    for i in 0..4 {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:128"), &[]);
    }
    let offers = a.allocate(t0);
    assert_eq!(counts(&offers).get("quiet"), None);
    assert_eq!(counts(&offers)["busy"], 4);
    for o in &offers {
        a.recover(&o.framework, &o.agent, &o.resources, None, t0);
    }
    a.revive("quiet", t0);
    let c = counts(&a.allocate(t0 + secs(1)));
    assert_eq!((c["quiet"], c["busy"]), (2, 2));
    // Registered suppressed.
    a.add_framework("late", "r", true, true);
    assert!(a.framework_report("late", t0).expect("late").suppressed);
}

#[test]
fn min_allocatable_is_an_or_of_alternatives() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("tiny", res("cpus:0.005;mem:16;ports:[1-10]"), &[]);
    a.add_agent("memonly", res("cpus:0;mem:32"), &[]);
    a.add_agent("cpuonly", res("cpus:0.01;mem:0"), &[]);
    let mut agents: Vec<String> = a.allocate(t0).into_iter().map(|o| o.agent).collect();
    agents.sort();
    assert_eq!(agents, vec!["cpuonly", "memonly"]);
    assert_eq!(
        AllocatorConfig::parse_min_allocatable("cpus:0.01|mem:32").expect("parses"),
        AllocatorConfig::default().min_allocatable
    );
    assert!(AllocatorConfig::parse_min_allocatable("cpus:x").is_err());
}

#[test]
fn deactivated_agent_gets_no_offers() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096"), &[]);
    a.deactivate_agent("a");
    assert!(a.allocate(t0).is_empty());
    a.activate_agent("a");
    assert_eq!(a.allocate(t0).len(), 1);
}

#[test]
fn deactivated_framework_gets_nothing_and_loses_filters() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f1", "r", true, false);
    a.add_framework("f2", "r", false, false);
    for i in 0..4 {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:128"), &[]);
    }
    let offers = a.allocate(t0);
    assert_eq!(counts(&offers)["f1"], 4);
    // f1 declines one agent with a filter, then disconnects; its offers are rescinded.
    a.recover("f1", "a0", &res("cpus:1;mem:128"), Some(secs(3600)), t0);
    a.deactivate_framework("f1");
    assert_eq!(a.filter_count(), 0);
    for o in offers.iter().filter(|o| o.agent != "a0") {
        a.recover("f1", &o.agent, &o.resources, None, t0);
    }
    assert!(a.allocate(t0).is_empty());
    a.activate_framework("f2");
    assert_eq!(counts(&a.allocate(t0))["f2"], 4);
    // Unknown names are no-ops.
    a.deactivate_framework("nope");
    a.recover("nope", "a0", &res("cpus:1"), Some(secs(5)), t0);
    a.recover("f2", "nope", &res("cpus:1"), Some(secs(5)), t0);
    assert!(a.framework_report("nope", t0).is_none());
}

#[test]
fn remove_framework_releases_everything() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f1", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096;ports:[31000-31010]"), &[]);
    a.add_agent(
        "b",
        res("cpus:4;mem:4096"),
        &[("f1", res("cpus:1;mem:100"))],
    );
    assert_eq!(a.allocate(t0).len(), 2);
    assert_eq!(a.agent_free("a"), Some(Resources::default()));
    a.recover("f1", "b", &res("cpus:3;mem:3996"), Some(secs(60)), t0);
    a.remove_framework("f1");
    assert_eq!(a.filter_count(), 0);
    assert_eq!(
        a.agent_free("a"),
        Some(res("cpus:4;mem:4096;ports:[31000-31010]"))
    );
    assert_eq!(a.agent_free("b"), Some(res("cpus:4;mem:4096")));
    a.add_framework("f2", "r", true, false);
    let offers = a.allocate(t0);
    assert_eq!(counts(&offers)["f2"], 2);
    let r = a.framework_report("f2", t0).expect("f2");
    assert!((r.share - 1.0).abs() < 1e-9);
    assert!((r.role_share - 1.0).abs() < 1e-9);
}

#[test]
fn remove_agent_drops_its_allocations() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096"), &[]);
    a.add_agent("b", res("cpus:4;mem:4096"), &[]);
    assert_eq!(a.allocate(t0).len(), 2);
    a.remove_agent("a");
    assert_eq!(a.total(), res("cpus:4;mem:4096"));
    let r = a.framework_report("f", t0).expect("f");
    assert_eq!(r.allocated, res("cpus:4;mem:4096"));
    assert!((r.share - 1.0).abs() < 1e-9);
    assert_eq!(r.last_allocation.as_ref().map(|l| l.at), Some(t0));
    // Recovering on a vanished agent is a no-op.
    a.recover("f", "a", &res("cpus:4;mem:4096"), Some(secs(5)), t0);
    assert!(a.agent_free("a").is_none());
}

#[test]
fn recover_is_clamped_to_what_is_allocated() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096;ports:[1-10]"), &[]);
    let offers = a.allocate(t0);
    // A rescind and a decline race: the same resources come back twice.
    a.recover("f", "a", &offers[0].resources, None, t0);
    a.recover("f", "a", &offers[0].resources, None, t0);
    assert_eq!(a.agent_free("a"), Some(res("cpus:4;mem:4096;ports:[1-10]")));
    assert_eq!(a.framework_report("f", t0).expect("f").share, 0.0);
    // allocate_used is clamped to what is free.
    a.allocate_used("f", "a", &res("cpus:10;mem:1;ports:[5-20]"));
    assert_eq!(a.agent_free("a"), Some(res("cpus:0;mem:4095;ports:[1-4]")));
    assert_eq!(
        a.allocated_on("f", "a"),
        Some(res("cpus:4;mem:1;ports:[5-10]"))
    );
}

#[test]
fn used_resources_of_unknown_framework_wait_for_it() {
    let t0 = Instant::now();
    let mut a = allocator();
    // Master failover: the agent re-registers before its framework does.
    a.add_agent(
        "a",
        res("cpus:4;mem:4096"),
        &[("f", res("cpus:3;mem:1024"))],
    );
    a.add_agent("b", res("cpus:4;mem:4096"), &[]);
    let r = a.framework_report("f", t0).expect("placeholder");
    assert!(!r.registered);
    assert_eq!(r.role, "*");
    assert!(a.allocate(t0).is_empty(), "nobody to offer to");
    a.add_framework("g", "web", true, false);
    a.add_framework("f", "web", true, false);
    let r = a.framework_report("f", t0).expect("f");
    assert!(r.registered);
    assert_eq!(r.role, "web");
    // f already holds 3/8 cpus; g gets the next agent first (lower share), then f.
    let offers = a.allocate(t0);
    assert_eq!(offers.len(), 2);
    let g = offers
        .iter()
        .find(|o| o.framework == "g")
        .expect("g offered");
    assert_eq!(g.agent, "b");
    assert_eq!(a.agent_free("a"), Some(Resources::default()));
}

#[test]
fn allocate_agents_only_visits_candidates() {
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:4;mem:4096"), &[]);
    a.add_agent("b", res("cpus:4;mem:4096"), &[]);
    let offers = a.allocate_agents(&["b", "b", "missing"], t0);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent, "b");
    assert_eq!(a.allocate(t0).len(), 1);
}

#[test]
fn synthetic_cluster_steady_state() {
    let t0 = Instant::now();
    let spec = SyntheticCluster::new(200, 10, 3);
    let mut a = spec.build();
    let first = a.allocate(t0);
    assert_eq!(first.len(), 200);
    let c = counts(&first);
    assert_eq!(c.len(), 10);
    SyntheticCluster::decline(&mut a, &first, Some(secs(3600)), t0);
    let cycles = SyntheticCluster::decline_until_quiet(&mut a, secs(3600), t0);
    assert!(cycles <= 11, "{cycles}");
    assert_eq!(a.filter_count(), 200 * 10);
    assert!(a.allocate(t0 + secs(1)).is_empty());
    // Filters expire: everything is offered again.
    assert_eq!(a.allocate(t0 + secs(3600)).len(), 200);
    assert_eq!(a.filter_count(), 0);
}

#[test]
fn ports_only_free_is_not_allocatable_by_default() {
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    let mut agent = res("cpus:1;mem:64");
    agent.ports = Ranges::new(vec![(1, 100)]);
    a.add_agent("a", agent, &[("f", res("cpus:1;mem:64"))]);
    assert!(a.allocate(Instant::now()).is_empty());
}

#[test]
fn filter_port_checks_match_exact_subset() {
    let t = Instant::now() + secs(60);
    let key_of = |r: &Resources| FilterKey {
        expires_at: t,
        scalars: scalars(r),
        ports: PortSpan::of(&r.ports, false),
    };
    let exact = |refused: &Resources, offer: &Resources| {
        covers(
            &key_of(refused),
            &scalars(offer),
            PortSpan::of(&offer.ports, true),
        )
        .unwrap_or_else(|| refused.contains(offer))
    };
    let cases = [
        ("cpus:1;ports:[10-20]", "cpus:1;ports:[12-13,15-20]"),
        ("cpus:1;ports:[10-20]", "cpus:1;ports:[9-12]"),
        ("cpus:1;ports:[10-20]", "cpus:1"),
        ("cpus:1", "cpus:1;ports:[10-10]"),
        ("cpus:1;ports:[1-5,10-20]", "cpus:1;ports:[1-5]"),
        ("cpus:1;ports:[1-5,10-20]", "cpus:1;ports:[4-11]"),
        ("cpus:1;ports:[1-5,10-20]", "cpus:1;ports:[2-3,11-12]"),
        ("cpus:1;mem:10", "cpus:1;mem:10.0000001"),
        ("cpus:1;mem:10", "cpus:1;mem:10.1"),
        (
            "cpus:1;mem:10;disk:5;gpus:1",
            "cpus:0.5;mem:10;disk:5;gpus:1",
        ),
    ];
    for (refused, offer) in cases {
        let (refused, offer) = (res(refused), res(offer));
        assert_eq!(
            exact(&refused, &offer),
            refused.contains(&offer),
            "{refused} vs {offer}"
        );
    }
    // End to end through a multi-range filter.
    let t0 = Instant::now();
    let mut a = allocator();
    a.add_framework("f", "r", true, false);
    a.add_agent("a", res("cpus:2;mem:64;ports:[1-5,10-20]"), &[]);
    let offers = a.allocate(t0);
    a.recover("f", "a", &offers[0].resources, Some(secs(10)), t0);
    assert!(a.allocate(t0).is_empty());
    a.allocate_used("f", "a", &res("ports:[3-3,15-15]"));
    assert!(a.allocate(t0).is_empty(), "a subset stays hidden");
}
