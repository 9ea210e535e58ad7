//! Tasks launched per second through the v1 scheduler API, against simulated agents.
//!
//! A real master (in-process, real HTTP, real SQLite) and 100 simulated agents (one HTTP server
//! answering the agent protocol: every launch is reported TASK_RUNNING at once, with a uuid the
//! framework must acknowledge). A framework launches N tasks and we time launch → RUNNING for
//! all of them, twice in the same run: one task per ACCEPT, and as many tasks per ACCEPT as the
//! offer holds.
//!
//! Run: `cargo bench --bench launch`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use drove_proto::agent::{LaunchTask, RegisterAgent, Registered, StatusUpdate};
use drove_proto::mesos::{AgentId, ContainerStatus, TaskSource, TaskState, TaskStatus};
use drove_proto::recordio;
use drove_proto::Resources;
use futures::StreamExt;
use serde_json::{json, Value};
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

/// Subscribes a framework, launches TASKS tasks (0.01 cpu, 8 MiB each), acknowledges every
/// update, and returns the time from SUBSCRIBED to the last RUNNING.
async fn run_framework(master: &str, per_accept: usize) -> (Duration, usize) {
    let url = format!("{master}/api/v1/scheduler");
    let http = reqwest::Client::new();
    let resp = http
        .post(&url)
        .header("Content-Type", "application/json")
        .json(
            &json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
            "user": "bench", "name": format!("bench-{per_accept}"), "failover_timeout": 0.0}}}),
        )
        .send()
        .await
        .expect("subscribe");
    let stream_id = resp
        .headers()
        .get("Mesos-Stream-Id")
        .and_then(|v| v.to_str().ok())
        .expect("stream id")
        .to_string();
    let mut body = resp.bytes_stream();
    let mut decoder = recordio::Decoder::new();
    let mut fw_id = Value::Null;
    let started = Instant::now();
    let mut launched = 0usize;
    let mut running = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    'outer: while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout_at(deadline.into(), body.next()).await
    {
        decoder.push(&chunk);
        while let Ok(Some(rec)) = decoder.next_record() {
            let ev: Value = serde_json::from_slice(&rec).expect("event json");
            match ev["type"].as_str() {
                Some("SUBSCRIBED") => fw_id = ev["subscribed"]["framework_id"].clone(),
                Some("OFFERS") => {
                    for offer in ev["offers"]["offers"].as_array().into_iter().flatten() {
                        let mut tasks = Vec::new();
                        while tasks.len() < per_accept && launched < TASKS && tasks.len() < 6000 {
                            tasks.push(json!({
                                "name": "t", "task_id": {"value": format!("t{launched}")},
                                "agent_id": offer["agent_id"],
                                "resources": [
                                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.01}},
                                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 8}}],
                                "command": {"value": "true"}}));
                            launched += 1;
                        }
                        let call = json!({"type": "ACCEPT", "framework_id": fw_id, "accept": {
                            "offer_ids": [offer["id"]],
                            "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                            "filters": {"refuse_seconds": 0.0}}});
                        send_call(&http, &url, &stream_id, &call).await;
                    }
                }
                Some("UPDATE") => {
                    let status = &ev["update"]["status"];
                    if status["state"] == "TASK_RUNNING" {
                        running += 1;
                    }
                    if let Some(uuid) = status.get("uuid") {
                        let call = json!({"type": "ACKNOWLEDGE", "framework_id": fw_id,
                            "acknowledge": {"agent_id": status["agent_id"],
                                "task_id": status["task_id"], "uuid": uuid}});
                        send_call(&http, &url, &stream_id, &call).await;
                    }
                    if running >= TASKS {
                        break 'outer;
                    }
                }
                _ => {}
            }
        }
    }
    let elapsed = started.elapsed();
    let teardown = json!({"type": "TEARDOWN", "framework_id": fw_id});
    send_call(&http, &url, &stream_id, &teardown).await;
    (elapsed, running)
}

async fn send_call(http: &reqwest::Client, url: &str, stream_id: &str, call: &Value) {
    let _ = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", stream_id)
        .json(call)
        .send()
        .await;
}
