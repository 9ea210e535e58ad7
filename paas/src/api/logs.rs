//! `GET /v1/tasks/{task}/logs/{stream}?offset=&length=`: an instance's stdout or stderr, read
//! from the agent that runs it (found through the master's state).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error;
use crate::Paas;

pub async fn task_log(
    State(paas): State<Arc<Paas>>,
    Path((task, stream)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    if stream != "stdout" && stream != "stderr" {
        return error(StatusCode::BAD_REQUEST, "stream: expected stdout or stderr");
    }
    let agent = paas.lock().instances.get(&task).map(|i| i.agent_id.clone());
    let Some(agent) = agent else {
        return error(
            StatusCode::NOT_FOUND,
            format!("Task '{task}' does not exist"),
        );
    };
    // The agent's endpoint, from the cached agent list; read again once if it is not there
    // (an agent that registered since).
    let find = |agents: &[Value]| {
        agents
            .iter()
            .find(|a| a["id"] == agent.as_str())
            .and_then(|a| a["endpoint"].as_str().map(str::to_string))
    };
    let mut endpoint = None;
    for fresh in [false, true] {
        let Some(agents) = paas.agents(fresh).await else {
            return error(StatusCode::BAD_GATEWAY, "cannot read the master's state");
        };
        endpoint = find(&agents);
        if endpoint.is_some() {
            break;
        }
    }
    let Some(endpoint) = endpoint else {
        return error(
            StatusCode::BAD_GATEWAY,
            format!("agent {agent} is not registered"),
        );
    };
    let base = if endpoint.starts_with("http") {
        endpoint
    } else {
        format!("http://{endpoint}")
    };
    let mut url = format!("{base}/agent/v1/tasks/{task}/{stream}");
    if let Some(q) = raw {
        url.push('?');
        url.push_str(&q);
    }
    match paas.http.get(&url).send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(b) => (
                    status,
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    b,
                )
                    .into_response(),
                Err(e) => error(StatusCode::BAD_GATEWAY, format!("reading {url}: {e}")),
            }
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("reading {url}: {e}")),
    }
}
