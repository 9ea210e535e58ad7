//! Tasks launched per second through the v1 scheduler API, against simulated agents.
//!
//! A real master (in-process, real HTTP, real SQLite) and 100 simulated agents (one HTTP server
//! answering the agent protocol: every launch is reported TASK_RUNNING at once, with a uuid the
//! framework must acknowledge). A framework launches N tasks and we time launch → RUNNING for
//! all of them, twice in the same run: one task per ACCEPT, and as many tasks per ACCEPT as the
//! offer holds. The framework is `drove-driver`, the client the PaaS uses.
//!
//! Run: `cargo bench --bench launch`

use std::time::{Duration, Instant};

use drove_driver::{Config, Driver, Event};
use drove_proto::mesos::{
    CommandInfo, Filters, FrameworkInfo, Resource, TaskId, TaskInfo, TaskState,
};
use tokio_util::sync::CancellationToken;

use drove_testkit::bench as support;

const AGENTS: usize = 100;
const TASKS: usize = 5000;

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = support::tempdir();
    let shutdown = CancellationToken::new();
    let master_url = support::sim_cluster(
        dir.path(),
        AGENTS,
        "cpus:64;mem:262144;disk:100000;ports:[31000-32000]",
        shutdown.clone(),
    )
    .await;

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
                            limits: Default::default(),
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
