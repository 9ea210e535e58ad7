//! Tasks launched per second through the v1 scheduler API, against simulated agents.
//!
//! A real master (in-process, real HTTP, real SQLite) and 100 simulated agents (one HTTP server
//! answering the agent protocol: every launch is reported TASK_RUNNING at once, with a uuid the
//! framework must acknowledge). A framework launches N tasks and we time launch → RUNNING for
//! all of them, twice in the same run: one task per ACCEPT, and as many tasks per ACCEPT as the
//! offer holds. The framework is `drove-driver`, the client the PaaS uses.
//!
//! Run: `cargo bench --bench launch`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use drove_driver::{Config, Driver, Event};
use drove_proto::agent::{LaunchTask, RegisterAgent, Registered, StatusUpdate};
use drove_proto::mesos::{
    AgentId, CommandInfo, ContainerStatus, Filters, FrameworkInfo, Resource, TaskId, TaskInfo,
    TaskSource, TaskState, TaskStatus,
};
use drove_proto::Resources;
use tokio_util::sync::CancellationToken;

const AGENTS: usize = 100;
const TASKS: usize = 5000;

struct Sim {
    master: String,
    http: reqwest::Client,
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
        });
        let update = StatusUpdate {
            agent_id: msg.task.agent_id.clone(),
            framework_id: msg.framework_id,
            status,
        };
        let _ = sim
            .http
            .post(format!("{}/agent/v1/status", sim.master))
            .json(&update)
            .send()
            .await;
    });
    "ok"
}

async fn ok() -> &'static str {
    "ok"
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let master_addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let probe = std::net::TcpListener::bind(master_addr).expect("probe");
    let master_addr = probe.local_addr().expect("addr");
    drop(probe);
    let master_url = format!("http://{master_addr}");
    let shutdown = CancellationToken::new();
    let args = drove_master::MasterArgs {
        listen: master_addr,
        data_dir: dir.path().to_path_buf(),
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
    };
    tokio::spawn(drove_master::run(args, shutdown.clone()));

    let sim = Arc::new(Sim {
        master: master_url.clone(),
        http: reqwest::Client::new(),
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
    for i in 0..AGENTS {
        let reg = RegisterAgent {
            agent_id: None,
            hostname: format!("sim{i}"),
            endpoint: agent_url.clone(),
            resources: Resources::parse("cpus:64;mem:262144;disk:100000;ports:[31000-32000]")
                .expect("resources")
                .to_mesos(),
            attributes: vec![],
            tasks: vec![],
            version: "sim".into(),
        };
        let r: Registered = http
            .post(format!("{master_url}/agent/v1/register"))
            .json(&reg)
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("registered");
        let _: AgentId = r.agent_id;
    }

    println!("launch throughput: real master, {AGENTS} simulated agents, {TASKS} tasks per run");
    for per_accept in [1usize, usize::MAX] {
        let (elapsed, launched) = run_framework(&master_url, per_accept).await;
        let label = if per_accept == 1 {
            "1 task per ACCEPT".to_string()
        } else {
            "all that fit per ACCEPT".to_string()
        };
        println!(
            "  {label:<26} {launched} tasks RUNNING in {:.3} s = {:.0} tasks/s",
            elapsed.as_secs_f64(),
            launched as f64 / elapsed.as_secs_f64()
        );
    }
    shutdown.cancel();
}

/// Subscribes a framework through `drove-driver`, launches TASKS tasks (0.01 cpu, 8 MiB each),
/// acknowledges every update, and returns the time from SUBSCRIBED to the last RUNNING.
async fn run_framework(master: &str, per_accept: usize) -> (Duration, usize) {
    let info = FrameworkInfo {
        user: "bench".into(),
        name: format!("bench-{per_accept}"),
        id: None,
        failover_timeout: Some(0.0),
        checkpoint: None,
        role: None,
        roles: vec![],
        hostname: None,
        principal: None,
        webui_url: None,
        capabilities: vec![],
        labels: None,
    };
    let mut config = Config::new(master, info);
    config.reconcile_on_subscribe = false;
    let cancel = CancellationToken::new();
    let (driver, mut events) = Driver::start(config, cancel.clone());
    let mut started = Instant::now();
    let mut launched = 0usize;
    let mut running = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), events.recv()).await {
        match event {
            Event::Subscribed { .. } => started = Instant::now(),
            Event::Offers(offers) => {
                for offer in offers {
                    let mut tasks = Vec::new();
                    while tasks.len() < per_accept && launched < TASKS && tasks.len() < 6000 {
                        tasks.push(TaskInfo {
                            name: "t".into(),
                            task_id: TaskId::new(format!("t{launched}")),
                            agent_id: offer.agent_id.clone(),
                            resources: vec![
                                Resource::scalar("cpus", 0.01),
                                Resource::scalar("mem", 8.0),
                            ],
                            command: Some(CommandInfo {
                                value: Some("true".into()),
                                ..Default::default()
                            }),
                            executor: None,
                            health_check: None,
                            kill_policy: None,
                            labels: None,
                            discovery: None,
                            container: None,
                        });
                        launched += 1;
                    }
                    let filters = Filters {
                        refuse_seconds: Some(0.0),
                    };
                    if let Err(e) = driver.launch(vec![offer.id], tasks, Some(filters)).await {
                        eprintln!("ACCEPT failed: {e}");
                    }
                }
            }
            Event::Update(status) => {
                if status.state == TaskState::TaskRunning {
                    running += 1;
                }
                if let Err(e) = driver.acknowledge(&status).await {
                    eprintln!("ACKNOWLEDGE failed: {e}");
                }
                if running >= TASKS {
                    break;
                }
            }
            Event::Disconnected { reason } => eprintln!("stream lost: {reason}"),
            Event::Error(message) => {
                eprintln!("the master removed the framework: {message}");
                break;
            }
            Event::Rescind(_) | Event::Failure { .. } => {}
        }
    }
    let elapsed = started.elapsed();
    if let Err(e) = driver.teardown().await {
        eprintln!("TEARDOWN failed: {e}");
    }
    cancel.cancel();
    (elapsed, running)
}
