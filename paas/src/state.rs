//! The PaaS's state machine: apps, their instances and deployments, and every transition
//! (API change, offer, status update, time passing). It does no I/O of its own: it queues store
//! writes, publishes events and route changes on channels, and returns the calls to make to
//! the master as [`Call`]s. One `std::sync::Mutex` around it, never held across `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use drove_proto::mesos::{
    AgentId, CommandInfo, DurationInfo, Environment, EnvironmentVariable, HealthCheck,
    HealthCheckType, HttpCheckInfo, KillPolicy, Label, Labels, Offer, OfferId, Resource, TaskId,
    TaskInfo, TaskState, TaskStatus, TcpCheckInfo, Uri,
};
use drove_proto::routing::{AppSpec, AppState, BackendSpec, RouteMessage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::app::{route_name, task_prefix, AppDefinition};
use crate::events::{self, Events};
use crate::placement::{constraints_allow, AgentFacts, Reject, Space};
use crate::store::{Op, Store, StoredApp};

/// How long an instance must stay healthy before its app's launch backoff resets.
pub const HEALTHY_SPELL: Duration = Duration::from_secs(10);
/// A kill not answered by a terminal update within this is sent again.
const KILL_RESEND: Duration = Duration::from_secs(10);
/// Offers the PaaS does not need are refused for this long (a REVIVE clears it).
pub const DECLINE_SECONDS: f64 = 120.0;

/// A call to make to the master, computed under the lock and made after it.
#[derive(Debug, Clone)]
pub enum Call {
    Launch {
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
    },
    Decline(Vec<OfferId>),
    Kill {
        task_id: String,
        agent_id: String,
        grace: Duration,
    },
    Revive,
    Suppress,
}

/// One launched task of an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub task_id: String,
    pub app_id: String,
    /// The app's `version` when launched (Marathon's task `version`).
    pub version: String,
    /// The app's config version when launched: instances of another config are replaced.
    pub config_version: String,
    pub agent_id: String,
    pub host: String,
    pub ports: Vec<u32>,
    pub state: TaskState,
    pub healthy: Option<bool>,
    pub staged_at: String,
    pub started_at: Option<String>,
    /// Chosen to go: out of the routes, killed once drained.
    #[serde(default)]
    pub killing: bool,
    #[serde(default)]
    pub has_checks: bool,
    #[serde(skip)]
    pub drain_started: Option<Instant>,
    #[serde(skip)]
    pub kill_sent: Option<Instant>,
    #[serde(skip)]
    pub healthy_since: Option<Instant>,
}

impl Instance {
    /// Serving: running and, if the app has health checks, passing them.
    pub fn ready(&self) -> bool {
        self.state == TaskState::TaskRunning
            && !self.killing
            && if self.has_checks {
                self.healthy == Some(true)
            } else {
                self.healthy != Some(false)
            }
    }

    pub fn addr(&self) -> Option<String> {
        self.ports.first().map(|p| format!("{}:{p}", self.host))
    }
}

/// Why an app's launches wait.
#[derive(Debug, Default, Clone)]
pub struct OfferStats {
    pub processed: u64,
    pub unused: u64,
    pub last_used_at: Option<String>,
    pub last_unused_at: Option<String>,
    /// Per reason, over the last offers processed for this app.
    pub reasons: BTreeMap<Reject, u64>,
    pub last_unused: VecDeque<Value>,
}

/// A change being rolled out.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub action: &'static str,
    /// The app before the change (None: the app did not exist), for rollback.
    pub previous: Option<AppDefinition>,
    pub started: String,
    /// What holds it up, when something does.
    pub waiting: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AppRt {
    pub def: AppDefinition,
    pub version: String,
    pub config_version: String,
    pub scaling_version: String,
    pub deployment: Option<Deployment>,
    pub deleting: bool,
    pub failures: u32,
    pub delay: f64,
    pub delay_until: Option<Instant>,
    pub last_task_failure: Option<Value>,
    pub offers: OfferStats,
    /// Launches wanted now (computed by `plan`).
    pub wanted: usize,
    pub waiting_since: Option<String>,
}

impl AppRt {
    pub fn stored(&self) -> StoredApp {
        StoredApp {
            id: self.def.id.clone(),
            definition: serde_json::to_string(&self.def).unwrap_or_default(),
            version: self.version.clone(),
            config_version: self.config_version.clone(),
            scaling_version: self.scaling_version.clone(),
        }
    }
}

pub struct State {
    pub apps: BTreeMap<String, AppRt>,
    pub instances: BTreeMap<String, Instance>,
    pub agents: HashMap<String, AgentFacts>,
    pub framework_id: Option<String>,
    pub subscribed: bool,
    suppressed: Option<bool>,
    last_wanted: usize,
    published: HashMap<String, AppSpec>,
    pub store: Store,
    pub events: Events,
    pub routes: broadcast::Sender<RouteMessage>,
    /// In-flight requests per backend address, from the routers' latest stats.
    pub backend_in_flight: HashMap<String, (u64, Instant)>,
    pub last_stats: Option<Instant>,
    pub drain_timeout: Duration,
    pub kill_grace: Duration,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub launched: u64,
    pub killed: u64,
    pub failed: u64,
    pub offers_declined: u64,
    pub offers_used: u64,
    pub updates: u64,
}

/// Marathon's version timestamp for now.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl State {
    pub fn new(
        store: Store,
        events: Events,
        drain_timeout: Duration,
        kill_grace: Duration,
    ) -> State {
        let (routes, _) = broadcast::channel(4096);
        State {
            apps: BTreeMap::new(),
            instances: BTreeMap::new(),
            agents: HashMap::new(),
            framework_id: None,
            subscribed: false,
            suppressed: None,
            last_wanted: 0,
            published: HashMap::new(),
            store,
            events,
            routes,
            backend_in_flight: HashMap::new(),
            last_stats: None,
            drain_timeout,
            kill_grace,
            counters: Counters::default(),
        }
    }

    /// Restores what the store held.
    pub fn restore(&mut self, snapshot: crate::store::Snapshot) {
        self.framework_id = snapshot.framework_id;
        for a in snapshot.apps {
            let def: AppDefinition = match serde_json::from_str(&a.definition) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(app = %a.id, error = %e, "stored app unreadable; skipped");
                    continue;
                }
            };
            self.apps.insert(
                a.id.clone(),
                new_rt(def, a.version, a.config_version, a.scaling_version),
            );
        }
        for (task_id, data) in snapshot.instances {
            match serde_json::from_str::<Instance>(&data) {
                Ok(i) => {
                    self.instances.insert(task_id, i);
                }
                Err(e) => tracing::error!(%task_id, error = %e, "stored instance unreadable"),
            }
        }
    }

    /// Forgets whether offers are suppressed, so the next `plan` states it again (after a
    /// re-subscription or a failed call).
    pub fn reset_offer_mode(&mut self) {
        self.suppressed = None;
    }

    /// An app's instances. Task ids start with the app's task prefix and a dot, so this is a
    /// range scan of the id-ordered map, not a walk over every instance.
    pub fn instances_of<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        let start = format!("{}.", task_prefix(app));
        self.instances
            .range(start.clone()..)
            .take_while(move |(k, _)| k.starts_with(&start))
            .map(|(_, i)| i)
            .filter(move |i| i.app_id == app)
    }

    fn persist_instance(&self, i: &Instance) {
        self.store.enqueue(Op::PutInstance {
            task_id: i.task_id.clone(),
            app_id: i.app_id.clone(),
            data: serde_json::to_string(i).unwrap_or_default(),
        });
    }

    // -----------------------------------------------------------------------------------------
    // API changes (the caller has persisted the app already)

    /// Installs a new definition (create, update, scale, restart, rollback) and starts its
    /// deployment, superseding any running one. Returns the deployment id.
    pub fn install(
        &mut self,
        rt_new: AppRt,
        action: &'static str,
        previous: Option<AppDefinition>,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let app_id = rt_new.def.id.clone();
        let deployment = Deployment {
            id: id.clone(),
            version: rt_new.version.clone(),
            action,
            previous,
            started: timestamp(),
            waiting: None,
        };
        let mut rt = match self.apps.remove(&app_id) {
            Some(mut old) => {
                if let Some(d) = old.deployment.take() {
                    self.events.publish(events::deployment_failed(
                        &d,
                        &app_id,
                        "superseded by a newer deployment",
                    ));
                }
                old.def = rt_new.def;
                old.version = rt_new.version;
                old.config_version = rt_new.config_version;
                old.scaling_version = rt_new.scaling_version;
                old.deleting = rt_new.deleting;
                old
            }
            None => rt_new,
        };
        self.events
            .publish(events::deployment_info(&deployment, &rt.def, action));
        rt.deployment = Some(deployment);
        self.apps.insert(app_id, rt);
        id
    }

    /// Kills instances by task id; with `scale`, lowers the app's count to match.
    pub fn kill_tasks(&mut self, task_ids: &[String]) -> Vec<String> {
        let mut killed = Vec::new();
        for t in task_ids {
            if let Some(i) = self.instances.get_mut(t) {
                if !i.killing {
                    i.killing = true;
                    i.drain_started = Some(Instant::now());
                    killed.push(t.clone());
                }
            }
        }
        for t in &killed {
            if let Some(i) = self.instances.get(t) {
                self.persist_instance(i);
            }
        }
        killed
    }

    // -----------------------------------------------------------------------------------------
    // The plan: what each app needs now

    /// Decides kills, launches wanted, deployment progress, suppress/revive; publishes route
    /// changes. Call after every change.
    pub fn plan(&mut self, now: Instant) -> Vec<Call> {
        let mut calls = Vec::new();
        let ids: Vec<String> = self.apps.keys().cloned().collect();
        for id in ids {
            self.plan_app(&id, now);
        }
        // Kills: drained instances, and kills that were never answered.
        let stats_fresh = self
            .last_stats
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(5));
        for i in self.instances.values_mut() {
            if !i.killing {
                continue;
            }
            if let Some(sent) = i.kill_sent {
                if now.duration_since(sent) < KILL_RESEND {
                    continue;
                }
            }
            let started = *i.drain_started.get_or_insert(now);
            let served = i.state == TaskState::TaskRunning;
            let drained = !served
                || !stats_fresh
                || now.duration_since(started) >= self.drain_timeout
                || i.addr()
                    .is_none_or(|a| match self.backend_in_flight.get(&a) {
                        // A router reported the backend since the drain began.
                        Some((n, at)) if *at > started => *n == 0,
                        // Reports since then no longer list it: nothing is in flight there.
                        _ => self.last_stats.is_some_and(|t| t > started),
                    });
            if drained {
                i.kill_sent = Some(now);
                calls.push(Call::Kill {
                    task_id: i.task_id.clone(),
                    agent_id: i.agent_id.clone(),
                    grace: self.kill_grace,
                });
            }
        }
        // Offers: revive when a need appears or grows, suppress when nothing is needed.
        let wanted: usize = self.apps.values().map(|a| a.wanted).sum();
        if self.subscribed {
            if wanted > 0 && (self.suppressed != Some(false) || wanted > self.last_wanted) {
                self.suppressed = Some(false);
                calls.push(Call::Revive);
            } else if wanted == 0 && self.suppressed != Some(true) {
                self.suppressed = Some(true);
                calls.push(Call::Suppress);
            }
        }
        self.last_wanted = wanted;
        self.publish_routes(false, None);
        calls
    }

    /// The earliest time `plan` has something to do without any event (a backoff ending, a
    /// drain timing out, a kill to resend, a healthy spell completing).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        for a in self.apps.values() {
            if let Some(t) = a.delay_until {
                if t > now {
                    at(t);
                }
            }
            if a.failures > 0 {
                for i in self.instances_of(&a.def.id) {
                    if let Some(s) = i.healthy_since {
                        at(s + HEALTHY_SPELL);
                    }
                }
            }
        }
        for i in self.instances.values().filter(|i| i.killing) {
            // A drain also ends with the next stats push, which wakes the loop by itself.
            match i.kill_sent {
                Some(s) => at(s + KILL_RESEND),
                None => at(i.drain_started.unwrap_or(now) + self.drain_timeout),
            }
        }
        next
    }

    fn plan_app(&mut self, id: &str, now: Instant) {
        let Some(app) = self.apps.get(id) else { return };
        let n = if app.deleting {
            0
        } else {
            app.def.instances as usize
        };
        let config = app.config_version.clone();
        let strategy = app.def.upgrade_strategy;
        let mut current: Vec<&Instance> = Vec::new();
        let mut old: Vec<&Instance> = Vec::new();
        for i in self.instances_of(id).filter(|i| !i.killing) {
            if i.config_version == config {
                current.push(i);
            } else {
                old.push(i);
            }
        }
        // Backoff resets after a healthy spell.
        let spell = current.iter().any(|i| {
            i.healthy_since
                .is_some_and(|s| now.duration_since(s) >= HEALTHY_SPELL)
        });
        let mut to_kill: Vec<String> = Vec::new();
        let wanted;
        if old.is_empty() {
            wanted = n.saturating_sub(current.len());
            if current.len() > n {
                // Scale down: the not-ready first, then the youngest.
                let mut c = current.clone();
                c.sort_by(|a, b| {
                    a.ready()
                        .cmp(&b.ready())
                        .then(b.staged_at.cmp(&a.staged_at))
                });
                to_kill.extend(c.iter().take(current.len() - n).map(|i| i.task_id.clone()));
            }
        } else {
            let min_healthy = (n as f64 * strategy.minimum_health_capacity).ceil() as usize;
            let mut max_total = n + (n as f64 * strategy.maximum_over_capacity).floor() as usize;
            if max_total == n && min_healthy >= n && n > 0 {
                // (1, 0): one new, then one old, repeatedly.
                max_total = n + 1;
            }
            // Instances being killed still hold resources: they count against the ceiling.
            let dying = self.instances_of(id).filter(|i| i.killing).count();
            let alive = current.len() + old.len() + dying;
            wanted = n
                .saturating_sub(current.len())
                .min(max_total.saturating_sub(alive));
            let current_ready = current.iter().filter(|i| i.ready()).count();
            // Old instances that serve nothing go at once.
            to_kill.extend(old.iter().filter(|i| !i.ready()).map(|i| i.task_id.clone()));
            let mut old_ready: Vec<&&Instance> = old.iter().filter(|i| i.ready()).collect();
            old_ready.sort_by(|a, b| a.staged_at.cmp(&b.staged_at));
            // Then the oldest serving ones, as long as the healthy floor holds.
            let mut ready = current_ready + old_ready.len();
            for i in old_ready {
                if current_ready >= n || ready > min_healthy {
                    to_kill.push(i.task_id.clone());
                    ready -= 1;
                } else {
                    break;
                }
            }
        }
        let done = !self
            .instances_of(id)
            .any(|i| i.config_version != config || i.killing)
            && current.len() == n
            && current.iter().all(|i| i.ready());
        let waiting = if !done {
            let failing = current
                .iter()
                .filter(|i| i.state == TaskState::TaskRunning && i.healthy == Some(false))
                .count();
            let app = &self.apps[id];
            if failing > 0 {
                Some(format!("{failing} new instance(s) failing health checks"))
            } else if app.delay_until.is_some_and(|t| t > now) {
                Some(format!("launches delayed {:.1}s after failures", app.delay))
            } else if let Some(f) = &app.last_task_failure {
                f["message"].as_str().map(|m| format!("last failure: {m}"))
            } else {
                None
            }
        } else {
            None
        };
        for t in &to_kill {
            if let Some(i) = self.instances.get_mut(t) {
                i.killing = true;
                i.drain_started = Some(now);
            }
        }
        for t in &to_kill {
            if let Some(i) = self.instances.get(t) {
                self.persist_instance(i);
            }
        }
        let Some(app) = self.apps.get_mut(id) else {
            return;
        };
        if spell && app.failures > 0 {
            app.failures = 0;
            app.delay = app.def.backoff_seconds;
            app.delay_until = None;
        }
        let delayed = app.delay_until.is_some_and(|t| t > now);
        app.wanted = if delayed { 0 } else { wanted };
        if wanted > 0 && app.waiting_since.is_none() {
            app.waiting_since = Some(timestamp());
        } else if wanted == 0 {
            app.waiting_since = None;
        }
        if let Some(d) = &mut app.deployment {
            d.waiting = waiting;
        }
        if done {
            if let Some(d) = app.deployment.take() {
                self.events.publish(events::deployment_success(&d, id));
            }
            if app.deleting && self.instances_of(id).next().is_none() {
                self.apps.remove(id);
                self.events.publish(events::app_terminated(id));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Offers

    /// Places wanted instances on `offers`; declines the rest.
    pub fn on_offers(&mut self, offers: Vec<Offer>, now: Instant) -> Vec<Call> {
        for o in &offers {
            self.agents
                .insert(o.agent_id.value.clone(), AgentFacts::of_offer(o));
        }
        let mut spaces: Vec<(Offer, Space, Vec<TaskInfo>)> = offers
            .into_iter()
            .map(|o| {
                let s = Space::of(&o.resources);
                (o, s, Vec::new())
            })
            .collect();
        let ids: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| a.wanted > 0)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            let Some(app) = self.apps.get(&id) else {
                continue;
            };
            let def = app.def.clone();
            let (version, config) = (app.version.clone(), app.config_version.clone());
            let mut wanted = app.wanted;
            let mut reasons: BTreeMap<Reject, u64> = BTreeMap::new();
            let mut unused = Vec::new();
            let mut used_any = false;
            while wanted > 0 {
                // Where the app's instances are, to spread and to apply constraints.
                let placed: Vec<AgentFacts> = self
                    .instances_of(&id)
                    .filter(|i| !i.killing)
                    .filter_map(|i| self.agents.get(&i.agent_id).cloned())
                    .collect();
                let mut per_agent: HashMap<String, usize> = HashMap::new();
                for i in self.instances_of(&id).filter(|i| !i.killing) {
                    *per_agent.entry(i.agent_id.clone()).or_default() += 1;
                }
                let known: Vec<&AgentFacts> = self.agents.values().collect();
                let placed_refs: Vec<&AgentFacts> = placed.iter().collect();
                let mut best: Option<(usize, usize)> = None;
                for (k, (offer, space, _)) in spaces.iter().enumerate() {
                    if let Err(r) = space.check(&def) {
                        *reasons.entry(r).or_default() += 1;
                        continue;
                    }
                    let facts = AgentFacts::of_offer(offer);
                    if !constraints_allow(&def, &facts, &placed_refs, &known) {
                        *reasons.entry(Reject::UnfulfilledConstraint).or_default() += 1;
                        continue;
                    }
                    let load = per_agent.get(&offer.agent_id.value).copied().unwrap_or(0);
                    if best.is_none_or(|(_, l)| load < l) {
                        best = Some((k, load));
                    }
                }
                let Some((k, _)) = best else { break };
                let (offer, space, tasks) = &mut spaces[k];
                let Ok(ports) = space.take(&def) else { break };
                let task = task_info(&def, &version, offer, &ports);
                let instance = Instance {
                    task_id: task.task_id.value.clone(),
                    app_id: id.clone(),
                    version: version.clone(),
                    config_version: config.clone(),
                    agent_id: offer.agent_id.value.clone(),
                    host: offer.hostname.clone(),
                    ports,
                    state: TaskState::TaskStaging,
                    healthy: None,
                    staged_at: timestamp(),
                    started_at: None,
                    killing: false,
                    has_checks: !def.health_checks.is_empty(),
                    drain_started: None,
                    kill_sent: None,
                    healthy_since: None,
                };
                self.persist_instance(&instance);
                self.events
                    .publish(events::instance_changed(&instance, "Created"));
                self.instances.insert(instance.task_id.clone(), instance);
                tasks.push(task);
                wanted -= 1;
                used_any = true;
                self.counters.launched += 1;
            }
            if wanted > 0 {
                for (offer, _, _) in &spaces {
                    unused.push(json!({
                        "offer": {"id": offer.id.value, "agentId": offer.agent_id.value,
                                  "hostname": offer.hostname, "resources": offer.resources},
                        "timestamp": timestamp(),
                        "reason": reasons.keys().map(|r| r.as_str()).collect::<Vec<_>>(),
                    }));
                }
            }
            let Some(app) = self.apps.get_mut(&id) else {
                continue;
            };
            app.wanted = wanted;
            let stats = &mut app.offers;
            stats.processed += spaces.len() as u64;
            if used_any {
                stats.last_used_at = Some(timestamp());
            }
            if wanted > 0 {
                stats.unused += spaces.len() as u64;
                stats.last_unused_at = Some(timestamp());
                stats.reasons = reasons;
                for u in unused {
                    if stats.last_unused.len() >= 10 {
                        stats.last_unused.pop_front();
                    }
                    stats.last_unused.push_back(u);
                }
            }
        }
        let _ = now;
        let mut calls = Vec::new();
        let mut declined = Vec::new();
        for (offer, _, tasks) in spaces {
            if tasks.is_empty() {
                declined.push(offer.id);
            } else {
                self.counters.offers_used += 1;
                calls.push(Call::Launch {
                    offer_ids: vec![offer.id],
                    tasks,
                });
            }
        }
        if !declined.is_empty() {
            self.counters.offers_declined += declined.len() as u64;
            calls.push(Call::Decline(declined));
        }
        calls
    }

    // -----------------------------------------------------------------------------------------
    // Status updates

    /// Applies a status update. Returns calls (a kill for a task nobody wants).
    pub fn on_update(&mut self, status: &TaskStatus, now: Instant) -> Vec<Call> {
        self.counters.updates += 1;
        let task_id = status.task_id.value.clone();
        let Some(i) = self.instances.get_mut(&task_id) else {
            if gone(status.state) {
                return Vec::new();
            }
            // Not ours (any more): a task from before a lost update, or from a returning agent.
            tracing::info!(task = %task_id, state = ?status.state, "killing an instance the PaaS does not know");
            return match &status.agent_id {
                Some(agent) => vec![Call::Kill {
                    task_id,
                    agent_id: agent.value.clone(),
                    grace: self.kill_grace,
                }],
                None => Vec::new(),
            };
        };
        let was_ready = i.ready();
        let old_healthy = i.healthy;
        i.state = status.state;
        if let Some(h) = status.healthy {
            i.healthy = Some(h);
        }
        if status.state == TaskState::TaskRunning && i.started_at.is_none() {
            i.started_at = Some(timestamp());
        }
        if i.ready() {
            i.healthy_since.get_or_insert(now);
        } else {
            i.healthy_since = None;
        }
        let i = i.clone();
        self.events.publish(events::status_update(&i, status));
        if old_healthy != i.healthy && i.has_checks {
            if let Some(alive) = i.healthy {
                self.events.publish(events::health_changed(&i, alive));
            }
        }
        if gone(status.state) {
            self.instances.remove(&task_id);
            self.store.enqueue(Op::DeleteInstance(task_id.clone()));
            self.events.publish(events::instance_changed(&i, "Killed"));
            if !i.killing {
                self.counters.failed += 1;
                self.record_failure(&i, status, now);
            } else {
                self.counters.killed += 1;
            }
        } else {
            self.persist_instance(&i);
        }
        let ready = i.ready();
        if ready != was_ready {
            // Announce even when nothing else changed: held requests wait for this upsert.
            self.publish_routes(true, Some(&i.app_id));
        }
        Vec::new()
    }

    fn record_failure(&mut self, i: &Instance, status: &TaskStatus, now: Instant) {
        let Some(app) = self.apps.get_mut(&i.app_id) else {
            return;
        };
        let message = status
            .message
            .clone()
            .or_else(|| status.reason.clone())
            .unwrap_or_else(|| format!("{:?}", status.state));
        let unhealthy = i.has_checks && i.healthy == Some(false);
        let message = if unhealthy {
            format!("killed for failing its health check ({message})")
        } else {
            message
        };
        if unhealthy {
            self.events.publish(events::unhealthy_kill(i, &message));
        }
        app.last_task_failure = Some(json!({
            "appId": i.app_id, "host": i.host, "message": message,
            "state": status.state.as_str(), "taskId": i.task_id,
            "timestamp": timestamp(), "version": i.version,
        }));
        app.delay = if app.failures == 0 {
            app.def.backoff_seconds
        } else {
            (app.delay * app.def.backoff_factor).min(app.def.max_launch_delay_seconds)
        };
        app.failures += 1;
        app.delay_until = Some(now + Duration::from_secs_f64(app.delay.clamp(0.0, 1e7)));
    }

    // -----------------------------------------------------------------------------------------
    // Routes

    pub fn route_of(&self, app: &AppRt) -> Option<AppSpec> {
        let name = route_name(&app.def.id)?;
        let backends = self
            .instances_of(&app.def.id)
            .filter(|i| i.ready())
            .filter_map(|i| {
                Some(BackendSpec {
                    addr: i.addr()?,
                    healthy: true,
                    backup: false,
                })
            })
            .collect();
        Some(AppSpec {
            name,
            hostnames: Vec::new(),
            state: if app.def.instances == 0 {
                AppState::Idle
            } else {
                AppState::Running
            },
            concurrency_limit: 0,
            backends,
        })
    }

    /// The whole route table, for a new stream.
    pub fn route_snapshot(&self) -> Vec<AppSpec> {
        self.apps
            .values()
            .filter(|a| !a.deleting)
            .filter_map(|a| self.route_of(a))
            .collect()
    }

    /// Sends upserts for apps whose route changed (or `force` for `only`), removes for apps gone.
    pub fn publish_routes(&mut self, force: bool, only: Option<&str>) {
        let mut seen = HashMap::new();
        for a in self.apps.values().filter(|a| !a.deleting) {
            if let Some(spec) = self.route_of(a) {
                let forced = force && only == Some(a.def.id.as_str());
                if forced || self.published.get(&spec.name) != Some(&spec) {
                    let _ = self.routes.send(RouteMessage::Upsert { app: spec.clone() });
                }
                seen.insert(spec.name.clone(), spec);
            }
        }
        for name in self.published.keys() {
            if !seen.contains_key(name) {
                let _ = self.routes.send(RouteMessage::Remove { app: name.clone() });
            }
        }
        self.published = seen;
    }

    pub fn app_by_route(&self, name: &str) -> Option<&AppRt> {
        self.apps
            .values()
            .find(|a| !a.deleting && route_name(&a.def.id).as_deref() == Some(name))
    }
}

/// Whether an instance in `state` is gone for the PaaS: terminal, or lost with its agent (it is
/// replaced; should it come back, it is a task the PaaS does not know, and is killed).
pub fn gone(state: TaskState) -> bool {
    state.is_terminal()
        || matches!(
            state,
            TaskState::TaskLost | TaskState::TaskUnreachable | TaskState::TaskUnknown
        )
}

pub fn new_rt(
    def: AppDefinition,
    version: String,
    config_version: String,
    scaling_version: String,
) -> AppRt {
    AppRt {
        delay: def.backoff_seconds,
        def,
        version,
        config_version,
        scaling_version,
        deployment: None,
        deleting: false,
        failures: 0,
        delay_until: None,
        last_task_failure: None,
        offers: OfferStats::default(),
        wanted: 0,
        waiting_since: None,
    }
}

/// The Mesos task for one instance of `def` on `offer`, with host ports `ports`.
fn task_info(def: &AppDefinition, version: &str, offer: &Offer, ports: &[u32]) -> TaskInfo {
    let task_id = format!("{}.{}", task_prefix(&def.id), uuid::Uuid::new_v4());
    let mut vars: Vec<EnvironmentVariable> = def
        .env
        .iter()
        .map(|(k, v)| EnvironmentVariable {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    let mut set = |name: &str, value: String| {
        vars.retain(|v| v.name != name);
        vars.push(EnvironmentVariable {
            name: name.into(),
            value,
        });
    };
    for (k, p) in ports.iter().enumerate() {
        set(&format!("PORT{k}"), p.to_string());
    }
    if let Some(p) = ports.first() {
        set("PORT", p.to_string());
    }
    set(
        "PORTS",
        ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    set("HOST", offer.hostname.clone());
    set("MARATHON_APP_ID", def.id.clone());
    set("MARATHON_APP_VERSION", version.into());
    set("MESOS_TASK_ID", task_id.clone());
    let mut resources = vec![
        Resource::scalar("cpus", def.cpus),
        Resource::scalar("mem", def.mem),
    ];
    if def.disk > 0.0 {
        resources.push(Resource::scalar("disk", def.disk));
    }
    if !ports.is_empty() {
        let ranges: Vec<(u64, u64)> = ports
            .iter()
            .map(|&p| (u64::from(p), u64::from(p)))
            .collect();
        resources.push(Resource::ranges("ports", &ranges));
    }
    let (shell, value, arguments) = match (&def.cmd, &def.args) {
        (Some(cmd), _) => (Some(true), Some(cmd.clone()), Vec::new()),
        (None, Some(args)) => (Some(false), args.first().cloned(), args.clone()),
        (None, None) => (Some(true), Some("true".into()), Vec::new()),
    };
    let command = CommandInfo {
        uris: def
            .fetch
            .iter()
            .map(|f| Uri {
                value: f.uri.clone(),
                executable: Some(f.executable),
                extract: Some(f.extract),
                cache: Some(f.cache),
                output_file: f.output_file.clone(),
            })
            .collect(),
        environment: Some(Environment { variables: vars }),
        shell,
        value,
        arguments,
        user: def.user.clone(),
    };
    let health_check = def.health_checks.first().map(|hc| {
        let port = ports.get(hc.port_index as usize).copied();
        let (kind, http, tcp, command) = match hc.protocol.as_str() {
            "TCP" => (
                HealthCheckType::Tcp,
                None,
                Some(TcpCheckInfo {
                    port,
                    port_index: None,
                }),
                None,
            ),
            "COMMAND" => (
                HealthCheckType::Command,
                None,
                None,
                Some(CommandInfo {
                    shell: Some(true),
                    value: hc.command.as_ref().map(|c| c.value.clone()),
                    ..CommandInfo::default()
                }),
            ),
            proto => (
                HealthCheckType::Http,
                Some(HttpCheckInfo {
                    scheme: Some(if proto == "HTTPS" { "https" } else { "http" }.into()),
                    port,
                    port_index: None,
                    path: hc.path.clone(),
                    statuses: Vec::new(),
                }),
                None,
                None,
            ),
        };
        HealthCheck {
            kind,
            // Marathon checks from the start; failures in the grace period do not count.
            delay_seconds: Some(0.0),
            interval_seconds: Some(f64::from(hc.interval_seconds)),
            timeout_seconds: Some(f64::from(hc.timeout_seconds)),
            consecutive_failures: Some(u64::from(hc.max_consecutive_failures)),
            grace_period_seconds: Some(f64::from(hc.grace_period_seconds)),
            http,
            tcp,
            command,
        }
    });
    TaskInfo {
        name: def.id.trim_start_matches('/').to_string(),
        task_id: TaskId::new(task_id),
        agent_id: AgentId::new(offer.agent_id.value.clone()),
        resources,
        command: Some(command),
        executor: None,
        health_check,
        kill_policy: None,
        labels: Some(Labels {
            labels: def
                .labels
                .iter()
                .map(|(k, v)| Label {
                    key: k.clone(),
                    value: Some(v.clone()),
                })
                .collect(),
        }),
        discovery: None,
        container: None,
    }
}

/// A kill policy with `grace` between SIGTERM and SIGKILL.
pub fn kill_policy(grace: Duration) -> KillPolicy {
    KillPolicy {
        grace_period: Some(DurationInfo {
            nanoseconds: i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX),
        }),
    }
}
