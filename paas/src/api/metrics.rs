//! `GET /metrics`: OpenMetrics text, through prometheus-client (see [`drove_proto::metrics`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use drove_proto::metrics::{self, Collector, DescriptorEncoder, Registry, Scrape};
use prometheus_client::metrics::counter::Counter;

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

/// The registry `/metrics` serves, built once; its collector reads the PaaS at each scrape
/// (a weak reference: the registry lives in the PaaS's router).
pub fn registry(paas: Weak<Paas>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PaasMetrics(paas)));
    registry
}

pub async fn metrics(registry: Arc<Registry>) -> Response {
    match metrics::encode(&registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

struct PaasMetrics(Weak<Paas>);

impl std::fmt::Debug for PaasMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaasMetrics")
    }
}

impl Collector for PaasMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(paas) = self.0.upgrade() else {
            return Ok(());
        };
        let mut m = Scrape::new(encoder);
        let s = paas.lock();
        let c = &s.counters;
        m.gauge("drove_paas_apps", "Apps defined", s.apps.len() as i64)?;
        m.gauge(
            "drove_paas_store_failed",
            "1 while the store cannot write (changes are refused)",
            i64::from(paas.store.failed()),
        )?;
        m.gauge(
            "drove_paas_store_pending_ops",
            "Changes queued and not yet written",
            paas.store.pending() as i64,
        )?;
        m.gauge(
            "drove_paas_instances",
            "Instances launched and not ended",
            s.instances.len() as i64,
        )?;
        m.gauge(
            "drove_paas_instances_ready",
            "Instances serving (running and healthy)",
            s.instances.values().filter(|i| i.ready()).count() as i64,
        )?;
        m.gauge(
            "drove_paas_deployments",
            "Deployments in progress",
            s.apps.values().filter(|a| a.deployment.is_some()).count() as i64,
        )?;
        m.gauge(
            "drove_paas_subscribed",
            "1 while subscribed to the master",
            i64::from(s.subscribed),
        )?;
        m.counter("drove_paas_launched", "Instances launched", c.launched)?;
        m.counter("drove_paas_killed", "Instances killed on purpose", c.killed)?;
        m.counter(
            "drove_paas_failed",
            "Instances that ended on their own",
            c.failed,
        )?;
        m.counter("drove_paas_offers_used", "Offers accepted", c.offers_used)?;
        m.counter(
            "drove_paas_offers_declined",
            "Offers declined",
            c.offers_declined,
        )?;
        m.counter(
            "drove_paas_status_updates",
            "Status updates received",
            c.updates,
        )?;
        m.counter(
            "drove_paas_api_requests",
            "API requests allowed",
            paas.metrics.allowed.get(),
        )?;
        m.counter(
            "drove_paas_api_refused",
            "API requests refused (401)",
            paas.metrics.refused.get(),
        )
    }
}
