//! The master's side of drove's agent protocol (see `drove_proto::agent` and ARCHITECTURE.md).
//!
//! Registration and status updates change persisted state: while the store cannot take them
//! they are refused with `503`, and the agent retries (it keeps unacknowledged updates anyway).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::agent::{Ping, Pong, RegisterAgent, StatusUpdate};

use crate::Shared;

/// With `--cluster-secret`, the agent protocol answers only callers that present it.
pub async fn only_agents(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(secret) = &shared.cluster_secret {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !drove_proto::auth::bearer_is(header, secret) {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                "the agent protocol needs the cluster secret (--cluster-secret)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// Registration and status updates are persisted: refused while the store cannot take them.
fn unavailable(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the master cannot take changes now: {reason}\n"),
    )
        .into_response()
}

pub async fn register(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: RegisterAgent = match drove_proto::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid registration: {e}")),
    };
    if let Err(reason) = shared.store_writable() {
        return unavailable(reason);
    }
    let result = {
        let mut cluster = shared.lock();
        cluster.register_agent(req)
    };
    match result {
        Ok(registered) => {
            shared.allocate.notify_one();
            Json(registered).into_response()
        }
        Err(e @ crate::cluster::RegisterError::NotYours(_)) => {
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response()
        }
        Err(e) => bad_request(e.to_string()),
    }
}

/// The session an agent presents (see [`drove_proto::agent::Registered::session`]).
fn session(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(drove_proto::agent::SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
}

pub async fn ping(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let req: Ping = match drove_proto::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid ping: {e}")),
    };
    let mut cluster = shared.lock();
    // A ping from anyone but this registration of the agent is a stranger's: "re-register".
    if cluster.agent_session_ok(&req.agent_id.value, session(&headers))
        && cluster.ping(&req.agent_id.value)
    {
        Json(Pong {
            master_id: cluster.master_id.clone(),
        })
        .into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("agent {} is not registered; re-register", req.agent_id),
        )
            .into_response()
    }
}

pub async fn status(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let req: StatusUpdate = match drove_proto::decode(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid status update: {e}")),
    };
    // The agent keeps the update and re-sends it.
    if let Err(reason) = shared.store_writable() {
        return unavailable(reason);
    }
    let mut cluster = shared.lock();
    // Only the registration that runs the task may report on it; anyone else is told to
    // re-register, which a real agent does and a forger cannot use.
    if !cluster.agent_session_ok(&req.agent_id.value, session(&headers)) {
        return (
            StatusCode::NOT_FOUND,
            format!("agent {} is not registered here; re-register", req.agent_id),
        )
            .into_response();
    }
    if cluster.agent_status(&req.agent_id.value, &req.framework_id, req.status) {
        if cluster.allocation_wanted {
            shared.allocate.notify_one();
        }
        StatusCode::ACCEPTED.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("agent {} is not registered; re-register", req.agent_id),
        )
            .into_response()
    }
}
