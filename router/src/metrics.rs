//! `/metrics` on the admin listener: the proxy's lock-free counters and histograms, read at
//! each scrape by a prometheus-client collector (the one way every component exposes metrics,
//! [`drove_proto::metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use drove_proto::metrics::{
    Collector, DescriptorEncoder, Histogram, Label, Labels, Registry, Scrape,
};

use crate::report::proxied;
use crate::routes::{App, Table};
use crate::stats::{quantile_ms, Counters, RouterCounters, BUCKETS_US};

/// The registry the admin listener serves, built once.
pub fn registry(table: Arc<ArcSwap<Table>>, global: Arc<RouterCounters>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RouterMetrics { table, global }));
    registry
}

#[derive(Debug)]
struct RouterMetrics {
    table: Arc<ArcSwap<Table>>,
    global: Arc<RouterCounters>,
}

fn g(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The series of one family level (apps, or backends): its labels and counters.
type Rows<'a> = Vec<(Labels<'a>, &'a Counters, u64)>;

impl Collector for RouterMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut m = Scrape::new(encoder);
        let global = &self.global;
        m.counter(
            "drove_router_unknown_host",
            "Requests for hosts no app claims.",
            g(&global.unknown_host),
        )?;
        m.counter(
            "drove_router_route_messages",
            "Route stream messages applied.",
            g(&global.route_messages),
        )?;
        m.counter(
            "drove_router_route_errors",
            "Route stream entries rejected.",
            g(&global.route_errors),
        )?;
        m.counter(
            "drove_router_stats_pushes",
            "Stats reports accepted by the PaaS.",
            g(&global.stats_pushes),
        )?;
        m.counter(
            "drove_router_stats_push_failures",
            "Stats reports that failed or timed out.",
            g(&global.stats_push_failures),
        )?;
        m.gauge(
            "drove_router_route_stream_connected",
            "Whether the route stream is connected.",
            i64::from(global.route_stream_connected.load(Ordering::Relaxed)),
        )?;

        let table = self.table.load();
        let routes: Vec<_> = table
            .apps
            .values()
            .map(|a| (a.as_ref(), a.route.load()))
            .collect();
        let apps: Rows = routes
            .iter()
            .map(|(a, _)| (vec![("app", Label(&a.name))], &a.stats, proxied(a)))
            .collect();
        let backends: Rows = routes
            .iter()
            .flat_map(|(a, route)| {
                route.backends.iter().map(|b| {
                    (
                        vec![("app", Label(&a.name)), ("backend", Label(&b.live.label))],
                        &b.live.stats,
                        b.live.inflight.load(Ordering::Relaxed) as u64,
                    )
                })
            })
            .collect();
        families(&mut m, "drove_router_app", &apps)?;
        let app_labels = |f: fn(&App) -> u64| {
            routes
                .iter()
                .map(move |(a, _)| (vec![("app", Label(&a.name))], f(a)))
        };
        m.gauges(
            "drove_router_app_held",
            "Requests currently held waiting for a backend.",
            app_labels(|a| a.held.load(Ordering::Relaxed) as u64),
        )?;
        m.counters(
            "drove_router_app_holds",
            "Requests that had to wait for a backend.",
            app_labels(|a| g(&a.stats.held_total)),
        )?;
        m.counters(
            "drove_router_app_hold_timeouts",
            "Held requests answered 503 after the hold timeout.",
            app_labels(|a| g(&a.stats.hold_timeouts)),
        )?;
        m.counters(
            "drove_router_app_hold_rejected",
            "Requests answered 503 because the hold queue was full.",
            app_labels(|a| g(&a.stats.hold_rejected)),
        )?;
        m.counters(
            "drove_router_app_wakes",
            "Wake calls sent to the PaaS.",
            app_labels(|a| g(&a.stats.wakes)),
        )?;
        families(&mut m, "drove_router_backend", &backends)
    }
}

/// The families apps and backends both have, under `prefix`.
fn families(m: &mut Scrape, prefix: &str, rows: &Rows) -> std::fmt::Result {
    let each = |f: fn(&Counters) -> u64| rows.iter().map(move |(l, c, _)| (l.clone(), f(c)));
    m.counters(
        &format!("{prefix}_requests"),
        "Requests received.",
        each(|c| g(&c.requests)),
    )?;
    let by_class = rows.iter().flat_map(|(l, c, _)| {
        ["failed", "1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .enumerate()
            .map(|(i, class)| {
                let mut l = l.clone();
                l.push(("class", Label(class)));
                (l, g(&c.classes[i]))
            })
    });
    m.counters(
        &format!("{prefix}_responses"),
        "Responses by status class (failed = no response).",
        by_class,
    )?;
    m.gauges(
        &format!("{prefix}_in_flight"),
        "Requests being proxied (held requests are counted apart).",
        rows.iter().map(|(l, _, n)| (l.clone(), *n)),
    )?;
    m.counters(
        &format!("{prefix}_received_bytes"),
        "Request body bytes received from clients.",
        each(|c| g(&c.bytes_in)),
    )?;
    m.counters(
        &format!("{prefix}_sent_bytes"),
        "Response body bytes sent to clients.",
        each(|c| g(&c.bytes_out)),
    )?;
    m.gauges(
        &format!("{prefix}_last_request_timestamp_seconds"),
        "Unix time of the last request.",
        rows.iter()
            .map(|(l, c, _)| (l.clone(), g(&c.last_request_ms) as f64 / 1000.0)),
    )?;
    m.counters(
        &format!("{prefix}_connect_failures"),
        "Failed upstream connects.",
        each(|c| g(&c.connect_failures)),
    )?;
    m.histograms(
        &format!("{prefix}_request_duration_seconds"),
        "Request latency until the response completed.",
        rows.iter().map(|(l, c, _)| (l.clone(), histogram(c))),
    )?;
    let now = Instant::now();
    let quantiles = rows.iter().flat_map(|(l, c, _)| {
        let counts = c.latency.recent(now);
        [("0.5", 0.5), ("0.95", 0.95), ("0.99", 0.99)]
            .into_iter()
            .filter_map(move |(name, q)| {
                let ms = quantile_ms(&counts, q)?;
                let mut l = l.clone();
                l.push(("quantile", Label(name)));
                Some((l, ms / 1000.0))
            })
    });
    m.gauges(
        &format!("{prefix}_latency_quantile_seconds"),
        "Estimated latency quantiles over the last minute (from the histogram).",
        quantiles,
    )
}

fn histogram(c: &Counters) -> Histogram {
    let counts = c.latency.counts();
    let buckets: Vec<(f64, u64)> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let le = BUCKETS_US.get(i).map_or(f64::MAX, |b| *b as f64 / 1e6);
            (le, *n)
        })
        .collect();
    Histogram {
        sum: c.latency.sum_us() as f64 / 1e6,
        count: counts.iter().sum(),
        buckets,
    }
}
