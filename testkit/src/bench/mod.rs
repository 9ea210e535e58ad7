//! Shared by the benchmarks: a real master in-process (real HTTP, real SQLite) with simulated
//! agents (one HTTP server answering the agent protocol for all of them: every launch is
//! reported TASK_RUNNING at once, with a uuid the framework must acknowledge).

pub mod up;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use drove_proto::agent::{LaunchTask, RegisterAgent, Registered, StatusUpdate};
use drove_proto::mesos::{ContainerStatus, TaskSource, TaskState, TaskStatus};
use drove_proto::Resources;
use tokio_util::sync::CancellationToken;

struct Sim {
    master: String,
    http: reqwest::Client,
    /// Each simulated agent's registration session, sent with its status updates.
    sessions: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

async fn launch(State(sim): State<Arc<Sim>>, Json(msg): Json<LaunchTask>) -> &'static str {
    tokio::spawn(async move {
        use base64::Engine;
        let mut status = TaskStatus::new(msg.task.task_id.clone(), TaskState::TaskRunning);
        status.agent_id = Some(msg.task.agent_id.clone());
        status.source = Some(TaskSource::SourceExecutor);
        status.uuid =
            Some(base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes()));
        status.container_status = Some(ContainerStatus {
            executor_pid: Some(1),
            ..Default::default()
        });
        let update = StatusUpdate {
            agent_id: msg.task.agent_id.clone(),
            framework_id: msg.framework_id,
            status,
        };
        let session = sim
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&update.agent_id.value)
            .cloned()
            .unwrap_or_default();
        let _ = sim
            .http
            .post(format!("{}/agent/v1/status", sim.master))
            .header(drove_proto::agent::SESSION_HEADER, session)
            .json(&update)
            .send()
            .await;
    });
    "ok"
}

async fn ok() -> &'static str {
    "ok"
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("addr")
}

/// Starts a master and registers `agents` simulated agents with `resources` each; returns the
/// master's URL. Everything stops with `shutdown`.
pub async fn sim_cluster(
    dir: &std::path::Path,
    agents: usize,
    resources: &str,
    shutdown: CancellationToken,
) -> String {
    let master_addr = free_addr();
    let master_url = format!("http://{master_addr}");
    let args = drove_master::MasterArgs {
        listen: master_addr,
        data_dir: dir.to_path_buf(),
        agent_ping_timeout: Duration::from_secs(60),
        max_agent_ping_timeouts: 3,
        agent_reregister_timeout: Duration::from_secs(600),
        agent_removal_timeout: Duration::from_secs(14 * 24 * 3600),
        heartbeat_interval: Duration::from_secs(15),
        allocation_interval: Duration::from_secs(1),
        min_allocatable_resources: drove_master::MinAllocatable(vec![Resources::cpus_mem(
            0.01, 0.0,
        )]),
        weights: Default::default(),
        hostname: None,
        authenticate_frameworks: false,
        credentials: None,
        cluster_secret: None,
        cluster_secret_file: None,
        insecure: false,
        authenticate_http_readonly: false,
    };
    tokio::spawn(drove_master::run(args, shutdown.clone()));
    let sim = Arc::new(Sim {
        master: master_url.clone(),
        http: reqwest::Client::new(),
        sessions: Default::default(),
    });
    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("agent listener");
    let agent_url = format!("http://{}", agent_listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/agent/v1/launch", post(launch))
        .route("/agent/v1/acknowledge", post(ok))
        .route("/agent/v1/kill", post(ok))
        .route("/agent/v1/shutdown", post(ok))
        .with_state(sim.clone());
    tokio::spawn(async move { axum::serve(agent_listener, app).await });
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{master_url}/health"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..agents {
        let reg = RegisterAgent {
            agent_id: None,
            hostname: format!("sim{i}"),
            endpoint: agent_url.clone(),
            resources: Resources::parse(resources).expect("resources").to_mesos(),
            attributes: vec![],
            tasks: vec![],
            version: "sim".into(),
            agent_key: None,
        };
        let registered: Registered = http
            .post(format!("{master_url}/agent/v1/register"))
            .json(&reg)
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("registered");
        if let Some(session) = registered.session {
            sim.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(registered.agent_id.value, session);
        }
    }
    master_url
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
