//! The last hour of every app, for the dashboard's charts: every [`STEP`] a sample of its
//! request rate (from the routers' cumulative counters), its latency quantiles (the routers'
//! last minute) and its instance counts (wanted and ready). Each sample is journalled too, so
//! the charts survive a restart (with a gap where the PaaS was down).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::Journal;
use crate::Paas;

/// Between samples.
pub const STEP: Duration = Duration::from_secs(10);
/// Samples kept per app: an hour.
pub const KEPT: usize = 360;

pub use drove_proto::paas::Sample;

/// What one sampling reads of an app.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// The routers' cumulative request counter (`None`: no router reported the app).
    pub requests: Option<u64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub wanted: u32,
    pub ready: u32,
}

#[derive(Default)]
struct Series {
    samples: VecDeque<Sample>,
    /// The routers' summed request counter at the last sample.
    requests: Option<u64>,
}

#[derive(Default)]
pub struct History {
    apps: Mutex<HashMap<String, Series>>,
}

impl History {
    /// The history journalled before (`(route name, sample JSON)`, oldest first); the last
    /// [`KEPT`] of each app.
    pub fn restore(samples: impl IntoIterator<Item = (String, String)>) -> History {
        let mut apps: HashMap<String, Series> = HashMap::new();
        for (app, data) in samples {
            let Ok(sample) = serde_json::from_str::<Sample>(&data) else {
                continue;
            };
            let s = apps.entry(app).or_default();
            if s.samples.len() >= KEPT {
                s.samples.pop_front();
            }
            s.samples.push_back(sample);
        }
        History {
            apps: Mutex::new(apps),
        }
    }

    /// Records what was read of `app` (its route name) at `at_ms`; the rate comes from the
    /// counter's change since the previous sample. Returns the sample.
    pub fn record(&self, app: &str, at_ms: u64, r: Reading) -> Sample {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let s = apps.entry(app.to_string()).or_default();
        let prev_at = s.samples.back().map(|p| p.at_ms);
        let rate = match (s.requests, r.requests, prev_at) {
            (Some(before), Some(now), Some(then)) if now >= before && at_ms > then => {
                Some((now - before) as f64 / ((at_ms - then) as f64 / 1000.0))
            }
            (None, Some(_), _) | (Some(_), Some(_), _) => None,
            // No router has reported the app: no requests.
            (_, None, _) => Some(0.0),
        };
        s.requests = r.requests;
        if s.samples.len() >= KEPT {
            s.samples.pop_front();
        }
        let sample = Sample {
            at_ms,
            rate,
            p50: r.p50,
            p99: r.p99,
            wanted: r.wanted,
            ready: r.ready,
        };
        s.samples.push_back(sample);
        sample
    }

    /// The app's samples, oldest first.
    pub fn of(&self, app: &str) -> Vec<Sample> {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .map(|s| s.samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Forgets the apps not in `keep`.
    fn retain(&self, keep: &[String]) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep.contains(k));
    }
}

/// Samples every app every [`STEP`] until shutdown.
pub async fn run(paas: Arc<Paas>) {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = paas.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        sample(&paas);
    }
}

fn sample(paas: &Paas) {
    let now = crate::model::now_ms();
    let apps: Vec<(String, u32, u32)> = {
        let s = paas.lock();
        s.apps
            .values()
            .filter(|a| !a.deleting)
            .filter_map(|a| {
                let route = crate::model::app::route_name(&a.def.id)?;
                let ready = s.instances_of(&a.def.id).filter(|i| i.ready()).count() as u32;
                Some((route, a.def.instances, ready))
            })
            .collect()
    };
    for (route, wanted, ready) in &apps {
        let c = paas.stats.counters(route, now, crate::stats::FRESH_MS);
        let sample = paas.admin.history.record(
            route,
            now,
            Reading {
                requests: c.requests,
                p50: c.p50,
                p99: c.p99,
                wanted: *wanted,
                ready: *ready,
            },
        );
        if let Ok(data) = serde_json::to_string(&sample) {
            paas.store.journal(route, Journal::Sample, data, KEPT);
        }
    }
    let keep: Vec<String> = apps.into_iter().map(|(r, _, _)| r).collect();
    paas.admin.history.retain(&keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(requests: Option<u64>) -> Reading {
        Reading {
            requests,
            ..Reading::default()
        }
    }

    #[test]
    fn rates_come_from_counter_deltas() {
        let h = History::default();
        h.record("a", 10_000, r(Some(100)));
        h.record("a", 20_000, r(Some(150)));
        h.record("a", 30_000, r(Some(10))); // a restarted router
        h.record("a", 40_000, r(None));
        let rates: Vec<Option<f64>> = h.of("a").iter().map(|x| x.rate).collect();
        assert_eq!(rates, vec![None, Some(5.0), None, Some(0.0)]);
    }

    #[test]
    fn an_hour_is_kept() {
        let h = History::default();
        for i in 0..(KEPT as u64 + 5) {
            h.record("a", i * 10_000, r(Some(i)));
        }
        let all = h.of("a");
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].at_ms, 50_000);
    }
}
