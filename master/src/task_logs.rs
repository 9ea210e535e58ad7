//! Reads of one task that its agent answers, made through the master on the caller's behalf:
//!
//! - `GET /master/frameworks/{framework}/tasks/{task}/logs/{stream}?offset=&length=`: its
//!   stdout or stderr;
//! - `GET /master/frameworks/{framework}/tasks/{task}/statistics`: its resource use (Mesos's
//!   `ResourceStatistics`: CPU seconds, limits), from the agent's `/monitor/statistics`;
//! - `GET /master/frameworks/{framework}/tasks/{task}/outputs/{name}`: a file it left for its
//!   framework to collect (a build's result), streamed.
//!
//! Agents answer their master only (the cluster secret), so frameworks read here: a framework
//! principal reads its own framework's tasks only (403 otherwise); the cluster secret reads
//! any. Without framework authentication and cluster secret, anyone may read, as every other
//! endpoint of such a master.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use drove_proto::agent::ResourceUsage;

use crate::auth::{identify, unauthenticated, Reader};
use crate::Shared;

pub const PATH: &str = "/master/frameworks/{framework}/tasks/{task}/logs/{stream}";

fn refuse(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

pub const STATS_PATH: &str = "/master/frameworks/{framework}/tasks/{task}/statistics";

pub const OUTPUT_PATH: &str = "/master/frameworks/{framework}/tasks/{task}/outputs/{name}";

/// Checks the caller may read `framework`'s task `task` and finds its agent's endpoint.
fn resolve(
    shared: &Shared,
    headers: &HeaderMap,
    framework: &str,
    task: &str,
) -> Result<String, Box<Response>> {
    let protected =
        shared.frameworks.is_some() || shared.cluster_secret.is_some() || shared.readonly_auth;
    let reader = if protected {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match identify(
            shared.frameworks.as_ref(),
            shared.cluster_secret.as_deref(),
            header,
        ) {
            Some(r) => Some(r),
            None => return Err(Box::new(unauthenticated())),
        }
    } else {
        None
    };
    let cluster = shared.lock();
    let Some(fw) = cluster.frameworks.get(framework) else {
        return Err(Box::new(refuse(
            StatusCode::NOT_FOUND,
            format!("framework {framework:?} is not known"),
        )));
    };
    if let Some(Reader::Framework(principal)) = &reader {
        if fw.info.principal.as_deref() != Some(principal.as_str()) {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                format!("framework {framework:?} is not principal {principal:?}'s"),
            )));
        }
    }
    let agent = fw
        .tasks
        .get(task)
        .or_else(|| fw.completed.iter().find(|t| t.info.task_id.value == task))
        .map(|t| t.agent_id.value.clone());
    let Some(agent) = agent else {
        return Err(Box::new(refuse(
            StatusCode::NOT_FOUND,
            format!("task {task:?} of framework {framework:?} is not known"),
        )));
    };
    match cluster.agents.get(&agent) {
        Some(a) => Ok(a.endpoint.clone()),
        None => Err(Box::new(refuse(
            StatusCode::BAD_GATEWAY,
            format!("agent {agent} of task {task:?} is not registered"),
        ))),
    }
}

pub async fn task_log(
    State(shared): State<Arc<Shared>>,
    Path((framework, task, stream)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if drove_proto::output::Stream::parse(&stream).is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("stream: expected stdout or stderr, found {stream:?}"),
        );
    }
    let endpoint = match resolve(&shared, &headers, &framework, &task) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let mut url = format!("{endpoint}/agent/v1/tasks/{task}/{stream}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(&q);
    }
    let resp = match shared.agent_http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("reading {url}: {e}")),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    match resp.bytes().await {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            body,
        )
            .into_response(),
        Err(e) => refuse(StatusCode::BAD_GATEWAY, format!("reading {url}: {e}")),
    }
}

pub async fn task_output(
    State(shared): State<Arc<Shared>>,
    Path((framework, task, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let endpoint = match resolve(&shared, &headers, &framework, &task) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let url = format!("{endpoint}/agent/v1/tasks/{task}/outputs/{name}");
    // A build's output may be large: the client's usual bound is for small calls.
    let resp = match shared
        .agent_http
        .get(&url)
        .timeout(std::time::Duration::from_secs(600))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("reading {url}: {e}")),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(len) = resp.content_length() {
        out = out.header(header::CONTENT_LENGTH, len);
    }
    out.body(axum::body::Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|e| refuse(StatusCode::BAD_GATEWAY, e.to_string()))
}

pub async fn task_statistics(
    State(shared): State<Arc<Shared>>,
    Path((framework, task)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let endpoint = match resolve(&shared, &headers, &framework, &task) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let url = format!("{endpoint}/monitor/statistics");
    let all: Vec<ResourceUsage> = match shared.agent_http.get(&url).send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("reading {url}: {e}")),
        },
        Ok(r) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("reading {url}: HTTP {}", r.status()),
            )
        }
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("reading {url}: {e}")),
    };
    let entry = all
        .into_iter()
        .find(|e| e.framework_id == framework && e.executor_id == task);
    match entry {
        Some(e) => axum::Json(e.statistics).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no statistics for task {task:?} (not running, or no cgroup)"),
        ),
    }
}
