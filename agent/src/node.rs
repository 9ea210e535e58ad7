//! The running agent: its configuration and the state its loops share.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use drove_proto::agent::{AgentTask, AgentTaskState};
use drove_proto::mesos::{AgentId, Attribute, FrameworkId, TaskId};
use drove_proto::Resources;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::cgroups::CgroupManager;
use crate::checkpoint::{Meta, TaskRecord};
use crate::fetcher::Fetcher;
use crate::sandbox::TaskUser;

/// Tasks are keyed by (framework id, task id).
pub type TaskKey = (String, String);

pub fn key_of(framework_id: &FrameworkId, task_id: &TaskId) -> TaskKey {
    (framework_id.value.clone(), task_id.value.clone())
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the master, without a trailing slash.
    pub master: String,
    pub hostname: String,
    /// `http://<addr>` the master reaches this agent at.
    pub endpoint: String,
    pub work_dir: PathBuf,
    pub resources: Resources,
    pub attributes: Vec<Attribute>,
    /// None with `--isolation none`.
    pub cgroups: Option<CgroupManager>,
    pub cfs_quota: bool,
    pub task_user: TaskUser,
    pub executor_path: PathBuf,
    pub log_max_bytes: u64,
    /// Overrides the master's ping interval (seconds) when set.
    pub ping_interval: Option<f64>,
}

pub struct Node {
    pub config: Config,
    pub meta: Meta,
    tasks: Mutex<HashMap<TaskKey, TaskRecord>>,
    agent_id: Mutex<Option<AgentId>>,
    /// True while registered with the master (updates are only sent then).
    pub registered: watch::Sender<bool>,
    /// Wakes the status-update sender.
    pub status_wakeup: Notify,
    /// Asks the registration loop to re-register (the master answered 404 to a status update).
    pub reregister: Notify,
    pub client: reqwest::Client,
    pub fetcher: Fetcher,
    /// Cancelled when the agent stops; every loop and watcher listens to it.
    pub shutdown: CancellationToken,
}

impl Node {
    pub fn new(config: Config, meta: Meta, shutdown: CancellationToken) -> Node {
        let agent_id = meta.load_agent_id();
        let fetcher = Fetcher::new(config.work_dir.join("cache"));
        Node {
            config,
            meta,
            tasks: Mutex::new(HashMap::new()),
            agent_id: Mutex::new(agent_id),
            registered: watch::Sender::new(false),
            status_wakeup: Notify::new(),
            reregister: Notify::new(),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .connect_timeout(std::time::Duration::from_secs(3))
                .build()
                .unwrap_or_default(),
            fetcher,
            shutdown,
        }
    }

    pub fn tasks(&self) -> MutexGuard<'_, HashMap<TaskKey, TaskRecord>> {
        match self.tasks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn agent_id(&self) -> Option<AgentId> {
        match self.agent_id.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_agent_id(&self, id: AgentId) {
        if let Err(e) = self.meta.save_agent_id(&id) {
            tracing::error!(error = %e, "could not persist the agent id");
        }
        match self.agent_id.lock() {
            Ok(mut g) => *g = Some(id),
            Err(p) => *p.into_inner() = Some(id),
        }
    }

    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// Checkpoints a record (logging failures: the task goes on either way).
    pub fn checkpoint(&self, record: &TaskRecord) {
        if let Err(e) = self.meta.save_task(record) {
            tracing::error!(error = %e, task = %record.task.task_id, "checkpoint failed");
        }
    }

    /// Tasks to report when (re-)registering.
    pub fn agent_tasks(&self) -> Vec<AgentTask> {
        self.tasks()
            .values()
            .map(|r| AgentTask {
                framework_id: r.framework_id.clone(),
                task: r.task.clone(),
                state: r.state,
                status: r.latest.clone(),
            })
            .collect()
    }

    /// The read API's task list.
    pub fn task_states(&self) -> Vec<AgentTaskState> {
        let mut v: Vec<AgentTaskState> = self
            .tasks()
            .values()
            .map(|r| AgentTaskState {
                framework_id: r.framework_id.clone(),
                task_id: r.task.task_id.clone(),
                name: r.task.name.clone(),
                state: r.state,
                pid: r.task_pid,
                healthy: r.healthy,
                sandbox: r
                    .sandbox
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                pending_updates: r.pending.len(),
            })
            .collect();
        v.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        v
    }
}
