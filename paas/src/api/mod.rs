//! The PaaS's HTTP API. Marathon's `/v2` subset with Marathon's shapes and status codes; under
//! `/v1` the router contract and drove's own (custom domains, scaling, suspend, logs, push);
//! `/ping` and `/metrics`.
//!
//! **Access**: every path needs a token (`Authorization: Bearer <t>`, or HTTP basic with the
//! token as password). The admin token opens everything; the router token opens only the route
//! stream, wakes and stats pushes. Anything else is 401 with `WWW-Authenticate: Basic`.

pub(crate) mod apps;
pub(crate) mod deployments;
mod domains;
mod logs;
pub mod metrics;
mod routing;
pub mod tls;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drove_proto::marathon::{ErrorBody, Leader};
use drove_proto::routing::{ACME_CHALLENGES_PATH, ROUTES_STREAM_PATH, STATS_PATH};
use serde_json::{json, Value};

use crate::http_error::error;
use crate::tokens::Caller;
use crate::Paas;

/// Bodies larger than this are refused (413).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The API and, beside it, the dashboard.
pub fn router(paas: Arc<Paas>) -> Router {
    routes(paas.clone()).merge(crate::admin::router(paas))
}

fn routes(paas: Arc<Paas>) -> Router {
    let registry = Arc::new(metrics::registry(Arc::downgrade(&paas)));
    Router::new()
        .route("/v2/apps", get(apps::list).post(apps::create))
        .route(
            "/v2/apps/{*rest}",
            get(apps::get_sub)
                .put(apps::put)
                .patch(apps::patch)
                .delete(apps::delete_sub)
                .post(apps::post_sub),
        )
        .route("/v2/tasks", get(apps::all_tasks))
        .route("/v2/tasks/delete", post(apps::delete_tasks))
        .route("/v2/deployments", get(deployments::list))
        .route(
            "/v2/deployments/{id}",
            get(deployments::get_one).delete(deployments::delete),
        )
        .route("/v2/queue", get(deployments::queue))
        .route("/v2/events", get(deployments::events))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader))
        .route("/ping", get(ping))
        .route("/metrics", get(move || metrics::metrics(registry.clone())))
        .route(ROUTES_STREAM_PATH, get(routing::stream))
        .route("/v1/apps/{app}/wake", post(routing::wake))
        .route(
            &format!("{ACME_CHALLENGES_PATH}/{{token}}"),
            get(routing::acme_challenge),
        )
        .route("/v1/apps/{app}/stats", get(routing::app_stats))
        .route("/v1/apps/{app}/scaling", get(routing::app_scaling))
        .route("/v1/apps/{app}/suspend", post(routing::suspend))
        .route("/v1/apps/{app}/resume", post(routing::resume))
        .route(
            "/v1/apps/{app}/domains",
            get(domains::list).post(domains::add),
        )
        .route(
            "/v1/apps/{app}/domains/{hostname}",
            axum::routing::delete(domains::remove),
        )
        .route(
            "/v1/apps/{app}/domains/{hostname}/certificate",
            axum::routing::put(domains::certificate),
        )
        .route(STATS_PATH, post(routing::stats))
        .route("/v1/tasks/{task}/logs/{stream}", get(logs::task_log))
        .route("/v1/push/apps", post(crate::push::create))
        .route(
            "/v1/push/apps/{app}",
            axum::routing::delete(crate::push::destroy),
        )
        .route(
            "/v1/push/apps/{app}/webhook",
            get(crate::push::webhook_show).post(crate::push::webhook_rotate),
        )
        .route(
            "/v1/push/apps/{app}/releases",
            get(crate::push::releases::list),
        )
        .route(
            "/v1/push/apps/{app}/releases/{version}",
            get(crate::push::releases::info),
        )
        .route(
            "/v1/push/apps/{app}/rollback",
            post(crate::push::releases::rollback),
        )
        .route(
            "/v1/push/apps/{app}/config",
            get(crate::push::releases::config).patch(crate::push::releases::set_config),
        )
        .fallback(not_found)
        // Runs after `auth` (layers wrap outwards): strangers get 401 whatever they send.
        .layer(axum::middleware::from_fn(same_origin_json))
        .layer(axum::middleware::from_fn_with_state(paas.clone(), auth))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // Their own access rules: git's (a deploy token, as HTTP basic), a push's (a single-use
        // token), and artifacts (content addresses, for the agents' fetchers).
        .merge(
            Router::new()
                .route(
                    "/git/{repo}/{*rest}",
                    get(crate::push::git).post(crate::push::git),
                )
                .layer(axum::extract::DefaultBodyLimit::max(crate::push::MAX_PACK))
                .route("/v1/push/apps/{app}/receive", post(crate::push::receive))
                .route("/v1/artifacts/{name}", get(crate::push::artifacts::serve))
                .route(
                    "/hooks/github/{app}",
                    post(crate::push::webhook::github).layer(axum::extract::DefaultBodyLimit::max(
                        crate::push::webhook::MAX_BODY,
                    )),
                ),
        )
        .with_state(paas)
}

/// Only the router contract's paths are open to the router token.
fn router_may(path: &str) -> bool {
    path == ROUTES_STREAM_PATH
        || path == STATS_PATH
        || (path.starts_with("/v1/apps/") && path.ends_with("/wake"))
        || path
            .strip_prefix(ACME_CHALLENGES_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

async fn auth(State(paas): State<Arc<Paas>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = paas.tokens.caller(header);
    let path = req.uri().path();
    let allowed = match caller {
        Caller::Admin => true,
        Caller::Router => router_may(path),
        Caller::Nobody => false,
    };
    paas.metrics.request(allowed);
    if !allowed {
        let message = match caller {
            Caller::Nobody if header.is_none() => "authentication required: give the admin token as a Bearer token or as the HTTP basic password",
            Caller::Nobody => "invalid credentials",
            _ => "the router token may only use the route stream, wakes, stats and ACME challenges",
        };
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"drove\"")],
            Json(ErrorBody::new(message)),
        )
            .into_response();
    }
    next.run(req).await
}

/// A browser that cached the admin credentials (HTTP basic) must not be steered by another
/// site: a request a browser says another site made (`Sec-Fetch-Site`), or whose `Origin` is
/// not this host, is refused (403); a body that is not JSON is refused (415), since a
/// cross-site `<form enctype="text/plain">` sends one without asking first.
async fn same_origin_json(req: Request, next: Next) -> Response {
    let h = req.headers();
    let text = |name| {
        h.get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if matches!(text("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return error(
            StatusCode::FORBIDDEN,
            "refused: another site made this request (Sec-Fetch-Site)",
        );
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let host = text(header::HOST.as_str()).unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return error(
                StatusCode::FORBIDDEN,
                format!("refused: Origin {origin:?} is not this API ({host})"),
            );
        }
    }
    let has_body = text(header::TRANSFER_ENCODING.as_str()).is_some()
        || text(header::CONTENT_LENGTH.as_str()).is_some_and(|l| l.trim() != "0");
    if has_body {
        let ct = text(header::CONTENT_TYPE.as_str()).unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type: expected application/json, found {ct:?}"),
            );
        }
    }
    next.run(req).await
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such resource")
}

fn wants(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(media))
}

/// `/ping`: `pong`, or 503 with the reason while the store cannot take changes.
async fn ping(State(paas): State<Arc<Paas>>) -> Response {
    match paas.store.unavailable() {
        None => ([(header::CONTENT_TYPE, "text/plain")], "pong").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            why,
        )
            .into_response(),
    }
}

async fn info(State(paas): State<Arc<Paas>>) -> Json<Value> {
    let s = paas.lock();
    let a = &paas.args;
    Json(json!({
        "name": "drove",
        "version": env!("CARGO_PKG_VERSION"),
        "buildref": "drove",
        "elected": true,
        "leader": a.listen.to_string(),
        "frameworkId": s.framework_id,
        "marathon_config": {
            "master": a.master,
            "failover_timeout": a.failover_timeout.as_secs(),
            "framework_name": a.framework_name,
            "checkpoint": true,
            "mesos_user": a.task_user,
            "hostname": a.listen.ip().to_string(),
            "task_launch_timeout": 300000,
        },
        "http_config": {"http_port": a.listen.port(), "https_port": null},
        "event_subscriber": {"type": "sse"},
        "zookeeper_config": {},
    }))
}

async fn leader(State(paas): State<Arc<Paas>>) -> Json<Leader> {
    Json(Leader {
        leader: paas.args.listen.to_string(),
    })
}
