//! sqlx/SQLite persistence: apps, their versions, instances, the framework id. One writer task
//! applies writes in order, in batches; a caller that must not answer before its write is on
//! disk (an API change) waits for it, the scheduler's own bookkeeping does not.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use backon::{ExponentialBuilder, Retryable};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("migrating {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: sqlx::Error },
    #[error("writing the PaaS state failed: {0}")]
    Write(String),
}

/// A row of `apps`.
#[derive(Debug, Clone)]
pub struct StoredApp {
    pub id: String,
    pub definition: String,
    pub version: String,
    pub config_version: String,
    pub scaling_version: String,
}

/// One write.
#[derive(Debug, Clone)]
pub enum Op {
    FrameworkId(String),
    /// The master removed the framework: the next start registers anew.
    ForgetFrameworkId,
    /// Upserts the app and records its version.
    PutApp(StoredApp),
    DeleteApp(String),
    PutInstance {
        task_id: String,
        app_id: String,
        data: String,
    },
    DeleteInstance(String),
    /// A pushed app's settings: (JSON, name).
    PutPushApp(String, String),
    /// A pushed app is destroyed: its settings and releases go.
    DeletePushApp(String),
    /// A pushed app's release (JSON).
    PutRelease {
        app: String,
        number: u32,
        data: String,
    },
    /// Writes nothing: waiting for it waits for every write queued before it.
    Flush,
}

/// What was on disk at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub framework_id: Option<String>,
    pub apps: Vec<StoredApp>,
    /// `(task_id, data)`.
    pub instances: Vec<(String, String)>,
    /// Pushed apps' settings, JSON.
    pub push_apps: Vec<String>,
}

type Ack = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<(Op, Option<Ack>)>,
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating and migrating) `<data_dir>/paas.db`, reads it, and starts the writer.
    pub async fn open(data_dir: &Path) -> Result<(Store, Snapshot), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("paas.db");
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
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("../migrations/paas")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let snapshot = read(&pool, &path).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(pool.clone(), rx));
        Ok((Store { tx, pool, path }, snapshot))
    }

    /// Queues a write; errors are logged by the writer.
    pub fn enqueue(&self, op: Op) {
        let _ = self.tx.send((op, None));
    }

    /// Writes and waits until it is committed.
    pub async fn write(&self, op: Op) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((op, Some(ack)))
            .map_err(|_| StoreError::Write("the store is closed".into()))?;
        done.await
            .map_err(|_| StoreError::Write("the store is closed".into()))?
            .map_err(StoreError::Write)
    }

    /// Waits until every write queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(Op::Flush).await
    }

    /// A pushed app's releases (JSON), oldest first.
    pub async fn releases(&self, app: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT data FROM releases WHERE app = $1 ORDER BY number")
            .bind(app)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StoreError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Every stored version of an app, oldest first.
    pub async fn versions(&self, app_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, definition FROM app_versions WHERE app_id = $1 ORDER BY version",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .collect())
    }
}

async fn read(pool: &SqlitePool, path: &Path) -> Result<Snapshot, StoreError> {
    let err = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let framework_id = sqlx::query("SELECT value FROM settings WHERE key = 'framework_id'")
        .fetch_optional(pool)
        .await
        .map_err(err)?
        .map(|r| r.get::<String, _>(0));
    let apps = sqlx::query(
        "SELECT id, definition, version, config_version, scaling_version FROM apps ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .map_err(err)?
    .iter()
    .map(|r| StoredApp {
        id: r.get(0),
        definition: r.get(1),
        version: r.get(2),
        config_version: r.get(3),
        scaling_version: r.get(4),
    })
    .collect();
    let instances = sqlx::query("SELECT task_id, data FROM instances")
        .fetch_all(pool)
        .await
        .map_err(err)?
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect();
    let push_apps = sqlx::query("SELECT data FROM push_apps ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    Ok(Snapshot {
        framework_id,
        apps,
        instances,
        push_apps,
    })
}

async fn writer(pool: SqlitePool, mut rx: mpsc::UnboundedReceiver<(Op, Option<Ack>)>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let ops: Vec<&Op> = batch.iter().map(|(op, _)| op).collect();
        let result = (|| write_batch(&pool, &ops))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(std::time::Duration::from_millis(50))
                    .with_max_delay(std::time::Duration::from_secs(1))
                    .with_max_times(5),
            )
            .notify(|e, after| tracing::warn!(error = %e, ?after, "PaaS store write retried"))
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = ops.len(), "persisting the PaaS state failed");
        }
        for (_, ack) in batch.drain(..) {
            if let Some(ack) = ack {
                let _ = ack.send(result.clone());
            }
        }
    }
}

/// Writes a batch in one transaction. A connection whose write failed is closed, never put
/// back: after a failed COMMIT sqlx 0.8 still counts the transaction as open, so the next
/// `begin` on that connection would only open a savepoint whose release writes nothing.
async fn write_batch(pool: &SqlitePool, ops: &[&Op]) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let result = write_ops(&mut conn, ops).await;
    if result.is_err() {
        let _ = conn.close().await;
    }
    result
}

async fn write_ops(conn: &mut sqlx::SqliteConnection, ops: &[&Op]) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    for op in ops {
        match op {
            Op::FrameworkId(id) => {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('framework_id', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Op::PutApp(a) => {
                sqlx::query(
                    "INSERT INTO apps (id, definition, version, config_version, scaling_version) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
                     definition = excluded.definition, version = excluded.version, \
                     config_version = excluded.config_version, \
                     scaling_version = excluded.scaling_version",
                )
                .bind(&a.id)
                .bind(&a.definition)
                .bind(&a.version)
                .bind(&a.config_version)
                .bind(&a.scaling_version)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO app_versions (app_id, version, definition) VALUES ($1, $2, $3) \
                     ON CONFLICT (app_id, version) DO NOTHING",
                )
                .bind(&a.id)
                .bind(&a.version)
                .bind(&a.definition)
                .execute(&mut *tx)
                .await?;
            }
            Op::DeleteApp(id) => {
                sqlx::query("DELETE FROM apps WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM app_versions WHERE app_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::PutInstance {
                task_id,
                app_id,
                data,
            } => {
                sqlx::query(
                    "INSERT INTO instances (task_id, app_id, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (task_id) DO UPDATE SET data = excluded.data",
                )
                .bind(task_id)
                .bind(app_id)
                .bind(data)
                .execute(&mut *tx)
                .await?;
            }
            Op::PutPushApp(data, name) => {
                sqlx::query(
                    "INSERT INTO push_apps (name, data) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                )
                .bind(name)
                .bind(data)
                .execute(&mut *tx)
                .await?;
            }
            Op::PutRelease { app, number, data } => {
                sqlx::query(
                    "INSERT INTO releases (app, number, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (app, number) DO UPDATE SET data = excluded.data",
                )
                .bind(app)
                .bind(i64::from(*number))
                .bind(data)
                .execute(&mut *tx)
                .await?;
            }
            Op::DeletePushApp(name) => {
                sqlx::query("DELETE FROM push_apps WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM releases WHERE app = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::Flush => {}
            Op::ForgetFrameworkId => {
                sqlx::query("DELETE FROM settings WHERE key = 'framework_id'")
                    .execute(&mut *tx)
                    .await?;
            }
            Op::DeleteInstance(task_id) => {
                sqlx::query("DELETE FROM instances WHERE task_id = $1")
                    .bind(task_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await
}
