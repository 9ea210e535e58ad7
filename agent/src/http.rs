//! The agent's HTTP API (master → agent calls and the read API).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drove_proto::agent::{
    AcknowledgeUpdate, AgentState, KillTask, LaunchTask, ResourceStatistics, ResourceUsage,
    ShutdownFramework, ACKNOWLEDGE_PATH, KILL_PATH, LAUNCH_PATH, SHUTDOWN_PATH, STATE_PATH,
};
use drove_proto::mesos::KillPolicy;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::checkpoint::KillCause;
use crate::launcher;
use crate::logs::{self, Stream};
use crate::node::{key_of, Node};
use crate::status;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .merge(
            Router::new()
                .route(LAUNCH_PATH, post(launch))
                .route(KILL_PATH, post(kill))
                .route(ACKNOWLEDGE_PATH, post(acknowledge))
                .route(SHUTDOWN_PATH, post(shutdown))
                // Task state and output are the frameworks' business: they read logs
                // through the master, which checks whose task it is.
                .route(STATE_PATH, get(state))
                .route("/agent/v1/tasks/{task_id}/{stream}", get(task_log))
                .route("/agent/v1/tasks/{task_id}/outputs/{name}", get(task_output))
                .route("/monitor/statistics", get(statistics))
                .route_layer(axum::middleware::from_fn_with_state(
                    node.clone(),
                    only_the_master,
                )),
        )
        .route("/health", get(health))
        .with_state(node)
}

/// With a cluster secret, launch/kill/acknowledge/shutdown and the state and log reads answer
/// only the master.
async fn only_the_master(
    State(node): State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(secret) = &node.config.cluster_secret {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !drove_proto::auth::bearer_is(header, secret) {
            return (
                StatusCode::UNAUTHORIZED,
                "only the master (with the cluster secret) may do this\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    drove_proto::decode::<T>(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}\n"),
        )
    })
}

async fn launch(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: LaunchTask = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    tracing::info!(task = %req.task.task_id, framework = %req.framework_id, "launch requested");
    // Recorded before the 202, so a kill or shutdown sent after it always finds the task.
    launcher::accept_launch(&node, req);
    StatusCode::ACCEPTED.into_response()
}

async fn kill(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: KillTask = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    let key = key_of(&req.framework_id, &req.task_id);
    let grace = {
        let tasks = node.tasks();
        match tasks.get(&key) {
            Some(rec) => KillPolicy::grace(req.kill_policy.or(rec.task.kill_policy).as_ref()),
            None => {
                // Its launch may still be on the way (requests can be reordered): remembered
                // for a while, under the tasks lock so a concurrent launch cannot slip by.
                let grace = KillPolicy::grace(req.kill_policy.as_ref());
                node.tombstone_task(
                    &key,
                    KillCause::Requested {
                        grace_ms: grace.as_millis() as u64,
                    },
                );
                tracing::warn!(task = %req.task_id, "kill for an unknown task: remembered in case its launch comes late");
                return StatusCode::ACCEPTED.into_response();
            }
        }
    };
    tracing::info!(task = %req.task_id, ?grace, "kill requested");
    launcher::request_kill(
        &node,
        &key,
        KillCause::Requested {
            grace_ms: grace.as_millis() as u64,
        },
    );
    StatusCode::ACCEPTED.into_response()
}

async fn acknowledge(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: AcknowledgeUpdate = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    if !status::acknowledge(&node, &req) {
        tracing::debug!(task = %req.task_id, uuid = %req.uuid, "acknowledgement matched no pending update");
    }
    StatusCode::ACCEPTED.into_response()
}

async fn shutdown(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    let req: ShutdownFramework = match decode(&body) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    tracing::info!(framework = %req.framework_id, "framework shutdown requested");
    launcher::shutdown_framework(&node, &req.framework_id.value);
    StatusCode::ACCEPTED.into_response()
}

async fn state(State(node): State<Arc<Node>>) -> Json<AgentState> {
    Json(AgentState {
        agent_id: node.agent_id(),
        hostname: node.config.hostname.clone(),
        resources: node.config.resources.to_mesos(),
        tasks: node.task_states(),
    })
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    length: Option<u64>,
    /// drove's: the last this many bytes (instead of offset and length).
    tail: Option<u64>,
}

async fn task_log(
    State(node): State<Arc<Node>>,
    Path((task_id, stream)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(stream) = Stream::parse(&stream) else {
        return (StatusCode::NOT_FOUND, "expected stdout or stderr\n").into_response();
    };
    let live = node
        .tasks()
        .values()
        .filter(|r| r.task.task_id.value == task_id)
        .find_map(|r| r.sandbox.clone());
    // A forgotten (terminal, acknowledged) task's sandbox is still on disk.
    let sandbox = match live {
        Some(s) => Some(s),
        None => crate::sandbox::latest_run(&node.config.work_dir, &task_id),
    };
    let Some(sandbox) = sandbox else {
        return (StatusCode::NOT_FOUND, format!("unknown task {task_id:?}\n")).into_response();
    };
    let path = stream.path_in(&sandbox);
    let read = move || match q.tail {
        Some(n) => logs::read_tail(&path, n),
        None => logs::read_range(&path, q.offset.unwrap_or(0), q.length),
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, "no such log\n").into_response()
        }
        // The task put a link or a foreign file in its log's place.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `GET /agent/v1/tasks/{task_id}/outputs/{name}`: a file the task left at the top of its
/// sandbox as `.drove-<name>.tar.zst` (`name`: lowercase letters), streamed. A build hands its
/// result back this way: the agent collects it, so the build needs no way to the PaaS.
async fn task_output(
    State(node): State<Arc<Node>>,
    Path((task_id, name)): Path<(String, String)>,
) -> Response {
    if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_lowercase()) {
        return (
            StatusCode::BAD_REQUEST,
            "name: expected lowercase letters\n",
        )
            .into_response();
    }
    let live = node
        .tasks()
        .values()
        .filter(|r| r.task.task_id.value == task_id)
        .find_map(|r| r.sandbox.clone());
    let Some(sandbox) =
        live.or_else(|| crate::sandbox::latest_run(&node.config.work_dir, &task_id))
    else {
        return (StatusCode::NOT_FOUND, format!("unknown task {task_id:?}\n")).into_response();
    };
    let path = sandbox.join(format!(".drove-{name}.tar.zst"));
    let opened = tokio::task::spawn_blocking(move || logs::open_task_file(&path)).await;
    match opened {
        Ok(Ok(file)) => {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, "the task left no such output\n").into_response()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `GET /monitor/statistics` (Mesos's shape): each live task's resource use, read from its
/// cgroup. For command tasks the executor id is the task id.
async fn statistics(State(node): State<Arc<Node>>) -> Json<Vec<ResourceUsage>> {
    let tasks: Vec<_> = node
        .tasks()
        .values()
        .filter(|r| !r.state.is_terminal())
        .map(|r| {
            (
                r.framework_id.value.clone(),
                r.task.task_id.value.clone(),
                r.cgroup.clone(),
                r.task.resources.clone(),
            )
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let entries = tasks
        .into_iter()
        .filter_map(|(fw, task, cgroup, resources)| {
            let cg = node.config.cgroups.as_ref()?.load(cgroup.as_deref()?);
            let (user, system) = cg.cpu_seconds()?;
            let limits = drove_proto::Resources::from_mesos(&resources).ok();
            Some(ResourceUsage {
                framework_id: fw,
                executor_id: task.clone(),
                executor_name: String::new(),
                source: task,
                statistics: ResourceStatistics {
                    timestamp: now,
                    cpus_user_time_secs: user,
                    cpus_system_time_secs: system,
                    cpus_limit: limits.as_ref().map(|l| l.cpus),
                    mem_limit_bytes: cg.memory_limit(),
                },
            })
        })
        .collect::<Vec<_>>();
    Json(entries)
}

async fn health() -> &'static str {
    "OK\n"
}
