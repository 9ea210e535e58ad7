//! What each app needs now (`plan`: launches wanted, kills, rolling-deploy steps, offer mode)
//! and where wanted instances go (`on_offers`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use drove_proto::marathon::{OfferSummary, UnusedOffer};
use drove_proto::mesos::{Offer, TaskInfo, TaskState};

use super::{Call, Effect, State, HEALTHY_SPELL, KILL_RESEND};
use crate::events;
use crate::model::instance::Instance;
use crate::model::timestamp;
use crate::placement::{constraints_allow, AgentFacts, Reject, Space};
use crate::task::task_info;

impl State {
    /// Decides kills, launches wanted, deployment progress, suppress/revive; publishes route
    /// changes. Call after every change.
    pub fn plan(&mut self, now: Instant) -> Vec<Call> {
        let mut calls = Vec::new();
        let ids: Vec<String> = self.apps.keys().cloned().collect();
        for id in ids {
            self.plan_app(&id, now);
        }
        // Kills: drained instances, and kills that were never answered.
        let drain_timeout = self.drain_timeout;
        let drained: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.killing)
            .filter(|i| {
                let started = i.drain_started.unwrap_or(now);
                i.state != TaskState::TaskRunning
                    || now.duration_since(started) >= drain_timeout
                    || i.addr().is_none_or(|a| self.drained(&a, started, now))
            })
            .map(|i| i.task_id.clone())
            .collect();
        for i in self.instances.values_mut() {
            if !i.killing {
                continue;
            }
            if let Some(sent) = i.kill_sent {
                if now.duration_since(sent) < KILL_RESEND {
                    continue;
                }
            }
            i.drain_started.get_or_insert(now);
            if drained.contains(&i.task_id) {
                i.kill_sent = Some(now);
                calls.push(Call::Kill {
                    task_id: i.task_id.clone(),
                    agent_id: i.agent_id.clone(),
                    grace: self.kill_grace,
                });
            }
        }
        // Offers: revive when a need appears or grows, or when resources were freed while one
        // waits (the offers declined meanwhile are filtered); suppress when nothing is needed.
        calls.extend(self.job_kills());
        let wanted: usize =
            self.apps.values().map(|a| a.wanted).sum::<usize>() + self.pending_jobs();
        let freed = std::mem::take(&mut self.freed);
        if self.subscribed {
            if wanted > 0 && (self.suppressed != Some(false) || wanted > self.last_wanted || freed)
            {
                self.suppressed = Some(false);
                calls.push(Call::Revive);
                self.wake_mark_waiting("revive", now);
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
        let min_healthy = (n as f64 * strategy.minimum_health_capacity).ceil() as usize;
        let mut max_total = n + (n as f64 * strategy.maximum_over_capacity).floor() as usize;
        if max_total == n && min_healthy >= n && n > 0 {
            // (1, 0): one new, then one old, repeatedly.
            max_total = n + 1;
        }
        // Instances being killed still hold resources: they count against the ceiling, in a
        // deploy and after one alike.
        let dying = self.instances_of(id).filter(|i| i.killing).count();
        let alive = current.len() + old.len() + dying;
        let wanted = n
            .saturating_sub(current.len())
            .min(max_total.saturating_sub(alive));
        if old.is_empty() {
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
            } else {
                app.last_task_failure
                    .as_ref()
                    .map(|f| format!("last failure: {}", f.message))
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
                self.effects.push(super::put_instance(i));
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
                self.effects
                    .push(Effect::Event(events::deployment_success(&d, id)));
            }
            if app.deleting && self.instances_of(id).next().is_none() {
                self.apps.remove(id);
                self.publish(events::app_terminated(id));
            }
        }
    }

    /// Places wanted instances on `offers`; declines the rest.
    pub fn on_offers(&mut self, offers: Vec<Offer>, now: Instant) -> Vec<Call> {
        self.wake_mark_waiting("offer", now);

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
        // Builds first: a push waits on its build.
        self.place_jobs(&mut spaces);
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
                let placed_refs: Vec<&AgentFacts> = placed.iter().collect();
                // Fewest of the app's instances first; among equals, an agent it ran on
                // before, whose fetch cache has its artifacts (a wake starts sooner there).
                let ran_on = self
                    .apps
                    .get(&id)
                    .map(|a| a.ran_on.clone())
                    .unwrap_or_default();
                let mut best: Option<(usize, (usize, bool))> = None;
                for (k, (offer, space, _)) in spaces.iter().enumerate() {
                    if let Err(r) = space.check(&def) {
                        *reasons.entry(r).or_default() += 1;
                        continue;
                    }
                    let facts = AgentFacts::of_offer(offer);
                    if !constraints_allow(&def, &facts, &placed_refs) {
                        *reasons.entry(Reject::UnfulfilledConstraint).or_default() += 1;
                        continue;
                    }
                    let load = per_agent.get(&offer.agent_id.value).copied().unwrap_or(0);
                    let rank = (load, !ran_on.contains(&offer.agent_id.value));
                    if best.is_none_or(|(_, r)| rank < r) {
                        best = Some((k, rank));
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
                    ip: None,
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
                self.effects.push(super::put_instance(&instance));
                self.publish(events::instance_changed(&instance, "Created"));
                if let Some(a) = self.apps.get_mut(&id) {
                    a.ran_on.insert(instance.agent_id.clone());
                }
                self.instances.insert(instance.task_id.clone(), instance);
                tasks.push(task);
                self.wake_mark(&id, "accept", now);
                wanted -= 1;
                used_any = true;
                self.counters.launched += 1;
            }
            if wanted > 0 {
                for (offer, _, _) in &spaces {
                    unused.push(UnusedOffer {
                        offer: OfferSummary {
                            id: offer.id.value.clone(),
                            agent_id: offer.agent_id.value.clone(),
                            hostname: offer.hostname.clone(),
                            resources: offer.resources.clone(),
                        },
                        timestamp: timestamp(),
                        reason: reasons.keys().map(|r| r.as_str().to_string()).collect(),
                    });
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
            // While launches still wait, refuse briefly: what did not fit may fit soon.
            let waiting = self.apps.values().any(|a| a.wanted > 0);
            let refuse = if waiting {
                super::DECLINE_WAITING_SECONDS
            } else {
                super::DECLINE_SECONDS
            };
            calls.push(Call::Decline(declined, refuse));
        }
        calls
    }
}
