//! `GET /master/frameworks/{framework}/tasks/{task}/logs/{stream}?offset=&length=`: a task's
//! stdout or stderr, read from the agent that runs it on the caller's behalf.
//!
//! Agents serve logs to their master only (the cluster secret), so frameworks read them here:
//! a framework principal reads its own framework's tasks only (403 otherwise); the cluster
//! secret reads any. Without framework authentication and cluster secret, anyone may read, as
//! every other endpoint of such a master.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::{identify, unauthenticated, Reader};
use crate::Shared;

pub const PATH: &str = "/master/frameworks/{framework}/tasks/{task}/logs/{stream}";

fn refuse(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

pub async fn task_log(
    State(shared): State<Arc<Shared>>,
    Path((framework, task, stream)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if stream != "stdout" && stream != "stderr" {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("stream: expected stdout or stderr, found {stream:?}"),
        );
    }
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
            None => return unauthenticated(),
        }
    } else {
        None
    };
    let endpoint = {
        let cluster = shared.lock();
        let Some(fw) = cluster.frameworks.get(&framework) else {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("framework {framework:?} is not known"),
            );
        };
        if let Some(Reader::Framework(principal)) = &reader {
            if fw.info.principal.as_deref() != Some(principal.as_str()) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!("framework {framework:?} is not principal {principal:?}'s"),
                );
            }
        }
        let agent = fw
            .tasks
            .get(&task)
            .or_else(|| fw.completed.iter().find(|t| t.info.task_id.value == task))
            .map(|t| t.agent_id.value.clone());
        let Some(agent) = agent else {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("task {task:?} of framework {framework:?} is not known"),
            );
        };
        match cluster.agents.get(&agent) {
            Some(a) => a.endpoint.clone(),
            None => {
                return refuse(
                    StatusCode::BAD_GATEWAY,
                    format!("agent {agent} of task {task:?} is not registered"),
                )
            }
        }
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
