//! Test harness: runs the real `drove` binary (a master and agents on 127.0.0.N) and a small
//! v1 scheduler client, as an external framework would.
#![allow(dead_code)]

pub mod paas;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drove_proto::recordio;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const DROVE: &str = env!("CARGO_BIN_EXE_drove");

/// A port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    let ip: IpAddr = ip.parse().expect("test ip");
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(DROVE)
            .args(args)
            .env("DROVE_LOG", "info,drove_master=debug,drove_agent=debug")
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
}

impl TestCluster {
    /// Starts a master and one agent per resource spec.
    pub async fn start(agent_resources: &[&str]) -> TestCluster {
        Self::start_with(agent_resources, &[]).await
    }

    /// Like [`TestCluster::start`], with extra master flags.
    pub async fn start_with(agent_resources: &[&str], master_args: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
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
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            master_args: master_args.iter().map(|a| a.to_string()).collect(),
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{url} did not come up; logs:\n{}", self.logs());
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self
                .http
                .get(format!("{}/master/state", self.master_url()))
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    if v["activated_slaves"].as_u64() == Some(n as u64) {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} agents did not register; logs:\n{}", self.logs());
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
// A v1 scheduler client

pub struct Framework {
    pub http: reqwest::Client,
    pub url: String,
    pub stream_id: String,
    pub id: String,
    pub events: mpsc::UnboundedReceiver<Value>,
    pub auto_ack: bool,
    pub reader: tokio::task::JoinHandle<()>,
    /// Events skipped while waiting for something else (all but HEARTBEATs), so no test loses
    /// an update or an offer.
    pub backlog: std::collections::VecDeque<Value>,
}

impl Drop for Framework {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub fn framework_info(name: &str) -> Value {
    json!({"user": "root", "name": name, "failover_timeout": 60.0, "checkpoint": true})
}

impl Framework {
    /// SUBSCRIBEs with `info` and waits for SUBSCRIBED.
    pub async fn subscribe(master: &str, info: Value) -> Framework {
        let mut call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
        if let Some(id) = info.get("id") {
            call["framework_id"] = id.clone();
        }
        let url = format!("{master}/api/v1/scheduler");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let streaming = reqwest::Client::new();
        let resp = streaming
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .json(&call)
            .send()
            .await
            .expect("subscribe");
        assert_eq!(resp.status(), 200, "SUBSCRIBE status");
        let stream_id = resp
            .headers()
            .get("Mesos-Stream-Id")
            .and_then(|v| v.to_str().ok())
            .expect("Mesos-Stream-Id header")
            .to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut decoder = recordio::Decoder::new();
            while let Some(Ok(chunk)) = body.next().await {
                decoder.push(&chunk);
                while let Ok(Some(record)) = decoder.next_record() {
                    if let Ok(v) = serde_json::from_slice::<Value>(&record) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut fw = Framework {
            http,
            url,
            stream_id,
            id: String::new(),
            events: rx,
            auto_ack: true,
            reader,
            backlog: Default::default(),
        };
        let sub = fw
            .next_of("SUBSCRIBED", Duration::from_secs(10))
            .await
            .expect("SUBSCRIBED event");
        fw.id = sub["subscribed"]["framework_id"]["value"]
            .as_str()
            .expect("framework id")
            .to_string();
        fw
    }

    /// Sends a call; returns the HTTP status and body.
    pub async fn call(&self, mut call: Value) -> (u16, String) {
        call["framework_id"] = json!({"value": self.id});
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Mesos-Stream-Id", &self.stream_id)
            .json(&call)
            .send()
            .await
            .expect("call");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// The next event matching `pred` (HEARTBEATs and others are skipped), acknowledging
    /// updates on the way when `auto_ack` is set.
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
            if self.auto_ack && ev["type"] == "UPDATE" {
                let status = &ev["update"]["status"];
                if let Some(uuid) = status.get("uuid") {
                    let (code, body) = self
                        .call(json!({"type": "ACKNOWLEDGE", "acknowledge": {
                            "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": uuid}}))
                        .await;
                    assert_eq!(code, 202, "ACKNOWLEDGE: {body}");
                }
            }
            if pred(&ev) {
                return Some(ev);
            }
            if ev["type"] != "HEARTBEAT" {
                self.backlog.push_back(ev);
            }
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

    pub async fn launch(&self, offer: &Value, tasks: Vec<Value>) -> (u16, String) {
        self.call(json!({"type": "ACCEPT", "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
            "filters": {"refuse_seconds": 0.0}
        }}))
        .await
    }

    pub async fn decline(&self, offer: &Value, refuse_seconds: f64) -> (u16, String) {
        self.call(json!({"type": "DECLINE", "decline": {
            "offer_ids": [offer["id"]], "filters": {"refuse_seconds": refuse_seconds}}}))
            .await
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
