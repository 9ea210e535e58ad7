//! Durable master state in SQL (SQLite by default), schema in `migrations/master/`.
//!
//! Writes never block the master: callers queue a [`StoreOp`] and a single writer task applies
//! the queue in order, batching whatever has accumulated into one transaction. Reads happen once,
//! at start-up, to recover.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use drove_proto::mesos::{Attribute, FrameworkInfo, Resource, TaskInfo, TaskState, TaskStatus};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;

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

/// The queue handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<StoreOp>,
}

impl Store {
    /// Opens (creating and migrating) `<data_dir>/master.db`, reads the snapshot, and starts the
    /// writer task.
    pub async fn open(data_dir: &Path) -> Result<(Store, Snapshot, StoreWriter), StoreError> {
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
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("../migrations/master")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let snapshot = read_snapshot(&pool).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((Store { tx }, snapshot, StoreWriter { pool, rx }))
    }

    pub fn apply(&self, op: StoreOp) {
        // The writer only stops at shutdown; a write queued after that is moot.
        let _ = self.tx.send(op);
    }
}

/// The single writer; run it with [`StoreWriter::run`].
pub struct StoreWriter {
    pool: SqlitePool,
    rx: mpsc::UnboundedReceiver<StoreOp>,
}

impl StoreWriter {
    /// Applies queued ops until every [`Store`] handle is dropped.
    pub async fn run(mut self) {
        let mut batch = Vec::new();
        while self.rx.recv_many(&mut batch, 512).await > 0 {
            if let Err(e) = write_batch(&self.pool, &batch).await {
                tracing::error!(error = %e, ops = batch.len(), "persisting master state failed");
            }
            batch.clear();
        }
        self.pool.close().await;
    }
}

async fn write_batch(pool: &SqlitePool, ops: &[StoreOp]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for op in ops {
        match op {
            StoreOp::UpsertAgent(a) => {
                sqlx::query(
                    "INSERT INTO agents (id, hostname, endpoint, resources, attributes, registered_at, unreachable_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE SET hostname = $2, endpoint = $3, resources = $4,
                       attributes = $5, registered_at = $6, unreachable_at = $7",
                )
                .bind(&a.id)
                .bind(&a.hostname)
                .bind(&a.endpoint)
                .bind(to_json(&a.resources))
                .bind(to_json(&a.attributes))
                .bind(a.registered_at_ms)
                .bind(a.unreachable_at_ms)
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
        }
    }
    tx.commit().await
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
        "SELECT id, hostname, endpoint, resources, attributes, registered_at, unreachable_at FROM agents",
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
