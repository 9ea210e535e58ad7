//! Where an instance may go: an offer's free resources, Marathon's constraints, and the reasons
//! an offer did not fit (Marathon's `/v2/queue` reason names).

use std::collections::HashMap;

use drove_proto::mesos::{Offer, Resource, ValueType};

use crate::model::app::AppDefinition;
use crate::model::constraint::Constraint;

/// Why an offer was not used for an app (Marathon's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientPorts,
    UnfulfilledConstraint,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::InsufficientCpus => "InsufficientCpus",
            Reject::InsufficientMemory => "InsufficientMemory",
            Reject::InsufficientDisk => "InsufficientDisk",
            Reject::InsufficientPorts => "InsufficientPorts",
            Reject::UnfulfilledConstraint => "UnfulfilledConstraint",
        }
    }

    pub const ALL: [Reject; 5] = [
        Reject::InsufficientCpus,
        Reject::InsufficientMemory,
        Reject::InsufficientDisk,
        Reject::InsufficientPorts,
        Reject::UnfulfilledConstraint,
    ];
}

/// An agent's descriptive values, as constraints see them.
#[derive(Debug, Clone)]
pub struct AgentFacts {
    pub hostname: String,
    pub attributes: HashMap<String, String>,
}

impl AgentFacts {
    pub fn of_offer(offer: &Offer) -> AgentFacts {
        AgentFacts {
            hostname: offer.hostname.clone(),
            attributes: offer
                .attributes
                .iter()
                .map(|a| {
                    let v = a.flat_value();
                    let text = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (a.name.clone(), text)
                })
                .collect(),
        }
    }

    pub fn value(&self, field: &str) -> Option<String> {
        if field == "hostname" {
            Some(self.hostname.clone())
        } else {
            self.attributes.get(field).cloned()
        }
    }
}

/// What is left of one offer while instances are placed on it.
#[derive(Debug, Clone)]
pub struct Space {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub ports: Vec<(u64, u64)>,
}

impl Space {
    pub fn of(resources: &[Resource]) -> Space {
        let mut s = Space {
            cpus: 0.0,
            mem: 0.0,
            disk: 0.0,
            ports: Vec::new(),
        };
        for r in resources {
            match (r.name.as_str(), r.kind) {
                ("cpus", ValueType::Scalar) => {
                    s.cpus += r.scalar.as_ref().map(|x| x.value).unwrap_or(0.0)
                }
                ("mem", ValueType::Scalar) => {
                    s.mem += r.scalar.as_ref().map(|x| x.value).unwrap_or(0.0)
                }
                ("disk", ValueType::Scalar) => {
                    s.disk += r.scalar.as_ref().map(|x| x.value).unwrap_or(0.0)
                }
                ("ports", ValueType::Ranges) => {
                    if let Some(rs) = &r.ranges {
                        s.ports.extend(rs.range.iter().map(|x| (x.begin, x.end)));
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// Why `def` does not fit, if it does not.
    pub fn check(&self, def: &AppDefinition) -> Result<(), Reject> {
        const EPS: f64 = 1e-9;
        if self.cpus + EPS < def.cpus {
            return Err(Reject::InsufficientCpus);
        }
        if self.mem + EPS < def.mem {
            return Err(Reject::InsufficientMemory);
        }
        if self.disk + EPS < def.disk {
            return Err(Reject::InsufficientDisk);
        }
        if self.clone().take_ports(def).is_none() {
            return Err(Reject::InsufficientPorts);
        }
        Ok(())
    }

    /// Takes `def`'s resources out of the space; the host ports chosen, one per port definition.
    pub fn take(&mut self, def: &AppDefinition) -> Result<Vec<u32>, Reject> {
        self.check(def)?;
        let ports = self.take_ports(def).ok_or(Reject::InsufficientPorts)?;
        self.cpus -= def.cpus;
        self.mem -= def.mem;
        self.disk -= def.disk;
        Ok(ports)
    }

    fn take_ports(&mut self, def: &AppDefinition) -> Option<Vec<u32>> {
        let mut chosen = Vec::new();
        for p in def.port_definitions() {
            let port = if def.require_ports && p.port != 0 {
                let want = u64::from(p.port);
                self.ports
                    .iter()
                    .any(|&(b, e)| b <= want && want <= e)
                    .then_some(want)?
            } else {
                self.ports.iter().map(|&(b, _)| b).next()?
            };
            self.remove_port(port);
            chosen.push(u32::try_from(port).ok()?);
        }
        Some(chosen)
    }

    fn remove_port(&mut self, port: u64) {
        let mut out = Vec::with_capacity(self.ports.len() + 1);
        for &(b, e) in &self.ports {
            if port < b || port > e {
                out.push((b, e));
                continue;
            }
            if b < port {
                out.push((b, port - 1));
            }
            if port < e {
                out.push((port + 1, e));
            }
        }
        self.ports = out;
    }
}

/// Whether every constraint of `def` allows an instance on `agent`, given where the app's
/// instances already run (`placed`, the facts of their agents).
pub fn constraints_allow(def: &AppDefinition, agent: &AgentFacts, placed: &[&AgentFacts]) -> bool {
    def.constraints.iter().all(|parts| {
        let Ok(c) = Constraint::parse(parts) else {
            return false;
        };
        let field = c.field();
        let values: Vec<Option<String>> = placed.iter().map(|f| f.value(field)).collect();
        c.allows(agent.value(field).as_deref(), &values)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(host: &str, rack: &str) -> AgentFacts {
        AgentFacts {
            hostname: host.into(),
            attributes: [("rack".to_string(), rack.to_string())].into(),
        }
    }

    fn def(constraints: serde_json::Value) -> AppDefinition {
        AppDefinition::from_value(serde_json::json!({
            "id": "a", "cmd": "x", "constraints": constraints
        }))
        .unwrap()
    }

    #[test]
    fn unique_cluster_group_by_like_unlike() {
        let (a, b) = (facts("h1", "r1"), facts("h2", "r2"));
        let unique = def(serde_json::json!([["hostname", "UNIQUE"]]));
        assert!(constraints_allow(&unique, &a, &[&b]));
        assert!(!constraints_allow(&unique, &a, &[&a]));
        let cluster = def(serde_json::json!([["rack", "CLUSTER", "r2"]]));
        assert!(!constraints_allow(&cluster, &a, &[]));
        assert!(constraints_allow(&cluster, &b, &[]));
        let group = def(serde_json::json!([["hostname", "GROUP_BY"]]));
        assert!(!constraints_allow(&group, &a, &[&a, &a, &b]));
        assert!(constraints_allow(&group, &b, &[&a, &a, &b]));
        assert!(constraints_allow(&group, &b, &[&a]), "a new group");
        // Only placed groups count: an agent that never got an instance holds nobody back.
        assert!(constraints_allow(&group, &a, &[&a, &b]));
        let two = def(serde_json::json!([["hostname", "GROUP_BY", "2"]]));
        assert!(!constraints_allow(&two, &a, &[&a]), "two groups first");
        assert!(constraints_allow(&two, &b, &[&a]));
        let like = def(serde_json::json!([["rack", "LIKE", "r[12]"]]));
        assert!(constraints_allow(&like, &a, &[]));
        let unlike = def(serde_json::json!([["hostname", "UNLIKE", "h1"]]));
        assert!(!constraints_allow(&unlike, &a, &[]));
        assert!(constraints_allow(&unlike, &b, &[]));
    }

    #[test]
    fn bad_constraints_are_refused() {
        assert!(Constraint::parse(&["hostname".into(), "NEAR".into()]).is_err());
        assert!(Constraint::parse(&["rack".into(), "LIKE".into()]).is_err());
        assert!(Constraint::parse(&["rack".into(), "LIKE".into(), "(".into()]).is_err());
    }

    #[test]
    fn ports_come_from_the_ranges() {
        let d = AppDefinition::from_value(serde_json::json!({
            "id": "a", "cmd": "x", "cpus": 0.5, "mem": 64, "ports": [0, 0]
        }))
        .unwrap();
        let mut s = Space {
            cpus: 1.0,
            mem: 100.0,
            disk: 0.0,
            ports: vec![(31000, 31002)],
        };
        assert_eq!(s.take(&d).unwrap(), vec![31000, 31001]);
        assert_eq!(s.take(&d), Err(Reject::InsufficientMemory));
        s.mem = 1000.0;
        assert_eq!(s.take(&d), Err(Reject::InsufficientPorts));
    }
}
