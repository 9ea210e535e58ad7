//! `GET /v1/tasks/{task}/logs/{stream}?offset=&length=` (or `?tail=<bytes>`): an instance's
//! stdout or stderr (a running one's, or an app's last failed one's), read through the master (`/master/frameworks/{framework}/tasks/{task}/logs/{stream}`), which
//! checks the PaaS's credentials and asks the agent that runs it.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http_error::{error, ApiError};
use crate::ops::views::{self, Stream};
use crate::Paas;

pub async fn task_log(
    State(paas): State<Arc<Paas>>,
    Path((task, stream)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(stream) = Stream::parse(&stream) else {
        return error(StatusCode::BAD_REQUEST, "stream: expected stdout or stderr");
    };
    match views::task_log(&paas, &task, stream, raw.as_deref()).await {
        Ok(log) => (
            StatusCode::from_u16(log.status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "application/octet-stream")],
            log.bytes,
        )
            .into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}
