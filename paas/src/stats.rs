//! The routers' per-app stats: the latest report of each router, and a short history per app
//! (for the scaler and the dashboard), readable at `GET /v1/apps/{app}/stats`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use drove_proto::routing::{AppReport, AppStats, RouterAppReport, StatsReport, StatsSample};

/// Reports kept per app: 5 minutes at one push a second from one router.
pub const HISTORY: usize = 300;

#[derive(Default)]
pub struct RouterStats {
    apps: Mutex<HashMap<String, Reports>>,
}

#[derive(Default)]
struct Reports {
    /// Router name → its latest report for the app.
    latest: HashMap<String, (u64, AppReport)>,
    history: VecDeque<StatsSample>,
}

pub use drove_proto::paas::Load;

/// A router report older than this no longer counts as the app's load.
pub const FRESH_MS: u64 = 5_000;

/// An app's request counter and latency, for the dashboard's history.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub requests: Option<u64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl RouterStats {
    /// The app's load from reports no older than `fresh_ms` at `now_ms`.
    pub fn load(&self, app: &str, now_ms: u64, fresh_ms: u64) -> Load {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut load = Load::default();
        let Some(s) = apps.get(app) else {
            return load;
        };
        for (at, r) in s.latest.values() {
            load.last_request_ms = load.last_request_ms.max(r.counters.last_request_ms);
            if now_ms.saturating_sub(*at) <= fresh_ms {
                load.in_flight += r.counters.in_flight;
                load.held += r.held;
            }
        }
        load
    }

    /// The app's requests counted by every router that reported it (cumulative; `None` if
    /// none did) and its latency quantiles (the slowest of the fresh reports).
    pub fn counters(&self, app: &str, now_ms: u64, fresh_ms: u64) -> Counters {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut c = Counters::default();
        let Some(s) = apps.get(app) else {
            return c;
        };
        for (at, r) in s.latest.values() {
            *c.requests.get_or_insert(0) += r.counters.requests;
            if now_ms.saturating_sub(*at) <= fresh_ms {
                let q = &r.counters.latency_ms;
                c.p50 = max(c.p50, q.p50);
                c.p99 = max(c.p99, q.p99);
            }
        }
        c
    }

    pub fn record(&self, report: &StatsReport) {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        for a in &report.apps {
            let entry = apps.entry(a.app.clone()).or_default();
            entry
                .latest
                .insert(report.router.clone(), (report.at_ms, a.clone()));
            if entry.history.len() >= HISTORY {
                entry.history.pop_front();
            }
            entry.history.push_back(StatsSample {
                router: report.router.clone(),
                at_ms: report.at_ms,
                requests: a.counters.requests,
                in_flight: a.counters.in_flight,
                held: a.held,
                last_request_ms: a.counters.last_request_ms,
                latency_ms: a.counters.latency_ms.clone(),
            });
        }
    }

    /// What the routers reported for `app`, or None if none did.
    pub fn of(&self, app: &str) -> Option<AppStats> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let s = apps.get(app)?;
        let routers = s
            .latest
            .iter()
            .map(|(name, (at_ms, r))| {
                let report = RouterAppReport {
                    at_ms: *at_ms,
                    report: r.clone(),
                };
                (name.clone(), report)
            })
            .collect();
        Some(AppStats {
            app: app.to_string(),
            routers,
            history: s.history.iter().cloned().collect(),
        })
    }
}
