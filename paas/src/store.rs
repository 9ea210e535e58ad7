//! sqlx/SQLite persistence: apps, their versions, instances, the framework id, pushed apps
//! and their releases, and each app's journal (what the dashboard shows of its past: scaling
//! decisions, wakes, the last hour's samples). One writer task
//! applies writes in order, in batches; a caller that must not answer before its write is on
//! disk (an API change) waits for it, the scheduler's own bookkeeping does not.
//!
//! Writes go through [`drove_store`], the writer the master's store uses too: nothing queued
//! is dropped; an API change ([`Store::write`]) waits for its commit and is refused while the
//! store is failed or full (the API answers 503, `/ping` is 503 with the reason, `/metrics`
//! says so); the scheduler's bookkeeping ([`Store::enqueue`]) is kept and retried until the
//! disk takes it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use drove_proto::paas::{Domain, Issuance, IssuanceState};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

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
    /// A custom domain claimed by an app.
    PutDomain(Domain),
    /// A custom domain let go (and its certificate).
    DeleteDomain(String),
    /// A domain's certificate, replacing the one it had.
    PutCertificate(StoredCert),
    /// A hostname's certificate and issuance go (an app's own, with the app).
    DeleteCertificate(String),
    /// Where a hostname's automatic certificate stands, replacing what it was.
    PutIssuance(String, Issuance),
    /// A setting: the ACME account's credentials, say.
    PutSetting(Setting),
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
    pub domains: Vec<Domain>,
    pub certificates: Vec<StoredCert>,
    /// `(hostname, issuance)`.
    pub issuance: Vec<(String, Issuance)>,
    /// The ACME accounts' settings.
    pub settings: Vec<Setting>,
}

/// A row of `settings`; its value may be a secret, which `Debug` leaves out.
#[derive(Clone)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("key", &self.key)
            .field("value", &"(secret)")
            .finish()
    }
}

/// A row of `certificates`: what the routers serve for `hostname` over HTTPS.
#[derive(Clone)]
pub struct StoredCert {
    pub hostname: String,
    pub chain_pem: String,
    pub key_pem: String,
    /// `operator`.
    pub source: String,
    pub not_after: String,
    pub issuer: String,
    pub added: String,
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert")
            .field("hostname", &self.hostname)
            .field("source", &self.source)
            .field("not_after", &self.not_after)
            .field("key_pem", &"(secret)")
            .finish()
    }
}

#[derive(Clone)]
pub struct Store {
    queue: drove_store::Queue<Op>,
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
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        let snapshot = read(&pool, &path).await?;
        let (queue, writer) = drove_store::open(pool.clone(), path.clone(), "the PaaS store", None);
        tokio::spawn(writer.run());
        Ok((Store { queue, pool, path }, snapshot))
    }

    /// Queues a write of what already happened (the scheduler's bookkeeping): never refused,
    /// never dropped, written when the disk takes it.
    pub fn enqueue(&self, op: Op) {
        self.queue.enqueue(op);
    }

    /// Writes a change and waits until it is committed; refused at once while the store is
    /// failed or full, or when the writer gives up on it (the caller must then not apply it).
    pub async fn write(&self, op: Op) -> Result<(), StoreError> {
        self.queue.write(op).await.map_err(StoreError::Write)
    }

    /// Ops accepted but not yet committed.
    pub fn pending(&self) -> usize {
        self.queue.health().pending()
    }

    /// Whether the writer cannot commit (it keeps trying).
    pub fn failed(&self) -> bool {
        self.queue.health().failed()
    }

    /// Why no new change may be taken now (the store is failed, or its queue is full).
    pub fn unavailable(&self) -> Option<String> {
        self.queue.health().unavailable()
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
    let domains = sqlx::query("SELECT hostname, app_id, added FROM domains ORDER BY hostname")
        .fetch_all(pool)
        .await
        .map_err(err)?
        .iter()
        .map(|r| Domain {
            hostname: r.get(0),
            app: r.get(1),
            added: r.get(2),
            certificate: None,
            issuance: None,
        })
        .collect();
    let certificates = sqlx::query(
        "SELECT hostname, chain_pem, key_pem, source, not_after, issuer, added \
         FROM certificates ORDER BY hostname",
    )
    .fetch_all(pool)
    .await
    .map_err(err)?
    .iter()
    .map(|r| StoredCert {
        hostname: r.get(0),
        chain_pem: r.get(1),
        key_pem: r.get(2),
        source: r.get(3),
        not_after: r.get(4),
        issuer: r.get(5),
        added: r.get(6),
    })
    .collect();
    let issuance = sqlx::query(
        "SELECT hostname, state, authority, error, attempts, next_attempt, updated \
         FROM issuance ORDER BY hostname",
    )
    .fetch_all(pool)
    .await
    .map_err(err)?
    .iter()
    .filter_map(|r| {
        let issuance = Issuance {
            state: IssuanceState::parse(&r.get::<String, _>(1))?,
            authority: r.get(2),
            error: r.get(3),
            attempts: u32::try_from(r.get::<i64, _>(4)).unwrap_or(u32::MAX),
            next: r.get(5),
            updated: r.get(6),
        };
        Some((r.get::<String, _>(0), issuance))
    })
    .collect();
    let settings = sqlx::query("SELECT key, value FROM settings WHERE key LIKE 'acme%'")
        .fetch_all(pool)
        .await
        .map_err(err)?
        .iter()
        .map(|r| Setting {
            key: r.get(0),
            value: r.get(1),
        })
        .collect();
    Ok(Snapshot {
        framework_id,
        apps,
        instances,
        push_apps,
        journal,
        domains,
        certificates,
        issuance,
        settings,
    })
}

impl drove_store::Ops for Op {
    fn write<'a>(
        tx: &'a mut SqliteConnection,
        ops: &'a [&'a Op],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        write_ops(tx, ops)
    }

    fn probe() -> Op {
        Op::Probe
    }
}

/// Deletes `hostname`'s rows from each of `tables`.
async fn delete_hostname(
    tx: &mut SqliteConnection,
    tables: &[&str],
    hostname: &str,
) -> Result<(), sqlx::Error> {
    for table in tables {
        sqlx::query(&format!("DELETE FROM {table} WHERE hostname = $1"))
            .bind(hostname)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Writes `ops` inside the writer's open transaction `tx`.
async fn write_ops(tx: &mut SqliteConnection, ops: &[&Op]) -> Result<(), sqlx::Error> {
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
                for table in ["certificates", "issuance"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE hostname IN \
                         (SELECT hostname FROM domains WHERE app_id = $1)"
                    ))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query("DELETE FROM domains WHERE app_id = $1")
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
            Op::PutDomain(d) => {
                sqlx::query("INSERT INTO domains (hostname, app_id, added) VALUES ($1, $2, $3)")
                    .bind(&d.hostname)
                    .bind(&d.app)
                    .bind(&d.added)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::DeleteDomain(hostname) => {
                delete_hostname(tx, &["certificates", "issuance", "domains"], hostname).await?;
            }
            Op::PutCertificate(c) => {
                sqlx::query(
                    "INSERT OR REPLACE INTO certificates \
                     (hostname, chain_pem, key_pem, source, not_after, issuer, added) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&c.hostname)
                .bind(&c.chain_pem)
                .bind(&c.key_pem)
                .bind(&c.source)
                .bind(&c.not_after)
                .bind(&c.issuer)
                .bind(&c.added)
                .execute(&mut *tx)
                .await?;
            }
            Op::DeleteCertificate(hostname) => {
                delete_hostname(tx, &["certificates", "issuance"], hostname).await?;
            }
            Op::PutIssuance(hostname, i) => {
                sqlx::query(
                    "INSERT OR REPLACE INTO issuance \
                     (hostname, state, authority, error, attempts, next_attempt, updated) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(hostname)
                .bind(i.state.as_str())
                .bind(&i.authority)
                .bind(&i.error)
                .bind(i64::from(i.attempts))
                .bind(&i.next)
                .bind(&i.updated)
                .execute(&mut *tx)
                .await?;
            }
            Op::PutSetting(Setting { key, value }) => {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
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
    Ok(())
}
