//! Reads: the views the API serves and the dashboard renders, built from the state in one
//! place (the dashboard calls these directly, with no HTTP in between): drove's typed ones
//! ([`ScalingView`]) and Marathon's app, task and queue objects ([`marathon`]'s types).

use std::time::{Duration, Instant};

use drove_proto::marathon::{
    self, CurrentAction, Delay, DeploymentRef, HealthCheckResult, IpAddress, OffersSummary,
    ReadinessCheckResult, ReadinessResponse, RejectCount, Task, VersionInfo,
};
use drove_proto::mesos::TaskState;
use drove_proto::paas::{PlanAction, ScalingView, Step};

use crate::model::app::AppDefinition;

use crate::model::instance::Instance;
use crate::model::timestamp;
use crate::placement::Reject;
use crate::state::{AppRt, OfferStats, State};
use crate::Paas;

use super::OpsError;

/// App `name`'s (its route name) scaling view; `None` when no app is served as `name`.
pub fn scaling(paas: &Paas, name: &str) -> Option<ScalingView> {
    let (app_id, instances, scaling, wakes, waking) = {
        let s = paas.lock();
        let a = s.app_by_route(name)?;
        let id = a.def.id.clone();
        let scaling = a
            .def
            .scaling
            .as_ref()
            .and_then(|x| serde_json::to_value(x).ok());
        let (wakes, waking) = (s.wakes_of(&id), s.open_wake(&id));
        (id, a.def.instances, scaling, wakes, waking)
    };
    let load = paas
        .stats
        .load(name, crate::model::now_ms(), crate::stats::FRESH_MS);
    let memory = paas.scaler.memory(&app_id);
    Some(ScalingView {
        app_id,
        instances,
        scaling,
        decisions: memory.decisions,
        panicking: memory.panicking,
        idle_seconds: memory.idle_seconds,
        concurrency: memory.concurrency,
        load,
        wakes,
        waking,
        history: paas.admin.history.of(name),
    })
}

/// Marathon's app object as drove serves it.
pub type App = marathon::App<AppDefinition>;
/// An entry of Marathon's launch queue as drove serves it.
pub type QueueEntry = marathon::QueueEntry<AppDefinition>;

/// Marathon's task object.
pub fn task(i: &Instance) -> Task {
    let health_check_results = i.has_checks.then(|| {
        i.healthy
            .map(|alive| HealthCheckResult {
                alive,
                consecutive_failures: u32::from(!alive),
                first_success: None,
                last_success: None,
                last_failure: None,
                task_id: i.task_id.clone(),
                instance_id: i.task_id.clone(),
            })
            .into_iter()
            .collect()
    });
    Task {
        id: i.task_id.clone(),
        app_id: i.app_id.clone(),
        host: i.host.clone(),
        ports: i.ports.clone(),
        service_ports: Vec::new(),
        slave_id: i.agent_id.clone(),
        staged_at: i.staged_at.clone(),
        started_at: i.started_at.clone(),
        version: i.version.clone(),
        state: i.state,
        ip_addresses: vec![IpAddress {
            ip_address: i.ip.clone().unwrap_or_else(|| i.host.clone()),
            protocol: "IPv4".into(),
        }],
        health_check_results,
    }
}

/// Marathon's app object for definition `def`: its counts from `instances`, its tasks when
/// `tasks`.
fn app_object<'a>(
    def: AppDefinition,
    version: &str,
    version_info: VersionInfo,
    instances: impl Iterator<Item = &'a Instance>,
    tasks: bool,
) -> App {
    let mine: Vec<&Instance> = instances.collect();
    let count = |f: &dyn Fn(&Instance) -> bool| mine.iter().filter(|i| f(i)).count() as u64;
    let running = count(&|i| i.state == TaskState::TaskRunning);
    App {
        ports: def.port_definitions().iter().map(|p| p.port).collect(),
        uris: def.fetch.iter().map(|f| f.uri.clone()).collect(),
        executor: String::new(),
        dependencies: Vec::new(),
        version: version.to_string(),
        version_info,
        tasks_running: running,
        tasks_staged: mine.len() as u64 - running,
        tasks_healthy: count(&|i| i.has_checks && i.healthy == Some(true)),
        tasks_unhealthy: count(&|i| i.has_checks && i.healthy == Some(false)),
        deployments: Vec::new(),
        last_task_failure: None,
        tasks: tasks.then(|| mine.iter().map(|i| task(i)).collect()),
        definition: def,
    }
}

/// Marathon's app object: the definition plus its version, counts, deployments and tasks.
pub fn app(s: &State, a: &AppRt, tasks: bool) -> App {
    let info = VersionInfo {
        last_scaling_at: a.scaling_version.clone(),
        last_config_change_at: a.config_version.clone(),
    };
    let mut app = app_object(
        a.def.clone(),
        &a.version,
        info,
        s.instances_of(&a.def.id),
        tasks,
    );
    app.deployments = a
        .deployment
        .iter()
        .map(|d| DeploymentRef { id: d.id.clone() })
        .collect();
    app.last_task_failure = a.last_task_failure.clone();
    app
}

/// Marathon's deployment object for app `a`'s deployment under way, if it has one.
pub fn deployment(a: &AppRt) -> Option<marathon::Deployment> {
    let d = a.deployment.as_ref()?;
    let app = a.def.id.clone();
    let readiness = d
        .waiting
        .iter()
        .map(|w| ReadinessCheckResult {
            name: "drove".into(),
            task_id: None,
            ready: false,
            last_response: ReadinessResponse {
                status: 0,
                content_type: "text/plain".into(),
                body: w.clone(),
            },
        })
        .collect();
    Some(marathon::Deployment {
        id: d.id.clone(),
        version: d.version.clone(),
        affected_apps: vec![app.clone()],
        affected_pods: Vec::new(),
        steps: vec![Step {
            actions: vec![PlanAction {
                action: d.action,
                app: app.clone(),
            }],
        }],
        current_actions: vec![CurrentAction {
            action: d.action,
            app,
            readiness_check_results: readiness,
        }],
        current_step: 1,
        total_steps: 1,
    })
}

/// Marathon's `processedOffersSummary`: what the last offers processed for an app lacked.
fn offers_summary(o: &OfferStats) -> OffersSummary {
    OffersSummary {
        processed_offers_count: o.processed,
        unused_offers_count: o.unused,
        last_unused_offer_at: o.last_unused_at.clone(),
        last_used_offer_at: o.last_used_at.clone(),
        reject_summary_last_offers: Reject::ALL
            .iter()
            .map(|r| RejectCount {
                reason: r.as_str().to_string(),
                declined: o.reasons.get(r).copied().unwrap_or(0),
                processed: o.processed,
            })
            .collect(),
    }
}

/// Marathon's launch queue: apps waiting for launches with why (the backoff delay, what the
/// last offers lacked), then builds waiting for an offer they fit (labelled `DROVE_BUILD`).
pub fn queue(s: &State) -> Vec<QueueEntry> {
    let now = Instant::now();
    let mut queue = Vec::new();
    for a in s.apps.values().filter(|a| !a.deleting) {
        let live = s
            .instances_of(&a.def.id)
            .filter(|i| !i.killing && i.config_version == a.config_version)
            .count();
        let missing = (a.def.instances as usize).saturating_sub(live);
        if missing == 0 {
            continue;
        }
        let left = a
            .delay_until
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::ZERO);
        queue.push(QueueEntry {
            app: app(s, a, false),
            count: missing as u64,
            delay: Delay {
                time_left_seconds: left.as_secs_f64().ceil() as u64,
                overdue: left.is_zero(),
            },
            since: a.waiting_since.clone().unwrap_or_else(timestamp),
            processed_offers_summary: offers_summary(&a.offers),
            last_unused_offers: a.offers.last_unused.iter().cloned().collect(),
        });
    }
    // Builds waiting for an offer they fit (a push waits on them).
    for w in s.jobs_waiting() {
        let mut def = w.def.clone();
        def.instances = 1;
        def.labels.insert("DROVE_BUILD".into(), "true".into());
        let info = VersionInfo {
            last_scaling_at: w.since.clone(),
            last_config_change_at: w.since.clone(),
        };
        queue.push(QueueEntry {
            app: app_object(def, &w.since, info, std::iter::empty(), false),
            count: 1,
            delay: Delay {
                time_left_seconds: 0,
                overdue: true,
            },
            since: w.since.clone(),
            processed_offers_summary: offers_summary(&w.offers),
            last_unused_offers: Vec::new(),
        });
    }
    queue
}

pub use drove_proto::output::Stream;

/// A task's log as its agent answered it (through the master): its HTTP status and bytes.
pub struct TaskLog {
    pub status: u16,
    pub bytes: bytes::Bytes,
}

/// Task `task`'s `stream` (a running instance's, or an app's last failed one's: what it wrote
/// explains why), read through the master, which checks the PaaS's credentials and asks the
/// agent that runs it; `query` is passed on (`offset=&length=`, or `tail=<bytes>`).
pub async fn task_log(
    paas: &Paas,
    task: &str,
    stream: Stream,
    query: Option<&str>,
) -> Result<TaskLog, OpsError> {
    let (known, framework) = {
        let state = paas.lock();
        let known = state.instances.contains_key(task)
            || state.apps.values().any(|a| {
                a.last_task_failure
                    .as_ref()
                    .is_some_and(|f| f.task_id == task)
            });
        (known, state.framework_id.clone())
    };
    if !known {
        return Err(OpsError::NotFound(format!("Task '{task}' does not exist")));
    }
    let framework =
        framework.ok_or_else(|| OpsError::Upstream("not subscribed to the master yet".into()))?;
    let mut path = format!(
        "/master/frameworks/{framework}/tasks/{task}/logs/{}",
        stream.as_str()
    );
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    let upstream = |e: reqwest::Error| OpsError::Upstream(format!("reading {path}: {e}"));
    let r = paas.master_get(&path).send().await.map_err(upstream)?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await.map_err(upstream)?;
    Ok(TaskLog { status, bytes })
}
