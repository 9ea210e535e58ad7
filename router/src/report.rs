//! The report pushed to the PaaS every second (Flock's stats CSV), built from the route
//! table's counters, and the histogram windows behind its quantiles. Both run on the control
//! runtime: a slow or absent PaaS costs the proxy nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use drove_proto::routing::STATS_PATH;

use crate::routes::{App, Table};
use crate::stats::{now_ms, AppReport, BackendReport, RouterCounters, StatsReport, WINDOW_STEP};

/// An app's requests being proxied right now (the held ones are reported apart).
pub(crate) fn proxied(app: &App) -> u64 {
    let inside = app.inflight.load(Ordering::Relaxed);
    inside.saturating_sub(app.held.load(Ordering::Relaxed)) as u64
}

pub fn report(router: &str, table: &Table, global: &RouterCounters) -> StatsReport {
    let apps = table
        .apps
        .values()
        .map(|app| {
            let route = app.route.load();
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            AppReport {
                app: app.name.clone(),
                counters: app.stats.report(proxied(app)),
                held: app.held.load(Ordering::Relaxed) as u64,
                held_total: g(&app.stats.held_total),
                hold_timeouts: g(&app.stats.hold_timeouts),
                hold_rejected: g(&app.stats.hold_rejected),
                wakes: g(&app.stats.wakes),
                backends: route
                    .backends
                    .iter()
                    .map(|b| BackendReport {
                        addr: b.live.label.clone(),
                        healthy: b.healthy,
                        backup: b.backup,
                        passive_down: b.live.passive_down.load(Ordering::Relaxed),
                        counters: b
                            .live
                            .stats
                            .report(b.live.inflight.load(Ordering::Relaxed) as u64),
                    })
                    .collect(),
            }
        })
        .collect();
    StatsReport {
        router: router.to_string(),
        at_ms: now_ms(),
        unknown_host: global.unknown_host.load(Ordering::Relaxed),
        apps,
    }
}

/// Snapshots every app's and backend's latency histogram each [`WINDOW_STEP`], so that
/// quantiles cover the last [`LATENCY_WINDOW`]. Runs on the control runtime.
pub async fn window_loop(
    table: Arc<ArcSwap<Table>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WINDOW_STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = Instant::now();
        for app in table.load().apps.values() {
            app.stats.latency.snapshot(now);
            for b in &app.route.load().backends {
                b.live.stats.latency.snapshot(now);
            }
        }
    }
}

/// Pushes a report to `{paas}/v1/router/stats` every `interval` until `shutdown` fires.
/// Each push is bounded by the interval; a failed push is counted and skipped.
pub async fn push_loop(
    client: reqwest::Client,
    paas: String,
    router_id: String,
    interval: Duration,
    table: Arc<ArcSwap<Table>>,
    global: Arc<RouterCounters>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let url = format!("{}{STATS_PATH}", paas.trim_end_matches('/'));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let body = report(&router_id, &table.load(), &global);
        let send = client.post(&url).json(&body).timeout(interval).send();
        match send.await {
            Ok(r) if r.status().is_success() => {
                global.stats_pushes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                global.stats_push_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(status = %r.status(), %url, "stats push refused");
            }
            Err(e) => {
                global.stats_push_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, %url, "stats push failed");
            }
        }
    }
}
