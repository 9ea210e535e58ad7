//! `GET /v1/tasks/{task}/logs/{stream}?offset=&length=` (or `?tail=<bytes>`): an instance's
//! stdout or stderr (a running one's, or an app's last failed one's), read through the master (`/master/frameworks/{framework}/tasks/{task}/logs/{stream}`), which
//! checks the PaaS's credentials and asks the agent that runs it.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

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
    let (known, framework) = {
        let state = paas.lock();
        // A running instance, or an app's last failed one (what it wrote explains why).
        let known = state.instances.contains_key(&task)
            || state.apps.values().any(|a| {
                a.last_task_failure
                    .as_ref()
                    .is_some_and(|f| f["taskId"] == task.as_str())
            });
        (known, state.framework_id.clone())
    };
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            format!("Task '{task}' does not exist"),
        );
    }
    let Some(framework) = framework else {
        return error(StatusCode::BAD_GATEWAY, "not subscribed to the master yet");
    };
    let mut path = format!("/master/frameworks/{framework}/tasks/{task}/logs/{stream}");
    if let Some(q) = raw {
        path.push('?');
        path.push_str(&q);
    }
    match paas.master_get(&path).send().await {
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
                Err(e) => error(StatusCode::BAD_GATEWAY, format!("reading {path}: {e}")),
            }
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("reading {path}: {e}")),
    }
}
