//! sqlx/SQLite persistence: apps, their versions, instances, the framework id, pushed apps
//! and their releases, and each app's journal (what the dashboard shows of its past: scaling
//! decisions, wakes, the last hour's samples). One writer task
//! applies writes in order, in batches; a caller that must not answer before its write is on
//! disk (an API change) waits for it, the scheduler's own bookkeeping does not.
//!
//! The master's guarantee: nothing queued is dropped. A batch that fails is retried
//! ([`QUICK_RETRIES`] more attempts, 0.1 s to 1 s apart); if it still fails the store is
//! *failed*. The changes in it that wait for their answer (an API change, whose caller has
//! changed nothing yet) are then refused, and the rest (what the scheduler already did) is
//! kept and retried every few seconds until the disk takes it. While failed, or while
//! [`QUEUE_LIMIT`] ops wait, [`Store::write`] refuses new changes at once (the API answers
//! 503), `/ping` is 503 with the reason, and `/metrics` says so.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
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
    /// A line of an app's past (`journal`): appended, then only the last `keep` of its kind
    /// are kept.
    Journal {
        app: String,
        kind: Journal,
        data: String,
        keep: usize,
    },
    /// Writes nothing: waiting for it waits for every write queued before it.
    Flush,
    /// Writes a timestamp: how a failed store finds out that the disk takes writes again.
    Probe,
}

/// The kinds of lines in an app's journal: what the dashboard shows of its past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// A scaling decision (by app id).
    Decision,
    /// A completed wake's timeline (by app id).
    Wake,
    /// A sample of the last hour (by route name).
    Sample,
}

impl Journal {
    fn name(self) -> &'static str {
        match self {
            Journal::Decision => "decision",
            Journal::Wake => "wake",
            Journal::Sample => "sample",
        }
    }

    fn parse(name: &str) -> Option<Journal> {
        [Journal::Decision, Journal::Wake, Journal::Sample]
            .into_iter()
            .find(|k| k.name() == name)
    }
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
    /// Every app's journal, `(app, kind, JSON)`, oldest first.
    pub journal: Vec<(String, Journal, String)>,
}

type Ack = oneshot::Sender<Result<(), String>>;

/// Ops waiting to be written beyond which no new change is taken.
pub const QUEUE_LIMIT: usize = 10_000;
/// Attempts after the first before a batch marks the store failed.
pub const QUICK_RETRIES: usize = 4;
/// Ops written per transaction, at most.
const BATCH: usize = 256;

#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<(Op, Option<Ack>)>,
    pool: SqlitePool,
    path: PathBuf,
    health: Arc<Health>,
}

/// Whether the writer keeps up.
struct Health {
    /// Ops queued or being written, not yet committed (or refused).
    pending: AtomicUsize,
    /// Set while the writer cannot commit: the last error.
    failure: Mutex<Option<String>>,
}

impl Health {
    fn set_failure(&self, error: Option<String>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }
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
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let snapshot = read(&pool, &path).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(Health {
            pending: AtomicUsize::new(0),
            failure: Mutex::new(None),
        });
        tokio::spawn(writer(pool.clone(), rx, health.clone(), path.clone()));
        Ok((
            Store {
                tx,
                pool,
                path,
                health,
            },
            snapshot,
        ))
    }

    fn send(&self, op: Op, ack: Option<Ack>) -> bool {
        self.health.pending.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.send((op, ack)).is_ok();
        if !sent {
            self.health.pending.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Queues a write of what already happened (the scheduler's bookkeeping): never refused,
    /// never dropped, written when the disk takes it.
    pub fn enqueue(&self, op: Op) {
        self.send(op, None);
    }

    /// Writes a change and waits until it is committed; refused at once while the store is
    /// failed or full, or when the writer gives up on it (the caller must then not apply it).
    pub async fn write(&self, op: Op) -> Result<(), StoreError> {
        if let Some(why) = self.unavailable() {
            return Err(StoreError::Write(why));
        }
        let (ack, done) = oneshot::channel();
        if !self.send(op, Some(ack)) {
            return Err(StoreError::Write("the store is closed".into()));
        }
        done.await
            .map_err(|_| StoreError::Write("the store is closed".into()))?
            .map_err(StoreError::Write)
    }

    /// Ops accepted but not yet committed.
    pub fn pending(&self) -> usize {
        self.health.pending.load(Ordering::SeqCst)
    }

    /// Whether the writer cannot commit (it keeps trying).
    pub fn failed(&self) -> bool {
        self.health
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Why no new change may be taken now (the store is failed, or its queue is full).
    pub fn unavailable(&self) -> Option<String> {
        let pending = self.pending();
        let path = self.path.display();
        let failure = self
            .health
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(error) = failure {
            return Some(format!(
                "the PaaS store: writing {path} failed: {error}; {pending} changes not yet written"
            ));
        }
        (pending >= QUEUE_LIMIT).then(|| {
            format!(
                "the PaaS store: {pending} changes waiting to be written to {path}, at the limit \
                 of {QUEUE_LIMIT}"
            )
        })
    }

    /// Appends a line to an app's journal when the store takes writes; history is not state,
    /// so while the store is failed or full it is left out rather than queued.
    pub fn journal(&self, app: &str, kind: Journal, data: String, keep: usize) {
        if self.unavailable().is_none() {
            self.enqueue(Op::Journal {
                app: app.to_string(),
                kind,
                data,
                keep,
            });
        }
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
    let journal = sqlx::query("SELECT app, kind, data FROM journal ORDER BY id")
        .fetch_all(pool)
        .await
        .map_err(err)?
        .iter()
        .filter_map(|r| {
            let kind = Journal::parse(&r.get::<String, _>(1))?;
            Some((r.get::<String, _>(0), kind, r.get::<String, _>(2)))
        })
        .collect();
    Ok(Snapshot {
        framework_id,
        apps,
        instances,
        push_apps,
        journal,
    })
}

async fn writer(
    pool: SqlitePool,
    mut rx: mpsc::UnboundedReceiver<(Op, Option<Ack>)>,
    health: Arc<Health>,
    path: PathBuf,
) {
    let path = path.display();
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut taken = batch.len();
        let quick = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(QUICK_RETRIES);
        let ops: Vec<&Op> = batch.iter().map(|(op, _)| op).collect();
        let first = (|| write_batch(&pool, &ops))
            .retry(quick)
            .notify(|e, after| {
                tracing::warn!(%path, error = %e, ops = ops.len(), retry_in = ?after,
                    "writing the PaaS state failed; retrying");
            })
            .await;
        match first {
            Ok(()) => {
                for (_, ack) in batch.drain(..) {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(()));
                    }
                }
            }
            Err(error) => {
                health.set_failure(Some(error.to_string()));
                tracing::error!(%path, %error, pending = health.pending.load(Ordering::SeqCst),
                    "writing the PaaS state keeps failing: refusing changes until it recovers");
                // Changes waiting for their answer are refused (their callers apply nothing),
                // those in this batch and those that come while the store fails; what already
                // happened is kept, in order, until the disk takes it.
                let why = format!("writing {path} failed: {error}");
                let mut kept = Vec::new();
                let sort = |op: Op, ack: Option<Ack>, kept: &mut Vec<Op>| match ack {
                    Some(ack) => {
                        let _ = ack.send(Err(why.clone()));
                    }
                    None => kept.push(op),
                };
                for (op, ack) in batch.drain(..) {
                    sort(op, ack, &mut kept);
                }
                let mut delays = ExponentialBuilder::default()
                    .with_min_delay(Duration::from_secs(1))
                    .with_max_delay(Duration::from_secs(5))
                    .without_max_times()
                    .build();
                // A real write is needed to know the disk is back, even with nothing kept.
                let probe = Op::Probe;
                loop {
                    while let Ok((op, ack)) = rx.try_recv() {
                        taken += 1;
                        sort(op, ack, &mut kept);
                    }
                    let ops: Vec<&Op> = kept.iter().chain(std::iter::once(&probe)).collect();
                    match write_batch(&pool, &ops).await {
                        Ok(()) => break,
                        Err(e) => {
                            health.set_failure(Some(e.to_string()));
                            let after = delays.next().unwrap_or(Duration::from_secs(5));
                            tracing::warn!(%path, error = %e, kept = kept.len(), retry_in = ?after,
                                "the PaaS store still failing");
                            tokio::time::sleep(after).await;
                        }
                    }
                }
                health.set_failure(None);
                tracing::info!(%path, "the PaaS store is writable again; taking changes");
            }
        }
        health.pending.fetch_sub(taken, Ordering::SeqCst);
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
                let route = crate::model::app::route_name(id).unwrap_or_default();
                sqlx::query("DELETE FROM journal WHERE app = $1 OR app = $2")
                    .bind(id)
                    .bind(route)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::Journal {
                app,
                kind,
                data,
                keep,
            } => {
                sqlx::query("INSERT INTO journal (app, kind, data) VALUES ($1, $2, $3)")
                    .bind(app)
                    .bind(kind.name())
                    .bind(data)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "DELETE FROM journal WHERE app = $1 AND kind = $2 AND id <= \
                     (SELECT id FROM journal WHERE app = $1 AND kind = $2 \
                      ORDER BY id DESC LIMIT 1 OFFSET $3)",
                )
                .bind(app)
                .bind(kind.name())
                .bind(i64::try_from(*keep).unwrap_or(i64::MAX))
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
            Op::Probe => {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('store_probe', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(crate::model::timestamp())
                .execute(&mut *tx)
                .await?;
            }
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
