//! Scale from zero: holding requests while an app has no usable backend (or every backend is
//! at the app's concurrency limit), and sending the PaaS one wake call per app.
//!
//! A held request waits on the app's `Notify`, which fires on every route change and whenever a
//! lease is released while requests are held. Held requests are then spread by the normal
//! balancing policy and limit, so the first instance to come up is not flooded.
//!
//! A wake episode starts with the first held request of an app that has no usable backend and
//! ends when the app becomes routable or nobody waits any more. Within an episode the PaaS gets
//! one wake call, repeated every [`WAKE_RESEND`] while requests are still held and the app is
//! still not routable (a lost call or a PaaS that accepted the wake but never started an
//! instance must not leave the app asleep for good).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use drove_proto::routing::{wake_path, WakeRequest};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use crate::balance::{pick, Lease, Pick};
use crate::routes::{App, AppState};

/// Why a request could not get a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldError {
    /// The app's hold queue is full.
    QueueFull,
    /// No backend became available within the hold timeout.
    Timeout,
    /// The app is stopped; it is not woken.
    Stopped,
    /// The app disappeared from the route table while the request waited.
    Removed,
    /// The client closed its connection while the request was held.
    ClientGone,
}

/// How often a wake call is repeated while requests stay held and the app is not routable.
pub const WAKE_RESEND: Duration = Duration::from_secs(10);

/// Milliseconds on a monotonic clock, never 0 (0 marks "no wake episode").
pub fn mono_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

impl HoldError {
    /// The plain-text body sent with the 503.
    pub fn message(self) -> &'static str {
        match self {
            HoldError::QueueFull => {
                "503 the app is starting and too many requests are waiting; retry shortly\n"
            }
            HoldError::Timeout => "503 the app did not become ready in time; retry shortly\n",
            HoldError::Stopped => "503 the app is stopped\n",
            HoldError::Removed => "503 the app is no longer available\n",
            HoldError::ClientGone => "the client closed the connection\n",
        }
    }
}

/// Hold-queue settings plus the channel to the wake caller.
#[derive(Debug, Clone)]
pub struct Holder {
    wake_tx: UnboundedSender<Arc<App>>,
    pub max_queue: usize,
    pub timeout: Duration,
    /// See [`WAKE_RESEND`] and [`Holder::with_wake_resend`].
    wake_resend: Duration,
}

/// Decrements the app's held gauge when a held request leaves the queue, however it leaves.
/// (The wake episode's timestamp stays: requests that come and go quickly, such as probes
/// that hang up, still cause at most one wake call per resend interval.)
struct HeldGuard<'a>(&'a App);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Holder {
    pub fn new(wake_tx: UnboundedSender<Arc<App>>, max_queue: usize, timeout: Duration) -> Self {
        Self {
            wake_tx,
            max_queue,
            timeout,
            wake_resend: WAKE_RESEND,
        }
    }

    /// Sets how often a wake call is repeated while requests stay held.
    pub fn with_wake_resend(mut self, every: Duration) -> Self {
        self.wake_resend = every;
        self
    }

    /// Sends a wake call unless this episode sent one less than `wake_resend` ago. Of many
    /// requests calling at once, one wins the compare-exchange and sends.
    fn request_wake(&self, app: &Arc<App>) {
        let now = mono_ms();
        let last = app.wake_sent_ms.load(Ordering::SeqCst);
        let resend_ms = u64::try_from(self.wake_resend.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < resend_ms {
            return;
        }
        if app
            .wake_sent_ms
            .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        // The route may have become routable (and cleared the episode) just before the
        // compare-exchange: then there is nothing to wake.
        if app.route.load().has_usable_backend() {
            let _ = app
                .wake_sent_ms
                .compare_exchange(now, 0, Ordering::SeqCst, Ordering::SeqCst);
            return;
        }
        if self.wake_tx.send(app.clone()).is_err() {
            tracing::warn!(app = %app.name, "wake caller is gone; app not woken");
        }
    }

    /// Gets a lease on a backend of `app`, holding the request until `deadline` if none is
    /// available now. Returns the lease and whether the request was held. `exclude` (backends
    /// that already failed for this request) only applies to the immediate pick: a held request
    /// may use any backend the route stream offers, including a restarted one at the same
    /// address (failed backends stay out through their passive mark until then).
    ///
    /// `hang_up` completes when the client goes away; it is only polled while the request is
    /// held, which it then leaves at once ([`HoldError::ClientGone`]) instead of being
    /// forwarded later for nobody.
    pub async fn acquire(
        &self,
        app: &Arc<App>,
        exclude: &[SocketAddr],
        deadline: Instant,
        hang_up: impl std::future::Future,
    ) -> Result<(Lease, bool), HoldError> {
        match pick(app, exclude) {
            Pick::Leased(l) => return Ok((l, false)),
            Pick::Busy => {}
            Pick::NoBackend => {
                if app.route.load().state == AppState::Stopped {
                    return Err(HoldError::Stopped);
                }
            }
        }
        if app.removed.load(Ordering::SeqCst) {
            return Err(HoldError::Removed);
        }
        if app.held.fetch_add(1, Ordering::SeqCst) >= self.max_queue {
            app.held.fetch_sub(1, Ordering::SeqCst);
            app.stats.hold_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(HoldError::QueueFull);
        }
        let _held = HeldGuard(app);
        app.stats.held_total.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            biased;
            got = self.wait_for_backend(app, deadline) => got.map(|lease| (lease, true)),
            _ = hang_up => Err(HoldError::ClientGone),
        }
    }

    /// The hold loop: waits for a route change or a released lease, retries the pick, and
    /// keeps the wake episode going, until a lease or `deadline`.
    async fn wait_for_backend(
        &self,
        app: &Arc<App>,
        deadline: Instant,
    ) -> Result<Lease, HoldError> {
        loop {
            let notified = app.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if app.removed.load(Ordering::SeqCst) {
                return Err(HoldError::Removed);
            }
            match pick(app, &[]) {
                Pick::Leased(l) => return Ok(l),
                Pick::Busy => {}
                Pick::NoBackend => {
                    if app.route.load().state == AppState::Stopped {
                        return Err(HoldError::Stopped);
                    }
                    self.request_wake(app);
                }
            }
            // Wake up at the deadline, or earlier to repeat the wake call if need be.
            let until = deadline.min(Instant::now() + self.wake_resend);
            if tokio::time::timeout_at(until, notified).await.is_err() && until == deadline {
                app.stats.hold_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(HoldError::Timeout);
            }
        }
    }
}

/// Sends `POST {paas}/v1/apps/{app}/wake` for every app the proxy asks to wake. A failed call
/// is retried with backoff while requests are still held and the app is still not routable.
pub async fn wake_loop(
    client: reqwest::Client,
    paas: String,
    mut rx: UnboundedReceiver<Arc<App>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let paas = paas.trim_end_matches('/').to_string();
    loop {
        let app = tokio::select! {
            app = rx.recv() => match app { Some(a) => a, None => return },
            _ = shutdown.changed() => return,
        };
        // One call (with its retries) per app at a time: a resend while the previous call is
        // still retrying adds nothing.
        if app.wake_calling.swap(true, Ordering::SeqCst) {
            continue;
        }
        let (client, paas) = (client.clone(), paas.clone());
        tokio::spawn(async move {
            let calling = CallingGuard(app.clone());
            wake_one(client, paas, app).await;
            drop(calling);
        });
    }
}

/// Clears the app's `wake_calling` flag however the call task ends.
struct CallingGuard(Arc<App>);

impl Drop for CallingGuard {
    fn drop(&mut self) {
        self.0.wake_calling.store(false, Ordering::SeqCst);
    }
}

async fn wake_one(client: reqwest::Client, paas: String, app: Arc<App>) {
    let url = format!("{paas}{}", wake_path(&app.name));
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=8u32 {
        app.stats.wakes.fetch_add(1, Ordering::Relaxed);
        let held = app.held.load(Ordering::Relaxed);
        let episode = app.wake_sent_ms.load(Ordering::SeqCst);
        let body = WakeRequest {
            app: app.name.clone(),
            held: held as u64,
            held_for_ms: if episode == 0 {
                0
            } else {
                mono_ms().saturating_sub(episode)
            },
        };
        let res = client
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                tracing::info!(app = %app.name, held, "wake requested");
                return;
            }
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                tracing::warn!(app = %app.name, "the PaaS does not know this app; not woken");
                return;
            }
            Ok(r) => tracing::warn!(app = %app.name, status = %r.status(), attempt, "wake refused"),
            Err(e) => tracing::warn!(app = %app.name, error = %e, attempt, "wake call failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        if app.removed.load(Ordering::SeqCst)
            || app.held.load(Ordering::SeqCst) == 0
            || app.route.load().has_usable_backend()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{AppSpec, BackendSpec, Registry, RouteMessage, Table};
    use arc_swap::ArcSwap;

    /// A client that never hangs up.
    fn connected() -> std::future::Pending<()> {
        std::future::pending()
    }

    fn spec(backends: Vec<BackendSpec>, limit: u32, state: AppState) -> AppSpec {
        AppSpec {
            https: Default::default(),
            name: "a".into(),
            hostnames: vec![],
            state,
            concurrency_limit: limit,
            backends,
        }
    }

    /// A registry with app `a` upserted from `spec`, and that app.
    fn registered(spec: AppSpec) -> (Registry, Arc<App>) {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let mut reg = Registry::new("localhost", table.clone());
        reg.apply(RouteMessage::Upsert { app: spec });
        let app = table.load().lookup("a.localhost").expect("app").clone();
        (reg, app)
    }

    /// Waits (at most 2 s) until `n` requests of `app` are held.
    async fn wait_held(app: &App, n: usize) {
        for _ in 0..400 {
            if app.held.load(Ordering::SeqCst) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "{n} requests never held (now {})",
            app.held.load(Ordering::SeqCst)
        );
    }

    fn b(addr: &str) -> BackendSpec {
        BackendSpec {
            addr: addr.into(),
            healthy: true,
            backup: false,
        }
    }

    #[tokio::test]
    async fn held_requests_wake_once_and_proceed() {
        let (mut reg, app) = registered(spec(vec![], 0, AppState::Idle));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let holder = Holder::new(tx, 10, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (h, a) = (holder.clone(), app.clone());
            tasks.push(tokio::spawn(async move {
                h.acquire(&a, &[], deadline, connected())
                    .await
                    .map(|(l, held)| (l.backend().addr, held))
            }));
        }
        let woken = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("a wake within 2s")
            .expect("channel open");
        assert_eq!(woken.name, "a");
        // Let all five park.
        wait_held(&app, 5).await;
        reg.apply(RouteMessage::Upsert {
            app: spec(vec![b("127.0.0.1:7")], 0, AppState::Running),
        });
        for t in tasks {
            let (addr, held) = t.await.expect("task").expect("lease");
            assert_eq!(addr.port(), 7);
            assert!(held);
        }
        assert!(rx.try_recv().is_err(), "exactly one wake");
        assert_eq!(app.held.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn timeout_full_queue_and_stopped() {
        let (mut reg, app) = registered(spec(vec![], 0, AppState::Idle));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let holder = Holder::new(tx, 1, Duration::from_millis(100));
        let deadline = Instant::now() + Duration::from_millis(300);
        let (h, a) = (holder.clone(), app.clone());
        let first =
            tokio::spawn(async move { h.acquire(&a, &[], deadline, connected()).await.err() });
        wait_held(&app, 1).await;
        assert_eq!(
            holder.acquire(&app, &[], deadline, connected()).await.err(),
            Some(HoldError::QueueFull)
        );
        assert_eq!(first.await.expect("task"), Some(HoldError::Timeout));
        // The episode's wake was sent less than a resend interval ago: a new request (say, a
        // probe retrying) does not send another.
        assert_ne!(app.wake_sent_ms.load(Ordering::SeqCst), 0);
        reg.apply(RouteMessage::Upsert {
            app: spec(vec![], 0, AppState::Stopped),
        });
        assert_eq!(
            holder.acquire(&app, &[], deadline, connected()).await.err(),
            Some(HoldError::Stopped)
        );
    }

    #[tokio::test]
    async fn wake_is_repeated_while_the_app_stays_unroutable() {
        let (mut reg, app) = registered(spec(vec![], 0, AppState::Idle));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let holder = Holder::new(tx, 10, Duration::from_secs(5))
            .with_wake_resend(Duration::from_millis(200));
        let began = Instant::now();
        let deadline = began + Duration::from_secs(5);
        let held: Vec<_> = (0..3)
            .map(|_| {
                let (h, a) = (holder.clone(), app.clone());
                tokio::spawn(
                    async move { h.acquire(&a, &[], deadline, connected()).await.map(|x| x.1) },
                )
            })
            .collect();
        // The PaaS accepted the first wake but never started an instance: the held requests
        // call again after the resend interval, once per interval (not once each).
        for n in 0..2 {
            tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("wake {n} within 2s"))
                .expect("channel open");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        reg.apply(RouteMessage::Upsert {
            app: spec(vec![b("127.0.0.1:7")], 0, AppState::Running),
        });
        let intervals = began.elapsed().as_millis() / 200;
        let mut wakes = 2;
        while rx.try_recv().is_ok() {
            wakes += 1;
        }
        assert!(
            wakes <= intervals + 1,
            "{wakes} wakes in {intervals} resend intervals"
        );
        for t in held {
            assert!(t.await.expect("task").expect("lease"));
        }
        assert_eq!(app.wake_sent_ms.load(Ordering::SeqCst), 0, "episode over");
    }

    #[tokio::test]
    async fn held_request_may_use_a_restarted_backend_that_failed_it() {
        let (mut reg, app) = registered(spec(vec![b("127.0.0.1:7")], 0, AppState::Running));
        // The only backend refused this request's connect and was taken out passively.
        let failed = app.route.load().backends[0].live.clone();
        failed.passive_down.store(true, Ordering::SeqCst);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let holder = Holder::new(tx, 10, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        let (h, a, addr) = (holder.clone(), app.clone(), failed.addr);
        let retry =
            tokio::spawn(async move { h.acquire(&a, &[addr], deadline, connected()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!retry.is_finished(), "held while nothing is usable");
        // The PaaS restarts the instance at the same address and restates it healthy.
        reg.apply(RouteMessage::Upsert {
            app: spec(vec![b("127.0.0.1:7")], 0, AppState::Running),
        });
        let (lease, held) = tokio::time::timeout(Duration::from_secs(2), retry)
            .await
            .expect("released in time")
            .expect("task")
            .expect("lease");
        assert!(held);
        assert_eq!(lease.backend().addr, addr);
    }

    #[tokio::test]
    async fn removing_the_app_fails_its_held_requests_at_once() {
        let (mut reg, app) = registered(spec(vec![], 0, AppState::Idle));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let holder = Holder::new(tx, 10, Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (h, a) = (holder.clone(), app.clone());
        let waiting =
            tokio::spawn(async move { h.acquire(&a, &[], deadline, connected()).await.err() });
        wait_held(&app, 1).await;
        reg.apply(RouteMessage::Remove { app: "a".into() });
        let err = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("failed at once, not at the hold timeout")
            .expect("task");
        assert_eq!(err, Some(HoldError::Removed));
        assert_eq!(app.held.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_held_client_that_hangs_up_leaves_the_queue() {
        let (_reg, app) = registered(spec(vec![], 0, AppState::Idle));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let holder = Holder::new(tx, 10, Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (hung_up_tx, hung_up) = tokio::sync::oneshot::channel::<()>();
        let (h, a) = (holder.clone(), app.clone());
        let waiting =
            tokio::spawn(async move { h.acquire(&a, &[], deadline, hung_up).await.err() });
        wait_held(&app, 1).await;
        drop(hung_up_tx);
        let err = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("left at once, not at the hold timeout")
            .expect("task");
        assert_eq!(err, Some(HoldError::ClientGone));
        assert_eq!(app.held.load(Ordering::SeqCst), 0);
        // A client that is there when a backend is free is never watched.
        let (_reg, app) = registered(spec(vec![b("127.0.0.1:7")], 0, AppState::Running));
        let gone = std::future::ready(());
        let (_, held) = holder
            .acquire(&app, &[], deadline, gone)
            .await
            .expect("lease");
        assert!(!held);
    }

    #[tokio::test]
    async fn limit_releases_let_held_requests_through() {
        let (_reg, app) = registered(spec(vec![b("127.0.0.1:7")], 1, AppState::Running));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let holder = Holder::new(tx, 10, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        let (first, held) = holder
            .acquire(&app, &[], deadline, connected())
            .await
            .expect("lease");
        assert!(!held);
        let (h, a) = (holder.clone(), app.clone());
        let second =
            tokio::spawn(
                async move { h.acquire(&a, &[], deadline, connected()).await.map(|x| x.1) },
            );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        drop(first);
        let held = tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .expect("released in time")
            .expect("task")
            .expect("lease");
        assert!(held);
    }
}
