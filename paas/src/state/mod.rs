//! The PaaS's state machine: apps, their instances and deployments, and every transition
//! (API change, offer, status update, time passing). It does no I/O of its own: it queues store
//! writes, publishes events and route changes on channels, and returns the calls to make to
//! the master as [`Call`]s. One `std::sync::Mutex` around it, never held across `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use drove_proto::marathon::{TaskFailure, UnusedOffer};
use drove_proto::mesos::{OfferId, TaskInfo, TaskState, TaskStatus};
use drove_proto::paas::{Domain, Issuance};
use drove_proto::routing::{AppSpec, RouteMessage};

use crate::events::{self, Event};
use crate::model::app::{task_prefix, AppDefinition};
use crate::model::deployment::{Action, Deployment};
use crate::model::instance::Instance;
use crate::model::timestamp;
use crate::placement::{AgentFacts, Reject};
use crate::store::{Journal, Op, StoredApp, StoredCert};

/// How long an instance must stay healthy before its app's launch backoff resets.
pub const HEALTHY_SPELL: Duration = Duration::from_secs(10);
/// A kill not answered by a terminal update within this is sent again.
pub(crate) const KILL_RESEND: Duration = Duration::from_secs(10);
/// Offers the PaaS does not need are refused for this long (a REVIVE clears it).
pub const DECLINE_SECONDS: f64 = 120.0;
/// Offers that did not fit while launches still wait are refused only this long.
pub const DECLINE_WAITING_SECONDS: f64 = 5.0;

/// A router's latest stats push, as the drain of a killed instance needs it.
#[derive(Debug, Clone)]
pub struct RouterSeen {
    pub at: Instant,
    pub in_flight: HashMap<String, u64>,
}

/// A router that has not pushed stats for this long is not waited for.
pub const ROUTER_SILENCE: Duration = Duration::from_secs(5);

/// A call to make to the master, computed under the lock and made after it.
#[derive(Debug, Clone)]
pub enum Call {
    Launch {
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
    },
    /// Declined offers, and for how many seconds their resources are refused.
    Decline(Vec<OfferId>, f64),
    Kill {
        task_id: String,
        agent_id: String,
        grace: Duration,
    },
    Revive,
    Suppress,
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
    pub last_unused: VecDeque<UnusedOffer>,
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
    pub last_task_failure: Option<TaskFailure>,
    pub offers: OfferStats,
    /// Launches wanted now (computed by `plan`).
    pub wanted: usize,
    pub waiting_since: Option<String>,
    /// Agents this app's instances were placed on (their fetch caches hold its artifacts).
    pub ran_on: std::collections::HashSet<String>,
    /// The wake in progress, and the last completed ones (`wakes`).
    pub wake: Option<wakes::Timeline>,
    pub wakes: wakes::History,
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

pub mod jobs;
mod plan;
mod routes;
#[cfg(test)]
mod tests;
pub mod wakes;

pub struct State {
    pub apps: BTreeMap<String, AppRt>,
    pub instances: BTreeMap<String, Instance>,
    pub agents: HashMap<String, AgentFacts>,
    pub framework_id: Option<String>,
    pub subscribed: bool,
    /// Why the master removed the framework, once it has.
    pub removed: Option<String>,
    suppressed: Option<bool>,
    last_wanted: usize,
    /// An instance ended since the last `plan`: its resources are free again.
    freed: bool,
    published: HashMap<String, AppSpec>,
    /// What its changes asked of the world, in order, until taken ([`State::take_effects`]).
    effects: Vec<Effect>,
    /// In-flight requests per backend address, from the routers' latest stats.
    /// Each router's latest stats push: when, and requests in flight per backend address.
    pub routers: HashMap<String, RouterSeen>,
    pub drain_timeout: Duration,
    pub kill_grace: Duration,
    pub counters: Counters,
    /// One-off tasks (builds).
    pub jobs: jobs::Jobs,
    /// Custom domains: hostname → the app that claimed it.
    pub domains: BTreeMap<String, Domain>,
    /// Certificates by hostname: custom domains', and apps' own hostnames' (from drove's
    /// local CA).
    pub certificates: BTreeMap<String, StoredCert>,
    /// Where each hostname's automatic certificate stands.
    pub issuance: BTreeMap<String, Issuance>,
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

/// The store write that keeps instance `i` as it is now.
fn put_instance(i: &Instance) -> Effect {
    Effect::Store(Op::PutInstance {
        task_id: i.task_id.clone(),
        app_id: i.app_id.clone(),
        data: serde_json::to_string(i).unwrap_or_default(),
    })
}

/// What a change to the state asks of the world. The state does no I/O: the guard
/// `Paas::lock` hands out applies these, in order, before it lets the lock go, so writes,
/// events and routes leave in the order the state made them.
#[derive(Debug)]
pub enum Effect {
    /// A write to the store.
    Store(Op),
    /// A line of an app's journal (kept: the last `keep` of its kind).
    Journal {
        app: String,
        kind: Journal,
        line: String,
        keep: usize,
    },
    /// An event for `/v2/events` and the dashboard.
    Event(Event),
    /// A change of the routes, for the routers.
    Route(RouteMessage),
}

impl State {
    pub fn new(drain_timeout: Duration, kill_grace: Duration) -> State {
        State {
            apps: BTreeMap::new(),
            instances: BTreeMap::new(),
            agents: HashMap::new(),
            framework_id: None,
            subscribed: false,
            removed: None,
            suppressed: None,
            last_wanted: 0,
            freed: false,
            published: HashMap::new(),
            effects: Vec::new(),
            domains: BTreeMap::new(),
            certificates: BTreeMap::new(),
            issuance: BTreeMap::new(),
            routers: HashMap::new(),
            drain_timeout,
            kill_grace,
            counters: Counters::default(),
            jobs: Default::default(),
        }
    }

    /// What its changes asked of the world since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Publishes `event` (once the lock is let go).
    pub fn publish(&mut self, event: Event) {
        self.effects.push(Effect::Event(event));
    }

    /// Forgets `hostname`'s certificate and issuance (not a custom domain's claim), on disk too,
    /// and tells the routers when one was served.
    pub fn forget_certificate(&mut self, hostname: &str) {
        self.issuance.remove(hostname);
        let served = self.certificates.remove(hostname).is_some();
        self.persist(Op::DeleteCertificate(hostname.to_string()));
        if served {
            self.publish_certificates();
        }
    }

    fn persist(&mut self, op: Op) {
        self.effects.push(Effect::Store(op));
    }

    /// Restores what the store held.
    pub fn restore(&mut self, snapshot: crate::store::Snapshot) {
        self.framework_id = snapshot.framework_id;
        self.domains = snapshot
            .domains
            .into_iter()
            .map(|d| (d.hostname.clone(), d))
            .collect();
        self.certificates = snapshot
            .certificates
            .into_iter()
            .map(|c| (c.hostname.clone(), c))
            .collect();
        self.issuance = snapshot.issuance.into_iter().collect();
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
                Ok(mut i) => {
                    if !self.apps.contains_key(&i.app_id) {
                        // Its app is gone (deleted just before a crash): it must go too.
                        i.killing = true;
                    }
                    self.instances.insert(task_id, i);
                }
                Err(e) => tracing::error!(%task_id, error = %e, "stored instance unreadable"),
            }
        }
        for (app, _, data) in snapshot.journal {
            let (Some(a), Ok(wake)) = (self.apps.get_mut(&app), serde_json::from_str(&data)) else {
                continue;
            };
            if a.wakes.len() >= wakes::KEPT {
                a.wakes.pop_front();
            }
            a.wakes.push_back(wake);
        }
        // Deployments are not stored: an app caught mid-change gets one again, so tools that
        // watch `/v2/deployments` see it finish (or not).
        let unsettled: Vec<(String, Action)> = self
            .apps
            .values()
            .filter_map(|a| {
                let mine: Vec<&Instance> = self.instances_of(&a.def.id).collect();
                if mine
                    .iter()
                    .any(|i| i.config_version != a.config_version || i.killing)
                {
                    Some((a.def.id.clone(), Action::RestartApplication))
                } else if mine.len() != a.def.instances as usize {
                    Some((a.def.id.clone(), Action::ScaleApplication))
                } else {
                    None
                }
            })
            .collect();
        for (id, action) in unsettled {
            if let Some(a) = self.apps.get_mut(&id) {
                a.deployment = Some(Deployment {
                    id: uuid::Uuid::new_v4().to_string(),
                    version: a.version.clone(),
                    action,
                    previous: None,
                    previous_versions: None,
                    started: timestamp(),
                    waiting: None,
                });
            }
        }
    }

    /// Records a router's stats push.
    pub fn router_stats(&mut self, router: &str, in_flight: HashMap<String, u64>, now: Instant) {
        self.routers
            .insert(router.to_string(), RouterSeen { at: now, in_flight });
        // Routers gone quiet for long are forgotten (they may have been replaced).
        self.routers
            .retain(|_, r| now.duration_since(r.at) < Duration::from_secs(300));
    }

    /// Whether no router may still be sending requests to `addr`: every router that pushed
    /// stats recently has pushed since the drain `started` and shows nothing in flight there
    /// (the draining instance stays in its route as an unhealthy backend, so it is reported).
    pub fn drained(&self, addr: &str, started: Instant, now: Instant) -> bool {
        self.routers
            .values()
            .filter(|r| now.duration_since(r.at) < ROUTER_SILENCE)
            .all(|r| r.at > started && r.in_flight.get(addr).copied().unwrap_or(0) == 0)
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

    // -----------------------------------------------------------------------------------------
    // API changes (the caller has persisted the app already)

    /// Installs a new definition (create, update, scale, restart, rollback) and starts its
    /// deployment, superseding any running one. Returns the deployment id.
    pub fn install(
        &mut self,
        rt_new: AppRt,
        action: Action,
        previous: Option<AppDefinition>,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let app_id = rt_new.def.id.clone();
        if rt_new.deleting {
            // Its domains (with their certificates and issuance) went with it in the store;
            // another app may claim them now.
            let gone: Vec<String> = self
                .domains
                .values()
                .filter(|d| d.app == app_id)
                .map(|d| d.hostname.clone())
                .collect();
            let mut certified = false;
            for h in &gone {
                self.domains.remove(h);
                self.issuance.remove(h);
                certified |= self.certificates.remove(h).is_some();
            }
            // Its own hostname's certificate (the one not a custom domain, named for it).
            if let Some(route) = crate::model::app::route_name(&app_id) {
                let own: std::collections::BTreeSet<String> = self
                    .certificates
                    .keys()
                    .chain(self.issuance.keys())
                    .filter(|h| !self.domains.contains_key(*h))
                    .filter(|h| h.split_once('.').is_some_and(|(label, _)| label == route))
                    .cloned()
                    .collect();
                for h in own {
                    self.forget_certificate(&h);
                }
            }
            if certified {
                self.publish_certificates();
            }
        }
        let mut deployment = Deployment {
            id: id.clone(),
            version: rt_new.version.clone(),
            action,
            previous,
            previous_versions: None,
            started: timestamp(),
            waiting: None,
        };
        let mut rt = match self.apps.remove(&app_id) {
            Some(mut old) => {
                deployment.previous_versions =
                    Some((old.config_version.clone(), old.scaling_version.clone()));
                if old.config_version != rt_new.config_version {
                    // A new configuration starts without the old one's launch backoff.
                    old.failures = 0;
                    old.delay = rt_new.def.backoff_seconds;
                    old.delay_until = None;
                }
                if let Some(d) = old.deployment.take() {
                    self.publish(events::deployment_failed(
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
        self.publish(events::deployment_info(&deployment, &rt.def, action));
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
                self.effects.push(put_instance(i));
            }
        }
        killed
    }

    // -----------------------------------------------------------------------------------------
    // Status updates

    /// Applies a status update. Returns calls (a kill for a task nobody wants).
    pub fn on_update(&mut self, status: &TaskStatus, now: Instant) -> Vec<Call> {
        self.counters.updates += 1;
        if self.job_update(status) {
            return Vec::new();
        }
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
        if let Some(ip) = status
            .container_status
            .as_ref()
            .and_then(|c| c.ip_address())
        {
            i.ip = Some(ip.to_string());
        }
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
        match status.state {
            TaskState::TaskStarting => self.wake_mark(&i.app_id, "starting", now),
            TaskState::TaskRunning => {
                if let Some(labels) = &status.labels {
                    self.wake_container_steps(&i.app_id, labels);
                }
                self.wake_mark(&i.app_id, "running", now)
            }
            _ => {}
        }
        if i.ready() {
            self.wake_mark(&i.app_id, "ready", now);
        }
        self.publish(events::status_update(&i, status));
        if old_healthy != i.healthy && i.has_checks {
            if let Some(alive) = i.healthy {
                self.publish(events::health_changed(&i, alive));
            }
        }
        if gone(status.state) {
            self.freed = true;
            self.instances.remove(&task_id);
            self.persist(Op::DeleteInstance(task_id.clone()));
            self.publish(events::instance_changed(&i, "Killed"));
            if !i.killing {
                self.counters.failed += 1;
                self.record_failure(&i, status, now);
            } else {
                self.counters.killed += 1;
            }
        } else {
            self.effects.push(put_instance(&i));
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
            self.effects
                .push(Effect::Event(events::unhealthy_kill(i, &message)));
        }
        app.last_task_failure = Some(TaskFailure {
            app_id: i.app_id.clone(),
            host: i.host.clone(),
            message,
            state: status.state,
            task_id: i.task_id.clone(),
            timestamp: timestamp(),
            version: i.version.clone(),
        });
        app.delay = if app.failures == 0 {
            app.def.backoff_seconds
        } else {
            (app.delay * app.def.backoff_factor).min(app.def.max_launch_delay_seconds)
        };
        app.failures += 1;
        app.delay_until = Some(now + Duration::from_secs_f64(app.delay.clamp(0.0, 1e7)));
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
        ran_on: Default::default(),
        wake: None,
        wakes: Default::default(),
    }
}
