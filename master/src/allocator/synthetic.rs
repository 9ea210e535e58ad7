//! Synthetic clusters for benchmarks and tests, built only through the allocator's public API
//! (`benches/allocator.rs` in the root package uses this).

use std::time::{Duration, Instant};

use drove_proto::resources::{Ranges, Resources};

use super::{Allocation, Allocator, AllocatorConfig};

/// A cluster of identical agents and frameworks spread round-robin over a few roles.
#[derive(Debug, Clone)]
pub struct SyntheticCluster {
    pub agents: usize,
    pub frameworks: usize,
    pub roles: usize,
    /// Each agent's resources.
    pub agent_resources: Resources,
    /// Seed for the allocator's agent shuffle.
    pub seed: u64,
}

impl SyntheticCluster {
    /// `agents` × `frameworks` over `roles` roles; agents have `cpus:16;mem:65536;disk:100000;
    /// ports:[31000-32000]`.
    pub fn new(agents: usize, frameworks: usize, roles: usize) -> Self {
        SyntheticCluster {
            agents,
            frameworks,
            roles: roles.max(1),
            agent_resources: Resources {
                cpus: 16.0,
                mem: 65536.0,
                disk: 100_000.0,
                gpus: 0.0,
                ports: Ranges::new(vec![(31000, 32000)]),
            },
            seed: 42,
        }
    }

    pub fn agent_name(i: usize) -> String {
        format!("agent-{i:05}")
    }

    pub fn framework_name(i: usize) -> String {
        format!("framework-{i:04}")
    }

    pub fn role_name(i: usize) -> String {
        format!("role-{i}")
    }

    /// An allocator holding the cluster: all agents and frameworks added, active, unsuppressed,
    /// nothing allocated yet.
    pub fn build(&self) -> Allocator {
        let mut alloc = Allocator::new(AllocatorConfig {
            seed: Some(self.seed),
            ..AllocatorConfig::default()
        });
        for i in 0..self.frameworks {
            alloc.add_framework(
                &Self::framework_name(i),
                &Self::role_name(i % self.roles),
                true,
                false,
            );
        }
        for i in 0..self.agents {
            alloc.add_agent(&Self::agent_name(i), self.agent_resources.clone(), &[]);
        }
        alloc
    }

    /// Returns every allocation to the allocator, as declines with `refuse` (or no filter).
    pub fn decline(
        alloc: &mut Allocator,
        allocations: &[Allocation],
        refuse: Option<Duration>,
        now: Instant,
    ) {
        for a in allocations {
            alloc.recover(&a.framework, &a.agent, &a.resources, refuse, now);
        }
    }

    /// Runs cycles at `now`, declining every offer with `refuse`, until nothing is offered:
    /// afterwards every framework has a filter on every agent (the steady state of a cluster of
    /// idle frameworks). Returns the number of cycles it took (at most `frameworks + 1`).
    pub fn decline_until_quiet(alloc: &mut Allocator, refuse: Duration, now: Instant) -> usize {
        let mut cycles = 0;
        loop {
            cycles += 1;
            let offers = alloc.allocate(now);
            if offers.is_empty() {
                return cycles;
            }
            Self::decline(alloc, &offers, Some(refuse), now);
        }
    }
}
