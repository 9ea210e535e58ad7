//! Reads: the views the API serves and the dashboard renders, built from the state in one
//! place (the dashboard calls these directly, with no HTTP in between): drove's typed ones
//! ([`ScalingView`]) and Marathon's app, task and queue objects (JSON in Marathon's shapes).

use std::time::{Duration, Instant};

use drove_proto::paas::ScalingView;
use serde_json::{json, Value};

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

/// Marathon's task object.
pub fn task(i: &Instance) -> Value {
    let mut t = json!({
        "id": i.task_id, "appId": i.app_id, "host": i.host, "ports": i.ports,
        "servicePorts": [], "slaveId": i.agent_id, "stagedAt": i.staged_at,
        "startedAt": i.started_at, "version": i.version, "state": i.state.as_str(),
        "ipAddresses": [{"ipAddress": i.ip.as_deref().unwrap_or(&i.host), "protocol": "IPv4"}],
    });
    if i.has_checks {
        if let Some(alive) = i.healthy {
            t["healthCheckResults"] = json!([{
                "alive": alive, "consecutiveFailures": if alive { 0 } else { 1 },
                "firstSuccess": null, "lastSuccess": null, "lastFailure": null,
                "taskId": i.task_id, "instanceId": i.task_id,
            }]);
        } else {
            t["healthCheckResults"] = json!([]);
        }
    }
    t
}

/// Marathon's app object: the definition plus its version, counts, deployments and tasks.
pub fn app(s: &State, a: &AppRt, tasks: bool) -> Value {
    let mut v = a.def.to_json();
    let mine: Vec<&Instance> = s.instances_of(&a.def.id).collect();
    let running = mine
        .iter()
        .filter(|i| i.state == drove_proto::mesos::TaskState::TaskRunning)
        .count();
    let healthy = mine
        .iter()
        .filter(|i| i.has_checks && i.healthy == Some(true))
        .count();
    let unhealthy = mine
        .iter()
        .filter(|i| i.has_checks && i.healthy == Some(false))
        .count();
    v["version"] = json!(a.version);
    v["versionInfo"] =
        json!({"lastScalingAt": a.scaling_version, "lastConfigChangeAt": a.config_version});
    v["tasksRunning"] = json!(running);
    v["tasksStaged"] = json!(mine.len() - running);
    v["tasksHealthy"] = json!(healthy);
    v["tasksUnhealthy"] = json!(unhealthy);
    v["deployments"] = json!(a
        .deployment
        .iter()
        .map(|d| json!({"id": d.id}))
        .collect::<Vec<_>>());
    if let Some(f) = &a.last_task_failure {
        v["lastTaskFailure"] = f.clone();
    }
    if tasks {
        v["tasks"] = json!(mine.iter().map(|i| task(i)).collect::<Vec<_>>());
    }
    v
}

/// Marathon's `processedOffersSummary`: what the last offers processed for an app lacked.
fn offers_summary(o: &OfferStats) -> Value {
    let reasons: Vec<Value> = Reject::ALL
        .iter()
        .map(|r| {
            json!({"reason": r.as_str(), "declined": o.reasons.get(r).copied().unwrap_or(0),
                   "processed": o.processed})
        })
        .collect();
    json!({
        "processedOffersCount": o.processed, "unusedOffersCount": o.unused,
        "lastUnusedOfferAt": o.last_unused_at, "lastUsedOfferAt": o.last_used_at,
        "rejectSummaryLastOffers": reasons,
    })
}

/// Marathon's launch queue: apps waiting for launches with why (the backoff delay, what the
/// last offers lacked), then builds waiting for an offer they fit.
pub fn queue(s: &State) -> Vec<Value> {
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
        queue.push(json!({
            "app": app(s, a, false),
            "count": missing,
            "delay": {"timeLeftSeconds": left.as_secs_f64().ceil() as u64, "overdue": left.is_zero()},
            "since": a.waiting_since.clone().unwrap_or_else(timestamp),
            "processedOffersSummary": offers_summary(&a.offers),
            "lastUnusedOffers": a.offers.last_unused.iter().collect::<Vec<_>>(),
        }));
    }
    // Builds waiting for an offer they fit (a push waits on them).
    for w in s.jobs_waiting() {
        queue.push(json!({
            "app": {"id": w.def.id, "instances": 1, "cpus": w.def.cpus, "mem": w.def.mem,
                    "labels": {"DROVE_BUILD": "true"}},
            "count": 1,
            "delay": {"timeLeftSeconds": 0, "overdue": true},
            "since": w.since,
            "processedOffersSummary": offers_summary(&w.offers),
            "lastUnusedOffers": [],
        }));
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
                    .is_some_and(|f| f["taskId"] == task)
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
