//! Test harness: a fake master (axum on 127.0.0.1) and an in-process agent using the real
//! supervisor binary and real cgroups under a unique root per test.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing;
use axum::{Json, Router};
use drove_agent::{AgentArgs, Isolation};
use drove_proto::agent::{AcknowledgeUpdate, Ping, Pong, RegisterAgent, Registered, StatusUpdate};
use drove_proto::mesos::{AgentId, TaskState};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const T: Duration = Duration::from_secs(20);

#[derive(Default)]
pub struct MasterState {
    pub registrations: Vec<RegisterAgent>,
    pub updates: Vec<StatusUpdate>,
    pub pings: usize,
    /// When false, pings get 404 (the master "forgot" the agent).
    pub knows_agent: bool,
    pub auto_ack: bool,
    pub endpoint: Option<String>,
    /// Pings succeed even when the master does not know the agent (only status 404s then).
    pub pings_ok_when_unknown: bool,
    /// Status updates get 404 while the master does not know the agent.
    pub status_404_when_unknown: bool,
    /// The n-th status 404 (0-based) is answered after n × this delay.
    pub status_404_stagger: Duration,
    pub status_404s: u32,
    /// How long answering a registration takes.
    pub register_delay: Duration,
}

#[derive(Clone)]
pub struct FakeMaster {
    pub url: String,
    pub state: Arc<Mutex<MasterState>>,
    token: CancellationToken,
}

type Shared = Arc<Mutex<MasterState>>;

async fn register(State(s): State<Shared>, Json(body): Json<RegisterAgent>) -> Json<Registered> {
    let delay = s.lock().unwrap().register_delay;
    tokio::time::sleep(delay).await;
    let mut st = s.lock().unwrap();
    let id = body
        .agent_id
        .clone()
        .unwrap_or_else(|| AgentId::new("agent-S0"));
    st.endpoint = Some(body.endpoint.clone());
    st.registrations.push(body);
    st.knows_agent = true;
    Json(Registered {
        agent_id: id,
        master_id: "master-1".into(),
        ping_interval_seconds: 0.2,
        max_missed_pings: 5,
        session: Some("fake-session".into()),
        agent_key: None,
    })
}

async fn ping(State(s): State<Shared>, Json(_body): Json<Ping>) -> Result<Json<Pong>, StatusCode> {
    let mut st = s.lock().unwrap();
    st.pings += 1;
    if st.knows_agent || st.pings_ok_when_unknown {
        Ok(Json(Pong {
            master_id: "master-1".into(),
        }))
    } else {
        Err(StatusCode::NOT_FOUND)
    }
}

async fn status(State(s): State<Shared>, Json(body): Json<StatusUpdate>) -> StatusCode {
    let not_found_after = {
        let mut st = s.lock().unwrap();
        (!st.knows_agent && st.status_404_when_unknown).then(|| {
            st.status_404s += 1;
            st.status_404_stagger * (st.status_404s - 1)
        })
    };
    if let Some(delay) = not_found_after {
        tokio::time::sleep(delay).await;
        return StatusCode::NOT_FOUND;
    }
    let (ack, endpoint) = {
        let mut st = s.lock().unwrap();
        st.updates.push(body.clone());
        (st.auto_ack, st.endpoint.clone())
    };
    if ack {
        if let (Some(ep), Some(uuid)) = (endpoint, body.status.uuid.clone()) {
            tokio::spawn(async move {
                let ack = AcknowledgeUpdate {
                    framework_id: body.framework_id.clone(),
                    task_id: body.status.task_id.clone(),
                    uuid,
                };
                let _ = reqwest::Client::new()
                    .post(format!("{ep}/agent/v1/acknowledge"))
                    .json(&ack)
                    .send()
                    .await;
            });
        }
    }
    StatusCode::ACCEPTED
}

impl FakeMaster {
    pub async fn start() -> FakeMaster {
        let state: Shared = Arc::new(Mutex::new(MasterState {
            auto_ack: true,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/agent/v1/register", routing::post(register))
            .route("/agent/v1/ping", routing::post(ping))
            .route("/agent/v1/status", routing::post(status))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { t.cancelled().await })
                .await
                .unwrap();
        });
        FakeMaster { url, state, token }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, MasterState> {
        self.state.lock().unwrap()
    }

    pub fn updates_for(&self, task: &str) -> Vec<StatusUpdate> {
        self.lock()
            .updates
            .iter()
            .filter(|u| u.status.task_id.value == task)
            .cloned()
            .collect()
    }

    /// Waits for an update of `task` in `state`.
    pub async fn wait_state(&self, task: &str, state: TaskState) -> StatusUpdate {
        crate::wait::until_ok(
            &format!("a {} update for {task}", state.as_str()),
            T,
            || async {
                let updates = self.updates_for(task);
                if let Some(u) = updates.iter().find(|u| u.status.state == state) {
                    return Ok(u.clone());
                }
                Err(format!(
                    "updates: {:#?}",
                    updates
                        .iter()
                        .map(|u| (
                            u.status.state,
                            u.status.message.clone(),
                            u.status.reason.clone()
                        ))
                        .collect::<Vec<_>>()
                ))
            },
        )
        .await
    }

    pub async fn wait_registrations(&self, n: usize) -> RegisterAgent {
        crate::wait::eventually(&format!("{n} registrations"), T, || {
            let st = self.lock();
            let reg = st.registrations.get(n - 1).cloned();
            async move { reg }
        })
        .await
    }

    pub fn stop(&self) {
        self.token.cancel();
    }
}

/// A unique cgroup root for one test, removed (with anything left in it) on drop.
pub struct CgroupRoot(pub String);

impl CgroupRoot {
    pub fn new(tag: &str) -> CgroupRoot {
        CgroupRoot(format!(
            "drove-agent-test-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        for base in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/cpu",
            "/sys/fs/cgroup/cpuacct",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup",
        ] {
            let dir = Path::new(base).join(&self.0);
            if dir.is_dir() {
                remove_tree(&dir);
            }
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        // Never ourselves: in a cgroup namespace the test process may live in `<root>/agent`.
        let me = std::process::id() as i32;
        for pid in procs
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|p| *p != me)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `/sys/fs/cgroup` is a unified (v2) hierarchy (on a hybrid host it is a tmpfs holding
/// the v1 hierarchies).
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The directory of the cgroup `rel` in the v1 `controller` hierarchy, or the unified one (v2).
fn controller_dir(controller: &str, rel: &str) -> PathBuf {
    let base = Path::new("/sys/fs/cgroup");
    if cgroup_v2() {
        base.join(rel)
    } else {
        base.join(controller).join(rel)
    }
}

/// The directory of the cgroup `rel` in the memory hierarchy (v1) or the unified one (v2).
pub fn cgroup_dir(rel: &str) -> PathBuf {
    controller_dir("memory", rel)
}

/// The directory of the cgroup `rel` in the pids hierarchy (v1) or the unified one (v2).
pub fn pids_cgroup_dir(rel: &str) -> PathBuf {
    controller_dir("pids", rel)
}

/// The directory of the cgroup `rel` in the cpu hierarchy (v1) or the unified one (v2).
pub fn cpu_cgroup_dir(rel: &str) -> PathBuf {
    controller_dir("cpu", rel)
}

/// The task cgroups under a cgroup root: its subdirectories (memory hierarchy on v1), except the
/// leaf `agent` a v2 agent moves itself into when the root of its cgroup namespace holds
/// processes (see `prepare_v2`).
pub fn task_cgroups(root: &str) -> Vec<PathBuf> {
    // A root that is not there would read as "no task cgroup left" whatever the agent did.
    let dir = cgroup_dir(root);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the agent's cgroup root {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !(cgroup_v2() && p.ends_with("agent")))
        .collect();
    dirs.sort();
    dirs
}

pub fn executor_path() -> PathBuf {
    crate::cargo_bin("drove-agent-executor")
}

pub fn agent_args(master: &FakeMaster, work_dir: &Path, cgroup_root: &str) -> AgentArgs {
    AgentArgs {
        master: master.url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        work_dir: work_dir.to_path_buf(),
        resources: Some("cpus:2;mem:1024;ports:[31000-31100]".into()),
        hostname: None,
        attributes: Some("rack:r1".into()),
        isolation: Isolation::Cgroups,
        oci_runtime: "crun".into(),
        task_network: "10.213.0.0/16".into(),
        cni_plugin_dir: drove_agent::container::network::DEFAULT_PLUGIN_DIR.into(),
        network_pool: 2,
        task_tmp_bytes: 16 << 20,
        allow_host_network: false,
        no_cfs_quota: false,
        cluster_secret: None,
        cluster_secret_file: None,
        insecure: false,
        fetch_timeout: std::time::Duration::from_secs(60),
        fetch_max_bytes: 64 << 20,
        task_pids_max: 64,
        task_uids: drove_agent::sandbox::DEFAULT_TASK_UIDS.into(),
        fetch_allow_dirs: Vec::new(),
        fetch_cache_max_bytes: 1 << 30,
        cgroup_root: cgroup_root.to_string(),
        ping_interval: None,
        log_max_bytes: drove_agent::logs::DEFAULT_MAX_BYTES,
        startup_cpu_boost: std::time::Duration::from_secs(10),
        executor_path: Some(executor_path()),
        // Tests that want layers (mounts under the test's dir) ask for them.
        no_artifact_layers: true,
        sandbox_keep_bytes: 1 << 30,
        layers_keep_bytes: 1 << 30,
    }
}

/// A fake master and an in-process agent registered with it (its `agent_args`, changed by
/// `adjust`): the master, the work dir, the cgroup root, the agent and its endpoint.
pub async fn started_with(
    tag: &str,
    adjust: impl FnOnce(&mut AgentArgs),
) -> (FakeMaster, tempfile::TempDir, CgroupRoot, TestAgent, String) {
    init_tracing();
    let master = FakeMaster::start().await;
    let dir = tempdir();
    let root = CgroupRoot::new(tag);
    let mut args = agent_args(&master, dir.path(), &root.0);
    adjust(&mut args);
    let agent = TestAgent::start(args);
    let reg = master.wait_registrations(1).await;
    (master, dir, root, agent, reg.endpoint)
}

/// A running in-process agent.
pub struct TestAgent {
    pub token: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), drove_agent::AgentError>>,
}

impl TestAgent {
    pub fn start(args: AgentArgs) -> TestAgent {
        let token = CancellationToken::new();
        let handle = tokio::spawn(drove_agent::run(args, token.clone()));
        TestAgent { token, handle }
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(T, self.handle)
            .await
            .expect("agent stops in time")
            .expect("agent task")
            .expect("agent result");
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("drove_agent=debug")
        .with_test_writer()
        .try_init();
}

/// A LaunchTask body for a shell command.
pub fn launch_body(
    task_id: &str,
    cmd: &str,
    cpus: f64,
    mem: f64,
    ports: Option<(u64, u64)>,
) -> Value {
    let mut resources = vec![
        json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}}),
        json!({"name": "mem", "type": "SCALAR", "scalar": {"value": mem}}),
    ];
    if let Some((b, e)) = ports {
        resources.push(json!({"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": b, "end": e}]}}));
    }
    json!({
        "framework_id": {"value": "fw-1"},
        "framework_info": {"user": "root", "name": "test"},
        "task": {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": "agent-S0"},
            "resources": resources,
            "command": {"shell": true, "value": cmd}
        }
    })
}

/// `POST /agent/v1/shutdown` for one framework; returns the status code.
pub async fn shutdown_framework(endpoint: &str, framework: &str) -> u16 {
    post(
        endpoint,
        "/agent/v1/shutdown",
        &serde_json::json!({"framework_id": {"value": framework}}),
    )
    .await
}

pub async fn post(endpoint: &str, path: &str, body: &Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{endpoint}{path}"))
        .json(body)
        .send()
        .await
        .expect("post to agent")
        .status()
        .as_u16()
}

pub async fn get_json(url: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim().chars().next();
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Waits (boundedly) until process `pid` has ended: a killed process leaves its cgroup before
/// it is a zombie, so right after a kill is reported it may still be exiting.
pub async fn wait_ended(pid: u32, what: &str) {
    crate::wait::until(&format!("{what}: process {pid} to end"), T, || {
        !pid_alive(pid)
    })
    .await;
}

/// A temporary directory task users can traverse (mode 0711): a root agent refuses a work
/// dir its tasks' uids cannot reach, and `mktemp -d` makes 0700 ones.
pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod tempdir");
    dir
}
