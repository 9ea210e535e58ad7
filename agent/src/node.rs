//! The running agent: its configuration and the state its loops share.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use drove_proto::agent::{AgentTask, AgentTaskState};
use drove_proto::mesos::{AgentId, Attribute, FrameworkId, TaskId};
use drove_proto::Resources;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::cgroups::CgroupManager;
use crate::checkpoint::{Durable, KillCause, Meta, TaskRecord, Writer};
use crate::fetcher::Fetcher;

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
    /// `--isolation container`: the runtime, the task network and their settings.
    pub containers: Option<std::sync::Arc<crate::container::Containers>>,
    pub cfs_quota: bool,
    /// `pids.max` of every task cgroup; None: no limit.
    pub pids_max: Option<u64>,
    /// The cluster secret: sent to the master, required from it.
    pub cluster_secret: Option<String>,
    /// Bounds on each download.
    pub fetch_limits: crate::fetcher::FetchLimits,
    /// The task uids (see `sandbox`).
    pub task_uids: std::sync::Arc<crate::sandbox::TaskUids>,
    pub executor_path: PathBuf,
    pub log_max_bytes: u64,
    /// Whether cached archives are unpacked once and mounted under sandboxes (`layers`).
    pub artifact_layers: bool,
    /// Bounds on what ended sandboxes and unused layers keep (`gc`).
    pub sandbox_keep_bytes: u64,
    pub layers_keep_bytes: u64,
    /// How long a task's startup CPU boost lasts at most (None: no boost).
    pub startup_boost: Option<Duration>,
    /// Overrides the master's ping interval (seconds) when set.
    pub ping_interval: Option<f64>,
}

/// How long a kill for an unknown task, or a framework shutdown, is remembered for a launch
/// that arrives late.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// Kills and shutdowns that found nothing to kill (yet).
#[derive(Default)]
struct Tombstones {
    tasks: HashMap<TaskKey, (Instant, KillCause)>,
    frameworks: HashMap<String, Instant>,
}

impl Tombstones {
    fn prune(&mut self, now: Instant) {
        self.tasks
            .retain(|_, (at, _)| now.duration_since(*at) < TOMBSTONE_TTL);
        self.frameworks
            .retain(|_, at| now.duration_since(*at) < TOMBSTONE_TTL);
    }
}

/// Where the registration loop is; keeps 404s from causing back-to-back re-registrations.
#[derive(Default)]
struct RegState {
    /// Successful registrations so far.
    generation: u64,
    registering: bool,
    /// A re-registration was asked for and has not started yet.
    wanted: bool,
}

pub struct Node {
    pub config: Config,
    pub meta: Meta,
    writer: Writer,
    tasks: Mutex<HashMap<TaskKey, TaskRecord>>,
    tombstones: Mutex<Tombstones>,
    reg: Mutex<RegState>,
    agent_id: Mutex<Option<AgentId>>,
    /// The current registration's session, sent with every ping and status update.
    session: Mutex<Option<String>>,
    /// True while registered with the master (updates are only sent then).
    pub registered: watch::Sender<bool>,
    /// Wakes the status-update sender.
    pub status_wakeup: Notify,
    /// Asks the registration loop to re-register (the master answered 404 to a status update).
    pub reregister: Notify,
    pub client: reqwest::Client,
    pub fetcher: Fetcher,
    /// Artifacts unpacked once and mounted under sandboxes, when this agent can.
    pub layers: Option<crate::layers::Layers>,
    /// Asks for a collection of ended sandboxes (a task was forgotten).
    pub collect: Notify,
    /// Cancelled when the agent stops; every loop and watcher listens to it.
    pub shutdown: CancellationToken,
}

/// The `Authorization` header every call to the master carries when the cluster has a secret.
fn secret_header(secret: Option<&str>) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(Ok(mut v)) =
        secret.map(|s| reqwest::header::HeaderValue::from_str(&drove_proto::auth::bearer(s)))
    {
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    headers
}

impl Node {
    pub fn new(config: Config, meta: Meta, shutdown: CancellationToken) -> Node {
        let agent_id = meta.load_agent_id();
        let fetcher =
            Fetcher::with_limits(config.work_dir.join("cache"), config.fetch_limits.clone());
        let layers = if config.artifact_layers {
            crate::layers::Layers::probe(&config.work_dir)
        } else {
            None
        };
        let headers = secret_header(config.cluster_secret.as_deref());
        Node {
            config,
            writer: Writer::new(meta.clone()),
            meta,
            tasks: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(Tombstones::default()),
            reg: Mutex::new(RegState::default()),
            agent_id: Mutex::new(agent_id),
            session: Mutex::new(None),
            registered: watch::Sender::new(false),
            status_wakeup: Notify::new(),
            reregister: Notify::new(),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .connect_timeout(std::time::Duration::from_secs(3))
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
            fetcher,
            layers,
            collect: Notify::new(),
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

    /// Remembers the session the master gave this registration.
    pub fn set_session(&self, session: Option<String>) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = session;
    }

    /// The `drove-agent-session` header for calls to the master, if there is a session.
    pub fn session(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

    /// Checkpoints a record: the snapshot is taken now (normally under the tasks lock) and
    /// written by a background writer, newest snapshot winning, in order per task. Failures
    /// are logged (the task goes on either way). Await the result for durability.
    pub fn checkpoint(&self, record: &TaskRecord) -> Option<Durable> {
        self.writer.save(record)
    }

    /// Forgets a task's checkpoint (ordered after its pending writes); its sandbox is now an
    /// ended one, for the next collection.
    pub fn remove_checkpoint(&self, container_id: &str) -> Durable {
        self.collect.notify_one();
        self.writer.remove(container_id)
    }

    /// Waits until every checkpoint queued so far is on disk.
    pub async fn flush_checkpoints(&self) {
        self.writer.flush().await
    }

    fn tombstones_lock(&self) -> MutexGuard<'_, Tombstones> {
        match self.tombstones.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Remembers a kill for a task the agent does not know (yet). Call it with the tasks lock
    /// held (the order is tasks → tombstones), after finding no record.
    pub fn tombstone_task(&self, key: &TaskKey, cause: KillCause) {
        let now = Instant::now();
        let mut t = self.tombstones_lock();
        t.prune(now);
        t.tasks.insert(key.clone(), (now, cause));
    }

    /// Remembers a framework shutdown (tasks lock held, as for [`Node::tombstone_task`]).
    pub fn tombstone_framework(&self, framework_id: &str) {
        let now = Instant::now();
        let mut t = self.tombstones_lock();
        t.prune(now);
        t.frameworks.insert(framework_id.to_string(), now);
    }

    /// The kill a launch arriving now must apply at once, consuming a task tombstone (tasks
    /// lock held).
    pub fn take_tombstone(&self, key: &TaskKey, grace: Duration) -> Option<KillCause> {
        let now = Instant::now();
        let mut t = self.tombstones_lock();
        t.prune(now);
        if let Some((_, cause)) = t.tasks.remove(key) {
            return Some(cause);
        }
        t.frameworks
            .contains_key(&key.0)
            .then_some(KillCause::Requested {
                grace_ms: grace.as_millis() as u64,
            })
    }

    fn reg_lock(&self) -> MutexGuard<'_, RegState> {
        match self.reg.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The number of successful registrations so far; taken before a request so that its
    /// 404 can be told stale.
    pub fn registration_generation(&self) -> u64 {
        self.reg_lock().generation
    }

    /// A request sent during registration `seen` got 404. Asks for a re-registration unless
    /// one is already wanted or running, or one completed since the request was sent.
    /// Returns whether this call asked.
    pub fn request_reregistration(&self, seen: u64) -> bool {
        {
            let mut r = self.reg_lock();
            if r.registering || r.wanted || r.generation != seen {
                return false;
            }
            r.wanted = true;
        }
        self.registered.send_replace(false);
        self.reregister.notify_one();
        true
    }

    pub fn reregistration_wanted(&self) -> bool {
        self.reg_lock().wanted
    }

    pub fn registration_started(&self) {
        let mut r = self.reg_lock();
        r.registering = true;
        r.wanted = false;
    }

    pub fn registration_done(&self) -> u64 {
        let mut r = self.reg_lock();
        r.registering = false;
        r.wanted = false;
        r.generation += 1;
        r.generation
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    fn test_node(dir: &std::path::Path, delay: Duration) -> Arc<Node> {
        let config = Config {
            master: "http://127.0.0.1:1".into(),
            hostname: "127.0.0.1".into(),
            endpoint: "http://127.0.0.1:2".into(),
            work_dir: dir.to_path_buf(),
            resources: Resources::default(),
            attributes: Vec::new(),
            cgroups: None,
            containers: None,
            cfs_quota: true,
            pids_max: Some(1024),
            cluster_secret: None,
            fetch_limits: Default::default(),
            task_uids: std::sync::Arc::new(
                crate::sandbox::TaskUids::open(dir, crate::sandbox::DEFAULT_TASK_UIDS).unwrap(),
            ),
            executor_path: "/bin/false".into(),
            log_max_bytes: 1 << 20,
            artifact_layers: false,
            sandbox_keep_bytes: 1 << 30,
            layers_keep_bytes: 1 << 30,
            startup_boost: None,
            ping_interval: None,
        };
        let meta = Meta::open(dir).unwrap().with_write_delay(delay);
        Arc::new(Node::new(config, meta, CancellationToken::new()))
    }

    fn record(task: &str) -> TaskRecord {
        let info = serde_json::json!({"user": "root", "name": "fw"});
        let task_info = serde_json::json!({"name": task, "task_id": {"value": task},
            "agent_id": {"value": "a"}});
        TaskRecord::new(
            FrameworkId::new("fw"),
            serde_json::from_value(info).unwrap(),
            serde_json::from_value(task_info).unwrap(),
            format!("c-{task}"),
        )
    }

    /// A slow disk must not stall everyone waiting for the tasks lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoint_io_happens_off_the_tasks_lock() {
        let dir = tempfile::tempdir().unwrap();
        let node = test_node(dir.path(), Duration::from_millis(400));
        let rec = record("t1");
        let writer = {
            let node = node.clone();
            let rec = rec.clone();
            // Like an async worker thread of the agent's runtime.
            let rt = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let _rt = rt.enter();
                let mut tasks = node.tasks();
                tasks.insert(("fw".into(), "t1".into()), rec.clone());
                node.checkpoint(&rec);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        drop(node.tasks());
        let waited = t0.elapsed();
        writer.join().unwrap();
        assert!(
            waited < Duration::from_millis(150),
            "the tasks lock was held for {waited:?} by a checkpoint write"
        );
    }

    /// Snapshots are written in order per task and the newest wins; a removal is ordered
    /// after the writes before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_are_ordered_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let node = test_node(dir.path(), Duration::from_millis(20));
        let mut rec = record("t2");
        for i in 0..50 {
            rec.started_at = Some(f64::from(i));
            node.checkpoint(&rec);
        }
        node.flush_checkpoints().await;
        let loaded = node.meta.load_tasks();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].started_at, Some(49.0));

        let other = record("t3");
        node.checkpoint(&other);
        for i in 50..60 {
            rec.started_at = Some(f64::from(i));
            node.checkpoint(&rec);
        }
        node.remove_checkpoint(&rec.container_id).wait().await;
        node.flush_checkpoints().await;
        let loaded = node.meta.load_tasks();
        assert_eq!(loaded.len(), 1, "a stale write resurrected a removed task");
        assert_eq!(loaded[0].task.task_id.value, "t3");
        // Durable::wait returns once that write (or a newer one) is on disk.
        let mut last = record("t4");
        last.started_at = Some(7.0);
        node.checkpoint(&last).unwrap().wait().await;
        assert!(node
            .meta
            .load_tasks()
            .iter()
            .any(|r| r.task.task_id.value == "t4" && r.started_at == Some(7.0)));
    }
}
