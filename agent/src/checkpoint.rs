//! What the agent persists under `<work-dir>/meta` so a restarted agent can recover:
//!
//! - `meta/agent_id`: the id the master gave at the first registration.
//! - `meta/agent_key`: the key that came with it (mode 0600), needed to re-register the id.
//! - `meta/tasks/<container-id>.json`: one [`TaskRecord`] per task (framework, TaskInfo,
//!   container/cgroup id, supervisor and task pids, latest state, unacknowledged updates),
//!   rewritten atomically on every change and removed once the task is terminal and all of its
//!   updates are acknowledged.
//! - `meta/containers/<container-id>/`: the supervisor's spec, its log, the task pid file and the
//!   exit-status file (kept out of the sandbox so the task cannot tamper with them).

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use drove_proto::agent::StatusUpdate;
use drove_proto::mesos::{AgentId, FrameworkId, FrameworkInfo, TaskInfo, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
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
    /// `/proc/<pid>/stat` start time of the task process, read when it was first seen as the
    /// supervisor's child; the agent signals that pid (or its process group) only while a
    /// process with this start time holds it.
    #[serde(default)]
    pub task_start: Option<u64>,
    /// The task's process group (the task is its leader), checked alongside `task_start`.
    #[serde(default)]
    pub task_pgid: Option<u32>,
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
    /// The runtime's id of the task's container (`--isolation container`).
    #[serde(default)]
    pub runtime_id: Option<String>,
    /// The task's own network namespace and address (a container not on the host's network).
    #[serde(default)]
    pub network: Option<crate::container::Attachment>,

    // Runtime-only state.
    /// How long each container step of its launch took (network, bundle, runtime), reported
    /// with TASK_RUNNING as `drove.io/step/<name>` labels (milliseconds) for wake timelines.
    #[serde(skip)]
    pub steps: Vec<(&'static str, Duration)>,
    /// When its supervisor was spawned (the runtime step runs from here to its process seen).
    #[serde(skip)]
    pub spawned: Option<Instant>,
    #[serde(skip)]
    pub next_send: Option<Instant>,
    /// Failed sends of the head of `pending` in a row (its next is after
    /// [`crate::status::retry_delay`] of this).
    #[serde(skip)]
    pub failed_sends: u32,
    #[serde(skip)]
    pub in_flight: bool,
    #[serde(skip)]
    pub cancel: Option<CancellationToken>,
    #[serde(skip)]
    pub watching: bool,
    #[serde(skip)]
    pub killing: bool,
    /// Cancelled by a kill while the task is launching (aborts a fetch in progress).
    #[serde(skip)]
    pub launch_abort: CancellationToken,
    /// The launcher still owns the record (its container may need cleaning up), so an
    /// acknowledgement must not forget it yet.
    #[serde(skip)]
    pub launching: bool,
    /// The checkpoint holding the newest queued update; the update is sent once it is on disk.
    #[serde(skip)]
    pub durable: Option<Durable>,
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
            task_start: None,
            task_pgid: None,
            state: TaskState::TaskStaging,
            latest: None,
            healthy: None,
            kill: None,
            pending: VecDeque::new(),
            started_at: None,
            runtime_id: None,
            network: None,
            steps: Vec::new(),
            spawned: None,
            next_send: None,
            failed_sends: 0,
            in_flight: false,
            cancel: None,
            watching: false,
            killing: false,
            launch_abort: CancellationToken::new(),
            launching: false,
            durable: None,
        }
    }

    /// Something (launcher or watcher) still works on this task; it must not be forgotten.
    pub fn busy(&self) -> bool {
        self.watching || self.launching
    }
}

/// The `meta` directory.
#[derive(Debug, Clone)]
pub struct Meta {
    dir: PathBuf,
    /// Test hook: an artificial delay in every task write (a slow disk).
    write_delay: Option<Duration>,
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
        Ok(Meta {
            dir,
            write_delay: None,
        })
    }

    /// Test hook: makes every task checkpoint write take at least `delay`.
    #[doc(hidden)]
    pub fn with_write_delay(mut self, delay: Duration) -> Meta {
        self.write_delay = Some(delay);
        self
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

    pub fn load_agent_key(&self) -> Option<String> {
        let text = fs::read_to_string(self.dir.join("agent_key")).ok()?;
        let key = text.trim();
        (!key.is_empty()).then(|| key.to_string())
    }

    /// Saves the agent key, readable by root only (the temporary file is created 0600).
    pub fn save_agent_key(&self, key: &str) -> Result<(), CheckpointError> {
        let path = self.dir.join("agent_key");
        write_atomic(&path, key.as_bytes()).map_err(|source| CheckpointError::Io { path, source })
    }

    pub fn save_task(&self, record: &TaskRecord) -> Result<(), CheckpointError> {
        let bytes = self.encode_task(record)?;
        self.save_task_bytes(&record.container_id, &bytes)
    }

    /// A record as it is written to disk.
    pub fn encode_task(&self, record: &TaskRecord) -> Result<Vec<u8>, CheckpointError> {
        serde_json::to_vec(record).map_err(|source| CheckpointError::Json {
            path: self.task_file(&record.container_id),
            source,
        })
    }

    /// Writes an encoded record atomically (temp file, fsync, rename).
    pub fn save_task_bytes(&self, container_id: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        if let Some(d) = self.write_delay {
            std::thread::sleep(d);
        }
        let path = self.task_file(container_id);
        write_atomic(&path, bytes).map_err(|source| CheckpointError::Io { path, source })
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

/// One queued change to a task's checkpoint.
enum Op {
    Save(Vec<u8>),
    Remove,
}

/// Per-container queue state: only the newest op is kept (older ones are superseded).
struct Slot {
    next_seq: u64,
    latest: Option<(u64, Op)>,
    writing: bool,
    /// The sequence number of the last op performed.
    written: watch::Sender<u64>,
}

struct WriterInner {
    meta: Meta,
    slots: Mutex<HashMap<String, Slot>>,
}

/// Writes task checkpoints off the caller's thread (and off the agent's tasks lock).
///
/// Per container at most one write is in progress; a newer snapshot submitted meanwhile
/// replaces any older one still queued, so the newest snapshot always ends up on disk and
/// writes of one task are never reordered. Removal goes through the same queue, so a stale
/// write can never resurrect a forgotten task.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<WriterInner>,
}

/// A queued write; [`Durable::wait`] returns once it (or a newer one) is on disk.
#[derive(Debug, Clone)]
pub struct Durable {
    seq: u64,
    written: watch::Receiver<u64>,
}

impl Durable {
    pub async fn wait(mut self) {
        let seq = self.seq;
        // An error means the slot was dropped, which happens only after its last op ran.
        let _ = self.written.wait_for(|w| *w >= seq).await;
    }
}

impl Writer {
    pub fn new(meta: Meta) -> Writer {
        Writer {
            inner: Arc::new(WriterInner {
                meta,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        match self.inner.slots.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Queues a snapshot of `record` (encoding it now, writing it later).
    pub fn save(&self, record: &TaskRecord) -> Option<Durable> {
        match self.inner.meta.encode_task(record) {
            Ok(bytes) => Some(self.submit(&record.container_id, Op::Save(bytes))),
            Err(e) => {
                tracing::error!(error = %e, task = %record.task.task_id, "checkpoint failed");
                None
            }
        }
    }

    /// Queues the removal of a task's record and container directory.
    pub fn remove(&self, container_id: &str) -> Durable {
        self.submit(container_id, Op::Remove)
    }

    fn submit(&self, container_id: &str, op: Op) -> Durable {
        let spawn = {
            let mut slots = self.slots();
            let slot = slots
                .entry(container_id.to_string())
                .or_insert_with(|| Slot {
                    next_seq: 0,
                    latest: None,
                    writing: false,
                    written: watch::Sender::new(0),
                });
            slot.next_seq += 1;
            let seq = slot.next_seq;
            slot.latest = Some((seq, op));
            let durable = Durable {
                seq,
                written: slot.written.subscribe(),
            };
            let spawn = !slot.writing;
            slot.writing = true;
            (durable, spawn)
        };
        let (durable, spawn) = spawn;
        if spawn {
            let this = self.clone();
            let id = container_id.to_string();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || this.drain(&id));
                }
                Err(_) => this.drain(&id),
            }
        }
        durable
    }

    /// Performs the queued ops of one container, newest first-come, until none is left.
    fn drain(&self, container_id: &str) {
        loop {
            let next = {
                let mut slots = self.slots();
                let Some(slot) = slots.get_mut(container_id) else {
                    return;
                };
                match slot.latest.take() {
                    Some(next) => next,
                    None => {
                        slot.writing = false;
                        return;
                    }
                }
            };
            let (seq, op) = next;
            let removed = matches!(op, Op::Remove);
            match op {
                Op::Save(bytes) => {
                    if let Err(e) = self.inner.meta.save_task_bytes(container_id, &bytes) {
                        tracing::error!(error = %e, container = container_id, "checkpoint failed");
                    }
                }
                Op::Remove => self.inner.meta.remove_task(container_id),
            }
            let mut slots = self.slots();
            if let Some(slot) = slots.get_mut(container_id) {
                slot.written.send_replace(seq);
                if removed && slot.latest.is_none() {
                    slot.writing = false;
                    slots.remove(container_id);
                    return;
                }
            }
        }
    }

    /// Waits until everything queued so far is on disk.
    pub async fn flush(&self) {
        let pending: Vec<Durable> = self
            .slots()
            .values()
            .map(|s| Durable {
                seq: s.next_seq,
                written: s.written.subscribe(),
            })
            .collect();
        for d in pending {
            d.wait().await;
        }
    }
}
