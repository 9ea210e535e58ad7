//! What each dashboard page shows: typed page models for the templates, with the numbers
//! already formatted and the charts already drawn. They are read from `ops::views` (the views
//! the API serves, with no HTTP in between) and, for the Cluster page, the master's
//! `/master/state`. The app's state and its one-line note are also what `drove apps` shows.

mod app_page;
mod cluster_page;

use std::time::SystemTime;

use drove_proto::paas::ScalingView;
use serde::Serialize;

pub use app_page::{app, AppPage};
pub use cluster_page::{cluster, ClusterPage};

use super::charts;
use super::history::Sample;
use crate::ops;
use crate::ops::views::{App, QueueEntry};
use crate::Paas;

/// An app's wake or failure counts as recent for this long.
const RECENT_MS: u64 = 10 * 60 * 1000;
/// An app with no request for this long is idle.
const IDLE_MS: u64 = 60 * 1000;

/// A page's model, as its template reads it (`v`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum View {
    Cluster(ClusterPage),
    Apps(AppsPage),
    App(Box<AppPage>),
}

fn now_ms() -> u64 {
    crate::model::now_ms()
}

/// An RFC 3339 time as ms since the epoch.
fn epoch_ms(t: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()?;
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// "4 s", "3 min", "2 h 5 min", "3 d".
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d", s / 86_400),
    }
}

/// "4 s ago" for a time `secs` seconds back.
fn secs_ago(secs: f64) -> String {
    format!("{} ago", span((secs * 1000.0) as u64))
}

fn ago_ms(ms: Option<u64>) -> String {
    match ms {
        Some(t) => format!("{} ago", span(now_ms().saturating_sub(t))),
        None => "never".into(),
    }
}

/// "12:03:04" from an RFC 3339 time.
fn clock(t: &str) -> String {
    t.get(11..19).unwrap_or(t).to_string()
}

/// "2 GB", "512 MB".
fn mb(x: f64) -> String {
    if x >= 1024.0 {
        format!("{} GB", charts::number(x / 1024.0))
    } else {
        format!("{} MB", charts::number(x))
    }
}

/// "2 cpus, 512 MB".
fn cpus_mem(cpus: f64, mem: f64) -> String {
    format!("{} cpus, {}", charts::number(cpus), mb(mem))
}

/// The app's route name (`/team/shop` → `team-shop`): its name in the dashboard's URLs.
pub fn route(id: &str) -> String {
    crate::model::app::route_name(id).unwrap_or_else(|| id.trim_matches('/').to_string())
}

/// The state an operator reads first: failing, waking, deploying, suspended, at zero, idle or
/// running; from the app's Marathon object (with its tasks), its launch queue entry and its
/// scaling view. The dashboard and `drove apps` show it.
pub fn app_state(
    app: &App,
    queued: Option<&QueueEntry>,
    scaling: Option<&ScalingView>,
) -> &'static str {
    let now = now_ms();
    let waking = scaling.is_some_and(|s| s.waking.is_some());
    let load = scaling.map(|s| s.load).unwrap_or_default();
    let wanted = u64::from(app.definition.instances);
    let ready = app.tasks().iter().filter(|t| t.ready()).count() as u64;
    let failed_recently = app
        .last_task_failure
        .as_ref()
        .and_then(|f| epoch_ms(&f.timestamp))
        .is_some_and(|t| now.saturating_sub(t) < RECENT_MS);
    let backing_off = queued.is_some_and(|q| !q.delay.overdue);
    if (failed_recently && ready < wanted) || backing_off {
        "failing"
    } else if waking {
        "waking"
    } else if !app.deployments.is_empty() {
        "deploying"
    } else if app.definition.suspended() {
        "suspended"
    } else if wanted == 0 {
        "at zero"
    } else if load
        .last_request_ms
        .is_none_or(|t| now.saturating_sub(t) > IDLE_MS)
        && load.in_flight == 0
    {
        "idle"
    } else {
        "running"
    }
}

/// The state's colour class.
fn state_class(state: &str) -> &'static str {
    match state {
        "failing" => "bad",
        "waking" | "deploying" => "busy",
        "at zero" | "idle" | "suspended" => "quiet",
        _ => "good",
    }
}

/// Why an app that wants instances has none yet: its offers' declines, from its launch queue
/// entry.
#[derive(Debug, Serialize)]
pub struct Waiting {
    pub app: String,
    pub route: String,
    pub count: u64,
    pub since: String,
    pub processed: u64,
    pub unused: u64,
    /// `InsufficientCpus ×3`, for each reason offers were declined.
    pub reasons: Vec<String>,
    pub backoff: Option<String>,
}

impl Waiting {
    fn of(q: &QueueEntry) -> Waiting {
        let summary = &q.processed_offers_summary;
        let reasons = summary
            .reject_summary_last_offers
            .iter()
            .filter(|r| r.declined > 0)
            .map(|r| format!("{} ×{}", r.reason, r.declined))
            .collect();
        let delay = q.delay.time_left_seconds;
        Waiting {
            app: q.app.definition.id.clone(),
            route: route(&q.app.definition.id),
            count: q.count,
            since: clock(&q.since),
            processed: summary.processed_offers_count,
            unused: summary.unused_offers_count,
            reasons,
            backoff: (delay > 0).then(|| format!("backing off for {delay} s after failures")),
        }
    }
}

fn queue(paas: &Paas) -> Vec<QueueEntry> {
    ops::views::queue(&paas.lock())
}

/// App `id`'s entry in `queue`, if it waits there.
pub fn queued<'a>(queue: &'a [QueueEntry], id: &str) -> Option<&'a QueueEntry> {
    queue.iter().find(|q| q.app.definition.id == id)
}

/// One line on why an app is not as it should be: what its offers lacked, its backoff, and
/// (while it is failing) how its last instance ended and what it wrote last. The dashboard's
/// apps page and `drove apps` show it.
pub fn note(app: &App, queued: Option<&QueueEntry>, state: &str) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(w) = queued.map(Waiting::of) {
        if !w.reasons.is_empty() {
            parts.push(format!("waiting for resources: {}", w.reasons.join(", ")));
        }
        parts.extend(w.backoff);
    }
    if let Some(f) = app
        .last_task_failure
        .as_ref()
        .filter(|_| state == "failing")
    {
        let lines: Vec<&str> = f
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        // How it ended, and what it said: its error line if it wrote one (`TypeError: …`,
        // `error: …`), else its last.
        let error_line = |l: &&&str| {
            let name = l.split(':').next().unwrap_or("");
            name.len() < l.len()
                && !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
                && (name.ends_with("Error") || name.eq_ignore_ascii_case("error"))
        };
        let said = lines
            .iter()
            .skip(1)
            .find(error_line)
            .or(lines.iter().skip(1).last())
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        parts.push(format!(
            "last failure: {}{said}",
            lines.first().copied().unwrap_or("")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The Apps page.
#[derive(Debug, Serialize)]
pub struct AppsPage {
    pub apps: Vec<AppRow>,
}

/// An app on the Apps page: its state, instances, load.
#[derive(Debug, Serialize)]
pub struct AppRow {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub class: &'static str,
    pub wanted: u32,
    pub ready: usize,
    /// Its instances' addresses.
    #[serde(rename = "where")]
    pub hosts: Vec<String>,
    /// Its request rate over the last 5 minutes, drawn.
    pub spark: String,
    pub p99: Option<String>,
    pub last_request: String,
    pub note: Option<String>,
}

fn rates(samples: &[Sample]) -> Vec<Option<f64>> {
    samples.iter().map(|s| s.rate).collect()
}

/// The Apps page: every app with its state, instances, load.
pub fn apps(paas: &Paas) -> AppsPage {
    let all: Vec<App> = {
        let s = paas.lock();
        s.apps
            .values()
            .filter(|a| !a.deleting)
            .map(|a| ops::views::app(&s, a, true))
            .collect()
    };
    let queue = queue(paas);
    let apps = all
        .iter()
        .map(|app| {
            let id = &app.definition.id;
            let name = route(id);
            let scaling = ops::views::scaling(paas, &name);
            let queued = queued(&queue, id);
            let state = app_state(app, queued, scaling.as_ref());
            let samples: &[Sample] = scaling.as_ref().map_or(&[], |s| &s.history);
            let recent = &samples[samples.len().saturating_sub(30)..];
            let rate_now = recent.iter().rev().find_map(|s| s.rate);
            let title = format!(
                "{} req/s now; last 5 min",
                charts::number(rate_now.unwrap_or(0.0))
            );
            AppRow {
                id: id.clone(),
                state,
                class: state_class(state),
                wanted: app.definition.instances,
                ready: app.tasks().iter().filter(|t| t.ready()).count(),
                hosts: app.tasks().iter().map(|t| t.addr()).collect(),
                spark: charts::sparkline(&rates(recent), &title),
                p99: samples
                    .last()
                    .and_then(|s| s.p99)
                    .map(|p| format!("{} ms", charts::number(p))),
                last_request: ago_ms(scaling.as_ref().and_then(|s| s.load.last_request_ms)),
                note: note(app, queued, state),
                name,
            }
        })
        .collect();
    AppsPage { apps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drove_proto::marathon::{Delay, OffersSummary, Task, TaskFailure, VersionInfo};
    use drove_proto::mesos::TaskState;
    use drove_proto::paas::{Load, WakeTimeline};

    use crate::model::app::AppDefinition;

    fn app(instances: u32, running: bool) -> App {
        let definition = AppDefinition::from_value(
            serde_json::json!({"id": "/a", "cmd": "true", "instances": instances}),
        )
        .expect("a valid definition");
        let task = Task {
            id: "a.1".into(),
            app_id: "/a".into(),
            host: "h".into(),
            ports: vec![31000],
            service_ports: Vec::new(),
            slave_id: "s".into(),
            staged_at: crate::model::timestamp(),
            started_at: None,
            version: "v".into(),
            state: TaskState::TaskRunning,
            ip_addresses: Vec::new(),
            health_check_results: None,
        };
        App {
            definition,
            version: "v".into(),
            version_info: VersionInfo {
                last_scaling_at: "v".into(),
                last_config_change_at: "v".into(),
            },
            ports: Vec::new(),
            uris: Vec::new(),
            executor: String::new(),
            dependencies: Vec::new(),
            tasks_running: u64::from(running),
            tasks_staged: 0,
            tasks_healthy: 0,
            tasks_unhealthy: 0,
            deployments: Vec::new(),
            last_task_failure: None,
            tasks: Some(running.then_some(task).into_iter().collect()),
        }
    }

    fn view(last_request_ms: Option<u64>, waking: bool) -> ScalingView {
        let timeline = WakeTimeline {
            app_id: "/a".into(),
            timestamp: crate::model::timestamp(),
            held: None,
            total_ms: 0.0,
            steps: Vec::new(),
            container: Default::default(),
        };
        ScalingView {
            app_id: "/a".into(),
            instances: 1,
            scaling: None,
            decisions: Vec::new(),
            panicking: false,
            idle_seconds: None,
            concurrency: None,
            load: Load {
                in_flight: 0,
                held: 0,
                last_request_ms,
            },
            wakes: Vec::new(),
            waking: waking.then_some(timeline),
            history: Vec::new(),
        }
    }

    fn queued(a: &App, overdue: bool) -> QueueEntry {
        QueueEntry {
            app: a.clone(),
            count: 1,
            delay: Delay {
                time_left_seconds: if overdue { 0 } else { 3 },
                overdue,
            },
            since: crate::model::timestamp(),
            processed_offers_summary: OffersSummary {
                processed_offers_count: 0,
                unused_offers_count: 0,
                last_unused_offer_at: None,
                last_used_offer_at: None,
                reject_summary_last_offers: Vec::new(),
            },
            last_unused_offers: Vec::new(),
        }
    }

    #[test]
    fn states_read_as_an_operator_expects() {
        let fresh = view(Some(now_ms()), false);
        let fresh = Some(&fresh);
        let stale = view(None, false);
        let stale = Some(&stale);
        assert_eq!(app_state(&app(1, true), None, fresh), "running");
        assert_eq!(app_state(&app(1, true), None, stale), "idle");
        let mut scaled = app(0, false);
        scaled.definition.scaling = Some(serde_json::from_str("{\"minInstances\": 0}").unwrap());
        assert_eq!(app_state(&scaled, None, stale), "at zero");
        assert_eq!(app_state(&app(0, false), None, stale), "suspended");
        if let Some(s) = scaled.definition.scaling.as_mut() {
            s.suspended = true;
        }
        assert_eq!(app_state(&scaled, None, stale), "suspended");
        let waking = view(None, true);
        assert_eq!(app_state(&app(1, false), None, Some(&waking)), "waking");
        let mut deploying = app(2, true);
        deploying.deployments = vec![drove_proto::marathon::DeploymentRef { id: "d".into() }];
        assert_eq!(app_state(&deploying, None, fresh), "deploying");
        let mut failing = app(1, false);
        failing.last_task_failure = Some(TaskFailure {
            app_id: "/a".into(),
            host: "h".into(),
            message: "TASK_FAILED\nTypeError: x is not a function\nat main.js:3".into(),
            state: TaskState::TaskFailed,
            task_id: "a.1".into(),
            timestamp: crate::model::timestamp(),
            version: "v".into(),
        });
        assert_eq!(app_state(&failing, None, fresh), "failing");
        assert_eq!(
            note(&failing, None, "failing").as_deref(),
            Some("last failure: TASK_FAILED: TypeError: x is not a function")
        );
        let running = app(1, true);
        let backoff = queued(&running, false);
        assert_eq!(app_state(&running, Some(&backoff), fresh), "failing");
        assert_eq!(
            note(&running, Some(&backoff), "failing").as_deref(),
            Some("backing off for 3 s after failures")
        );
        assert_eq!(
            app_state(&running, Some(&queued(&running, true)), fresh),
            "running"
        );
    }

    #[test]
    fn spans_and_times_are_short() {
        assert_eq!(span(4_000), "4 s");
        assert_eq!(span(185_000), "3 min");
        assert_eq!(span(7_500_000), "2 h 5 min");
        assert_eq!(clock("2026-12-02T01:02:03.456Z"), "01:02:03");
        assert_eq!(epoch_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(route("/team/shop"), "team-shop");
    }
}
