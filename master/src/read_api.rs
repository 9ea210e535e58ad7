//! Read-only endpoints: `/version`, `/master/state` (Mesos shape), `/health` (503 naming the
//! store while it cannot persist changes), `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::mesos::TaskState;
use drove_proto::metrics::{self, Collector, DescriptorEncoder, Label, Registry, Scrape};
use drove_proto::Resources;
use serde_json::{json, Value};

use crate::cluster::{AgentStatus, Cluster, Framework, Task};
use crate::Shared;

/// The Mesos release whose v1 API drove speaks; numeric so clients can parse it.
pub const MESOS_VERSION: &str = "1.11.0";

pub async fn version() -> Json<Value> {
    Json(json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0,
        "build_user": "drove",
        "drove_version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `200 ok`, or `503` with the reason while the store cannot persist changes.
pub async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store.unavailable() {
        None => "ok\n".into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

pub async fn state(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let cluster = shared.lock();
    Json(state_json(&cluster, &shared.pid))
}

fn task_json(t: &Task) -> Value {
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|(state, ts, healthy)| {
            let mut v = json!({"state": state.as_str(), "timestamp": ts});
            if let Some(h) = healthy {
                v["healthy"] = json!(h);
            }
            v
        })
        .collect();
    let mut v = json!({
        "id": t.info.task_id.value,
        "name": t.info.name,
        "framework_id": t.framework_id.value,
        "executor_id": "",
        "slave_id": t.agent_id.value,
        "agent_id": t.agent_id.value,
        "state": t.state.as_str(),
        "resources": t.resources.flatten(),
        "role": "*",
        "statuses": statuses,
    });
    if let Some(s) = &t.status {
        if let Some(h) = s.healthy {
            v["healthy"] = json!(h);
        }
        if let Some(pid) = s.container_status.as_ref().and_then(|c| c.executor_pid) {
            v["pid"] = json!(pid);
        }
    }
    if let Some(l) = &t.info.labels {
        v["labels"] = json!(l.labels);
    }
    if let Some(d) = &t.info.discovery {
        v["discovery"] = d.clone();
    }
    if let Some(h) = &t.info.health_check {
        v["health_check"] = json!(h);
    }
    v
}

fn framework_json(c: &Cluster, f: &Framework, now: Instant) -> Value {
    let mut used = Resources::default();
    let mut tasks = Vec::new();
    let mut unreachable = Vec::new();
    for t in f.tasks.values() {
        if !t.released {
            used.add(&t.resources);
        }
        if t.state == TaskState::TaskUnreachable {
            unreachable.push(task_json(t));
        } else {
            tasks.push(task_json(t));
        }
    }
    let mut offered = Resources::default();
    let offers: Vec<Value> = f
        .offers
        .iter()
        .filter_map(|id| c.offers.get(id))
        .map(|o| {
            offered.add(&o.resources);
            json!({
                "id": o.id.value,
                "framework_id": o.framework_id,
                "slave_id": o.agent_id,
                "agent_id": o.agent_id,
                "resources": o.resources.flatten(),
                "created": o.created_secs,
            })
        })
        .collect();
    let mut total = used.clone();
    total.add(&offered);
    let report = c.allocator.framework_report(&f.id.value, now);
    let mut v = json!({
        "id": f.id.value,
        "name": f.info.name,
        "user": f.info.user,
        "hostname": f.info.hostname.clone().unwrap_or_default(),
        "webui_url": f.info.webui_url.clone().unwrap_or_default(),
        "capabilities": f.info.capabilities.iter().map(|c| c.kind.clone()).collect::<Vec<_>>(),
        "active": f.conn.is_some(),
        "connected": f.conn.is_some(),
        "recovered": f.recovered,
        "failover_timeout": f.info.failover_timeout.unwrap_or(0.0),
        "checkpoint": f.info.checkpoint.unwrap_or(false),
        "registered_time": f.registered_secs,
        "unregistered_time": f.unregistered_secs.unwrap_or(0.0),
        "role": f.role,
        "roles": [f.role],
        "suppressed": f.suppressed,
        "used_resources": used.flatten(),
        "offered_resources": offered.flatten(),
        "resources": total.flatten(),
        "offers": offers,
        "executors": [],
        "tasks": tasks,
        "unreachable_tasks": unreachable,
        "completed_tasks": f.completed.iter().map(task_json).collect::<Vec<_>>(),
        // Why is this framework (not) getting offers?
        "last_offer": f.last_offer.as_ref().map(|(at, r)| json!({"time": at, "resources": r.flatten()})),
    });
    if let Some(p) = &f.info.principal {
        v["principal"] = json!(p);
    }
    if let Some(r) = report {
        v["allocator"] = json!({
            "share": r.share,
            "role_share": r.role_share,
            "role_weight": r.role_weight,
            "suppressed": r.suppressed,
            "allocations": r.allocations,
            "last_allocation": r.last_allocation.map(|l| json!({
                "seconds_ago": now.saturating_duration_since(l.at).as_secs_f64(),
                "agent_id": l.agent,
                "resources": l.resources.flatten(),
            })),
            "filters": r.filters.iter().map(|f| json!({
                "agent_id": f.agent,
                "resources": f.resources.flatten(),
                "expires_in_seconds": f.expires_at.saturating_duration_since(now).as_secs_f64(),
            })).collect::<Vec<_>>(),
        });
    }
    v
}

pub fn state_json(c: &Cluster, pid: &str) -> Value {
    let now = Instant::now();
    let slaves: Vec<Value> = c
        .agents
        .values()
        .filter(|a| !matches!(a.status, AgentStatus::Unreachable { .. }))
        .map(|a| {
            let mut used = Resources::default();
            for (fw, task) in &a.tasks {
                if let Some(t) = c.frameworks.get(fw).and_then(|f| f.tasks.get(task)) {
                    if !t.released {
                        used.add(&t.resources);
                    }
                }
            }
            let mut offered = Resources::default();
            for o in a.offers.iter().filter_map(|id| c.offers.get(id)) {
                offered.add(&o.resources);
            }
            let attributes: serde_json::Map<String, Value> = a
                .attributes
                .iter()
                .map(|at| (at.name.clone(), at.flat_value()))
                .collect();
            let port = a
                .endpoint
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
                .unwrap_or(5051);
            let host = a
                .endpoint
                .trim_start_matches("http://")
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_else(|| a.hostname.clone());
            json!({
                "id": a.id.value,
                "hostname": a.hostname,
                "port": port,
                "pid": format!("slave(1)@{host}:{port}"),
                "endpoint": a.endpoint,
                "attributes": attributes,
                "registered_time": a.registered_secs,
                // drove's: how long since the agent's last ping (its heartbeat).
                "last_ping_seconds_ago": now.saturating_duration_since(a.last_ping).as_secs_f64(),
                "active": a.status == AgentStatus::Active,
                "deactivated": a.status != AgentStatus::Active,
                "recovering": matches!(a.status, AgentStatus::Recovering { .. }),
                "version": MESOS_VERSION,
                "capabilities": ["MULTI_ROLE"],
                "resources": a.total.flatten(),
                "used_resources": used.flatten(),
                "offered_resources": offered.flatten(),
                "reserved_resources": {},
                "unreserved_resources": a.total.flatten(),
            })
        })
        .collect();
    let unreachable = c
        .agents
        .values()
        .filter(|a| matches!(a.status, AgentStatus::Unreachable { .. }))
        .count();
    let recovered: Vec<Value> = c
        .agents
        .values()
        .filter_map(|a| match a.status {
            AgentStatus::Unreachable { since_secs } => Some(json!({
                "id": a.id.value, "hostname": a.hostname, "unreachable_time": since_secs,
            })),
            _ => None,
        })
        .collect();
    let active = slaves
        .iter()
        .filter(|s| s["active"].as_bool() == Some(true))
        .count();
    json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0,
        "build_user": "drove",
        "start_time": c.start_secs,
        "elected_time": c.start_secs,
        "id": c.master_id,
        "pid": pid,
        "hostname": c.master_info.hostname.clone().unwrap_or_default(),
        "capabilities": ["AGENT_UPDATE", "MULTI_ROLE"],
        "activated_slaves": active,
        "deactivated_slaves": slaves.len() - active,
        "unreachable_slaves": unreachable,
        "leader": pid,
        "leader_info": c.master_info,
        "flags": {
            "agent_ping_timeout": format!("{}secs", c.config.agent_ping_interval.as_secs_f64()),
            "max_agent_ping_timeouts": c.config.max_agent_ping_timeouts.to_string(),
            "allocation_interval": format!("{}secs", c.config.allocation_interval.as_secs_f64()),
        },
        "slaves": slaves,
        "unreachable_agents": recovered,
        "recovered_slaves": [],
        "frameworks": c.frameworks.values().map(|f| framework_json(c, f, now)).collect::<Vec<_>>(),
        "completed_frameworks": c.completed_frameworks.iter().map(|(id, name)| json!({"id": id.value, "name": name})).collect::<Vec<_>>(),
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    })
}

/// `/metrics`: the master's figures, read from the cluster at each scrape.
pub fn metrics_registry(shared: Weak<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MasterMetrics(shared)));
    registry
}

pub async fn metrics(registry: Arc<Registry>) -> Response {
    match metrics::encode(&registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Reads the cluster when scraped (a weak reference: the registry lives beside `Shared`).
struct MasterMetrics(Weak<Shared>);

impl std::fmt::Debug for MasterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterMetrics")
    }
}

impl Collector for MasterMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let mut m = Scrape::new(encoder);
        let c = shared.lock();
        let count =
            |s: fn(&AgentStatus) -> bool| c.agents.values().filter(|a| s(&a.status)).count() as i64;
        m.gauge(
            "drove_master_agents_active",
            "Registered, reachable agents.",
            count(|s| *s == AgentStatus::Active),
        )?;
        m.gauge(
            "drove_master_agents_unreachable",
            "Agents declared unreachable.",
            count(|s| matches!(s, AgentStatus::Unreachable { .. })),
        )?;
        m.gauge(
            "drove_master_agents_recovering",
            "Agents expected to re-register after a master restart.",
            count(|s| matches!(s, AgentStatus::Recovering { .. })),
        )?;
        m.gauge(
            "drove_master_frameworks_connected",
            "Frameworks with an open subscription.",
            c.frameworks.values().filter(|f| f.conn.is_some()).count() as i64,
        )?;
        m.gauge(
            "drove_master_frameworks_disconnected",
            "Frameworks within their failover timeout.",
            c.frameworks.values().filter(|f| f.conn.is_none()).count() as i64,
        )?;
        m.gauge(
            "drove_master_offers_outstanding",
            "Offers sent and not yet answered.",
            c.offers.len() as i64,
        )?;
        m.gauge(
            "drove_master_store_failed",
            "1 while writing to the store keeps failing (state-changing calls are refused).",
            i64::from(shared.store.failed()),
        )?;
        m.gauge(
            "drove_master_store_pending_ops",
            "Changes queued for the store, not yet committed.",
            shared.store.pending() as i64,
        )?;
        m.gauge(
            "drove_master_allocation_last_seconds",
            "Duration of the last allocation cycle.",
            c.counters.last_allocation_secs,
        )?;
        let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
        for f in c.frameworks.values() {
            for t in f.tasks.values() {
                *by_state.entry(t.state.as_str()).or_default() += 1;
            }
        }
        m.gauges(
            "drove_master_tasks",
            "Tasks the master tracks, by state.",
            by_state
                .into_iter()
                .map(|(state, n)| (vec![("state", Label(state))], n)),
        )?;
        let calls: BTreeMap<&str, u64> = c.counters.calls.iter().map(|(k, v)| (*k, *v)).collect();
        m.counters(
            "drove_master_calls",
            "Scheduler calls received, by type.",
            calls
                .into_iter()
                .map(|(name, n)| (vec![("type", Label(name))], n)),
        )?;
        m.counter(
            "drove_master_events_sent",
            "Events sent to frameworks (heartbeats excluded).",
            c.counters.events_sent,
        )?;
        m.counter(
            "drove_master_offers",
            "Offers made.",
            c.counters.offers_made,
        )?;
        m.counter(
            "drove_master_tasks_launched",
            "Tasks sent to agents.",
            c.counters.tasks_launched,
        )?;
        m.counter(
            "drove_master_allocation_runs",
            "Allocation cycles run.",
            c.counters.allocation_runs,
        )
    }
}
