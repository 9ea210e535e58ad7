//! Wake timelines: where the time of each cold start went.
//!
//! A wake opens a timeline on its app: `held` (the router's first held request, reported as
//! how long before its call it was held, so a negative time) and `wake` (the call came in,
//! with how many requests were held). Each step the PaaS sees on the way is marked once, with the time since
//! the wake: `revive` (offers asked for), `offer` (an offer arrived while the app waited),
//! `accept` (a launch was sent on it), `starting` (the agent took it: sandbox, fetch),
//! `running` (the process started), `ready` (its first passed health check), `routed` (the
//! route upsert that releases the held requests went out; the routers forward them at once).
//! A container's launch adds what its agent reported of its steps inside `starting`→`running`
//! (`container`: `networkMs`, `bundleMs`, `runtimeMs`).
//! At `routed` the timeline is complete: kept with the app (the last [`KEPT`], journalled so
//! they outlive a restart) and published as a `drove_wake_timeline_event`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use drove_proto::paas::{WakeStep, WakeTimeline};

use super::{Effect, State};
use crate::events;
use crate::model::timestamp;
use crate::store::Journal;

/// Completed timelines kept per app.
pub const KEPT: usize = 20;
/// A wake that never completes is dropped after this long.
pub const ABANDON: Duration = Duration::from_secs(600);

/// An open wake.
#[derive(Debug, Clone)]
pub struct Timeline {
    started: Instant,
    at: String,
    held: Option<u64>,
    /// How long the router had held the first request when it called.
    held_for_ms: u64,
    marks: Vec<(&'static str, Duration)>,
    /// The agent's container steps inside `starting`→`running` (name, ms), when it said.
    container: Vec<(String, f64)>,
}

impl Timeline {
    pub fn new(held: Option<u64>, held_for_ms: u64, now: Instant) -> Timeline {
        Timeline {
            started: now,
            at: timestamp(),
            held,
            held_for_ms,
            marks: vec![("wake", Duration::ZERO)],
            container: Vec::new(),
        }
    }

    fn mark(&mut self, stage: &'static str, now: Instant) {
        if !self.marks.iter().any(|(s, _)| *s == stage) {
            self.marks
                .push((stage, now.saturating_duration_since(self.started)));
        }
    }

    fn timeline(&self, app: &str) -> WakeTimeline {
        let held = WakeStep {
            step: "held".into(),
            ms: -(self.held_for_ms as f64),
        };
        let steps = std::iter::once(held)
            .chain(self.marks.iter().map(|(s, d)| WakeStep {
                step: s.to_string(),
                ms: d.as_secs_f64() * 1000.0,
            }))
            .collect();
        let total = self.marks.last().map(|(_, d)| *d).unwrap_or_default()
            + Duration::from_millis(self.held_for_ms);
        WakeTimeline {
            app_id: app.to_string(),
            timestamp: self.at.clone(),
            held: self.held,
            total_ms: total.as_secs_f64() * 1000.0,
            steps,
            container: self
                .container
                .iter()
                .map(|(k, v)| (format!("{k}Ms"), *v))
                .collect(),
        }
    }
}

impl State {
    /// Opens a wake timeline for `app` (a wake just set it to one instance).
    pub fn wake_started(&mut self, app: &str, held: Option<u64>, held_for_ms: u64, now: Instant) {
        if let Some(a) = self.apps.get_mut(app) {
            a.wake = Some(Timeline::new(held, held_for_ms, now));
        }
    }

    /// Marks `stage` on `app`'s open wake, if it has one.
    pub(super) fn wake_mark(&mut self, app: &str, stage: &'static str, now: Instant) {
        let Some(a) = self.apps.get_mut(app) else {
            return;
        };
        let Some(t) = a.wake.as_mut() else { return };
        if now.saturating_duration_since(t.started) > ABANDON {
            a.wake = None;
            return;
        }
        t.mark(stage, now);
        if stage == "routed" {
            let done = t.timeline(app);
            a.wake = None;
            if a.wakes.len() >= KEPT {
                a.wakes.pop_front();
            }
            a.wakes.push_back(done.clone());
            let line = serde_json::to_string(&done).unwrap_or_default();
            self.effects.push(Effect::Journal {
                app: app.to_string(),
                kind: Journal::Wake,
                line,
                keep: KEPT,
            });
            tracing::info!(app, total_ms = done.total_ms, "wake complete");
            self.publish(events::Event::WakeTimeline(done));
        }
    }

    /// Records the agent's container steps (`drove.io/step/*` labels of TASK_RUNNING) on the
    /// app's open wake.
    pub(super) fn wake_container_steps(&mut self, app: &str, labels: &drove_proto::mesos::Labels) {
        let Some(t) = self.apps.get_mut(app).and_then(|a| a.wake.as_mut()) else {
            return;
        };
        if !t.container.is_empty() {
            return;
        }
        t.container = labels
            .labels
            .iter()
            .filter_map(|l| {
                let step = l.key.strip_prefix(drove_proto::mesos::STEP_LABEL)?;
                let ms: f64 = l.value.as_deref()?.parse().ok()?;
                Some((step.chars().take(32).collect(), ms))
            })
            .take(8)
            .collect();
    }

    /// Marks `stage` on every app with an open wake that still waits for launches.
    pub(super) fn wake_mark_waiting(&mut self, stage: &'static str, now: Instant) {
        let waiting: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| a.wake.is_some() && a.wanted > 0)
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            self.wake_mark(&id, stage, now);
        }
    }

    /// The app's open wake (the steps so far), if it is waking.
    pub fn open_wake(&self, app: &str) -> Option<WakeTimeline> {
        let a = self.apps.get(app)?;
        a.wake.as_ref().map(|t| t.timeline(app))
    }

    /// The app's recent completed wakes, oldest first.
    pub fn wakes_of(&self, app: &str) -> Vec<WakeTimeline> {
        self.apps
            .get(app)
            .map(|a| a.wakes.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The history kept per app.
pub type History = VecDeque<WakeTimeline>;
