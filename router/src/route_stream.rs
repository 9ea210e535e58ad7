//! Following the PaaS's route stream: `GET {paas}/v1/routes/stream`, newline-delimited JSON,
//! a snapshot first and then changes. Each line is applied as soon as it arrives. When the
//! stream breaks the last table keeps serving and the router reconnects with backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use drove_proto::routing::ROUTES_STREAM_PATH;
use futures::StreamExt;

use crate::routes::{Registry, RouteMessage};
use crate::stats::RouterCounters;

/// A stream with no bytes (not even a heartbeat) for this long is considered dead.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connect to {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("reading {url}: {source}")]
    Read { url: String, source: reqwest::Error },
    #[error("{url} sent nothing for {IDLE_LIMIT:?}")]
    Idle { url: String },
    #[error("{url} closed the stream")]
    Closed { url: String },
    #[error("{url} sent a line longer than 16 MiB")]
    LineTooLong { url: String },
}

/// Runs until `shutdown` fires.
pub async fn follow(
    client: reqwest::Client,
    paas: String,
    mut registry: Registry,
    global: Arc<RouterCounters>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let url = format!("{}{ROUTES_STREAM_PATH}", paas.trim_end_matches('/'));
    let delays = || {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(BACKOFF_MIN)
            .with_max_delay(BACKOFF_MAX)
            .without_max_times()
            .build()
    };
    let mut backoff = delays();
    let mut failures: u32 = 0;
    loop {
        let mut got_snapshot = false;
        let result = tokio::select! {
            r = stream_once(&client, &url, &mut registry, &global, &mut got_snapshot) => r,
            _ = shutdown.changed() => return,
        };
        global
            .route_stream_connected
            .store(false, Ordering::Relaxed);
        if got_snapshot {
            backoff = delays();
            failures = 0;
        }
        let retry_in = backoff.next().unwrap_or(BACKOFF_MAX);
        let e = match result {
            Ok(()) => StreamError::Closed { url: url.clone() },
            Err(e) => e,
        };
        failures += 1;
        // Warn on the first failure and then every 20th, not on every retry.
        if failures % 20 == 1 {
            tracing::warn!(error = %e, ?retry_in, failures, "route stream lost; serving the last table");
        } else {
            tracing::debug!(error = %e, ?retry_in, "route stream still down");
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn stream_once(
    client: &reqwest::Client,
    url: &str,
    registry: &mut Registry,
    global: &RouterCounters,
    got_snapshot: &mut bool,
) -> Result<(), StreamError> {
    // A PaaS that accepts the connection but never answers must not stall us forever.
    let send = client
        .get(url)
        .header("accept", "application/x-ndjson")
        .send();
    let resp = tokio::time::timeout(IDLE_LIMIT, send)
        .await
        .map_err(|_| StreamError::Idle { url: url.into() })?
        .map_err(|source| StreamError::Connect {
            url: url.into(),
            source,
        })?;
    if !resp.status().is_success() {
        return Err(StreamError::Status {
            url: url.into(),
            status: resp.status(),
        });
    }
    global.route_stream_connected.store(true, Ordering::Relaxed);
    tracing::info!(%url, "route stream connected");
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(IDLE_LIMIT, body.next()).await {
            Err(_) => return Err(StreamError::Idle { url: url.into() }),
            Ok(None) => return Ok(()),
            Ok(Some(Err(source))) => {
                return Err(StreamError::Read {
                    url: url.into(),
                    source,
                })
            }
            Ok(Some(Ok(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            apply_line(&line, registry, global, got_snapshot);
        }
        if buf.len() > 16 << 20 {
            return Err(StreamError::LineTooLong { url: url.into() });
        }
    }
}

fn apply_line(
    line: &[u8],
    registry: &mut Registry,
    global: &RouterCounters,
    got_snapshot: &mut bool,
) {
    let line = line.trim_ascii();
    if line.is_empty() {
        return;
    }
    match serde_json::from_slice::<RouteMessage>(line) {
        Ok(msg) => {
            if matches!(msg, RouteMessage::Snapshot { .. }) {
                *got_snapshot = true;
            }
            let kind = match &msg {
                RouteMessage::Snapshot { apps } => format!("snapshot of {} apps", apps.len()),
                RouteMessage::Upsert { app } => format!("upsert {}", app.name),
                RouteMessage::Remove { app } => format!("remove {app}"),
                RouteMessage::Heartbeat => "heartbeat".into(),
                RouteMessage::Certificates { certs } => format!("{} certificates", certs.len()),
            };
            // A name lookup blocks: let the control runtime's other tasks (wakes, stats, the
            // admin listener) move to another thread meanwhile.
            let errors = if msg.needs_name_lookup() {
                tokio::task::block_in_place(|| registry.apply(msg))
            } else {
                registry.apply(msg)
            };
            for e in errors {
                global.route_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "route rejected");
            }
            global.route_messages.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%kind, "route change applied");
        }
        Err(e) => {
            global.route_errors.fetch_add(1, Ordering::Relaxed);
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            tracing::warn!(error = %e, line = %shown, "unreadable route stream line ignored");
        }
    }
}
