//! Task health checks (`TaskInfo.health_check`): HTTP, TCP and COMMAND, with Mesos semantics.
//!
//! - The first check runs `delay_seconds` after the task started, then every
//!   `interval_seconds`; each check times out after `timeout_seconds`. Until an HTTP or TCP
//!   check first passes, within the grace period, it is repeated every
//!   [`STARTING_INTERVAL`] instead, so a starting app is seen ready within milliseconds of
//!   listening (its failures there do not count anyway).
//! - Failures within `grace_period_seconds` of the task's start are ignored until the task has
//!   been healthy once.
//! - Each change of health is reported (first success → healthy, a counted failure →
//!   unhealthy); after `consecutive_failures` consecutive counted failures the task is killed.
//! - HTTP probes `http://<agent host>:<port><path>`, healthy on 200–399 (or `statuses` if
//!   given); TCP connects; COMMAND runs in the sandbox as the task user with the task's env.

use std::path::PathBuf;
use std::time::Duration;

use drove_proto::mesos::{HealthCheck, HealthCheckType};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a starting task's HTTP/TCP check runs until it first passes (grace period only).
pub const STARTING_INTERVAL: Duration = Duration::from_millis(25);

/// What the agent should do after one check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthAction {
    /// Nothing changed.
    None,
    /// Health changed: send TASK_RUNNING with `healthy` set.
    Report(bool),
    /// Too many consecutive failures: kill the task.
    Kill,
}

/// The pure state machine.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    grace_period: f64,
    max_failures: u64,
    consecutive_failures: u64,
    healthy: Option<bool>,
    ever_healthy: bool,
    killed: bool,
}

impl HealthTracker {
    pub fn new(check: &HealthCheck) -> HealthTracker {
        HealthTracker {
            grace_period: check.grace_period(),
            max_failures: check.max_consecutive_failures().max(1),
            consecutive_failures: 0,
            healthy: None,
            ever_healthy: false,
            killed: false,
        }
    }

    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures
    }

    /// Never healthy yet and still in the grace period: failures are not counted.
    pub fn starting(&self, since_start: f64) -> bool {
        !self.ever_healthy && since_start < self.grace_period
    }

    /// Feeds one result; `since_start` is the task's age in seconds.
    pub fn record(&mut self, ok: bool, since_start: f64) -> HealthAction {
        if self.killed {
            return HealthAction::None;
        }
        if ok {
            self.consecutive_failures = 0;
            self.ever_healthy = true;
            if self.healthy != Some(true) {
                self.healthy = Some(true);
                return HealthAction::Report(true);
            }
            return HealthAction::None;
        }
        if !self.ever_healthy && since_start < self.grace_period {
            return HealthAction::None;
        }
        self.consecutive_failures += 1;
        if self.consecutive_failures >= self.max_failures {
            self.killed = true;
            self.healthy = Some(false);
            return HealthAction::Kill;
        }
        if self.healthy != Some(false) {
            self.healthy = Some(false);
            return HealthAction::Report(false);
        }
        HealthAction::None
    }
}

/// Where and how to probe one task.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    pub host: String,
    pub ports: Vec<u64>,
    pub sandbox: PathBuf,
    pub env: Vec<(String, String)>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The port an HTTP/TCP check probes: `port`, else `port_index` into the task's ports, else
/// the first port.
pub fn check_port(port: Option<u32>, port_index: Option<u32>, ports: &[u64]) -> Option<u64> {
    if let Some(p) = port.filter(|p| *p > 0) {
        return Some(u64::from(p));
    }
    if let Some(i) = port_index {
        return ports.get(i as usize).copied();
    }
    ports.first().copied()
}

/// The HTTP checks' client. Redirects are not followed: a 3xx answers the check (healthy, as
/// in Mesos), and the agent, root, never requests what a task points it at.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Runs one check; Ok(()) is healthy, Err carries why not.
pub async fn probe(
    check: &HealthCheck,
    target: &CheckTarget,
    client: &reqwest::Client,
) -> Result<(), String> {
    // The launch was range-checked; never panic on a number regardless.
    let timeout = Duration::try_from_secs_f64(check.timeout().max(0.001)).unwrap_or(Duration::MAX);
    match check.kind {
        HealthCheckType::Http => {
            let http = check.http.clone().ok_or("HTTP check without `http`")?;
            let port = check_port(http.port, http.port_index, &target.ports)
                .ok_or("HTTP check: no port")?;
            let path = http.path.unwrap_or_else(|| "/".into());
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            let url = format!("http://{}:{port}{path}", target.host);
            let resp = client
                .get(&url)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let code = u32::from(resp.status().as_u16());
            let ok = if http.statuses.is_empty() {
                (200..400).contains(&code)
            } else {
                http.statuses.contains(&code)
            };
            if ok {
                Ok(())
            } else {
                Err(format!("GET {url}: status {code}"))
            }
        }
        HealthCheckType::Tcp => {
            let tcp = check.tcp.clone().ok_or("TCP check without `tcp`")?;
            let port =
                check_port(tcp.port, tcp.port_index, &target.ports).ok_or("TCP check: no port")?;
            let addr = format!("{}:{port}", target.host);
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                Err(_) => Err(format!("connect {addr}: timed out")),
            }
        }
        HealthCheckType::Command => {
            let cmd = check
                .command
                .clone()
                .ok_or("COMMAND check without `command`")?;
            let value = cmd
                .value
                .clone()
                .ok_or("COMMAND check without a command value")?;
            let mut c = if cmd.shell.unwrap_or(true) {
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c").arg(&value);
                c
            } else {
                let (arg0, args) = drove_proto::mesos::split_argv(&value, &cmd.arguments);
                let mut c = tokio::process::Command::new(&value);
                c.args(args);
                if let Some(a) = arg0 {
                    c.arg0(a);
                }
                c
            };
            c.env_clear()
                .envs(target.env.iter().map(|(k, v)| (k, v)))
                .envs(
                    cmd.environment
                        .iter()
                        .flat_map(|e| e.variables.iter())
                        .map(|v| (v.name.clone(), v.value.clone())),
                )
                .current_dir(&target.sandbox)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .kill_on_drop(true);
            if let Some(gid) = target.gid {
                c.gid(gid);
            }
            if let Some(uid) = target.uid {
                c.uid(uid);
            }
            let mut child = c.spawn().map_err(|e| format!("spawning {value:?}: {e}"))?;
            let pid = child.id();
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(st)) if st.success() => Ok(()),
                Ok(Ok(st)) => Err(format!("command {value:?} {st}")),
                Ok(Err(e)) => Err(format!("waiting for {value:?}: {e}")),
                Err(_) => {
                    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = child.wait().await;
                    Err(format!("command {value:?} timed out"))
                }
            }
        }
        HealthCheckType::Unknown => Err("unsupported health check type".into()),
    }
}

/// Runs checks until cancelled or the task is to be killed, sending every non-`None` action.
/// `started` is when the task started (grace period reference).
pub async fn run(
    check: HealthCheck,
    target: CheckTarget,
    started: std::time::Instant,
    cancel: CancellationToken,
    actions: mpsc::Sender<HealthAction>,
) {
    let mut tracker = HealthTracker::new(&check);
    // Never a client that follows redirects instead: without one, no check passes.
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for health checks; the task stays unchecked");
            return;
        }
    };
    let delay = Duration::try_from_secs_f64(check.delay().max(0.0)).unwrap_or(Duration::MAX);
    let interval = Duration::try_from_secs_f64(check.interval().max(0.01)).unwrap_or(Duration::MAX);
    let first = started + delay;
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep_until(first.into()) => {}
    }
    loop {
        let round = std::time::Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe(&check, &target, &client) => r,
        };
        if let Err(e) = &result {
            tracing::debug!(error = %e, "health check failed");
        }
        let action = tracker.record(result.is_ok(), started.elapsed().as_secs_f64());
        if action != HealthAction::None && actions.send(action).await.is_err() {
            return;
        }
        if action == HealthAction::Kill {
            return;
        }
        let fast = matches!(check.kind, HealthCheckType::Http | HealthCheckType::Tcp)
            && tracker.starting(started.elapsed().as_secs_f64());
        let next = if fast {
            interval.min(STARTING_INTERVAL)
        } else {
            interval
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until((round + next).into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(grace: f64, failures: u64) -> HealthCheck {
        HealthCheck {
            kind: HealthCheckType::Tcp,
            delay_seconds: Some(0.0),
            interval_seconds: Some(0.05),
            timeout_seconds: Some(1.0),
            consecutive_failures: Some(failures),
            grace_period_seconds: Some(grace),
            http: None,
            tcp: Some(drove_proto::mesos::TcpCheckInfo {
                port: None,
                port_index: None,
            }),
            command: None,
        }
    }

    #[test]
    fn starting_lasts_until_the_first_success_within_the_grace_period() {
        let mut t = HealthTracker::new(&check(5.0, 3));
        assert!(t.starting(0.1));
        assert!(!t.starting(5.1), "the grace period is over");
        t.record(true, 0.2);
        assert!(
            !t.starting(0.3),
            "healthy once: the app's own interval governs"
        );
        assert!(!HealthTracker::new(&check(0.0, 3)).starting(0.0));
    }

    #[test]
    fn state_machine_follows_mesos() {
        let mut t = HealthTracker::new(&check(10.0, 3));
        // Failures in the grace period are ignored.
        assert_eq!(t.record(false, 1.0), HealthAction::None);
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.record(true, 2.0), HealthAction::Report(true));
        assert_eq!(t.record(true, 3.0), HealthAction::None);
        // Once healthy, the grace period no longer hides failures.
        assert_eq!(t.record(false, 4.0), HealthAction::Report(false));
        assert_eq!(t.record(false, 5.0), HealthAction::None);
        assert_eq!(t.record(true, 6.0), HealthAction::Report(true));
        assert_eq!(t.record(false, 7.0), HealthAction::Report(false));
        assert_eq!(t.record(false, 8.0), HealthAction::None);
        assert_eq!(t.record(false, 9.0), HealthAction::Kill);
        assert_eq!(t.record(true, 10.0), HealthAction::None);
    }

    #[test]
    fn failures_after_grace_count_without_success() {
        let mut t = HealthTracker::new(&check(1.0, 2));
        assert_eq!(t.record(false, 0.5), HealthAction::None);
        assert_eq!(t.record(false, 1.5), HealthAction::Report(false));
        assert_eq!(t.record(false, 2.5), HealthAction::Kill);
    }

    #[test]
    fn port_selection() {
        let ports = [31000, 31001];
        assert_eq!(check_port(Some(8080), None, &ports), Some(8080));
        assert_eq!(check_port(None, Some(1), &ports), Some(31001));
        assert_eq!(check_port(None, Some(5), &ports), None);
        assert_eq!(check_port(None, None, &ports), Some(31000));
        assert_eq!(check_port(None, None, &[]), None);
    }

    #[tokio::test]
    async fn tcp_checks_report_and_kill() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = CheckTarget {
            host: "127.0.0.1".into(),
            ports: vec![u64::from(port)],
            sandbox: std::env::temp_dir(),
            env: vec![],
            uid: None,
            gid: None,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            check(0.0, 2),
            target,
            std::time::Instant::now(),
            cancel.clone(),
            tx,
        ));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(first, Some(HealthAction::Report(true)));
        drop(listener);
        let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(second, Some(HealthAction::Report(false)));
        let third = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(third, Some(HealthAction::Kill));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_http_check_does_not_follow_a_redirect() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let elsewhere = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "reached" }
            }),
        );
        let serve = |app: axum::Router| async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move { axum::serve(l, app).await });
            port
        };
        let other = serve(elsewhere).await;
        let task = axum::Router::new().route(
            "/health",
            axum::routing::get(move || async move {
                axum::response::Redirect::temporary(&format!("http://127.0.0.1:{other}/"))
            }),
        );
        let port = serve(task).await;
        let target = CheckTarget {
            host: "127.0.0.1".into(),
            ports: vec![u64::from(port)],
            sandbox: std::env::temp_dir(),
            env: vec![],
            uid: None,
            gid: None,
        };
        let mut c = check(0.0, 1);
        c.kind = HealthCheckType::Http;
        c.http = Some(drove_proto::mesos::HttpCheckInfo {
            scheme: None,
            port: None,
            port_index: None,
            path: Some("/health".into()),
            statuses: Vec::new(),
        });
        assert!(
            probe(&c, &target, &client().unwrap()).await.is_ok(),
            "a 307 is healthy"
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the redirect was not followed"
        );
        // The other server answers whoever asks it directly.
        let direct = client()
            .unwrap()
            .get(format!("http://127.0.0.1:{other}/"))
            .send()
            .await;
        assert_eq!(direct.unwrap().text().await.unwrap(), "reached");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn command_checks_use_the_exit_status() {
        let client = reqwest::Client::new();
        let target = CheckTarget {
            host: "127.0.0.1".into(),
            ports: vec![],
            sandbox: std::env::temp_dir(),
            env: vec![("X".into(), "1".into())],
            uid: None,
            gid: None,
        };
        let mut c = check(0.0, 1);
        c.kind = HealthCheckType::Command;
        c.command = Some(drove_proto::mesos::CommandInfo {
            value: Some("test \"$X\" = 1".into()),
            ..Default::default()
        });
        assert!(probe(&c, &target, &client).await.is_ok());
        c.command = Some(drove_proto::mesos::CommandInfo {
            value: Some("exit 1".into()),
            ..Default::default()
        });
        assert!(probe(&c, &target, &client).await.is_err());
    }
}
