//! What the agent persists under `<work-dir>/meta` so a restarted agent can recover:
//!
//! - `meta/agent_id`: the id the master gave at the first registration.
//! - `meta/tasks/<container-id>.json`: one [`TaskRecord`] per task (framework, TaskInfo,
//!   container/cgroup id, supervisor and task pids, latest state, unacknowledged updates),
//!   rewritten atomically on every change and removed once the task is terminal and all of its
//!   updates are acknowledged.
//! - `meta/containers/<container-id>/`: the supervisor's spec, its log, the task pid file and the
//!   exit-status file (kept out of the sandbox so the task cannot tamper with them).

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drove_proto::agent::StatusUpdate;
use drove_proto::mesos::{AgentId, FrameworkId, FrameworkInfo, TaskInfo, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::executor::write_atomic;
use crate::sandbox::TaskUser;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Why the agent is killing a task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillCause {
    /// The master asked (KillTask / ShutdownFramework).
    Requested { grace_ms: u64 },
    /// Too many consecutive health-check failures.
    Health,
    /// The cgroup's OOM killer fired.
    MemoryLimit,
}

/// One task as the agent tracks (and checkpoints) it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub framework_id: FrameworkId,
    pub framework_info: FrameworkInfo,
    pub task: TaskInfo,
    pub container_id: String,
    #[serde(default)]
    pub sandbox: Option<PathBuf>,
    /// Relative cgroup path (`drove/<container-id>`) when isolated.
    #[serde(default)]
    pub cgroup: Option<String>,
    #[serde(default)]
    pub user: Option<TaskUser>,
    #[serde(default)]
    pub ports: Vec<u64>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub executor_pid: Option<u32>,
    /// `/proc/<pid>/stat` start time of the supervisor, to survive pid reuse.
    #[serde(default)]
    pub executor_start: Option<u64>,
    #[serde(default)]
    pub task_pid: Option<u32>,
    pub state: TaskState,
    #[serde(default)]
    pub latest: Option<TaskStatus>,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub kill: Option<KillCause>,
    /// Status updates not yet acknowledged, oldest first; the head is the one in flight.
    #[serde(default)]
    pub pending: VecDeque<StatusUpdate>,
    /// Unix seconds when the task started running.
    #[serde(default)]
    pub started_at: Option<f64>,

    // Runtime-only state.
    #[serde(skip)]
    pub next_send: Option<Instant>,
    #[serde(skip)]
    pub backoff: Duration,
    #[serde(skip)]
    pub in_flight: bool,
    #[serde(skip)]
    pub cancel: Option<CancellationToken>,
    #[serde(skip)]
    pub watching: bool,
    #[serde(skip)]
    pub killing: bool,
}

impl TaskRecord {
    pub fn new(
        framework_id: FrameworkId,
        framework_info: FrameworkInfo,
        task: TaskInfo,
        container_id: String,
    ) -> TaskRecord {
        TaskRecord {
            framework_id,
            framework_info,
            task,
            container_id,
            sandbox: None,
            cgroup: None,
            user: None,
            ports: Vec::new(),
            env: Vec::new(),
            executor_pid: None,
            executor_start: None,
            task_pid: None,
            state: TaskState::TaskStaging,
            latest: None,
            healthy: None,
            kill: None,
            pending: VecDeque::new(),
            started_at: None,
            next_send: None,
            backoff: Duration::ZERO,
            in_flight: false,
            cancel: None,
            watching: false,
            killing: false,
        }
    }
}

/// The `meta` directory.
#[derive(Debug, Clone)]
pub struct Meta {
    dir: PathBuf,
}

impl Meta {
    pub fn open(work_dir: &Path) -> Result<Meta, CheckpointError> {
        let dir = work_dir.join("meta");
        for d in [dir.join("tasks"), dir.join("containers")] {
            fs::create_dir_all(&d).map_err(|source| CheckpointError::Io {
                path: d.clone(),
                source,
            })?;
        }
        Ok(Meta { dir })
    }

    pub fn container_dir(&self, container_id: &str) -> PathBuf {
        self.dir.join("containers").join(container_id)
    }

    fn task_file(&self, container_id: &str) -> PathBuf {
        self.dir.join("tasks").join(format!("{container_id}.json"))
    }

    pub fn load_agent_id(&self) -> Option<AgentId> {
        let text = fs::read_to_string(self.dir.join("agent_id")).ok()?;
        let id = text.trim();
        (!id.is_empty()).then(|| AgentId::new(id))
    }

    pub fn save_agent_id(&self, id: &AgentId) -> Result<(), CheckpointError> {
        let path = self.dir.join("agent_id");
        write_atomic(&path, id.value.as_bytes())
            .map_err(|source| CheckpointError::Io { path, source })
    }

    pub fn save_task(&self, record: &TaskRecord) -> Result<(), CheckpointError> {
        let path = self.task_file(&record.container_id);
        let bytes = serde_json::to_vec(record).map_err(|source| CheckpointError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes).map_err(|source| CheckpointError::Io { path, source })
    }

    /// Forgets a task: its record and its container directory (the sandbox stays).
    pub fn remove_task(&self, container_id: &str) {
        let _ = fs::remove_file(self.task_file(container_id));
        let _ = fs::remove_dir_all(self.container_dir(container_id));
    }

    /// Every checkpointed task; unreadable records are logged and skipped.
    pub fn load_tasks(&self) -> Vec<TaskRecord> {
        let dir = self.dir.join("tasks");
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<TaskRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable task checkpoint")
                }
            }
        }
        out
    }
}
