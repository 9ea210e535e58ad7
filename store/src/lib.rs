//! The one SQLite writer both of drove's stores use (the master's and the PaaS's): a single
//! task applies queued ops in order, batching what has accumulated into one transaction.
//!
//! **Nothing queued is dropped.** A batch that fails is retried ([`QUICK_RETRIES`] more
//! attempts, 0.1 s to 1 s apart); if it still fails the store is *failed*. Ops that wait for
//! their answer ([`Queue::write`]: a change whose caller has changed nothing yet) are then
//! refused, and the rest ([`Queue::enqueue`]: what already happened) is kept, in order, and
//! retried every few seconds (at most [`FAILED_RETRY_MAX`] apart) until the disk takes it,
//! together with a [`Ops::probe`] write, so the store learns the disk is back even when nothing
//! is kept.
//!
//! **Changes are refused while the store cannot take them**: while failed, or while
//! [`QUEUE_LIMIT`] ops wait, [`Health::unavailable`] says why, [`Queue::write`] refuses at once,
//! and the component's HTTP faces answer 503 with that reason. `enqueue` never blocks and never
//! refuses (its callers hold the state's lock and have already acted); what it queues is bounded
//! by the size of the state.
//!
//! A connection whose write failed is closed, never reused: after a failed COMMIT, sqlx 0.8
//! still counts the transaction as open (sqlx issue #3742), so the next `begin` on it would be a
//! savepoint whose release commits nothing while reporting success. A fresh connection also
//! reopens the file read-write once the disk lets it.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

/// Ops waiting to be written beyond which no new change is taken.
pub const QUEUE_LIMIT: usize = 10_000;
/// Attempts after the first before a batch marks the store failed.
pub const QUICK_RETRIES: usize = 4;
const QUICK_RETRY_MIN: Duration = Duration::from_millis(100);
const QUICK_RETRY_MAX: Duration = Duration::from_secs(1);
const FAILED_RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the store is failed.
pub const FAILED_RETRY_MAX: Duration = Duration::from_secs(5);
/// Ops written per transaction, at most.
const BATCH: usize = 256;

/// A store's ops: how a batch of them is written.
pub trait Ops: Sized + Send + Sync + 'static {
    /// Writes `ops`, in order, inside the open transaction `tx` (the writer commits it).
    fn write<'a>(
        tx: &'a mut SqliteConnection,
        ops: &'a [&'a Self],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// A write that changes nothing anyone reads: how a failed store finds out that the disk
    /// takes writes again.
    fn probe() -> Self;
}

type Ack = oneshot::Sender<Result<(), String>>;

/// Whether the writer keeps up; cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<HealthInner>);

struct HealthInner {
    /// Names the store in what it says: "the master store", "the PaaS store".
    what: &'static str,
    path: PathBuf,
    limit: usize,
    /// Ops queued or being written, not yet committed (or refused).
    pending: AtomicUsize,
    /// Set while the writer cannot commit: the last error.
    failure: Mutex<Option<String>>,
}

impl Health {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Ops accepted but not yet committed.
    pub fn pending(&self) -> usize {
        self.0.pending.load(Ordering::SeqCst)
    }

    /// Whether the writer cannot commit (it keeps trying).
    pub fn failed(&self) -> bool {
        self.failure().is_some()
    }

    fn failure(&self) -> Option<String> {
        self.0
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_failure(&self, error: Option<String>) {
        *self.0.failure.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Why no new change may be taken now (the store is failed, or its queue is full); `None`
    /// when it may.
    pub fn unavailable(&self) -> Option<String> {
        let (what, pending) = (self.0.what, self.pending());
        let path = self.0.path.display();
        if let Some(error) = self.failure() {
            return Some(format!(
                "{what}: writing {path} failed: {error}; {pending} changes not persisted"
            ));
        }
        (pending >= self.0.limit).then(|| {
            format!(
                "{what}: {pending} changes waiting to be written to {path}, at the limit of {}",
                self.0.limit
            )
        })
    }
}

/// The queue's handle; cheap to clone. The writer stops once every handle is dropped.
pub struct Queue<O> {
    tx: mpsc::UnboundedSender<(O, Option<Ack>)>,
    health: Health,
}

impl<O> Clone for Queue<O> {
    fn clone(&self) -> Self {
        Queue {
            tx: self.tx.clone(),
            health: self.health.clone(),
        }
    }
}

impl<O: Ops> Queue<O> {
    fn send(&self, op: O, ack: Option<Ack>) -> bool {
        self.health.0.pending.fetch_add(1, Ordering::SeqCst);
        // The writer only stops at shutdown; a write queued after that is moot.
        let sent = self.tx.send((op, ack)).is_ok();
        if !sent {
            self.health.0.pending.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Queues a write of what already happened: never blocks, never refused, never dropped;
    /// written when the disk takes it.
    pub fn enqueue(&self, op: O) {
        self.send(op, None);
    }

    /// Writes a change and waits until it is committed. Refused (with why) at once while the
    /// store is failed or full, or when the writer gives up on it: the caller must then not
    /// apply it.
    pub async fn write(&self, op: O) -> Result<(), String> {
        if let Some(why) = self.health.unavailable() {
            return Err(why);
        }
        let (ack, done) = oneshot::channel();
        if !self.send(op, Some(ack)) {
            return Err(format!("{} is closed", self.health.0.what));
        }
        done.await
            .map_err(|_| format!("{} is closed", self.health.0.what))?
    }

    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// The single writer; run it with [`Writer::run`].
pub struct Writer<O> {
    pool: SqlitePool,
    rx: mpsc::UnboundedReceiver<(O, Option<Ack>)>,
    health: Health,
}

/// A queue and its writer over `pool` (`path` is its file, `what` names it in messages;
/// [`QUEUE_LIMIT`] unless `limit` says otherwise).
pub fn open<O: Ops>(
    pool: SqlitePool,
    path: PathBuf,
    what: &'static str,
    limit: Option<usize>,
) -> (Queue<O>, Writer<O>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let health = Health(Arc::new(HealthInner {
        what,
        path,
        limit: limit.unwrap_or(QUEUE_LIMIT),
        pending: AtomicUsize::new(0),
        failure: Mutex::new(None),
    }));
    let writer = Writer {
        pool,
        rx,
        health: health.clone(),
    };
    (Queue { tx, health }, writer)
}

impl<O: Ops> Writer<O> {
    /// Writes queued ops until every [`Queue`] handle is dropped; then closes the pool.
    pub async fn run(mut self) {
        let health = &self.health;
        let (what, path) = (health.0.what, health.0.path.display());
        let mut batch = Vec::new();
        while self.rx.recv_many(&mut batch, BATCH).await > 0 {
            let mut taken = batch.len();
            let quick = ExponentialBuilder::default()
                .with_min_delay(QUICK_RETRY_MIN)
                .with_max_delay(QUICK_RETRY_MAX)
                .with_max_times(QUICK_RETRIES);
            let ops: Vec<&O> = batch.iter().map(|(op, _)| op).collect();
            let first = (|| write_batch(&self.pool, &ops))
                .retry(quick)
                .notify(|e, after| {
                    tracing::warn!(%path, error = %e, ops = ops.len(), retry_in = ?after,
                        "writing {what} failed; retrying");
                })
                .await;
            drop(ops);
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
                    tracing::error!(%path, %error, pending = health.pending(),
                        "writing {what} keeps failing: refusing changes until it recovers");
                    let why = format!("{what}: writing {path} failed: {error}");
                    let mut kept = Vec::new();
                    let sort = |op: O, ack: Option<Ack>, kept: &mut Vec<O>| match ack {
                        Some(ack) => {
                            let _ = ack.send(Err(why.clone()));
                        }
                        None => kept.push(op),
                    };
                    for (op, ack) in batch.drain(..) {
                        sort(op, ack, &mut kept);
                    }
                    let mut delays = ExponentialBuilder::default()
                        .with_min_delay(FAILED_RETRY_MIN)
                        .with_max_delay(FAILED_RETRY_MAX)
                        .without_max_times()
                        .build();
                    let probe = O::probe();
                    loop {
                        while let Ok((op, ack)) = self.rx.try_recv() {
                            taken += 1;
                            sort(op, ack, &mut kept);
                        }
                        let ops: Vec<&O> = kept.iter().chain(std::iter::once(&probe)).collect();
                        match write_batch(&self.pool, &ops).await {
                            Ok(()) => break,
                            Err(e) => {
                                health.set_failure(Some(e.to_string()));
                                let after = delays.next().unwrap_or(FAILED_RETRY_MAX);
                                tracing::warn!(%path, error = %e, kept = kept.len(),
                                    retry_in = ?after, "{what} still failing");
                                tokio::time::sleep(after).await;
                            }
                        }
                    }
                    health.set_failure(None);
                    tracing::info!(%path, "{what} is writable again; taking changes");
                }
            }
            health.0.pending.fetch_sub(taken, Ordering::SeqCst);
        }
        self.pool.close().await;
    }
}

/// Writes `ops` in one transaction on a connection of the pool, closing the connection when
/// the write fails (see the crate's doc).
async fn write_batch<O: Ops>(pool: &SqlitePool, ops: &[&O]) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let written = async {
        let mut tx = Connection::begin(&mut *conn).await?;
        O::write(&mut tx, ops).await?;
        tx.commit().await
    }
    .await;
    if written.is_err() {
        conn.close_on_drop();
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;

    struct Put(i64);

    impl Ops for Put {
        async fn write<'a>(
            tx: &'a mut SqliteConnection,
            ops: &'a [&'a Self],
        ) -> Result<(), sqlx::Error> {
            for op in ops {
                sqlx::query("INSERT INTO t (v) VALUES ($1)")
                    .bind(op.0)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        }

        fn probe() -> Self {
            Put(-1)
        }
    }

    async fn pool(path: &Path) -> SqlitePool {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .expect("url")
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.expect("open");
        sqlx::query("CREATE TABLE t (v INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .expect("table");
        pool
    }

    #[tokio::test]
    async fn writes_are_committed_in_order_and_a_full_queue_refuses_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let pool = pool(&path).await;
        let (queue, writer) = open::<Put>(pool.clone(), path.clone(), "the test store", Some(3));
        // Not running yet: enqueued ops wait, and at the limit a change is refused, naming why.
        for v in 0..3 {
            queue.enqueue(Put(v));
        }
        let why = queue.write(Put(9)).await.expect_err("refused when full");
        assert!(why.contains("at the limit of 3"), "{why}");
        assert!(why.contains(&path.display().to_string()), "{why}");
        let running = tokio::spawn(writer.run());
        // Positive control: once drained, a change is taken and committed before it answers.
        let mut ok = false;
        for _ in 0..100 {
            if queue.health().pending() == 0 {
                ok = queue.write(Put(3)).await.is_ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ok, "a drained store takes changes");
        let rows: Vec<i64> = sqlx::query_scalar("SELECT v FROM t ORDER BY rowid")
            .fetch_all(&pool)
            .await
            .expect("read");
        assert_eq!(rows, vec![0, 1, 2, 3]);
        drop(queue);
        running.await.expect("the writer ends with its queue");
    }
}
