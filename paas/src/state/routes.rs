//! The routes the router follows: each app's healthy instances, published as upserts and
//! removes when they change.

use std::collections::HashMap;

use drove_proto::mesos::TaskState;
use drove_proto::routing::{AppSpec, AppState, BackendSpec, CertSpec, RouteMessage};

use super::{AppRt, Effect, State};
use crate::model::app::route_name;

impl State {
    pub fn route_of(&self, app: &AppRt) -> Option<AppSpec> {
        let name = route_name(&app.def.id)?;
        // Serving instances take traffic; draining ones stay listed as unhealthy (no new
        // requests) so the routers keep reporting what is still in flight on them.
        let backends = self
            .instances_of(&app.def.id)
            .filter(|i| i.ready() || (i.killing && i.state == TaskState::TaskRunning))
            .filter_map(|i| {
                Some(BackendSpec {
                    addr: i.addr()?,
                    healthy: i.ready(),
                    backup: false,
                })
            })
            .collect();
        let hostnames = self
            .domains
            .values()
            .filter(|d| d.app == app.def.id)
            .map(|d| d.hostname.clone())
            .collect();
        Some(AppSpec {
            name,
            hostnames,
            state: if app.def.suspended() {
                AppState::Stopped
            } else if app.def.instances == 0 {
                AppState::Idle
            } else {
                AppState::Running
            },
            concurrency_limit: app
                .def
                .scaling
                .as_ref()
                .map(|s| s.concurrency_limit)
                .unwrap_or(0),
            backends,
            https: app.def.https.unwrap_or_default(),
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

    /// The certificates the routers serve (a custom domain's goes with it).
    pub fn certificate_set(&self) -> Vec<CertSpec> {
        self.certificates
            .values()
            .map(|c| CertSpec {
                hostnames: vec![c.hostname.clone()],
                chain_pem: c.chain_pem.clone(),
                key_pem: c.key_pem.clone(),
            })
            .collect()
    }

    /// Sends the routers the whole certificate set (after a change to it).
    pub fn publish_certificates(&mut self) {
        let certs = self.certificate_set();
        self.effects
            .push(Effect::Route(RouteMessage::Certificates { certs }));
    }

    /// Sends upserts for apps whose route changed (or `force` for `only`), removes for apps gone.
    pub fn publish_routes(&mut self, force: bool, only: Option<&str>) {
        let mut seen = HashMap::new();
        let mut routed = Vec::new();
        for a in self.apps.values().filter(|a| !a.deleting) {
            if let Some(spec) = self.route_of(a) {
                let forced = force && only == Some(a.def.id.as_str());
                if forced || self.published.get(&spec.name) != Some(&spec) {
                    self.effects
                        .push(Effect::Route(RouteMessage::Upsert { app: spec.clone() }));
                    if a.wake.is_some() && spec.backends.iter().any(|b| b.healthy) {
                        routed.push(a.def.id.clone());
                    }
                }
                seen.insert(spec.name.clone(), spec);
            }
        }
        let now = std::time::Instant::now();
        for id in routed {
            self.wake_mark(&id, "routed", now);
        }
        for name in self.published.keys() {
            if !seen.contains_key(name) {
                self.effects
                    .push(Effect::Route(RouteMessage::Remove { app: name.clone() }));
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
