//! The admin listener: `/health` (open) and Prometheus `/metrics` (behind `--metrics-token`,
//! as a bearer token, when one is set).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drove_proto::metrics::{self, Registry};

use crate::routes::Table;
use crate::stats::RouterCounters;

#[derive(Clone)]
struct AdminState {
    table: Arc<ArcSwap<Table>>,
    global: Arc<RouterCounters>,
    registry: Arc<Registry>,
    metrics_token: Option<Arc<str>>,
}

pub fn app(
    table: Arc<ArcSwap<Table>>,
    global: Arc<RouterCounters>,
    metrics_token: Option<String>,
) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            registry: Arc::new(crate::metrics::registry(table.clone(), global.clone())),
            table,
            global,
            metrics_token: metrics_token.map(Arc::from),
        })
}

async fn health(State(s): State<AdminState>) -> impl IntoResponse {
    let body = serde_json::json!({
        "status": "ok",
        "route_stream_connected": s.global.route_stream_connected.load(Ordering::Relaxed),
        "apps": s.table.load().apps.len(),
    });
    axum::Json(body)
}

async fn metrics(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.metrics_token {
        let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok = drove_proto::auth::bearer_is(given, token);
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs the metrics token (Authorization: Bearer)\n",
            )
                .into_response();
        }
    }
    match metrics::encode(&s.registry) {
        Ok(text) => ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    table: Arc<ArcSwap<Table>>,
    global: Arc<RouterCounters>,
    metrics_token: Option<String>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let res = axum::serve(listener, app(table, global, metrics_token))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "admin listener failed");
    }
}
