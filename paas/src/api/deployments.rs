//! `/v2/deployments`, `/v2/queue` and the `/v2/events` stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::marathon::{Deployment, Queue};
use futures::StreamExt;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::wants;
use crate::events::Event;
use crate::http_error::{error, ApiError};
use crate::model::app::AppDefinition;
use crate::model::timestamp;
use crate::ops::{self, views};
use crate::Paas;

pub async fn list(State(paas): State<Arc<Paas>>) -> Json<Vec<Deployment>> {
    let s = paas.lock();
    Json(s.apps.values().filter_map(views::deployment).collect())
}

pub async fn get_one(State(paas): State<Arc<Paas>>, Path(id): Path<String>) -> Response {
    let s = paas.lock();
    match s
        .apps
        .values()
        .find(|a| a.deployment.as_ref().is_some_and(|d| d.id == id))
        .and_then(views::deployment)
    {
        Some(d) => Json(d).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("DeploymentPlan {id} does not exist"),
        ),
    }
}

/// Without `force`, rolls the app back to where it was before the deployment (a new
/// deployment); with `force`, only forgets the deployment.
pub async fn delete(
    State(paas): State<Arc<Paas>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let force = super::apps::flag(&super::apps::query(&raw), "force");
    let tx = paas.begin().await;
    if force {
        ops::deployments::forget(&tx, &id)?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    Ok(Json(ops::deployments::rollback(&tx, &id).await?).into_response())
}

/// Apps waiting for launches, with why: the backoff delay and what the last offers lacked.
pub async fn queue(State(paas): State<Arc<Paas>>) -> Json<Queue<AppDefinition>> {
    Json(Queue {
        queue: views::queue(&paas.lock()),
    })
}

/// `GET /v2/events`: server-sent events, `event_stream_attached` first; `?event_type=` (may
/// repeat) filters.
pub async fn events(
    State(paas): State<Arc<Paas>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if !wants(&headers, "text/event-stream") {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the event stream needs 'Accept: text/event-stream'",
        );
    }
    let filter: Vec<String> = raw
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v)
        .collect();
    let rx = paas.events.subscribe();
    let attached = Event::StreamAttached {
        remote_address: peer.ip().to_string(),
        timestamp: timestamp(),
    };
    let first =
        futures::stream::once(async move { Ok::<Event, BroadcastStreamRecvError>(attached) });
    let stream = first
        .chain(BroadcastStream::new(rx))
        .filter_map(move |item| {
            let filter = filter.clone();
            async move {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(BroadcastStreamRecvError::Lagged(n)) => {
                        return Some(Ok::<_, Infallible>(
                            SseEvent::default().comment(format!("{n} events dropped")),
                        ))
                    }
                };
                let kind = ev.kind();
                if !filter.is_empty() && !filter.iter().any(|f| f == kind) {
                    return None;
                }
                let data = serde_json::to_string(&ev).unwrap_or_default();
                Some(Ok(SseEvent::default().event(kind).data(data)))
            }
        });
    let stream = stream.take_until(paas.shutdown.clone().cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
