//! The scaler: keeps each app that has `scaling` settings at the instance count its load asks
//! for, takes idle apps to zero, and records every decision with its reason.
//!
//! Once a second it reads what the routers last reported for each such app (in flight, held,
//! last request; `stats`), keeps a window of concurrency samples, and asks [`policy::decide`].
//! A change goes through `ops::scaling::set_instances`, the same path as a wake: written
//! to the store, installed as a `ScaleApplication` deployment (so scale-downs drain like any
//! other), published as a `drove_scaling_decision_event` on `/v2/events`, and kept in the
//! app's recent decisions (`GET /v1/apps/{app}/scaling`).
//!
//! An app in a deployment other than a scale is left alone until it finishes.

pub mod policy;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drove_proto::agent::ResourceStatistics;
use drove_proto::paas::Decision;

use crate::model::deployment::Action;
use crate::model::scaling::Scaling;
use crate::model::timestamp;
use crate::ops;
use crate::store::{Journal, Store};
use crate::Paas;

/// How often the scaler looks.
pub const TICK: Duration = Duration::from_secs(1);
/// Decisions kept per app.
pub const DECISIONS: usize = 50;

/// What the scaler remembers of each app.
pub struct Scaler {
    apps: Mutex<HashMap<String, AppMemory>>,
    /// Where decisions are journalled, so they outlive a restart.
    store: Store,
}

struct AppMemory {
    /// (when, concurrency) over the last stable window.
    samples: VecDeque<(Instant, f64)>,
    /// The last request, in flight or held request seen, or the last scale-up.
    last_activity: Instant,
    last_request_ms: Option<u64>,
    /// When the instance count last changed, and to what.
    last_change: Instant,
    last_count: u32,
    panic_until: Option<Instant>,
    decisions: VecDeque<Decision>,
    /// Whether "busy on its own" was already recorded for the current idle stretch.
    busy_noted: bool,
    /// (when, total CPU seconds of `cpu_tasks`) while the app looks idle.
    cpu: VecDeque<(Instant, f64)>,
    cpu_tasks: Vec<String>,
}

impl AppMemory {
    fn new(now: Instant, count: u32) -> AppMemory {
        AppMemory {
            samples: VecDeque::new(),
            last_activity: now,
            last_request_ms: None,
            last_change: now,
            last_count: count,
            panic_until: None,
            decisions: VecDeque::new(),
            busy_noted: false,
            cpu: VecDeque::new(),
            cpu_tasks: Vec::new(),
        }
    }
}

impl Scaler {
    /// A scaler that journals to `store`, with the decisions it journalled before
    /// (`(app id, JSON)`, oldest first).
    pub fn new(store: Store, restored: impl IntoIterator<Item = (String, String)>) -> Scaler {
        let mut apps: HashMap<String, AppMemory> = HashMap::new();
        let now = Instant::now();
        for (app, data) in restored {
            let Ok(decision) = serde_json::from_str::<Decision>(&data) else {
                continue;
            };
            let to = decision.to;
            let m = apps.entry(app).or_insert_with(|| AppMemory::new(now, to));
            if m.decisions.len() >= DECISIONS {
                m.decisions.pop_front();
            }
            m.decisions.push_back(decision);
            m.last_count = to;
        }
        Scaler {
            apps: Mutex::new(apps),
            store,
        }
    }

    fn with<R>(&self, app: &str, count: u32, f: impl FnOnce(&mut AppMemory) -> R) -> R {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let m = apps
            .entry(app.to_string())
            .or_insert_with(|| AppMemory::new(Instant::now(), count));
        f(m)
    }

    /// Records a decision (anyone's: the scaler's, a wake's, an operator's) and returns it.
    pub fn record(&self, app: &str, from: u32, to: u32, reason: &str, by: &str) -> Decision {
        let decision = Decision {
            app_id: app.to_string(),
            from,
            to,
            reason: reason.to_string(),
            by: by.to_string(),
            timestamp: timestamp(),
        };
        let now = Instant::now();
        self.with(app, from, |m| {
            if m.decisions.len() >= DECISIONS {
                m.decisions.pop_front();
            }
            m.decisions.push_back(decision.clone());
            m.last_change = now;
            m.last_count = to;
            if to > from {
                // A scale-up (a wake above all) starts a fresh idle period.
                m.last_activity = now;
                m.busy_noted = false;
            }
        });
        let line = serde_json::to_string(&decision).unwrap_or_default();
        self.store.journal(app, Journal::Decision, line, DECISIONS);
        decision
    }

    /// Samples the app's load and returns what [`policy::decide`] needs.
    fn observe(
        &self,
        app: &str,
        current: u32,
        s: &Scaling,
        load: crate::stats::Load,
        now: Instant,
    ) -> policy::Inputs {
        self.with(app, current, |m| {
            if m.last_count != current {
                // Changed by someone else (an operator, a rollback).
                m.last_count = current;
                m.last_change = now;
            }
            let active = load.in_flight > 0
                || load.held > 0
                || load.last_request_ms.is_some() && load.last_request_ms != m.last_request_ms;
            if load.last_request_ms.is_some() {
                m.last_request_ms = load.last_request_ms;
            }
            if active {
                m.last_activity = now;
                m.busy_noted = false;
            }
            let stable = Duration::from_secs_f64(s.stable_window_seconds);
            let panic = Duration::from_secs_f64(s.panic_window_seconds());
            m.samples
                .push_back((now, (load.in_flight + load.held) as f64));
            while m
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > stable)
            {
                m.samples.pop_front();
            }
            let avg = |within: Duration| {
                let xs: Vec<f64> = m
                    .samples
                    .iter()
                    .filter(|(t, _)| now.duration_since(*t) <= within)
                    .map(|(_, c)| *c)
                    .collect();
                if xs.is_empty() {
                    0.0
                } else {
                    xs.iter().sum::<f64>() / xs.len() as f64
                }
            };
            let stable_full = m
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) + TICK >= stable);
            policy::Inputs {
                current,
                stable_avg: avg(stable),
                panic_avg: avg(panic),
                stable_full,
                in_flight: load.in_flight,
                held: load.held,
                idle_for: now.duration_since(m.last_activity),
                since_change: now.duration_since(m.last_change),
                cpus: None,
                cpu_pending: false,
                panicking: m.panic_until.is_some_and(|u| now < u),
            }
        })
    }

    /// Adds a CPU sample (None: not measurable) and returns (cores over the idle window, pending).
    fn cpu_sample(
        &self,
        app: &str,
        tasks: &[String],
        sample: Option<f64>,
        window: Duration,
        now: Instant,
    ) -> (Option<f64>, bool) {
        self.with(app, 0, |m| {
            let Some(total) = sample else {
                m.cpu.clear();
                return (None, false);
            };
            if m.cpu_tasks != tasks {
                m.cpu.clear();
                m.cpu_tasks = tasks.to_vec();
            }
            m.cpu.push_back((now, total));
            while m.cpu.len() > 2
                && m.cpu
                    .get(1)
                    .is_some_and(|(t, _)| now.duration_since(*t) >= window)
            {
                m.cpu.pop_front();
            }
            match (m.cpu.front(), m.cpu.back()) {
                (Some((t0, c0)), Some((t1, c1))) if t1.duration_since(*t0) >= TICK / 2 => {
                    let secs = t1.duration_since(*t0).as_secs_f64();
                    (Some(((c1 - c0) / secs).max(0.0)), false)
                }
                _ => (None, true),
            }
        })
    }

    fn cpu_clear(&self, app: &str) {
        self.with(app, 0, |m| m.cpu.clear());
    }

    /// Whether a "busy" note is due (once per idle stretch).
    fn note_busy(&self, app: &str) -> bool {
        self.with(app, 0, |m| !std::mem::replace(&mut m.busy_noted, true))
    }

    fn panic(&self, app: &str, until: Instant) {
        self.with(app, 0, |m| m.panic_until = Some(until));
    }

    /// What the scaler remembers of an app: its decisions (oldest first), whether it is in
    /// panic mode, its idle seconds and its concurrency (unknown before it saw the app).
    pub fn memory(&self, app: &str) -> Memory {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match apps.get(app) {
            Some(m) => Memory {
                decisions: m.decisions.iter().cloned().collect(),
                panicking: m.panic_until.is_some_and(|u| now < u),
                idle_seconds: Some(now.duration_since(m.last_activity).as_secs_f64()),
                concurrency: Some(m.samples.back().map(|(_, c)| *c).unwrap_or(0.0)),
            },
            None => Memory::default(),
        }
    }

    /// Forgets a deleted app.
    pub fn forget(&self, app: &str) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }
}

/// An app as the scaler remembers it ([`Scaler::memory`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    pub decisions: Vec<Decision>,
    pub panicking: bool,
    pub idle_seconds: Option<f64>,
    pub concurrency: Option<f64>,
}

/// The CPU seconds used so far by all of `tasks` (through the master, which asks their agents),
/// or None when any cannot be read (no cgroups, an agent away): then CPU use does not count.
async fn cpu_seconds(paas: &Arc<Paas>, framework: &str, tasks: &[String]) -> Option<f64> {
    let reads = tasks.iter().map(|t| {
        let req = paas
            .master_get(&format!(
                "/master/frameworks/{framework}/tasks/{t}/statistics"
            ))
            .timeout(Duration::from_secs(2));
        async move {
            let s: ResourceStatistics = crate::json_answer(req).await?;
            Some(s.cpu_seconds())
        }
    });
    let all = futures::future::join_all(reads).await;
    all.into_iter().sum()
}

/// The scaler loop; ends with the PaaS.
pub async fn run(paas: Arc<Paas>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = paas.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        step(&paas).await;
    }
}

/// One look at every scaled app.
/// One app as the scaler sees it in a step.
struct Candidate {
    id: String,
    route: String,
    current: u32,
    scaling: Scaling,
    deploying: bool,
    /// Its live instances' task ids, sorted.
    tasks: Vec<String>,
}

pub async fn step(paas: &Arc<Paas>) {
    let (apps, framework): (Vec<Candidate>, Option<String>) = {
        let s = paas.lock();
        let apps = s
            .apps
            .values()
            .filter(|a| !a.deleting)
            .filter_map(|a| {
                let scaling = a.def.scaling.clone().filter(|s| !s.suspended)?;
                let route = crate::model::app::route_name(&a.def.id)?;
                let deploying = a
                    .deployment
                    .as_ref()
                    .is_some_and(|d| d.action != Action::ScaleApplication);
                let mut tasks: Vec<String> = s
                    .instances_of(&a.def.id)
                    .filter(|i| !i.killing)
                    .map(|i| i.task_id.clone())
                    .collect();
                tasks.sort();
                Some(Candidate {
                    id: a.def.id.clone(),
                    route,
                    current: a.def.instances,
                    scaling,
                    deploying,
                    tasks,
                })
            })
            .collect();
        (apps, s.framework_id.clone())
    };
    let now = Instant::now();
    let at = crate::model::now_ms();
    for app in apps {
        let Candidate {
            id,
            route,
            current,
            scaling,
            deploying,
            tasks,
        } = app;
        let load = paas.stats.load(&route, at, crate::stats::FRESH_MS);
        let mut inputs = paas.scaler.observe(&id, current, &scaling, load, now);
        if deploying {
            continue;
        }
        // An app that looks idle has its CPU measured from half its idle period on, so the
        // decision at the idle period knows whether it is busy on its own.
        let idle_secs = scaling.idle_seconds;
        let looks_idle = current > 0
            && scaling.lower() == 0
            && inputs.in_flight == 0
            && inputs.held == 0
            && inputs.idle_for.as_secs_f64() >= idle_secs / 2.0;
        if looks_idle {
            let sample = match &framework {
                Some(fw) => cpu_seconds(paas, fw, &tasks).await,
                None => None,
            };
            let window = Duration::from_secs_f64(idle_secs);
            (inputs.cpus, inputs.cpu_pending) =
                paas.scaler.cpu_sample(&id, &tasks, sample, window, now);
        } else {
            paas.scaler.cpu_clear(&id);
        }
        let Some(change) = policy::decide(&scaling, &inputs) else {
            continue;
        };
        if change.to == current {
            if paas.scaler.note_busy(&id) {
                let decision = paas
                    .scaler
                    .record(&id, current, current, &change.reason, "scaler");
                paas.lock()
                    .publish(crate::events::Event::ScalingDecision(decision));
            }
            continue;
        }
        if change.panic {
            paas.scaler.panic(
                &id,
                now + Duration::from_secs_f64(scaling.stable_window_seconds),
            );
        }
        let tx = paas.begin().await;
        let set = ops::scaling::set_instances(&tx, &id, change.to, &change.reason, "scaler");
        if let Err(e) = set.await {
            tracing::warn!(app = %id, error = %e, "scaling failed");
        }
    }
}
