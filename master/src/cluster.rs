//! The master's in-memory model of the cluster and every transition on it.
//!
//! [`Cluster`] owns agents, frameworks, offers and tasks plus the allocator. It is guarded by one
//! mutex that is never held across an `.await`, and it does no I/O: every method is synchronous
//! and short, takes the time from its [`Clock`], and records what it asks of the world (store
//! writes, calls to agents, events for frameworks) as [`Effect`]s, which the lock's guard does
//! through non-blocking channels as it lets go.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use drove_proto::agent::{
    AcknowledgeUpdate, AgentTask, KillTask, LaunchTask, RegisterAgent, Registered,
    ShutdownFramework,
};
use drove_proto::mesos::{
    now_secs, AgentId, Attribute, Filters, FrameworkId, FrameworkInfo, MasterInfo, Offer, OfferId,
    TaskId, TaskInfo, TaskSource, TaskState, TaskStatus, TimeInfo,
};
use drove_proto::scheduler::{
    Accept, Acknowledge, Call, Decline, Event, Kill, OperationType, Reconcile, Subscribed,
};
use drove_proto::Resources;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent_client::Internal;
use crate::allocator::{Allocator, AllocatorConfig};
use crate::clock::Clock;
use crate::store::{AgentRow, FrameworkRow, Snapshot, StoreOp, TaskRow};

pub mod effects;
pub use effects::{AgentCall, Effect, Outbox};

/// Tunables the master was started with.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub agent_ping_interval: Duration,
    pub max_agent_ping_timeouts: u32,
    pub agent_reregister_timeout: Duration,
    /// An agent unreachable this long is removed for good, and its tasks with it.
    pub agent_removal_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub allocation_interval: Duration,
    pub min_allocatable: Vec<Resources>,
    pub completed_tasks_per_framework: usize,
}

/// A new subscription stream: its id, and the events to write to it until `overflow` fires or
/// the master drops the sender.
pub struct Subscription {
    pub stream_id: String,
    pub framework_id: FrameworkId,
    pub events: mpsc::Receiver<Event>,
    pub overflow: CancellationToken,
}

/// Why a scheduler call was refused; the HTTP layer maps these to status codes.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Framework is not subscribed")]
    NotSubscribed,
    /// SUBSCRIBE with the id of a framework the master removed (Mesos refuses it too).
    #[error("Framework {0} has been removed")]
    Removed(String),
    /// The store cannot persist what the call would change (see `store::StoreHealth`); 503.
    #[error("the master cannot take changes now: {0}")]
    Unavailable(String),
    /// The framework was registered by another principal.
    #[error("framework {framework} belongs to principal {owner:?}, not {caller:?}")]
    Principal {
        framework: String,
        owner: Option<String>,
        caller: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AgentStatus {
    Active,
    /// Known from the store after a master restart; waiting for the agent to re-register.
    Recovering {
        deadline: Instant,
    },
    Unreachable {
        since_secs: f64,
    },
}

pub struct Agent {
    pub id: AgentId,
    pub hostname: String,
    pub endpoint: String,
    pub total: Resources,
    pub attributes: Vec<Attribute>,
    pub registered_secs: f64,
    pub last_ping: Instant,
    pub status: AgentStatus,
    pub offers: HashSet<String>,
    /// (framework id, task id) of the tasks placed here.
    pub tasks: HashSet<(String, String)>,
    /// This registration's secret (empty until the agent registers with this master).
    pub session: String,
    /// SHA-256 (hex) of the key issued at the id's first registration; `None` for an agent
    /// recorded before keys existed (it gets one at its next registration).
    pub key_hash: Option<String>,
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    /// Re-registering an id without the key its first registration was given.
    #[error("agent {0} is registered with another key; an agent id is only re-registered by the agent it was issued to")]
    NotYours(String),
}

/// A new agent key and its SHA-256 (hex).
fn new_agent_key() -> (String, String) {
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = key_hash(&key);
    (key, hash)
}

fn key_hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Events queued for one subscription stream before the master gives up on a reader that does
/// not keep up and closes the stream (the framework then counts as disconnected).
pub const EVENT_QUEUE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Connection {
    pub stream_id: String,
    tx: mpsc::Sender<Event>,
    /// Cancelled when the queue overflows: the stream ends, which disconnects the framework.
    overflow: CancellationToken,
}

pub struct Framework {
    pub id: FrameworkId,
    pub info: FrameworkInfo,
    pub role: String,
    pub conn: Option<Connection>,
    pub registered_secs: f64,
    pub disconnected_at: Option<Instant>,
    pub unregistered_secs: Option<f64>,
    pub suppressed: bool,
    pub recovered: bool,
    /// A recovered framework is given at least this long to re-subscribe after a master restart,
    /// whatever its failover_timeout (Mesos' default of 0 would otherwise kill its tasks).
    pub failover_grace: Duration,
    pub offers: HashSet<String>,
    pub tasks: HashMap<String, Task>,
    pub completed: VecDeque<Task>,
    /// When this framework was last sent an offer, and what it held.
    pub last_offer: Option<(f64, Resources)>,
}

impl Framework {
    pub fn partition_aware(&self) -> bool {
        self.info.has_capability("PARTITION_AWARE")
    }
}

impl Connection {
    /// Queues `event` on the stream; a reader so far behind that the queue is full has its
    /// stream closed.
    pub fn send(&self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            tracing::warn!(stream = %self.stream_id, "event queue full; closing the subscription");
            self.overflow.cancel();
        }
    }
}

#[derive(Clone)]
pub struct Task {
    pub info: TaskInfo,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub state: TaskState,
    pub status: Option<TaskStatus>,
    pub statuses: Vec<(TaskState, f64, Option<bool>)>,
    /// The task's resources went back to the allocator (it reached a terminal state).
    pub released: bool,
    /// The agent accepted the launch request (so an agent that re-registers without the task
    /// has lost it).
    pub launch_acked: bool,
    /// A kill the framework asked for, re-sent when the agent re-registers with the task.
    pub kill_requested: Option<KillTask>,
}

pub struct OutstandingOffer {
    pub id: OfferId,
    pub framework_id: String,
    pub agent_id: String,
    pub resources: Resources,
    pub created_secs: f64,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub calls: HashMap<&'static str, u64>,
    pub events_sent: u64,
    pub offers_made: u64,
    pub tasks_launched: u64,
    pub allocation_runs: u64,
    pub last_allocation_secs: f64,
}

pub struct Cluster {
    pub master_id: String,
    pub master_info: MasterInfo,
    pub start_secs: f64,
    pub config: ClusterConfig,
    pub agents: HashMap<String, Agent>,
    pub frameworks: HashMap<String, Framework>,
    pub completed_frameworks: VecDeque<(FrameworkId, String)>,
    /// Ids of agents removed after being unreachable too long; they may only register anew.
    removed_agents: HashSet<String>,
    /// Ids of frameworks removed (teardown, failover timeout): never resumed by a SUBSCRIBE.
    removed_frameworks: HashSet<String>,
    pub offers: HashMap<String, OutstandingOffer>,
    pub allocator: Allocator,
    pub counters: Counters,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    /// What its changes asked of the world, until taken ([`Cluster::take_effects`]).
    out: Outbox,
    clock: Clock,
    /// Set when something happened that may make new offers possible.
    pub allocation_wanted: bool,
}

fn framework_role(info: &FrameworkInfo) -> String {
    info.effective_roles()
        .into_iter()
        .next()
        .unwrap_or_else(|| "*".into())
}

impl Cluster {
    pub fn new(master_info: MasterInfo, config: ClusterConfig, clock: Clock) -> Self {
        let allocator = Allocator::new(AllocatorConfig {
            min_allocatable: config.min_allocatable.clone(),
            filter_min: config.allocation_interval,
            seed: None,
        });
        Cluster {
            master_id: master_info.id.clone(),
            master_info,
            start_secs: clock.unix_secs(),
            config,
            agents: HashMap::new(),
            frameworks: HashMap::new(),
            completed_frameworks: VecDeque::new(),
            removed_agents: HashSet::new(),
            removed_frameworks: HashSet::new(),
            offers: HashMap::new(),
            allocator,
            counters: Counters::default(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            out: Outbox::default(),
            clock,
            allocation_wanted: false,
        }
    }

    /// The effects of the changes made since they were last taken, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.out.take()
    }

    /// Rebuilds the cluster from the store after a restart. Agents wait to re-register,
    /// frameworks to re-subscribe; nothing is killed.
    pub fn recover(&mut self, snapshot: Snapshot) {
        let now = self.clock.now();
        for row in snapshot.frameworks {
            let role = framework_role(&row.info);
            self.allocator.add_framework(&row.id, &role, false, false);
            self.frameworks.insert(
                row.id.clone(),
                Framework {
                    id: FrameworkId::new(&row.id),
                    info: row.info,
                    role,
                    conn: None,
                    registered_secs: row.registered_at_ms as f64 / 1000.0,
                    disconnected_at: Some(now),
                    unregistered_secs: Some(self.clock.unix_secs()),
                    suppressed: false,
                    recovered: true,
                    failover_grace: self.config.agent_reregister_timeout,
                    offers: HashSet::new(),
                    tasks: HashMap::new(),
                    completed: VecDeque::new(),
                    last_offer: None,
                },
            );
        }
        for row in snapshot.agents {
            let total = Resources::from_mesos(&row.resources).unwrap_or_default();
            let status = match row.unreachable_at_ms {
                Some(ms) => AgentStatus::Unreachable {
                    since_secs: ms as f64 / 1000.0,
                },
                None => AgentStatus::Recovering {
                    deadline: now + self.config.agent_reregister_timeout,
                },
            };
            self.agents.insert(
                row.id.clone(),
                Agent {
                    id: AgentId::new(&row.id),
                    hostname: row.hostname,
                    endpoint: row.endpoint,
                    total,
                    attributes: row.attributes,
                    registered_secs: row.registered_at_ms as f64 / 1000.0,
                    last_ping: now,
                    session: String::new(),
                    key_hash: row.key_hash,
                    status,
                    offers: HashSet::new(),
                    tasks: HashSet::new(),
                },
            );
        }
        for row in snapshot.tasks {
            let Some(fw) = self.frameworks.get_mut(&row.framework_id) else {
                continue;
            };
            let task_id = row.info.task_id.value.clone();
            if let Some(agent) = self.agents.get_mut(&row.agent_id) {
                agent
                    .tasks
                    .insert((row.framework_id.clone(), task_id.clone()));
            }
            let resources = Resources::from_mesos(&row.info.resources).unwrap_or_default();
            fw.tasks.insert(
                task_id,
                Task {
                    framework_id: FrameworkId::new(&row.framework_id),
                    agent_id: AgentId::new(&row.agent_id),
                    resources,
                    state: row.state,
                    statuses: vec![(row.state, row.updated_at_ms as f64 / 1000.0, None)],
                    status: row.status,
                    released: row.state.is_terminal(),
                    launch_acked: true,
                    kill_requested: None,
                    info: row.info,
                },
            );
        }
        tracing::info!(
            agents = self.agents.len(),
            frameworks = self.frameworks.len(),
            "recovered master state"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Agents

    pub fn register_agent(&mut self, mut req: RegisterAgent) -> Result<Registered, RegisterError> {
        if let Some(old) = req.agent_id.take() {
            if self.removed_agents.contains(&old.value) {
                // Its tasks were declared gone: stop them, and let it start over as a new agent.
                tracing::warn!(agent = %old, "a removed agent came back; registering it anew");
                let frameworks: HashSet<FrameworkId> =
                    req.tasks.drain(..).map(|t| t.framework_id).collect();
                for framework_id in frameworks {
                    self.out
                        .shutdown(&req.endpoint, ShutdownFramework { framework_id });
                }
            } else {
                req.agent_id = Some(old);
            }
        }
        let total = Resources::from_mesos(&req.resources)
            .map_err(|e| RegisterError::Invalid(format!("resources: {e}")))?;
        // A known id is re-registered only with the key it was issued (compared as hashes, so
        // the comparison leaks nothing of the stored one).
        if let Some(known) = req
            .agent_id
            .as_ref()
            .and_then(|id| self.agents.get(&id.value))
        {
            if let Some(expected) = &known.key_hash {
                let given = req.agent_key.as_deref().map(key_hash).unwrap_or_default();
                if !drove_proto::auth::same_secret(&given, expected) {
                    tracing::warn!(agent = %known.id, endpoint = %req.endpoint,
                        "re-registration with a wrong agent key refused");
                    return Err(RegisterError::NotYours(known.id.value.clone()));
                }
            }
        }
        let reregistering = req.agent_id.clone();
        let id = match &req.agent_id {
            Some(id) => id.clone(),
            None => {
                let id = AgentId::new(format!("{}-S{}", self.master_id, self.next_agent));
                self.next_agent += 1;
                id
            }
        };
        let key = id.value.clone();
        let now = self.clock.now();
        let was = self.agents.get(&key).map(|a| a.status);
        if was.is_some() {
            self.allocator.remove_agent(&key);
            self.rescind_agent_offers(&key, true);
        }
        let agent = self.agents.entry(key.clone()).or_insert_with(|| Agent {
            id: id.clone(),
            hostname: req.hostname.clone(),
            endpoint: req.endpoint.clone(),
            total: total.clone(),
            attributes: req.attributes.clone(),
            registered_secs: self.clock.unix_secs(),
            last_ping: now,
            session: String::new(),
            key_hash: None,
            status: AgentStatus::Active,
            offers: HashSet::new(),
            tasks: HashSet::new(),
        });
        agent.hostname = req.hostname.clone();
        agent.endpoint = req.endpoint.clone();
        agent.total = total.clone();
        agent.attributes = req.attributes.clone();
        agent.last_ping = now;
        agent.status = AgentStatus::Active;
        agent.session = uuid::Uuid::new_v4().simple().to_string();
        let session = agent.session.clone();
        // A new id, or one the master holds no key for, gets a key now.
        let issued = match &agent.key_hash {
            Some(_) => None,
            None => {
                let (key, hash) = new_agent_key();
                agent.key_hash = Some(hash);
                Some(key)
            }
        };
        self.out.apply(StoreOp::UpsertAgent(AgentRow {
            id: key.clone(),
            hostname: req.hostname.clone(),
            endpoint: req.endpoint.clone(),
            resources: req.resources.clone(),
            attributes: req.attributes.clone(),
            registered_at_ms: (agent.registered_secs * 1000.0) as i64,
            unreachable_at_ms: None,
            key_hash: agent.key_hash.clone(),
        }));

        if reregistering.is_some() {
            self.reconcile_agent_tasks(&key, &req.tasks);
        }
        let used = self.agent_used(&key);
        let used_ref: Vec<(&str, Resources)> =
            used.iter().map(|(f, r)| (f.as_str(), r.clone())).collect();
        self.allocator.add_agent(&key, total, &used_ref);
        tracing::info!(agent = %key, hostname = %req.hostname, endpoint = %req.endpoint,
            reregistered = reregistering.is_some(), previously = ?was, "agent registered");
        self.allocation_wanted = true;
        Ok(Registered {
            agent_id: id,
            master_id: self.master_id.clone(),
            ping_interval_seconds: self.config.agent_ping_interval.as_secs_f64(),
            max_missed_pings: self.config.max_agent_ping_timeouts,
            session: Some(session),
            agent_key: issued,
        })
    }

    /// Whether a ping or status update comes from the agent's current registration.
    pub fn agent_session_ok(&self, agent: &str, session: Option<&str>) -> bool {
        match (self.agents.get(agent), session) {
            (Some(a), Some(s)) => !a.session.is_empty() && a.session == s,
            _ => false,
        }
    }

    /// Resources held by non-terminal tasks on an agent, per framework.
    fn agent_used(&self, agent: &str) -> Vec<(String, Resources)> {
        let mut used: HashMap<String, Resources> = HashMap::new();
        if let Some(a) = self.agents.get(agent) {
            for (fw, task) in &a.tasks {
                if let Some(t) = self.frameworks.get(fw).and_then(|f| f.tasks.get(task)) {
                    if !t.released {
                        used.entry(fw.clone()).or_default().add(&t.resources);
                    }
                }
            }
        }
        used.into_iter().collect()
    }

    /// Aligns the master's view of an agent's tasks with what the re-registering agent reports.
    fn reconcile_agent_tasks(&mut self, agent: &str, reported: &[AgentTask]) {
        let mut seen = HashSet::new();
        for at in reported {
            let fw_key = at.framework_id.value.clone();
            let task_key = at.task.task_id.value.clone();
            seen.insert((fw_key.clone(), task_key.clone()));
            let Some(fw) = self.frameworks.get_mut(&fw_key) else {
                tracing::warn!(framework = %fw_key, task = %task_key, agent,
                    "agent runs a task of an unknown framework; shutting it down");
                if let Some(a) = self.agents.get(agent) {
                    self.out.shutdown(
                        &a.endpoint,
                        ShutdownFramework {
                            framework_id: at.framework_id.clone(),
                        },
                    );
                }
                continue;
            };
            let resources = Resources::from_mesos(&at.task.resources).unwrap_or_default();
            let task = fw.tasks.entry(task_key.clone()).or_insert_with(|| Task {
                info: at.task.clone(),
                framework_id: at.framework_id.clone(),
                agent_id: AgentId::new(agent),
                resources,
                state: at.state,
                status: at.status.clone(),
                statuses: Vec::new(),
                released: at.state.is_terminal(),
                launch_acked: true,
                kill_requested: None,
            });
            let came_back = matches!(
                task.state,
                TaskState::TaskLost | TaskState::TaskUnreachable | TaskState::TaskUnknown
            ) && !at.state.is_terminal();
            task.agent_id = AgentId::new(agent);
            task.launch_acked = true;
            if at.state.is_terminal() && !task.released {
                // It ended while the agent was away; add_agent below must not count it.
                task.released = true;
            }
            if let (Some(kill), false) = (&task.kill_requested, at.state.is_terminal()) {
                if let Some(a) = self.agents.get(agent) {
                    self.out.kill(&a.endpoint, kill.clone());
                }
            }
            if task.state != at.state {
                task.state = at.state;
                task.statuses.push((at.state, self.clock.unix_secs(), None));
            }
            if let Some(s) = &at.status {
                task.status = Some(s.clone());
            }
            let row = task_row(task, self.clock.unix_ms());
            if came_back {
                let mut status = TaskStatus::new(TaskId::new(&task_key), at.state);
                status.source = Some(TaskSource::SourceMaster);
                status.reason = Some("REASON_RECONCILIATION".into());
                status.message = Some("agent re-registered; task is still running".into());
                status.agent_id = Some(AgentId::new(agent));
                status.healthy = at.status.as_ref().and_then(|s| s.healthy);
                status.container_status =
                    at.status.as_ref().and_then(|s| s.container_status.clone());
                self.out.send(fw, Event::update(status));
                self.counters.events_sent += 1;
            }
            if let Some(a) = self.agents.get_mut(agent) {
                a.tasks.insert((fw_key, task_key));
            }
            self.out.apply(StoreOp::UpsertTask(Box::new(row)));
        }
        // Tasks the master placed here that the agent no longer has.
        let known: Vec<(String, String)> = self
            .agents
            .get(agent)
            .map(|a| a.tasks.iter().cloned().collect())
            .unwrap_or_default();
        for (fw_key, task_key) in known {
            if seen.contains(&(fw_key.clone(), task_key.clone())) {
                continue;
            }
            let Some(fw) = self.frameworks.get_mut(&fw_key) else {
                continue;
            };
            let Some(task) = fw.tasks.get(&task_key) else {
                continue;
            };
            // A launch still on its way is not lost; one the agent accepted and forgot is.
            if task.state.is_terminal()
                || (task.state == TaskState::TaskStaging && !task.launch_acked)
            {
                continue;
            }
            let state = if fw.partition_aware() {
                TaskState::TaskGone
            } else {
                TaskState::TaskLost
            };
            let mut status = TaskStatus::new(TaskId::new(&task_key), state);
            status.source = Some(TaskSource::SourceMaster);
            status.reason = Some("REASON_RECONCILIATION".into());
            status.message = Some("task is unknown to the re-registered agent".into());
            status.agent_id = Some(AgentId::new(agent));
            self.apply_master_status(&fw_key, status, true);
        }
    }

    /// Returns false when the agent is unknown or was declared unreachable (it must re-register).
    pub fn ping(&mut self, agent: &str) -> bool {
        match self.agents.get_mut(agent) {
            Some(a) if a.status == AgentStatus::Active => {
                a.last_ping = self.clock.now();
                true
            }
            _ => false,
        }
    }

    /// Marks agents unreachable that have been silent too long, or that never came back after a
    /// master restart.
    pub fn check_agents(&mut self) {
        let now = self.clock.now();
        let limit = self.config.agent_ping_interval * self.config.max_agent_ping_timeouts;
        let lost: Vec<String> = self
            .agents
            .values()
            .filter(|a| match a.status {
                AgentStatus::Active => now.duration_since(a.last_ping) > limit,
                AgentStatus::Recovering { deadline } => now >= deadline,
                AgentStatus::Unreachable { .. } => false,
            })
            .map(|a| a.id.value.clone())
            .collect();
        for id in lost {
            self.mark_agent_unreachable(&id);
        }
        let removal = self.config.agent_removal_timeout.as_secs_f64();
        let now_s = self.clock.unix_secs();
        let gone: Vec<String> = self
            .agents
            .values()
            .filter(|a| {
                matches!(a.status, AgentStatus::Unreachable { since_secs } if now_s - since_secs >= removal)
            })
            .map(|a| a.id.value.clone())
            .collect();
        for id in gone {
            self.remove_agent(&id);
        }
    }

    /// Forgets an agent that stayed unreachable past `--agent-removal-timeout` (Mesos'
    /// registry_max_agent_age): its tasks end as TASK_GONE (TASK_LOST for frameworks that are
    /// not PARTITION_AWARE) and leave the master. If the agent ever comes back it registers
    /// anew and its old tasks are shut down.
    fn remove_agent(&mut self, agent: &str) {
        let Some(a) = self.agents.remove(agent) else {
            return;
        };
        self.removed_agents.insert(agent.to_string());
        tracing::warn!(agent, hostname = %a.hostname, "unreachable agent removed");
        self.allocator.remove_agent(agent);
        self.out.apply(StoreOp::RemoveAgent(agent.to_string()));
        for (fw_key, task_key) in a.tasks {
            let Some(fw) = self.frameworks.get_mut(&fw_key) else {
                continue;
            };
            let state = if fw.partition_aware() {
                TaskState::TaskGone
            } else {
                TaskState::TaskLost
            };
            let Some(mut task) = fw.tasks.remove(&task_key) else {
                continue;
            };
            let mut status = TaskStatus::new(TaskId::new(&task_key), state);
            status.source = Some(TaskSource::SourceMaster);
            status.reason = Some("REASON_AGENT_REMOVED".into());
            status.message = Some(format!(
                "agent {agent} was unreachable too long and is removed"
            ));
            status.agent_id = Some(AgentId::new(agent));
            task.state = state;
            task.released = true;
            task.statuses.push((state, self.clock.unix_secs(), None));
            task.status = Some(status.clone());
            self.out.send(fw, Event::update(status));
            self.counters.events_sent += 1;
            complete(fw, task, self.config.completed_tasks_per_framework);
            self.out.apply(StoreOp::RemoveTask {
                framework_id: fw_key.clone(),
                task_id: task_key,
            });
        }
    }

    fn mark_agent_unreachable(&mut self, agent: &str) {
        let since = self.clock.unix_secs();
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        tracing::warn!(agent, hostname = %a.hostname, "agent unreachable");
        a.status = AgentStatus::Unreachable { since_secs: since };
        let tasks: Vec<(String, String)> = a.tasks.iter().cloned().collect();
        self.out.apply(StoreOp::SetAgentUnreachable {
            id: agent.to_string(),
            at_ms: Some((since * 1000.0) as i64),
        });
        self.allocator.deactivate_agent(agent);
        self.rescind_agent_offers(agent, true);
        for fw in self.frameworks.values() {
            self.out.send(fw, Event::failure(AgentId::new(agent)));
        }
        for (fw_key, task_key) in tasks {
            let Some(fw) = self.frameworks.get(&fw_key) else {
                continue;
            };
            let Some(task) = fw.tasks.get(&task_key) else {
                continue;
            };
            if task.state.is_terminal() {
                continue;
            }
            let state = if fw.partition_aware() {
                TaskState::TaskUnreachable
            } else {
                TaskState::TaskLost
            };
            let mut status = TaskStatus::new(TaskId::new(&task_key), state);
            status.source = Some(TaskSource::SourceMaster);
            status.reason = Some("REASON_AGENT_REMOVED".into());
            status.message = Some(format!("agent {agent} is unreachable"));
            status.agent_id = Some(AgentId::new(agent));
            status.unreachable_time = Some(TimeInfo {
                nanoseconds: (since * 1e9) as i64,
            });
            self.apply_master_status(&fw_key, status, false);
        }
    }

    fn rescind_agent_offers(&mut self, agent: &str, notify: bool) {
        let ids: Vec<String> = self
            .agents
            .get(agent)
            .map(|a| a.offers.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.rescind_offer(&id, notify);
        }
    }

    /// Takes an offer back: its resources return to the allocator without a filter.
    fn rescind_offer(&mut self, offer_id: &str, notify: bool) {
        let Some(offer) = self.offers.remove(offer_id) else {
            return;
        };
        if let Some(a) = self.agents.get_mut(&offer.agent_id) {
            a.offers.remove(offer_id);
        }
        if let Some(fw) = self.frameworks.get_mut(&offer.framework_id) {
            fw.offers.remove(offer_id);
            if notify {
                self.out.send(fw, Event::rescind(offer.id.clone()));
            }
        }
        self.allocator.recover(
            &offer.framework_id,
            &offer.agent_id,
            &offer.resources,
            None,
            self.clock.now(),
        );
        self.allocation_wanted = true;
    }

    // -----------------------------------------------------------------------------------------
    // Status updates

    /// An update from an agent. Returns false if the agent must re-register first.
    pub fn agent_status(
        &mut self,
        agent: &str,
        framework_id: &FrameworkId,
        status: TaskStatus,
    ) -> bool {
        let Some(a) = self.agents.get(agent) else {
            return false;
        };
        if a.status != AgentStatus::Active {
            return false;
        }
        let endpoint = a.endpoint.clone();
        let fw_key = framework_id.value.clone();
        let task_key = status.task_id.value.clone();
        let ack_for_framework = |out: &mut Outbox| {
            if let Some(uuid) = &status.uuid {
                out.acknowledge(
                    &endpoint,
                    AcknowledgeUpdate {
                        framework_id: framework_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: uuid.clone(),
                    },
                );
            }
        };
        let Some(fw) = self.frameworks.get_mut(&fw_key) else {
            // The framework is gone: nobody will acknowledge this, and whatever still runs for
            // it on this agent must stop (a launch may have raced the teardown).
            ack_for_framework(&mut self.out);
            self.out.shutdown(
                &endpoint,
                ShutdownFramework {
                    framework_id: framework_id.clone(),
                },
            );
            return true;
        };
        let Some(task) = fw.tasks.get_mut(&task_key) else {
            if !status.state.is_terminal() {
                // Running, but the master no longer tracks it (e.g. its launch was declared
                // dropped): stop it rather than let it hold resources nobody accounts for.
                tracing::warn!(framework = %fw_key, task = %task_key, agent, "killing a task the master does not track");
                self.out.kill(
                    &endpoint,
                    KillTask {
                        framework_id: framework_id.clone(),
                        task_id: status.task_id.clone(),
                        kill_policy: None,
                    },
                );
                ack_for_framework(&mut self.out);
            } else {
                self.out.send(fw, Event::update(status));
                self.counters.events_sent += 1;
            }
            return true;
        };
        if task.agent_id.value != agent {
            // A stale update from an agent the task no longer lives on.
            ack_for_framework(&mut self.out);
            return true;
        }
        task.launch_acked = true;
        let fresh = task.status.as_ref().and_then(|s| s.uuid.as_ref()) != status.uuid.as_ref()
            || status.uuid.is_none();
        if fresh {
            if task.state != status.state || status.healthy.is_some() {
                task.statuses.push((
                    status.state,
                    status.timestamp.unwrap_or_else(now_secs),
                    status.healthy,
                ));
            }
            task.state = status.state;
            task.status = Some(status.clone());
            let release = status.state.is_terminal() && !task.released;
            if release {
                task.released = true;
            }
            let row = task_row(task, self.clock.unix_ms());
            let res = task.resources.clone();
            self.out.apply(StoreOp::UpsertTask(Box::new(row)));
            if release {
                self.allocator
                    .recover(&fw_key, agent, &res, None, self.clock.now());
                self.allocation_wanted = true;
            }
        }
        self.out.send(fw, Event::update(status));
        self.counters.events_sent += 1;
        true
    }

    /// A status the master generates itself (no uuid, never acknowledged).
    fn apply_master_status(&mut self, fw_key: &str, status: TaskStatus, release: bool) {
        let Some(fw) = self.frameworks.get_mut(fw_key) else {
            return;
        };
        let task_key = status.task_id.value.clone();
        let mut recover = None;
        if let Some(task) = fw.tasks.get_mut(&task_key) {
            task.state = status.state;
            task.statuses.push((
                status.state,
                status.timestamp.unwrap_or_else(now_secs),
                None,
            ));
            task.status = Some(status.clone());
            if (release || status.state.is_terminal()) && !task.released {
                task.released = true;
                recover = Some((task.agent_id.value.clone(), task.resources.clone()));
            }
            self.out.apply(StoreOp::UpsertTask(Box::new(task_row(
                task,
                self.clock.unix_ms(),
            ))));
            if status.state.is_terminal() {
                if let Some(t) = fw.tasks.remove(&task_key) {
                    complete(fw, t, self.config.completed_tasks_per_framework);
                    self.out.apply(StoreOp::RemoveTask {
                        framework_id: fw_key.to_string(),
                        task_id: task_key.clone(),
                    });
                }
            }
        }
        self.out.send(fw, Event::update(status));
        self.counters.events_sent += 1;
        if let Some((agent, res)) = recover {
            if let Some(a) = self.agents.get_mut(&agent) {
                a.tasks.remove(&(fw_key.to_string(), task_key));
            }
            self.allocator
                .recover(fw_key, &agent, &res, None, self.clock.now());
            self.allocation_wanted = true;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Frameworks

    /// SUBSCRIBE: returns the stream id and the event receiver for the new stream.
    pub fn subscribe(
        &mut self,
        call: &Call,
        principal: Option<&str>,
    ) -> Result<Subscription, CallError> {
        let sub = call
            .subscribe
            .as_ref()
            .ok_or_else(|| CallError::BadRequest("subscribe: missing for SUBSCRIBE".into()))?;
        let mut info = sub.framework_info.clone();
        if let (Some(top), Some(inner)) = (&call.framework_id, &info.id) {
            if top != inner {
                return Err(CallError::BadRequest(
                    "framework_id: differs from subscribe.framework_info.id".into(),
                ));
            }
        }
        if let Some(t) = info.failover_timeout {
            if t.is_nan() || t < 0.0 {
                return Err(CallError::BadRequest(
                    "subscribe.framework_info.failover_timeout: must be a non-negative number"
                        .into(),
                ));
            }
        }
        let id = match info.id.clone().or_else(|| call.framework_id.clone()) {
            Some(id) if !id.value.is_empty() => id,
            _ => {
                let id = FrameworkId::new(format!("{}-{:04}", self.master_id, self.next_framework));
                self.next_framework += 1;
                id
            }
        };
        if self.removed_frameworks.contains(&id.value) {
            return Err(CallError::Removed(id.value));
        }
        if let Some(caller) = principal {
            // An authenticated framework is its principal's: nobody else may resume it.
            if let Some(fw) = self.frameworks.get(&id.value) {
                if fw.info.principal.as_deref() != Some(caller) {
                    return Err(CallError::Principal {
                        framework: id.value,
                        owner: fw.info.principal.clone(),
                        caller: Some(caller.to_string()),
                    });
                }
            }
            info.principal = Some(caller.to_string());
        }
        info.id = Some(id.clone());
        let key = id.value.clone();
        let role = framework_role(&info);
        let stream_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let overflow = CancellationToken::new();
        let suppressed = !sub.suppressed_roles.is_empty();

        // Offers do not survive a failover: the new instance never heard of them.
        let stale_offers: Vec<String> = self
            .frameworks
            .get(&key)
            .map(|fw| fw.offers.iter().cloned().collect())
            .unwrap_or_default();
        for offer in stale_offers {
            self.rescind_offer(&offer, false);
        }
        if let Some(fw) = self.frameworks.get_mut(&key) {
            if let Some(old) = fw.conn.take() {
                self.out.event(old, Event::error("Framework failed over"));
            }
            fw.failover_grace = Duration::ZERO;
            let old_role = fw.role.clone();
            fw.info = info.clone();
            fw.role = role.clone();
            fw.conn = Some(Connection {
                stream_id: stream_id.clone(),
                tx,
                overflow: overflow.clone(),
            });
            fw.disconnected_at = None;
            fw.unregistered_secs = None;
            fw.suppressed = suppressed;
            if old_role != role {
                // Moves the framework's allocations to its new role.
                self.allocator.add_framework(&key, &role, true, suppressed);
            }
            self.allocator.activate_framework(&key);
            if suppressed {
                self.allocator.suppress(&key);
            } else {
                self.allocator.revive(&key, self.clock.now());
            }
            tracing::info!(framework = %key, name = %info.name, "framework re-subscribed");
        } else {
            self.allocator.add_framework(&key, &role, true, suppressed);
            self.frameworks.insert(
                key.clone(),
                Framework {
                    id: id.clone(),
                    info: info.clone(),
                    role,
                    conn: Some(Connection {
                        stream_id: stream_id.clone(),
                        tx,
                        overflow: overflow.clone(),
                    }),
                    registered_secs: self.clock.unix_secs(),
                    disconnected_at: None,
                    unregistered_secs: None,
                    suppressed,
                    recovered: false,
                    failover_grace: Duration::ZERO,
                    offers: HashSet::new(),
                    tasks: HashMap::new(),
                    completed: VecDeque::new(),
                    last_offer: None,
                },
            );
            tracing::info!(framework = %key, name = %info.name, "framework subscribed");
        }
        let fw = &self.frameworks[&key];
        self.out.apply(StoreOp::UpsertFramework(FrameworkRow {
            id: key.clone(),
            info,
            registered_at_ms: (fw.registered_secs * 1000.0) as i64,
        }));
        self.out.send(
            fw,
            Event::subscribed(Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_seconds: Some(self.config.heartbeat_interval.as_secs_f64()),
                master_info: Some(self.master_info.clone()),
            }),
        );
        self.allocation_wanted = true;
        Ok(Subscription {
            stream_id,
            framework_id: id,
            events: rx,
            overflow,
        })
    }

    /// The subscription stream `stream_id` ended (client went away or was replaced).
    pub fn stream_closed(&mut self, framework: &str, stream_id: &str) {
        let Some(fw) = self.frameworks.get_mut(framework) else {
            return;
        };
        if fw.conn.as_ref().map(|c| c.stream_id.as_str()) != Some(stream_id) {
            return;
        }
        fw.conn = None;
        fw.disconnected_at = Some(self.clock.now());
        fw.unregistered_secs = Some(self.clock.unix_secs());
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        tracing::info!(framework, failover_timeout = ?fw.info.failover_timeout, "framework disconnected");
        self.allocator.deactivate_framework(framework);
        for id in offers {
            self.rescind_offer(&id, false);
        }
        if fw_failover_expired(&self.frameworks[framework], self.clock.now()) {
            self.teardown(framework);
        }
    }

    /// Ends every subscription stream without a disconnect (master shutdown): frameworks
    /// re-subscribe to the next master.
    pub fn close_streams(&mut self) {
        for fw in self.frameworks.values_mut() {
            fw.conn = None;
        }
    }

    /// Tears down frameworks whose failover timeout has run out.
    pub fn check_frameworks(&mut self) {
        let now = self.clock.now();
        let expired: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| fw_failover_expired(f, now))
            .map(|f| f.id.value.clone())
            .collect();
        for id in expired {
            tracing::info!(framework = %id, "failover timeout expired; tearing down");
            self.teardown(&id);
        }
    }

    /// Validates the stream id of a non-SUBSCRIBE call and returns the framework key.
    pub fn authorize(
        &self,
        call: &Call,
        stream_id: Option<&str>,
        principal: Option<&str>,
    ) -> Result<String, CallError> {
        let id = call
            .framework_id
            .as_ref()
            .ok_or_else(|| CallError::BadRequest("framework_id: missing".into()))?;
        let fw = self
            .frameworks
            .get(&id.value)
            .ok_or_else(|| CallError::BadRequest("Framework cannot be found".into()))?;
        if principal.is_some() && fw.info.principal.as_deref() != principal {
            return Err(CallError::Principal {
                framework: id.value.clone(),
                owner: fw.info.principal.clone(),
                caller: principal.map(str::to_string),
            });
        }
        let stream_id = stream_id
            .ok_or_else(|| CallError::BadRequest("Mesos-Stream-Id: header missing".into()))?;
        match &fw.conn {
            None => Err(CallError::NotSubscribed),
            Some(c) if c.stream_id != stream_id => Err(CallError::BadRequest(format!(
                "Mesos-Stream-Id: {stream_id:?} is not the framework's current stream"
            ))),
            Some(_) => Ok(id.value.clone()),
        }
    }

    pub fn teardown(&mut self, framework: &str) {
        let Some(fw) = self.frameworks.get(framework) else {
            return;
        };
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        for id in offers {
            self.rescind_offer(&id, false);
        }
        let Some(mut fw) = self.frameworks.remove(framework) else {
            return;
        };
        let mut agents = HashSet::new();
        for (task_key, task) in &fw.tasks {
            agents.insert(task.agent_id.value.clone());
            if let Some(a) = self.agents.get_mut(&task.agent_id.value) {
                a.tasks.remove(&(framework.to_string(), task_key.clone()));
            }
        }
        for agent in agents {
            if let Some(a) = self.agents.get(&agent) {
                self.out.shutdown(
                    &a.endpoint,
                    ShutdownFramework {
                        framework_id: fw.id.clone(),
                    },
                );
            }
        }
        self.allocator.remove_framework(framework);
        if let Some(conn) = fw.conn.take() {
            self.out
                .event(conn, Event::error("Framework has been removed"));
        }
        self.removed_frameworks.insert(fw.id.value.clone());
        self.completed_frameworks
            .push_back((fw.id.clone(), fw.info.name.clone()));
        while self.completed_frameworks.len() > 50 {
            self.completed_frameworks.pop_front();
        }
        self.out
            .apply(StoreOp::RemoveFramework(framework.to_string()));
        self.allocation_wanted = true;
        tracing::info!(framework, "framework removed");
    }

    // -----------------------------------------------------------------------------------------
    // Calls

    pub fn count_call(&mut self, name: &'static str) {
        *self.counters.calls.entry(name).or_default() += 1;
    }

    pub fn decline(&mut self, fw_key: &str, decline: &Decline) {
        let refuse = Filters::refuse_seconds(decline.filters.as_ref());
        for offer_id in &decline.offer_ids {
            if let Some(offer) = self.take_offer(fw_key, &offer_id.value) {
                self.allocator.recover(
                    fw_key,
                    &offer.agent_id,
                    &offer.resources,
                    Some(Duration::from_secs_f64(refuse)),
                    self.clock.now(),
                );
            }
        }
        self.allocation_wanted = true;
    }

    /// Removes and returns the offer if it is outstanding and belongs to the framework.
    fn take_offer(&mut self, fw_key: &str, offer_id: &str) -> Option<OutstandingOffer> {
        if self.offers.get(offer_id)?.framework_id != fw_key {
            return None;
        }
        let offer = self.offers.remove(offer_id)?;
        if let Some(a) = self.agents.get_mut(&offer.agent_id) {
            a.offers.remove(offer_id);
        }
        if let Some(fw) = self.frameworks.get_mut(fw_key) {
            fw.offers.remove(offer_id);
        }
        Some(offer)
    }

    pub fn accept(&mut self, fw_key: &str, accept: &Accept) {
        let launches: Vec<TaskInfo> = accept
            .operations
            .iter()
            .filter(|op| op.kind == OperationType::Launch)
            .flat_map(|op| op.launch.iter().flat_map(|l| l.task_infos.iter().cloned()))
            .collect();
        for op in &accept.operations {
            match op.kind {
                OperationType::Launch => {}
                OperationType::LaunchGroup => {
                    for task in launch_group_tasks(op) {
                        self.task_refused(
                            fw_key,
                            &task,
                            TaskState::TaskError,
                            "REASON_TASK_GROUP_INVALID",
                            "LAUNCH_GROUP needs a custom executor, which drove does not run; use LAUNCH",
                        );
                    }
                }
                other => {
                    tracing::warn!(framework = fw_key, operation = ?other, "unsupported offer operation ignored");
                }
            }
        }

        // Validate the offers first: all must be outstanding, this framework's, on one agent.
        let mut problem = None;
        let mut agent: Option<String> = None;
        let mut seen = HashSet::new();
        for id in &accept.offer_ids {
            if !seen.insert(id.value.clone()) {
                problem = Some(format!("offer {} appears twice", id.value));
                break;
            }
            match self.offers.get(&id.value) {
                None => {
                    problem = Some(format!("offer {} is unknown or already used", id.value));
                    break;
                }
                Some(o) if o.framework_id != fw_key => {
                    problem = Some(format!("offer {} belongs to another framework", id.value));
                    break;
                }
                Some(o) => match &agent {
                    Some(a) if *a != o.agent_id => {
                        problem = Some("offers span more than one agent".to_string());
                        break;
                    }
                    _ => agent = Some(o.agent_id.clone()),
                },
            }
        }
        if accept.offer_ids.is_empty() {
            problem = Some("accept.offer_ids: empty".into());
        }
        if let Some(problem) = problem {
            // Take back whatever valid offers were named, then drop every task.
            for id in &accept.offer_ids {
                if let Some(offer) = self.take_offer(fw_key, &id.value) {
                    self.allocator.recover(
                        fw_key,
                        &offer.agent_id,
                        &offer.resources,
                        None,
                        self.clock.now(),
                    );
                }
            }
            let dropped = self.dropped_state(fw_key);
            for task in &launches {
                self.task_refused(fw_key, task, dropped, "REASON_INVALID_OFFERS", &problem);
            }
            self.allocation_wanted = true;
            return;
        }
        let Some(agent_key) = agent else {
            return;
        };
        let mut available = Resources::default();
        for id in &accept.offer_ids {
            if let Some(offer) = self.take_offer(fw_key, &id.value) {
                available.add(&offer.resources);
            }
        }
        let endpoint = self
            .agents
            .get(&agent_key)
            .map(|a| a.endpoint.clone())
            .unwrap_or_default();
        let Some(framework_info) = self.frameworks.get(fw_key).map(|f| f.info.clone()) else {
            return;
        };
        for task in launches {
            match self.validate_task(fw_key, &agent_key, &task, &available) {
                Err(message) => {
                    self.task_refused(
                        fw_key,
                        &task,
                        TaskState::TaskError,
                        "REASON_TASK_INVALID",
                        &message,
                    );
                }
                Ok(resources) => {
                    available.subtract(&resources);
                    self.launch(
                        fw_key,
                        &agent_key,
                        &endpoint,
                        &framework_info,
                        task,
                        resources,
                    );
                }
            }
        }
        let refuse = Filters::refuse_seconds(accept.filters.as_ref());
        if !available.is_empty() {
            self.allocator.recover(
                fw_key,
                &agent_key,
                &available,
                Some(Duration::from_secs_f64(refuse)),
                self.clock.now(),
            );
        }
        self.allocation_wanted = true;
    }

    fn validate_task(
        &self,
        fw_key: &str,
        agent: &str,
        task: &TaskInfo,
        available: &Resources,
    ) -> Result<Resources, String> {
        if task.task_id.value.is_empty() {
            return Err("task_id: must not be empty".into());
        }
        if let Some(existing) = self
            .frameworks
            .get(fw_key)
            .and_then(|f| f.tasks.get(&task.task_id.value))
        {
            return Err(format!(
                "task_id: {} is already in use (state {})",
                task.task_id.value,
                existing.state.as_str()
            ));
        }
        if task.agent_id.value != agent {
            return Err(format!(
                "agent_id: task names agent {} but the offer is for {agent}",
                task.agent_id.value
            ));
        }
        if task.executor.is_some() {
            return Err("executor: custom executors are not supported; use command".into());
        }
        let Some(command) = &task.command else {
            return Err(
                "command: required (a task needs exactly one of command or executor)".into(),
            );
        };
        let shell = command.shell.unwrap_or(true);
        if command.value.as_deref().unwrap_or("").is_empty()
            && (shell || command.arguments.is_empty())
        {
            return Err("command.value: required".into());
        }
        let resources =
            Resources::from_mesos(&task.resources).map_err(|e| format!("resources: {e}"))?;
        if !available.contains(&resources) {
            return Err(format!(
                "resources: task asks for {resources} but only {available} remain in the accepted offers"
            ));
        }
        Ok(resources)
    }

    fn task_refused(
        &mut self,
        fw_key: &str,
        task: &TaskInfo,
        state: TaskState,
        reason: &str,
        message: &str,
    ) {
        tracing::info!(framework = fw_key, task = %task.task_id, state = state.as_str(), message, "launch refused");
        let mut status = TaskStatus::new(task.task_id.clone(), state);
        status.source = Some(TaskSource::SourceMaster);
        status.reason = Some(reason.into());
        status.message = Some(message.into());
        status.agent_id = Some(task.agent_id.clone());
        if let Some(fw) = self.frameworks.get(fw_key) {
            self.out.send(fw, Event::update(status));
            self.counters.events_sent += 1;
        }
    }

    fn launch(
        &mut self,
        fw_key: &str,
        agent: &str,
        endpoint: &str,
        framework_info: &FrameworkInfo,
        info: TaskInfo,
        resources: Resources,
    ) {
        let task_key = info.task_id.value.clone();
        let task = Task {
            info: info.clone(),
            framework_id: FrameworkId::new(fw_key),
            agent_id: AgentId::new(agent),
            resources,
            state: TaskState::TaskStaging,
            status: None,
            statuses: vec![(TaskState::TaskStaging, self.clock.unix_secs(), None)],
            released: false,
            launch_acked: false,
            kill_requested: None,
        };
        self.out.apply(StoreOp::UpsertTask(Box::new(task_row(
            &task,
            self.clock.unix_ms(),
        ))));
        if let Some(fw) = self.frameworks.get_mut(fw_key) {
            fw.tasks.insert(task_key.clone(), task);
        }
        if let Some(a) = self.agents.get_mut(agent) {
            a.tasks.insert((fw_key.to_string(), task_key));
        }
        self.counters.tasks_launched += 1;
        self.out.launch(
            endpoint,
            LaunchTask {
                framework_id: FrameworkId::new(fw_key),
                framework_info: framework_info.clone(),
                task: info,
            },
        );
    }

    /// The agent could not be reached to launch a task.
    pub fn launch_failed(&mut self, fw_key: &str, task_key: &str, message: &str) {
        let Some(task) = self
            .frameworks
            .get(fw_key)
            .and_then(|f| f.tasks.get(task_key))
        else {
            return;
        };
        if task.state != TaskState::TaskStaging {
            return;
        }
        let mut status = TaskStatus::new(TaskId::new(task_key), self.dropped_state(fw_key));
        status.source = Some(TaskSource::SourceMaster);
        status.reason = Some("REASON_AGENT_DISCONNECTED".into());
        status.message = Some(message.into());
        status.agent_id = Some(task.agent_id.clone());
        self.apply_master_status(fw_key, status, true);
    }

    pub fn kill(&mut self, fw_key: &str, kill: &Kill) {
        let Some(fw) = self.frameworks.get_mut(fw_key) else {
            return;
        };
        let fw_id = fw.id.clone();
        match fw.tasks.get_mut(&kill.task_id.value) {
            Some(t) if !t.state.is_terminal() => {
                let msg = KillTask {
                    framework_id: fw_id,
                    task_id: kill.task_id.clone(),
                    kill_policy: kill.kill_policy.or(t.info.kill_policy),
                };
                // Remembered so an agent that is away now gets it when it re-registers.
                t.kill_requested = Some(msg.clone());
                if let Some(a) = self.agents.get(&t.agent_id.value) {
                    if a.status == AgentStatus::Active {
                        self.out.kill(&a.endpoint, msg);
                    }
                }
            }
            _ => {
                // Mesos answers a kill of an unknown task with TASK_LOST.
                let mut status = TaskStatus::new(kill.task_id.clone(), TaskState::TaskLost);
                status.source = Some(TaskSource::SourceMaster);
                status.reason = Some("REASON_RECONCILIATION".into());
                status.message = Some("Attempted to kill an unknown task".into());
                status.agent_id = kill.agent_id.clone();
                self.out.send(fw, Event::update(status));
                self.counters.events_sent += 1;
            }
        }
    }

    pub fn acknowledge(&mut self, fw_key: &str, ack: &Acknowledge) -> Result<(), CallError> {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD
            .decode(&ack.uuid)
            .is_err()
        {
            return Err(CallError::BadRequest(
                "acknowledge.uuid: not valid base64".into(),
            ));
        }
        let endpoint = self
            .agents
            .get(&ack.agent_id.value)
            .map(|a| a.endpoint.clone())
            .ok_or_else(|| {
                CallError::BadRequest(format!(
                    "acknowledge.agent_id: unknown agent {}",
                    ack.agent_id
                ))
            })?;
        self.out.acknowledge(
            &endpoint,
            AcknowledgeUpdate {
                framework_id: FrameworkId::new(fw_key),
                task_id: ack.task_id.clone(),
                uuid: ack.uuid.clone(),
            },
        );
        // A terminal update that is acknowledged retires the task.
        let Some(fw) = self.frameworks.get_mut(fw_key) else {
            return Ok(());
        };
        let done = fw.tasks.get(&ack.task_id.value).is_some_and(|t| {
            t.state.is_terminal()
                && t.status.as_ref().and_then(|s| s.uuid.as_deref()) == Some(ack.uuid.as_str())
        });
        if done {
            if let Some(t) = fw.tasks.remove(&ack.task_id.value) {
                if let Some(a) = self.agents.get_mut(&t.agent_id.value) {
                    a.tasks
                        .remove(&(fw_key.to_string(), ack.task_id.value.clone()));
                }
                complete(fw, t, self.config.completed_tasks_per_framework);
                self.out.apply(StoreOp::RemoveTask {
                    framework_id: fw_key.to_string(),
                    task_id: ack.task_id.value.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn reconcile(&mut self, fw_key: &str, reconcile: &Reconcile) {
        let Some(fw) = self.frameworks.get(fw_key) else {
            return;
        };
        let pa = fw.partition_aware();
        let mut updates = Vec::new();
        let known_status = |t: &Task| {
            let mut status = TaskStatus::new(t.info.task_id.clone(), t.state);
            status.source = Some(TaskSource::SourceMaster);
            status.reason = Some("REASON_RECONCILIATION".into());
            status.agent_id = Some(t.agent_id.clone());
            if let Some(s) = &t.status {
                status.healthy = s.healthy;
                status.message = s.message.clone();
                status.container_status = s.container_status.clone();
            }
            status
        };
        if reconcile.tasks.is_empty() {
            updates.extend(fw.tasks.values().map(known_status));
        }
        for rt in &reconcile.tasks {
            if let Some(t) = fw.tasks.get(&rt.task_id.value) {
                updates.push(known_status(t));
                continue;
            }
            if let Some(t) = fw
                .completed
                .iter()
                .rev()
                .find(|t| t.info.task_id == rt.task_id)
            {
                updates.push(known_status(t));
                continue;
            }
            let agent = rt.agent_id.as_ref().and_then(|a| self.agents.get(&a.value));
            let state = match agent.map(|a| a.status) {
                Some(AgentStatus::Recovering { .. }) => continue,
                Some(AgentStatus::Active) => TaskState::TaskGone,
                Some(AgentStatus::Unreachable { .. }) => TaskState::TaskUnreachable,
                None => TaskState::TaskUnknown,
            };
            let state = if pa { state } else { TaskState::TaskLost };
            let mut status = TaskStatus::new(rt.task_id.clone(), state);
            status.source = Some(TaskSource::SourceMaster);
            status.reason = Some("REASON_RECONCILIATION".into());
            status.agent_id = rt.agent_id.clone();
            updates.push(status);
        }
        for status in updates {
            self.out.send(fw, Event::update(status));
            self.counters.events_sent += 1;
        }
    }

    pub fn suppress(&mut self, fw_key: &str) {
        if let Some(fw) = self.frameworks.get_mut(fw_key) {
            fw.suppressed = true;
        }
        self.allocator.suppress(fw_key);
    }

    pub fn revive(&mut self, fw_key: &str) {
        if let Some(fw) = self.frameworks.get_mut(fw_key) {
            fw.suppressed = false;
        }
        self.allocator.revive(fw_key, self.clock.now());
        self.allocation_wanted = true;
    }

    /// TASK_DROPPED for PARTITION_AWARE frameworks; others only know TASK_LOST.
    fn dropped_state(&self, fw_key: &str) -> TaskState {
        match self.frameworks.get(fw_key) {
            Some(fw) if fw.partition_aware() => TaskState::TaskDropped,
            _ => TaskState::TaskLost,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Allocation

    /// Runs one allocation cycle and sends the resulting offers, one OFFERS event per framework.
    pub fn allocate(&mut self) {
        let started = self.clock.now();
        self.allocation_wanted = false;
        let allocations = self.allocator.allocate(started);
        self.counters.allocation_runs += 1;
        let mut per_framework: HashMap<String, Vec<Offer>> = HashMap::new();
        for alloc in allocations {
            let (Some(agent), Some(fw)) = (
                self.agents.get_mut(&alloc.agent),
                self.frameworks.get_mut(&alloc.framework),
            ) else {
                continue;
            };
            let id = OfferId::new(format!("{}-O{}", self.master_id, self.next_offer));
            self.next_offer += 1;
            agent.offers.insert(id.value.clone());
            fw.offers.insert(id.value.clone());
            fw.last_offer = Some((self.clock.unix_secs(), alloc.resources.clone()));
            let offer = Offer {
                id: id.clone(),
                framework_id: fw.id.clone(),
                agent_id: agent.id.clone(),
                hostname: agent.hostname.clone(),
                resources: alloc.resources.to_mesos(),
                attributes: agent.attributes.clone(),
                executor_ids: vec![],
            };
            self.offers.insert(
                id.value.clone(),
                OutstandingOffer {
                    id,
                    framework_id: alloc.framework.clone(),
                    agent_id: alloc.agent.clone(),
                    resources: alloc.resources,
                    created_secs: self.clock.unix_secs(),
                },
            );
            per_framework
                .entry(alloc.framework)
                .or_default()
                .push(offer);
        }
        for (fw_key, offers) in per_framework {
            self.counters.offers_made += offers.len() as u64;
            if let Some(fw) = self.frameworks.get(&fw_key) {
                self.out.send(fw, Event::offers(offers));
                self.counters.events_sent += 1;
            }
        }
        self.counters.last_allocation_secs = started.elapsed().as_secs_f64();
    }

    pub fn handle_internal(&mut self, msg: Internal) {
        match msg {
            Internal::LaunchFailed {
                framework_id,
                task_id,
                message,
            } => self.launch_failed(&framework_id, &task_id, &message),
            Internal::LaunchDelivered {
                framework_id,
                task_id,
            } => {
                if let Some(t) = self
                    .frameworks
                    .get_mut(&framework_id)
                    .and_then(|f| f.tasks.get_mut(&task_id))
                {
                    t.launch_acked = true;
                }
            }
        }
    }
}

fn fw_failover_expired(fw: &Framework, now: Instant) -> bool {
    match fw.disconnected_at {
        Some(at) if fw.conn.is_none() => {
            let timeout = fw.info.failover_timeout.unwrap_or(0.0).max(0.0);
            let timeout = Duration::try_from_secs_f64(timeout)
                .unwrap_or(Duration::MAX)
                .max(fw.failover_grace);
            now.duration_since(at) >= timeout
        }
        _ => false,
    }
}

fn complete(fw: &mut Framework, task: Task, keep: usize) {
    fw.completed.push_back(task);
    while fw.completed.len() > keep {
        fw.completed.pop_front();
    }
}

fn task_row(task: &Task, at_ms: i64) -> TaskRow {
    TaskRow {
        framework_id: task.framework_id.value.clone(),
        agent_id: task.agent_id.value.clone(),
        info: task.info.clone(),
        state: task.state,
        status: task.status.clone(),
        updated_at_ms: at_ms,
    }
}

/// The tasks of a LAUNCH_GROUP operation (`launch_group.task_group.tasks`), as far as they parse.
fn launch_group_tasks(op: &drove_proto::scheduler::Operation) -> Vec<TaskInfo> {
    op.launch_group
        .as_ref()
        .and_then(|g| g.get("task_group"))
        .and_then(|g| g.get("tasks"))
        .and_then(|t| t.as_array())
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| serde_json::from_value(t.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
