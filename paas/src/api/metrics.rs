//! `GET /metrics`: Prometheus text, through prometheus-client.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Paas;

/// Request counters kept between scrapes.
#[derive(Default)]
pub struct Metrics {
    pub allowed: Counter<u64, AtomicU64>,
    pub refused: Counter<u64, AtomicU64>,
}

impl Metrics {
    pub fn request(&self, allowed: bool) {
        if allowed {
            self.allowed.inc();
        } else {
            self.refused.inc();
        }
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge<i64, std::sync::atomic::AtomicI64> = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter<u64, AtomicU64> = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

pub async fn metrics(State(paas): State<Arc<Paas>>) -> Response {
    let mut registry = Registry::with_prefix("drove_paas");
    {
        let s = paas.lock();
        let c = s.counters.clone();
        gauge(&mut registry, "apps", "Apps defined", s.apps.len() as u64);
        gauge(
            &mut registry,
            "store_failed",
            "1 while the store cannot write (changes are refused)",
            u64::from(paas.store.failed()),
        );
        gauge(
            &mut registry,
            "store_pending_ops",
            "Changes queued and not yet written",
            paas.store.pending() as u64,
        );
        gauge(
            &mut registry,
            "instances",
            "Instances launched and not ended",
            s.instances.len() as u64,
        );
        gauge(
            &mut registry,
            "instances_ready",
            "Instances serving (running and healthy)",
            s.instances.values().filter(|i| i.ready()).count() as u64,
        );
        gauge(
            &mut registry,
            "deployments",
            "Deployments in progress",
            s.apps.values().filter(|a| a.deployment.is_some()).count() as u64,
        );
        gauge(
            &mut registry,
            "subscribed",
            "1 while subscribed to the master",
            u64::from(s.subscribed),
        );
        counter(&mut registry, "launched", "Instances launched", c.launched);
        counter(
            &mut registry,
            "killed",
            "Instances killed on purpose",
            c.killed,
        );
        counter(
            &mut registry,
            "failed",
            "Instances that ended on their own",
            c.failed,
        );
        counter(
            &mut registry,
            "offers_used",
            "Offers accepted",
            c.offers_used,
        );
        counter(
            &mut registry,
            "offers_declined",
            "Offers declined",
            c.offers_declined,
        );
        counter(
            &mut registry,
            "status_updates",
            "Status updates received",
            c.updates,
        );
    }
    registry.register(
        "api_requests",
        "API requests allowed",
        paas.metrics.allowed.clone(),
    );
    registry.register(
        "api_refused",
        "API requests refused (401)",
        paas.metrics.refused.clone(),
    );
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
