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
    let state_url = format!("{}/master/state", paas.args.master);
    let state: Value = match paas.http.get(&state_url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("reading {state_url}: {e}")),
    };
    let endpoint = state["slaves"].as_array().and_then(|agents| {
        agents
            .iter()
            .find(|a| a["id"] == agent.as_str())
            .and_then(|a| a["endpoint"].as_str().map(str::to_string))
    });
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
