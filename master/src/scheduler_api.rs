//! `POST /api/v1/scheduler` (and `/master/api/v1/scheduler`): the Mesos v1 scheduler API.
//!
//! SUBSCRIBE answers a chunked RecordIO stream of events; every other call answers `202` with
//! an empty body. A HEARTBEAT follows every batch of events (so clients that only handle a
//! record when the next one arrives are never left waiting) and is also sent every
//! `heartbeat_interval` on an idle stream.
//!
//! While the store cannot persist changes, SUBSCRIBE, TEARDOWN, ACCEPT (whose offers go back
//! as if declined) and ACKNOWLEDGE are refused with `503` naming the store; the rest go on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drove_proto::recordio;
use drove_proto::scheduler::{encode_event, Call, CallType, Decline, Event, EventType};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::CallError;
use crate::Shared;

pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut resp = (status, message.into()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn accepted() -> Response {
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

fn is_json(value: Option<&HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

pub async fn scheduler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(headers.get(header::CONTENT_TYPE)) {
        let got = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type: expected application/json, got {got}"),
        );
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        if !accept.contains("json") && !accept.contains("*/*") {
            return error(
                StatusCode::NOT_ACCEPTABLE,
                format!("Accept: drove streams application/json only, not {accept}"),
            );
        }
    }
    // With --authenticate-frameworks, every call proves a principal (Mesos's HTTP basic).
    let principal = match &shared.frameworks {
        None => None,
        Some(creds) => {
            let header = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match creds.principal(header) {
                Ok(p) => Some(p),
                Err(refused) => {
                    let mut resp = error(
                        StatusCode::UNAUTHORIZED,
                        match refused {
                            crate::auth::Refused::Missing => "authentication required: HTTP basic with a principal and secret from the master's --credentials",
                            crate::auth::Refused::Invalid => "invalid credentials",
                        },
                    );
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"mesos\""),
                    );
                    return resp;
                }
            }
        }
    };
    let call: Call = match drove_proto::decode(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Failed to convert JSON into Call protobuf: {e}"),
            )
        }
    };
    let stream_id = headers
        .get(STREAM_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    if call.kind == CallType::Subscribe {
        if stream_id.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "Mesos-Stream-Id: must not be set on SUBSCRIBE",
            );
        }
        // A new or resumed framework is written to the store before SUBSCRIBED.
        if let Err(reason) = shared.store_writable() {
            let e = CallError::Unavailable(reason);
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        return subscribe(shared, call, principal);
    }
    match dispatch(&shared, &call, stream_id.as_deref(), principal.as_deref()) {
        Ok(()) => accepted(),
        Err(CallError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(CallError::NotSubscribed) => {
            error(StatusCode::FORBIDDEN, "Framework is not subscribed")
        }
        Err(e @ CallError::Removed(_)) => error(StatusCode::FORBIDDEN, e.to_string()),
        Err(e @ CallError::Principal { .. }) => error(StatusCode::FORBIDDEN, e.to_string()),
        Err(e @ CallError::Unavailable(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn missing(field: &str, kind: CallType) -> CallError {
    CallError::BadRequest(format!("{field}: required for {kind:?} calls"))
}

fn dispatch(
    shared: &Shared,
    call: &Call,
    stream_id: Option<&str>,
    principal: Option<&str>,
) -> Result<(), CallError> {
    let mut cluster = shared.lock();
    let fw = cluster.authorize(call, stream_id, principal)?;
    let name = call_name(call.kind);
    cluster.count_call(name);
    // Calls that change persisted state wait until the store can take it.
    if matches!(
        call.kind,
        CallType::Teardown | CallType::Accept | CallType::Acknowledge
    ) {
        if let Err(reason) = shared.store_writable() {
            if let Some(accept) = &call.accept {
                // The refused ACCEPT gives its offers back, as a DECLINE would.
                cluster.decline(
                    &fw,
                    &Decline {
                        offer_ids: accept.offer_ids.clone(),
                        filters: accept.filters,
                    },
                );
                shared.allocate.notify_one();
            }
            return Err(CallError::Unavailable(reason));
        }
    }
    match call.kind {
        CallType::Teardown => cluster.teardown(&fw),
        CallType::Accept => {
            let accept = call
                .accept
                .as_ref()
                .ok_or_else(|| missing("accept", call.kind))?;
            cluster.accept(&fw, accept);
        }
        CallType::Decline => {
            let decline = call
                .decline
                .as_ref()
                .ok_or_else(|| missing("decline", call.kind))?;
            cluster.decline(&fw, decline);
        }
        CallType::Revive => cluster.revive(&fw),
        CallType::Suppress => cluster.suppress(&fw),
        CallType::Kill => {
            let kill = call
                .kill
                .as_ref()
                .ok_or_else(|| missing("kill", call.kind))?;
            cluster.kill(&fw, kill);
        }
        CallType::Acknowledge => {
            let ack = call
                .acknowledge
                .as_ref()
                .ok_or_else(|| missing("acknowledge", call.kind))?;
            cluster.acknowledge(&fw, ack)?;
        }
        CallType::Reconcile => {
            let reconcile = call.reconcile.clone().unwrap_or_default();
            cluster.reconcile(&fw, &reconcile);
        }
        CallType::Message => {
            // No custom executors run on drove agents: messages have nowhere to go.
            if call.message.is_none() {
                return Err(missing("message", call.kind));
            }
            tracing::debug!(framework = %fw, "MESSAGE dropped: drove runs no custom executors");
        }
        // REQUEST, SHUTDOWN, inverse offers, operations, UPDATE_FRAMEWORK and unknown types are
        // accepted and ignored, as the hierarchical allocator does for REQUEST.
        _ => {}
    }
    if cluster.allocation_wanted {
        shared.allocate.notify_one();
    }
    Ok(())
}

fn call_name(kind: CallType) -> &'static str {
    match kind {
        CallType::Subscribe => "subscribe",
        CallType::Teardown => "teardown",
        CallType::Accept => "accept",
        CallType::Decline => "decline",
        CallType::Revive => "revive",
        CallType::Suppress => "suppress",
        CallType::Kill => "kill",
        CallType::Acknowledge => "acknowledge",
        CallType::Reconcile => "reconcile",
        CallType::Message => "message",
        CallType::Request => "request",
        _ => "other",
    }
}

fn subscribe(shared: Arc<Shared>, call: Call, principal: Option<String>) -> Response {
    let (sub, heartbeat) = {
        let mut cluster = shared.lock();
        cluster.count_call("subscribe");
        match cluster.subscribe(&call, principal.as_deref()) {
            Ok(sub) => (sub, cluster.config.heartbeat_interval),
            Err(CallError::BadRequest(m)) => return error(StatusCode::BAD_REQUEST, m),
            Err(CallError::NotSubscribed) => {
                return error(StatusCode::FORBIDDEN, "Framework is not subscribed")
            }
            Err(e @ CallError::Removed(_)) => return removed_stream(&e.to_string()),
            Err(e @ CallError::Principal { .. }) => {
                return error(StatusCode::FORBIDDEN, e.to_string())
            }
            Err(e @ CallError::Unavailable(_)) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    };
    shared.allocate.notify_one();
    let stream_id = sub.stream_id.clone();
    let guard = StreamGuard {
        shared: shared.clone(),
        framework: sub.framework_id.value.clone(),
        stream_id: sub.stream_id.clone(),
    };
    let body = Body::from_stream(event_stream(sub.events, sub.overflow, heartbeat, guard));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&stream_id) {
        h.insert(STREAM_ID_HEADER, v);
    }
    resp
}

/// What Mesos answers a SUBSCRIBE for a removed framework: a stream with one ERROR event, then
/// its end. Clients treat ERROR as final.
fn removed_stream(message: &str) -> Response {
    let body = recordio::encode(&encode_event(&Event::error(message)));
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert(STREAM_ID_HEADER, v);
    }
    resp
}

/// Tells the cluster when the stream's body is dropped (the client went away).
struct StreamGuard {
    shared: Arc<Shared>,
    framework: String,
    stream_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut cluster = self.shared.lock();
        cluster.stream_closed(&self.framework, &self.stream_id);
        if cluster.allocation_wanted {
            self.shared.allocate.notify_one();
        }
    }
}

fn event_stream(
    rx: mpsc::Receiver<Event>,
    overflow: CancellationToken,
    heartbeat: Duration,
    guard: StreamGuard,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    futures::stream::unfold(
        (rx, tick, guard, overflow),
        |(mut rx, mut tick, guard, overflow)| async move {
            let heartbeat_record = || recordio::encode(&encode_event(&Event::heartbeat()));
            tokio::select! {
                // A reader too slow for its queue is cut off; it re-subscribes and reconciles.
                _ = overflow.cancelled() => None,
                // The stream ends when the master drops the sender (teardown, failover).
                ev = rx.recv() => {
                    let first = ev?;
                    let mut last = first.kind;
                    let mut buf = recordio::encode(&encode_event(&first));
                    while let Ok(ev) = rx.try_recv() {
                        last = ev.kind;
                        buf.extend(recordio::encode(&encode_event(&ev)));
                    }
                    if last != EventType::Heartbeat {
                        buf.extend(heartbeat_record());
                    }
                    tick.reset();
                    Some((Ok(Bytes::from(buf)), (rx, tick, guard, overflow)))
                }
                _ = tick.tick() => Some((Ok(Bytes::from(heartbeat_record())), (rx, tick, guard, overflow))),
            }
        },
    )
}
