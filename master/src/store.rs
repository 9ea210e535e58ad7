//! Durable master state in SQL (SQLite by default), schema in `master/migrations/`.
//!
//! Writes never block the master: callers queue a [`StoreOp`] and a single writer task applies
//! the queue in order, batching whatever has accumulated into one transaction. Reads happen once,
//! at start-up, to recover.
//!
//! Writes go through [`drove_store`], the writer the PaaS's store uses too. A write is never
//! dropped: a batch that fails is retried ([`drove_store::QUICK_RETRIES`] more attempts, 0.1 s
//! to 1 s apart); if it still fails the store is *failed*, and the writer keeps it and what
//! queues behind it, in order, retrying every few seconds (at most
//! [`drove_store::FAILED_RETRY_MAX`] apart) until the disk takes it.
//!
//! The queue is bounded by refusal, not by the channel: [`Store::apply`] is called by the
//! cluster state machine under its mutex, so it must neither block nor refuse (refusing would
//! drop a change the master already made and maybe acknowledged). Instead the queue's depth is
//! counted, and [`StoreHealth::unavailable`] says why the master must not take new changes while
//! the store is failed or [`QUEUE_LIMIT`] ops are waiting. The HTTP faces check it before every
//! call that would queue a change (SUBSCRIBE, TEARDOWN, ACCEPT, ACKNOWLEDGE, agent registration,
//! status updates) and answer 503 instead of acknowledging what cannot be persisted; `/health`
//! turns 503 with the same reason. What is still queued then comes from changes already accepted
//! (timeouts, removals), bounded by the size of the cluster.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use drove_proto::mesos::{Attribute, FrameworkInfo, Resource, TaskInfo, TaskState, TaskStatus};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("migrating {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("reading {table}: {source}")]
    Read {
        table: &'static str,
        source: sqlx::Error,
    },
    #[error("row {key} of {table} holds bad JSON: {source}")]
    Json {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
}

/// One change to persist.
#[derive(Debug, Clone)]
pub enum StoreOp {
    UpsertAgent(AgentRow),
    SetAgentUnreachable {
        id: String,
        at_ms: Option<i64>,
    },
    RemoveAgent(String),
    UpsertFramework(FrameworkRow),
    RemoveFramework(String),
    UpsertTask(Box<TaskRow>),
    RemoveTask {
        framework_id: String,
        task_id: String,
    },
    /// Rewrites `store_probe`: how a failed store finds out the disk takes writes again.
    Probe,
}

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: String,
    pub hostname: String,
    pub endpoint: String,
    pub resources: Vec<Resource>,
    pub attributes: Vec<Attribute>,
    pub registered_at_ms: i64,
    pub unreachable_at_ms: Option<i64>,
    /// SHA-256 (hex) of the agent's key.
    pub key_hash: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FrameworkRow {
    pub id: String,
    pub info: FrameworkInfo,
    pub registered_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct TaskRow {
    pub framework_id: String,
    pub agent_id: String,
    pub info: TaskInfo,
    pub state: TaskState,
    pub status: Option<TaskStatus>,
    pub updated_at_ms: i64,
}

/// Everything recovered at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub agents: Vec<AgentRow>,
    pub frameworks: Vec<FrameworkRow>,
    pub tasks: Vec<TaskRow>,
}

/// Ops waiting to be written beyond which the master takes no new changes.
pub const QUEUE_LIMIT: usize = drove_store::QUEUE_LIMIT;
/// How long a write waits for the pool's one connection (reopened after a failed write).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the store keeps up: queue depth and the failure that stops the writer, if any.
/// Cheap to clone; shared by the store, its writer and the HTTP faces.
pub type StoreHealth = drove_store::Health;
/// The single writer; run it with `StoreWriter::run`.
pub type StoreWriter = drove_store::Writer<StoreOp>;

/// The queue handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    queue: drove_store::Queue<StoreOp>,
}

impl Store {
    /// Opens (creating and migrating) `<data_dir>/master.db`, reads the snapshot, and starts the
    /// writer task.
    pub async fn open(data_dir: &Path) -> Result<(Store, Snapshot, StoreWriter), StoreError> {
        Store::open_with_limit(data_dir, QUEUE_LIMIT).await
    }

    async fn open_with_limit(
        data_dir: &Path,
        limit: usize,
    ) -> Result<(Store, Snapshot, StoreWriter), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("master.db");
        let url = format!("sqlite://{}", path.display());
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // The writer is the pool's only user: waiting longer for its one connection means
            // reopening it keeps failing, so every attempt ends in bounded time.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let snapshot = read_snapshot(&pool).await?;
        let (queue, writer) = drove_store::open(pool, path, "the master store", Some(limit));
        Ok((Store { queue }, snapshot, writer))
    }

    /// Queues `op`; never blocks and never refuses (see the module doc for the bound).
    pub fn apply(&self, op: StoreOp) {
        self.queue.enqueue(op);
    }

    /// The store's health, for the HTTP faces.
    pub fn health(&self) -> StoreHealth {
        self.queue.health().clone()
    }
}

impl drove_store::Ops for StoreOp {
    fn write<'a>(
        tx: &'a mut SqliteConnection,
        ops: &'a [&'a StoreOp],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        write_ops(tx, ops)
    }

    fn probe() -> StoreOp {
        StoreOp::Probe
    }
}

/// Writes `ops` inside the writer's open transaction `tx`.
async fn write_ops(tx: &mut SqliteConnection, ops: &[&StoreOp]) -> Result<(), sqlx::Error> {
    for op in ops {
        match op {
            StoreOp::UpsertAgent(a) => {
                sqlx::query(
                    "INSERT INTO agents (id, hostname, endpoint, resources, attributes, registered_at, unreachable_at, key_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO UPDATE SET hostname = $2, endpoint = $3, resources = $4,
                       attributes = $5, registered_at = $6, unreachable_at = $7, key_hash = $8",
                )
                .bind(&a.id)
                .bind(&a.hostname)
                .bind(&a.endpoint)
                .bind(to_json(&a.resources))
                .bind(to_json(&a.attributes))
                .bind(a.registered_at_ms)
                .bind(a.unreachable_at_ms)
                .bind(&a.key_hash)
                .execute(&mut *tx)
                .await?;
            }
            StoreOp::SetAgentUnreachable { id, at_ms } => {
                sqlx::query("UPDATE agents SET unreachable_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            StoreOp::RemoveAgent(id) => {
                sqlx::query("DELETE FROM agents WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            StoreOp::UpsertFramework(f) => {
                sqlx::query(
                    "INSERT INTO frameworks (id, info, failover_timeout, registered_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET info = $2, failover_timeout = $3",
                )
                .bind(&f.id)
                .bind(to_json(&f.info))
                .bind(f.info.failover_timeout.unwrap_or(0.0))
                .bind(f.registered_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            StoreOp::RemoveFramework(id) => {
                sqlx::query("DELETE FROM tasks WHERE framework_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM frameworks WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            StoreOp::UpsertTask(t) => {
                let t = t.as_ref();
                sqlx::query(
                    "INSERT INTO tasks (framework_id, task_id, agent_id, info, state, status, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (framework_id, task_id) DO UPDATE SET agent_id = $3, info = $4,
                       state = $5, status = $6, updated_at = $7",
                )
                .bind(&t.framework_id)
                .bind(&t.info.task_id.value)
                .bind(&t.agent_id)
                .bind(to_json(&t.info))
                .bind(t.state.as_str())
                .bind(t.status.as_ref().map(to_json))
                .bind(t.updated_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            StoreOp::RemoveTask {
                framework_id,
                task_id,
            } => {
                sqlx::query("DELETE FROM tasks WHERE framework_id = $1 AND task_id = $2")
                    .bind(framework_id)
                    .bind(task_id)
                    .execute(&mut *tx)
                    .await?;
            }
            StoreOp::Probe => {
                sqlx::query(
                    "INSERT INTO store_probe (id, at_ms) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET at_ms = $1",
                )
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json {
        table,
        key: key.to_string(),
        source,
    })
}

async fn read_snapshot(pool: &SqlitePool) -> Result<Snapshot, StoreError> {
    let read = |table| move |source| StoreError::Read { table, source };
    let mut snap = Snapshot::default();
    let rows = sqlx::query(
        "SELECT id, hostname, endpoint, resources, attributes, registered_at, unreachable_at, key_hash \
         FROM agents",
    )
    .fetch_all(pool)
    .await
    .map_err(read("agents"))?;
    for row in rows {
        let id: String = row.try_get("id").map_err(read("agents"))?;
        let resources: String = row.try_get("resources").map_err(read("agents"))?;
        let attributes: String = row.try_get("attributes").map_err(read("agents"))?;
        snap.agents.push(AgentRow {
            hostname: row.try_get("hostname").map_err(read("agents"))?,
            endpoint: row.try_get("endpoint").map_err(read("agents"))?,
            resources: from_json("agents", &id, &resources)?,
            attributes: from_json("agents", &id, &attributes)?,
            registered_at_ms: row.try_get("registered_at").map_err(read("agents"))?,
            unreachable_at_ms: row.try_get("unreachable_at").map_err(read("agents"))?,
            key_hash: row.try_get("key_hash").map_err(read("agents"))?,
            id,
        });
    }
    let rows = sqlx::query("SELECT id, info, registered_at FROM frameworks")
        .fetch_all(pool)
        .await
        .map_err(read("frameworks"))?;
    for row in rows {
        let id: String = row.try_get("id").map_err(read("frameworks"))?;
        let info: String = row.try_get("info").map_err(read("frameworks"))?;
        snap.frameworks.push(FrameworkRow {
            info: from_json("frameworks", &id, &info)?,
            registered_at_ms: row.try_get("registered_at").map_err(read("frameworks"))?,
            id,
        });
    }
    let rows = sqlx::query(
        "SELECT framework_id, task_id, agent_id, info, state, status, updated_at FROM tasks",
    )
    .fetch_all(pool)
    .await
    .map_err(read("tasks"))?;
    for row in rows {
        let task_id: String = row.try_get("task_id").map_err(read("tasks"))?;
        let info: String = row.try_get("info").map_err(read("tasks"))?;
        let state: String = row.try_get("state").map_err(read("tasks"))?;
        let status: Option<String> = row.try_get("status").map_err(read("tasks"))?;
        let status = match status {
            Some(s) => Some(from_json::<TaskStatus>("tasks", &task_id, &s)?),
            None => None,
        };
        snap.tasks.push(TaskRow {
            framework_id: row.try_get("framework_id").map_err(read("tasks"))?,
            agent_id: row.try_get("agent_id").map_err(read("tasks"))?,
            info: from_json("tasks", &task_id, &info)?,
            state: TaskState::parse(&state).unwrap_or(TaskState::TaskLost),
            status,
            updated_at_ms: row.try_get("updated_at").map_err(read("tasks"))?,
        });
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drove_proto::mesos::{AgentId, TaskId};

    fn agent(id: &str) -> StoreOp {
        StoreOp::UpsertAgent(AgentRow {
            id: id.into(),
            hostname: "h".into(),
            endpoint: "http://127.0.0.1:1".into(),
            resources: vec![],
            attributes: vec![],
            registered_at_ms: 1,
            unreachable_at_ms: None,
            key_hash: None,
        })
    }

    fn framework(id: &str) -> StoreOp {
        let info: FrameworkInfo =
            serde_json::from_value(serde_json::json!({"user": "u", "name": id})).unwrap();
        StoreOp::UpsertFramework(FrameworkRow {
            id: id.into(),
            info,
            registered_at_ms: 1,
        })
    }

    /// Polls `done` every 50 ms for at most `within`.
    async fn wait_for(within: Duration, what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {within:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_failing_store_keeps_its_writes_says_why_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, writer) = Store::open(dir.path()).await.unwrap();
        let health = store.health();
        let handle = tokio::spawn(writer.run());
        store.apply(framework("f1"));
        wait_for(Duration::from_secs(5), "f1 written", || {
            health.pending() == 0
        })
        .await;

        // A second connection makes every agent insert fail, as a full or read-only disk would.
        let path = dir.path().join("master.db");
        let saboteur = SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query(
            "CREATE TRIGGER no_agents BEFORE INSERT ON agents
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END",
        )
        .execute(&saboteur)
        .await
        .unwrap();
        store.apply(agent("a1"));
        store.apply(framework("f2"));
        wait_for(Duration::from_secs(10), "store failed", || health.failed()).await;
        let why = health
            .unavailable()
            .expect("a failed store refuses changes");
        assert!(why.contains(&path.display().to_string()), "{why}");
        assert!(why.contains("disk says no"), "{why}");
        assert!(why.contains("changes not persisted"), "{why}");
        assert!(health.pending() >= 1);
        // Still failing: changes keep queuing behind the failed batch, in order.
        store.apply(framework("f3"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(health.failed());

        sqlx::query("DROP TRIGGER no_agents")
            .execute(&saboteur)
            .await
            .unwrap();
        saboteur.close().await;
        wait_for(
            drove_store::FAILED_RETRY_MAX + Duration::from_secs(5),
            "store recovered",
            || !health.failed() && health.pending() == 0,
        )
        .await;
        assert_eq!(health.unavailable(), None);

        drop(store);
        handle.await.unwrap();
        let (_store, snap, _writer) = Store::open(dir.path()).await.unwrap();
        assert_eq!(snap.agents.len(), 1, "the failed write was kept and made");
        let mut ids: Vec<_> = snap.frameworks.iter().map(|f| f.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["f1", "f2", "f3"]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_changes_until_drained() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, writer) = Store::open_with_limit(dir.path(), 3).await.unwrap();
        let health = store.health();
        store.apply(agent("a1"));
        store.apply(agent("a2"));
        assert_eq!(health.unavailable(), None);
        store.apply(agent("a3"));
        let why = health.unavailable().expect("a full queue refuses changes");
        assert!(why.contains("at the limit of 3"), "{why}");
        assert!(!health.failed());
        let handle = tokio::spawn(writer.run());
        wait_for(Duration::from_secs(5), "queue drained", || {
            health.unavailable().is_none()
        })
        .await;
        drop(store);
        handle.await.unwrap();
        let (_store, snap, _writer) = Store::open(dir.path()).await.unwrap();
        assert_eq!(snap.agents.len(), 3);
    }

    #[tokio::test]
    async fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, snap, writer) = Store::open(dir.path()).await.unwrap();
        assert!(snap.agents.is_empty());
        let handle = tokio::spawn(writer.run());
        store.apply(StoreOp::UpsertAgent(AgentRow {
            id: "a1".into(),
            hostname: "h".into(),
            endpoint: "http://127.0.0.1:1".into(),
            resources: vec![Resource::scalar("cpus", 2.0)],
            attributes: vec![],
            registered_at_ms: 1,
            unreachable_at_ms: None,
            key_hash: None,
        }));
        let info = TaskInfo {
            name: "t".into(),
            task_id: TaskId::new("t1"),
            agent_id: AgentId::new("a1"),
            resources: vec![],
            command: None,
            executor: None,
            health_check: None,
            kill_policy: None,
            labels: None,
            discovery: None,
            container: None,
            limits: Default::default(),
        };
        store.apply(StoreOp::UpsertTask(Box::new(TaskRow {
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            info,
            state: TaskState::TaskRunning,
            status: None,
            updated_at_ms: 2,
        })));
        drop(store);
        handle.await.unwrap();
        let (_store, snap, _writer) = Store::open(dir.path()).await.unwrap();
        assert_eq!(snap.agents.len(), 1);
        assert_eq!(snap.tasks.len(), 1);
        assert_eq!(snap.tasks[0].state, TaskState::TaskRunning);
    }
}
