//! The routers' per-app stats: the latest report of each router, and a short history per app
//! (for the scaler and the dashboard to come), readable at `GET /v1/apps/{app}/stats`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use drove_proto::routing::{AppReport, StatsReport};
use serde_json::{json, Value};

/// Reports kept per app: 5 minutes at one push a second from one router.
pub const HISTORY: usize = 300;

#[derive(Default)]
pub struct RouterStats {
    apps: Mutex<HashMap<String, AppStats>>,
}

#[derive(Default)]
struct AppStats {
    /// Router name → its latest report for the app.
    latest: HashMap<String, (u64, AppReport)>,
    history: VecDeque<Value>,
}

impl RouterStats {
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
            entry.history.push_back(json!({
                "router": report.router, "at_ms": report.at_ms,
                "requests": a.counters.requests, "in_flight": a.counters.in_flight,
                "held": a.held, "last_request_ms": a.counters.last_request_ms,
                "latency_ms": a.counters.latency_ms,
            }));
        }
    }

    /// `{"app", "routers": {name: {at_ms, report}}, "history": [...]}`, or None if no router
    /// reported the app.
    pub fn of(&self, app: &str) -> Option<Value> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let s = apps.get(app)?;
        let routers: serde_json::Map<String, Value> = s
            .latest
            .iter()
            .map(|(name, (at, r))| (name.clone(), json!({"at_ms": at, "report": r})))
            .collect();
        Some(json!({"app": app, "routers": routers, "history": s.history}))
    }
}
