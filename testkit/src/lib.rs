//! drove's test kit: the one place test support lives, for the root package's end-to-end
//! tests, the router's and the agent's integration tests, and the benches.
//!
//! At the root: the real `drove` binary run as processes (a master and agents on 127.0.0.N),
//! driven as an external framework would drive it (through `drove-driver`), network
//! namespaces, cgroup and mount clean-up, git and npm helpers; and [`wait`], the one way
//! a test waits for something (it names what it waited for when it gives up).
//! - [`paas`]: a whole drove (master, agent, PaaS) and a client for its API; [`up`]: `drove
//!   up` as a user runs it; [`dashboard`]: logging in to it.
//! - [`router`]: real backend servers and a fake PaaS for the router, the router in-process or
//!   as the binary, and the cases both run.
//! - [`agent`]: a fake master and an in-process agent with the real supervisor and cgroups.
//! - [`bench`]: the benches' fixtures.

pub mod agent;
pub mod bench;
pub mod dashboard;
pub mod paas;
pub mod pebble;
pub mod router;
pub mod tls;
pub mod up;
pub mod wait;

pub use wait::eventually;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drove_driver::{CallError, Config, Driver, Event};
use drove_proto::mesos::{Filters, FrameworkInfo, OfferId, TaskInfo, TaskStatus};
use drove_proto::scheduler::{Call, Event as WireEvent, Subscribed};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The path of binary `name` cargo built beside the running test or bench (whose executable
/// sits in `target/<profile>/deps`).
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe.parent().expect("the test's directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("the profile's directory")
    } else {
        dir
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests through cargo",
        path.display()
    );
    path
}

/// The `drove` binary under test.
pub fn drove() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| cargo_bin("drove").display().to_string())
}

/// The sample apps the tests deploy (`tests/apps` at the repository's root).
pub fn test_apps() -> PathBuf {
    let apps = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/apps");
    std::fs::canonicalize(apps).expect("tests/apps")
}

/// A port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    // The listener is let go before the port is used, so the kernel may hand the same port out
    // again: a test's master and router once both got 41451. Never give one out twice.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ip: IpAddr = ip.parse().expect("test ip");
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..100 {
        let port = TcpListener::bind(SocketAddr::new(ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no port not already given out in 100 tries");
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Proc {
        Proc::spawn_with_env(name, args, log, &[])
    }

    /// [`Proc::spawn`] with `env` set.
    pub fn spawn_with_env(name: &str, args: &[String], log: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(drove());
        cmd.args(args)
            .envs(env.iter().copied())
            .env("DROVE_LOG", "info,drove_master=debug,drove_agent=debug");
        Proc::spawn_command(name, cmd, log)
    }

    /// Starts `cmd` with its output to `log`.
    pub fn spawn_command(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.kill();
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at /proc state too.
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub struct AgentSpec {
    pub ip: String,
    pub port: u16,
    pub resources: String,
    pub work_dir: PathBuf,
}

/// A master plus agents on 127.0.0.2, 127.0.0.3, ... with their own data dirs and cgroup root.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub master_addr: SocketAddr,
    pub master: Option<Proc>,
    pub agents: Vec<Option<Proc>>,
    pub specs: Vec<AgentSpec>,
    pub cgroup_root: String,
    pub http: reqwest::Client,
    /// Extra flags for the master, e.g. a short `--agent-removal-timeout`.
    pub master_args: Vec<String>,
    /// Extra flags for every agent, e.g. a `--cluster-secret`.
    pub agent_args: Vec<String>,
}

impl TestCluster {
    /// Starts a master and one agent per resource spec.
    pub async fn start(agent_resources: &[&str]) -> TestCluster {
        Self::start_with(agent_resources, &[]).await
    }

    /// Like [`TestCluster::start`], with extra master flags.
    pub async fn start_with(agent_resources: &[&str], master_args: &[&str]) -> TestCluster {
        Self::start_with_agents(agent_resources, master_args, &[]).await
    }

    /// Like [`TestCluster::start_with`], with extra flags for the agents too.
    pub async fn start_with_agents(
        agent_resources: &[&str],
        master_args: &[&str],
        agent_args: &[&str],
    ) -> TestCluster {
        let dir = tempdir();
        let master_addr = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
        let cgroup_root = format!("drove-test-{}", uuid_like());
        let specs = agent_resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let ip = format!("127.0.0.{}", i + 2);
                AgentSpec {
                    port: free_port(&ip),
                    ip,
                    resources: r.to_string(),
                    work_dir: dir.path().join(format!("agent{i}")),
                }
            })
            .collect();
        let mut c = TestCluster {
            dir,
            master_addr,
            master: None,
            agents: Vec::new(),
            specs,
            cgroup_root,
            // The harness reads state as an operator: with the cluster's secret, if it has one.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .default_headers(
                    master_args
                        .iter()
                        .find_map(|a| a.strip_prefix("--cluster-secret="))
                        .map(|s| {
                            let mut h = reqwest::header::HeaderMap::new();
                            h.insert(
                                reqwest::header::AUTHORIZATION,
                                format!("Bearer {s}").parse().expect("header value"),
                            );
                            h
                        })
                        .unwrap_or_default(),
                )
                .build()
                .expect("http client"),
            master_args: master_args.iter().map(|a| a.to_string()).collect(),
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        };
        c.start_master();
        c.wait_http(&format!("{}/health", c.master_url())).await;
        for i in 0..c.specs.len() {
            c.agents.push(None);
            c.start_agent(i);
        }
        c.wait_agents(c.specs.len()).await;
        c
    }

    pub fn master_url(&self) -> String {
        format!("http://{}", self.master_addr)
    }

    pub fn agent_url(&self, i: usize) -> String {
        format!("http://{}:{}", self.specs[i].ip, self.specs[i].port)
    }

    pub fn start_master(&mut self) {
        let args = vec![
            "master".to_string(),
            format!("--listen={}", self.master_addr),
            format!("--data-dir={}", self.dir.path().join("master").display()),
            "--agent-ping-timeout=500ms".into(),
            "--max-agent-ping-timeouts=4".into(),
            "--heartbeat-interval=2s".into(),
            "--agent-reregister-timeout=30s".into(),
        ];
        let mut args = args;
        args.extend(self.master_args.iter().cloned());
        let log = self.dir.path().join("master.log");
        self.master = Some(Proc::spawn("master", &args, &log));
    }

    pub fn kill_master(&mut self) {
        if let Some(mut m) = self.master.take() {
            m.kill();
        }
    }

    pub fn start_agent(&mut self, i: usize) {
        let s = &self.specs[i];
        let args = vec![
            "agent".to_string(),
            format!("--master={}", self.master_url()),
            format!("--listen={}:{}", s.ip, s.port),
            format!("--work-dir={}", s.work_dir.display()),
            format!("--resources={}", s.resources),
            format!("--hostname={}", s.ip),
            format!("--cgroup-root={}", self.cgroup_root),
        ];
        let mut args = args;
        args.extend(self.agent_args.iter().cloned());
        let log = self.dir.path().join(format!("agent{i}.log"));
        let log = if log.exists() {
            self.dir
                .path()
                .join(format!("agent{i}.{}.log", uuid_like()))
        } else {
            log
        };
        self.agents[i] = Some(Proc::spawn(&format!("agent{i}"), &args, &log));
    }

    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            a.kill();
        }
    }

    pub fn agent_proc(&self, i: usize) -> &Proc {
        self.agents[i].as_ref().expect("agent running")
    }

    /// Waits until agent `i` answers on its own listener.
    pub async fn wait_agent_http(&self, i: usize) {
        self.wait_http(&format!("{}/health", self.agent_url(i)))
            .await;
    }

    async fn wait_http(&self, url: &str) {
        wait::until_ok_with(
            &format!("{url} to come up"),
            Duration::from_secs(20),
            || async {
                match self.http.get(url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            },
            || format!("logs:\n{}", self.logs()),
        )
        .await;
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/master/state", self.master_url()))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("state json")
    }

    pub async fn agent_state(&self, i: usize) -> Value {
        self.http
            .get(format!("{}/agent/v1/state", self.agent_url(i)))
            .send()
            .await
            .expect("agent state")
            .json()
            .await
            .expect("agent state json")
    }

    /// Waits until `n` agents are registered and active.
    pub async fn wait_agents(&self, n: usize) {
        wait::until_ok_with(
            &format!("{n} agents to register"),
            Duration::from_secs(20),
            || async {
                if let Ok(r) = self
                    .http
                    .get(format!("{}/master/state", self.master_url()))
                    .send()
                    .await
                {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["activated_slaves"].as_u64() == Some(n as u64) {
                            return Ok(());
                        }
                    }
                }
                Err("fewer active agents".into())
            },
            || format!("logs:\n{}", self.logs()),
        )
        .await;
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(60).collect();
                    out.push_str(&format!("==== {} ====\n", p.display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for a in self.agents.iter_mut() {
            if let Some(mut a) = a.take() {
                a.kill();
            }
        }
        self.kill_master();
        kill_cgroup_tree(&self.cgroup_root);
        for s in &self.specs {
            drove_agent::container::network::release_all(&s.work_dir);
        }
        unmount_under(self.dir.path());
    }
}

/// Unmounts whatever is mounted under `dir` (sandboxes an agent mounted over artifact
/// layers), so the test's directory can be removed.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs [`kill_cgroup_tree`] when dropped, so a test that fails half-way leaks no task either.
pub struct CgroupTree(pub String);

impl Drop for CgroupTree {
    fn drop(&mut self) {
        kill_cgroup_tree(&self.0);
    }
}

/// Kills every process left under the test's cgroup root and removes its cgroups, so a test
/// never leaks tasks (agents deliberately leave tasks running when they die).
pub fn kill_cgroup_tree(root: &str) {
    for base in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(base).join(root);
        if dir.is_dir() {
            kill_and_remove(&dir);
        }
    }
}

fn kill_and_remove(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                kill_and_remove(&e.path());
            }
        }
    }
    for _ in 0..20 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir(dir);
}

pub fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

// ---------------------------------------------------------------------------------------------
// A v1 scheduler client: drove-driver, with its events given back in the master's JSON

/// A framework as the tests drive it. It runs on [`Driver`], the tree's one Mesos client, and
/// hands its events to the tests in the master's JSON shapes (`{"type":"OFFERS","offers":
/// {"offers":[..]}}`, `{"type":"UPDATE","update":{"status":..}}`, ...), so tests match on
/// `Value`s. The driver's own `Disconnected` event appears as `{"type":"DISCONNECTED",
/// "disconnected":{"reason":..}}`. Dropping it stops the driver, which closes the stream.
pub struct Framework {
    pub driver: Driver,
    /// For a call that does not decode as a `Call` (a test of the master's parser): it is
    /// posted as it is, with the current stream id.
    pub http: reqwest::Client,
    pub url: String,
    /// The framework id from the first SUBSCRIBED.
    pub id: String,
    pub events: mpsc::Receiver<Event>,
    /// Acknowledge updates (through the driver) as they are taken from `events`.
    pub auto_ack: bool,
    /// Events skipped while waiting for something else, so no test loses an update or an offer.
    pub backlog: VecDeque<Value>,
    cancel: CancellationToken,
}

impl Drop for Framework {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn framework_info(name: &str) -> Value {
    json!({"user": "root", "name": name, "failover_timeout": 60.0, "checkpoint": true})
}

/// The driver configuration the tests use: no implicit reconciliation (tests see exactly the
/// events they cause) and reconnects at most 1 s apart.
pub fn driver_config(master: &str, info: FrameworkInfo) -> Config {
    let mut config = Config::new(master, info);
    config.reconcile_on_subscribe = false;
    config.max_backoff = Duration::from_secs(1);
    config
}

/// A driver event in the JSON the master sent it as.
pub fn event_json(event: Event) -> Value {
    let wire = match event {
        Event::Subscribed {
            framework_id,
            heartbeat_interval,
        } => WireEvent::subscribed(Subscribed {
            framework_id,
            heartbeat_interval_seconds: Some(heartbeat_interval.as_secs_f64()),
            master_info: None,
        }),
        Event::Offers(offers) => WireEvent::offers(offers),
        Event::Rescind(offer_id) => WireEvent::rescind(offer_id),
        Event::Update(status) => WireEvent::update(status),
        Event::Failure {
            agent_id: Some(agent_id),
        } => WireEvent::failure(agent_id),
        Event::Failure { agent_id: None } => return json!({"type": "FAILURE", "failure": {}}),
        Event::Error(message) => WireEvent::error(message),
        Event::Disconnected { reason } => {
            return json!({"type": "DISCONNECTED", "disconnected": {"reason": reason}})
        }
    };
    serde_json::to_value(&wire).expect("events serialize")
}

/// A call's outcome as the master's HTTP answer: 202 for an accepted call, the status and body
/// of a refusal, 403 when the driver is not subscribed. A master out of reach fails the test.
fn answer(result: Result<(), CallError>) -> (u16, String) {
    match result {
        Ok(()) => (202, String::new()),
        Err(CallError::Rejected {
            status, message, ..
        }) => (status, message),
        Err(e @ CallError::NotSubscribed) => (403, e.to_string()),
        Err(e @ CallError::Transport { .. }) => panic!("{e}"),
    }
}

impl Framework {
    /// Starts a driver for `info` (a `FrameworkInfo` in JSON; with `id` set, a failover) and
    /// waits for SUBSCRIBED.
    pub async fn subscribe(master: &str, info: Value) -> Framework {
        Self::subscribe_with(master, info, |_| {}).await
    }

    /// Like [`Framework::subscribe`], with `configure` applied to [`driver_config`]'s result.
    pub async fn subscribe_with(
        master: &str,
        info: Value,
        configure: impl FnOnce(&mut Config),
    ) -> Framework {
        let info: FrameworkInfo = serde_json::from_value(info).expect("a valid FrameworkInfo");
        let mut config = driver_config(master, info);
        configure(&mut config);
        let url = format!("{}/api/v1/scheduler", config.master);
        let cancel = CancellationToken::new();
        let (driver, events) = Driver::start(config, cancel.clone());
        let mut fw = Framework {
            driver,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            url,
            id: String::new(),
            events,
            auto_ack: true,
            backlog: Default::default(),
            cancel,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, fw.events.recv()).await {
                Ok(Some(Event::Subscribed { framework_id, .. })) => {
                    fw.id = framework_id.value;
                    return fw;
                }
                // The master is up when tests subscribe: a refusal is the test's failure.
                Ok(Some(Event::Disconnected { reason })) => panic!("SUBSCRIBE failed: {reason}"),
                Ok(Some(Event::Error(message))) => panic!("SUBSCRIBE answered ERROR: {message}"),
                Ok(Some(other)) => fw.backlog.push_back(event_json(other)),
                Ok(None) => panic!("the driver stopped before SUBSCRIBED"),
                Err(_) => panic!("no SUBSCRIBED within 10 s"),
            }
        }
    }

    /// The current subscription's `Mesos-Stream-Id` (empty while not subscribed).
    pub fn stream_id(&self) -> String {
        self.driver.stream_id().unwrap_or_default()
    }

    /// Sends a call (its framework id and stream id are filled in); returns the HTTP status and
    /// body. A `Call` goes through the driver; anything else is posted as it is.
    pub async fn call(&self, call: Value) -> (u16, String) {
        match serde_json::from_value::<Call>(call.clone()) {
            Ok(call) => answer(self.driver.call(call).await),
            Err(_) => self.post(call).await,
        }
    }

    /// Posts `call` untouched but for its framework id, for bodies the driver cannot send.
    async fn post(&self, mut call: Value) -> (u16, String) {
        call["framework_id"] = json!({"value": self.id});
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", self.stream_id())
            .json(&call)
            .send()
            .await
            .expect("call");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Acknowledges `status` through the driver. A refusal fails the test; a stream lost
    /// meanwhile does not (the agent re-sends the update after the next SUBSCRIBED).
    async fn ack(&self, status: &TaskStatus) {
        match self.driver.acknowledge(status).await {
            Ok(()) => {}
            Err(e @ CallError::Rejected { .. }) => panic!("ACKNOWLEDGE: {e}"),
            Err(e) => eprintln!("ACKNOWLEDGE for {} not sent: {e}", status.task_id),
        }
    }

    /// The next event matching `pred` (others are kept in the backlog), acknowledging updates
    /// on the way when `auto_ack` is set.
    pub async fn next_matching(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = tokio::time::timeout(left, self.events.recv())
                .await
                .ok()??;
            if let (true, Event::Update(status)) = (self.auto_ack, &ev) {
                self.ack(status).await;
            }
            let ev = event_json(ev);
            if pred(&ev) {
                return Some(ev);
            }
            self.backlog.push_back(ev);
        }
    }

    pub async fn next_of(&mut self, kind: &str, timeout: Duration) -> Option<Value> {
        self.next_matching(timeout, |e| e["type"] == kind).await
    }

    /// The next OFFERS event's offers.
    pub async fn offers(&mut self, timeout: Duration) -> Vec<Value> {
        match self.next_of("OFFERS", timeout).await {
            Some(ev) => ev["offers"]["offers"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The next status update for `task`.
    pub async fn update_for(&mut self, task: &str, timeout: Duration) -> Option<Value> {
        let task = task.to_string();
        self.next_matching(timeout, move |e| {
            e["type"] == "UPDATE" && e["update"]["status"]["task_id"]["value"] == task.as_str()
        })
        .await
        .map(|e| e["update"]["status"].clone())
    }

    /// Waits for `task` to reach `state`, panicking with the states seen otherwise.
    pub async fn wait_state(&mut self, task: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(s) = self
            .update_for(task, deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if s["state"] == state {
                return s;
            }
            seen.push(format!("{} {}", s["state"], s["message"]));
        }
        panic!("task {task} never reached {state}; saw {seen:?}");
    }

    /// LAUNCHes `tasks` on `offer` with `Driver::launch` (refuse_seconds 0). Tasks that are not
    /// valid `TaskInfo`s go as a raw ACCEPT, for the master to judge.
    pub async fn launch(&self, offer: &Value, tasks: Vec<Value>) -> (u16, String) {
        let offer_id = serde_json::from_value::<OfferId>(offer["id"].clone());
        let infos = tasks
            .iter()
            .map(|t| serde_json::from_value::<TaskInfo>(t.clone()))
            .collect::<Result<Vec<_>, _>>();
        match (offer_id, infos) {
            (Ok(offer_id), Ok(infos)) => {
                let filters = Filters {
                    refuse_seconds: Some(0.0),
                };
                answer(
                    self.driver
                        .launch(vec![offer_id], infos, Some(filters))
                        .await,
                )
            }
            _ => {
                self.call(json!({"type": "ACCEPT", "accept": {
                    "offer_ids": [offer["id"]],
                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                    "filters": {"refuse_seconds": 0.0}
                }}))
                .await
            }
        }
    }

    /// DECLINEs `offer` with `Driver::decline`.
    pub async fn decline(&self, offer: &Value, refuse_seconds: f64) -> (u16, String) {
        match serde_json::from_value::<OfferId>(offer["id"].clone()) {
            Ok(offer_id) => answer(self.driver.decline(vec![offer_id], refuse_seconds).await),
            Err(_) => {
                self.call(json!({"type": "DECLINE", "decline": {
                    "offer_ids": [offer["id"]], "filters": {"refuse_seconds": refuse_seconds}}}))
                    .await
            }
        }
    }
}

/// A command task on `offer`'s agent.
pub fn task(id: &str, offer: &Value, cpus: f64, mem: f64, command: &str) -> Value {
    json!({
        "name": id,
        "task_id": {"value": id},
        "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
        ],
        "command": {"shell": true, "value": command},
    })
}

pub fn pid_of(status: &Value) -> Option<i32> {
    status["container_status"]["executor_pid"]
        .as_i64()
        .map(|p| p as i32)
}

/// A network namespace of the test's own whose loopback device also holds `addr` (an
/// address outside 127.0.0.0/8, so a component can listen on a non-loopback address without
/// touching the host's network); deleted when dropped.
pub struct Netns {
    pub name: String,
    pub addr: String,
}

impl Netns {
    pub fn new(addr: &str) -> Netns {
        let name = format!("drove-test-{}", uuid_like());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip runs");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            addr: addr.to_string(),
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ]);
        ns
    }

    /// Runs `drove args…` inside the namespace, output to `log`.
    pub fn spawn(&self, name: &str, args: &[String], log: &Path) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, drove()])
            .args(args)
            .env("DROVE_LOG", "info");
        Proc::spawn_command(name, cmd, log)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod tempdir");
    dir
}

/// Runs the `drove` CLI; its exit status and output.
pub async fn drove_cli(args: &[&str]) -> (bool, String) {
    drove_cli_env(args, &[]).await
}

/// Runs the `drove` CLI with `env` set (`DROVE_PAAS_URL`, `DROVE_ADMIN_TOKEN`, as a user sets
/// them); its exit status and output.
pub async fn drove_cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(drove());
    cmd.args(args).envs(env.iter().copied());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the CLI finished within 30 s")
        .expect("running the CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Makes files immutable (`chattr +i`: even root cannot write them, through fds already open
/// too) until dropped.
pub struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    pub fn set(paths: &[std::path::PathBuf]) -> Immutable {
        let guard = Immutable(paths.to_vec());
        for p in paths {
            let out = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .output()
                .unwrap_or_else(|e| panic!("running chattr (e2fsprogs): {e}"));
            assert!(
                out.status.success(),
                "chattr +i {} failed (needs root and ext4/xfs/btrfs): {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        guard
    }

    pub fn clear(&mut self) {
        for p in self.0.drain(..) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&p)
                .status();
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Writes `dir`'s `package-lock.json` from its `package.json`, offline (its dependencies are
/// local files).
pub fn npm_lockfile(dir: &Path) {
    let lock = Command::new("npm")
        .args([
            "install",
            "--package-lock-only",
            "--ignore-scripts",
            "--offline",
        ])
        .args(["--no-audit", "--no-fund"])
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .expect("npm runs");
    assert!(
        lock.status.success(),
        "npm: {}",
        String::from_utf8_lossy(&lock.stderr)
    );
}

/// GitHub's `X-Hub-Signature-256` of a delivery `body` under the webhook `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A created push app's git remote with its deploy token in it (what `git push` is given),
/// from the answer of `POST /v1/push/apps`.
pub fn push_remote(created: &Value) -> String {
    let token = created["deployToken"].as_str().expect("a deploy token");
    created["remote"].as_str().expect("a remote").replacen(
        "http://",
        &format!("http://git:{token}@"),
        1,
    )
}

/// Runs git in `dir` with no user or system configuration (and no credential prompts); its
/// success and its output.
pub fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=drove test",
            "-c",
            "user.email=test@drove.invalid",
        ])
        .args(["-c", "init.defaultBranch=main", "-c", "credential.helper="])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
