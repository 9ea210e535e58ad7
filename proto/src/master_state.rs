//! What drove's own readers (the dashboard's Cluster page) take from the master's
//! `/master/state`: a typed subset of its answer (Mesos' shape, with drove's additions such as
//! `last_ping_seconds_ago` and each framework's `allocator` report). Fields the master leaves
//! out read as their defaults; the master's tests read its own answer as these types.

use serde::de::IgnoredAny;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MasterState {
    #[serde(default)]
    pub slaves: Vec<Agent>,
    #[serde(default)]
    pub frameworks: Vec<Framework>,
}

impl MasterState {
    /// The hostname of agent `id`, or `?` for one the master no longer lists.
    pub fn hostname(&self, id: &str) -> &str {
        self.slaves
            .iter()
            .find(|s| s.id == id)
            .map_or("?", |s| s.hostname.as_str())
    }
}

/// The scalar resources the dashboard shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Scalars {
    #[serde(default)]
    pub cpus: f64,
    #[serde(default)]
    pub mem: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub recovering: bool,
    /// drove's: how long since its last ping (its heartbeat).
    #[serde(default)]
    pub last_ping_seconds_ago: Option<f64>,
    #[serde(default)]
    pub resources: Scalars,
    #[serde(default)]
    pub used_resources: Scalars,
    #[serde(default)]
    pub offered_resources: Scalars,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Framework {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub suppressed: bool,
    #[serde(default)]
    pub used_resources: Scalars,
    /// Only counted.
    #[serde(default)]
    pub tasks: Vec<IgnoredAny>,
    #[serde(default)]
    pub offers: Vec<Offer>,
    /// drove's: the allocator's view of this framework.
    #[serde(default)]
    pub allocator: Option<Allocator>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Offer {
    pub id: String,
    pub agent_id: String,
    #[serde(default)]
    pub resources: Scalars,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Allocator {
    /// Its dominant share of the cluster, 0 to 1.
    #[serde(default)]
    pub share: f64,
    #[serde(default)]
    pub last_allocation: Option<LastAllocation>,
    /// Agents whose offers it declined, filtered for a while.
    #[serde(default)]
    pub filters: Vec<Filter>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LastAllocation {
    pub seconds_ago: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Filter {
    pub agent_id: String,
    pub expires_in_seconds: f64,
}
