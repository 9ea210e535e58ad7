//! The router contract (ARCHITECTURE.md): the route stream, wakes and stats pushes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::paas::Suspension;
use drove_proto::routing::{RouteMessage, StatsReport, WakeAnswer};
use futures::StreamExt;

use crate::http_error::{error, ApiError};
use crate::ops;
use crate::Paas;

/// Well under the router's 30 s silence limit.
const HEARTBEAT: Duration = Duration::from_secs(10);

fn line(msg: &RouteMessage) -> Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// `GET /v1/routes/stream`: a snapshot, then every change, as NDJSON. A reader too slow to
/// keep up is cut off; it reconnects and gets a fresh snapshot.
pub async fn stream(State(paas): State<Arc<Paas>>) -> Response {
    // Subscribe before the snapshot, under the same lock, so no change falls between them.
    let (rx, snapshot, certs) = {
        let s = paas.lock();
        (
            paas.routes.subscribe(),
            s.route_snapshot(),
            s.certificate_set(),
        )
    };
    // The table first, then the certificates for its hostnames.
    let mut first = line(&RouteMessage::Snapshot { apps: snapshot }).to_vec();
    first.extend_from_slice(&line(&RouteMessage::Certificates { certs }));
    let first = Bytes::from(first);
    // Changes as they come; a heartbeat when the stream has been silent for HEARTBEAT. A reader
    // that lagged behind the channel, or a PaaS shutting down, ends the stream: the router
    // reconnects and starts again from a snapshot.
    let changes = futures::stream::unfold(
        (rx, paas.shutdown.clone()),
        |(mut rx, shutdown)| async move {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return None,
                m = rx.recv() => match m {
                    Ok(m) => line(&m),
                    Err(_) => return None,
                },
                _ = tokio::time::sleep(HEARTBEAT) => line(&RouteMessage::Heartbeat),
            };
            Some((next, (rx, shutdown)))
        },
    );
    let body = futures::stream::once(async move { first })
        .chain(changes)
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// `POST /v1/apps/{app}/wake`: an app at zero gets one instance; idempotent; 404 for an app
/// the PaaS does not know.
pub async fn wake(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    // The body is informative (how many requests wait); a wake without one still wakes.
    let request = serde_json::from_slice::<drove_proto::routing::WakeRequest>(&body).ok();
    let held = request.as_ref().map(|w| w.held);
    let held_for = request.as_ref().map(|w| w.held_for_ms).unwrap_or(0);
    let tx = paas.begin().await;
    match ops::scaling::wake(&tx, &name, held, held_for, "router").await {
        Ok(w) => (
            StatusCode::ACCEPTED,
            Json(WakeAnswer {
                app: w.app_id,
                instances: w.instances,
            }),
        )
            .into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// `GET /v1/acme/challenges/{token}?host={hostname}`: the key authorization of a pending
/// HTTP-01 challenge, which the router answers the CA with; 404 when none is pending.
pub async fn acme_challenge(
    State(paas): State<Arc<Paas>>,
    Path(token): Path<String>,
    Query(q): Query<ChallengeQuery>,
) -> Response {
    match paas.issuer.challenges.answer(&token, &q.host) {
        Some(key_authorization) => {
            ([(header::CONTENT_TYPE, "text/plain")], key_authorization).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such challenge is pending"),
    }
}

#[derive(serde::Deserialize)]
pub struct ChallengeQuery {
    host: String,
}

/// `GET /v1/apps/{app}/scaling`: an app's scaling settings, its scaler's view (recent
/// decisions with their reasons, panic mode, idle time, concurrency), its current load, its
/// recent wakes' timelines and the open one (`waking`, `null` unless it is waking), and its
/// last hour (`history`: a sample every 10 s of requests per second, p50/p99, wanted and
/// ready instances). Decisions, wakes and history are journalled, so a restart keeps them.
/// `POST /v1/apps/{app}/suspend` and `/resume`: an operator takes the app offline (no
/// instances; the routers answer 503 and never wake it) or brings it back.
pub async fn suspend(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    suspension(paas, name, true).await
}

pub async fn resume(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    suspension(paas, name, false).await
}

async fn suspension(paas: Arc<Paas>, name: String, suspend: bool) -> Response {
    let Some(id) = paas.lock().app_by_route(&name).map(|a| a.def.id.clone()) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no app is served as {name:?}"),
        );
    };
    let tx = paas.begin().await;
    let changed = if suspend {
        ops::scaling::suspend(&tx, &id, "api").await
    } else {
        ops::scaling::resume(&tx, &id, "api").await
    };
    match changed {
        Ok(changed) => {
            let instances = paas.lock().apps.get(&id).map(|a| a.def.instances);
            Json(Suspension {
                app: id,
                suspended: suspend,
                changed,
                instances,
            })
            .into_response()
        }
        Err(e) => ApiError(e).into_response(),
    }
}

pub async fn app_scaling(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    match crate::ops::views::scaling(&paas, &name) {
        Some(view) => Json(view).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no app is served as {name:?}"),
        ),
    }
}

/// `POST /v1/router/stats`.
pub async fn stats(State(paas): State<Arc<Paas>>, body: Bytes) -> Response {
    let report: StatsReport = match drove_proto::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("stats report: {e}"));
        }
    };
    paas.stats.record(&report);
    let now = Instant::now();
    {
        let in_flight = report
            .apps
            .iter()
            .flat_map(|a| a.backends.iter())
            .map(|b| (b.addr.clone(), b.counters.in_flight))
            .collect();
        paas.lock().router_stats(&report.router, in_flight, now);
    }
    paas.kick.notify_one();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /v1/apps/{app}/stats`: what the routers reported for an app (by its route name).
pub async fn app_stats(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    match paas.stats.of(&name) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no router has reported {name:?}"),
        ),
    }
}
