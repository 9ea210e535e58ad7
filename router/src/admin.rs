//! The admin listener: `/health` and Prometheus `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::routes::Table;
use crate::stats::{prometheus, RouterCounters};

#[derive(Clone)]
struct AdminState {
    table: Arc<ArcSwap<Table>>,
    global: Arc<RouterCounters>,
}

pub fn app(table: Arc<ArcSwap<Table>>, global: Arc<RouterCounters>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(AdminState { table, global })
}

async fn health(State(s): State<AdminState>) -> impl IntoResponse {
    let body = serde_json::json!({
        "status": "ok",
        "route_stream_connected": s.global.route_stream_connected.load(Ordering::Relaxed),
        "apps": s.table.load().apps.len(),
    });
    axum::Json(body)
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        prometheus(&s.table.load(), &s.global),
    )
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    table: Arc<ArcSwap<Table>>,
    global: Arc<RouterCounters>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let res = axum::serve(listener, app(table, global))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "admin listener failed");
    }
}
