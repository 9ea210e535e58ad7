//! Where an instance may go: an offer's free resources, Marathon's constraints, and the reasons
//! an offer did not fit (Marathon's `/v2/queue` reason names).

use std::collections::HashMap;

use drove_proto::mesos::{Offer, Resource, ValueType};
use regex::Regex;

use crate::app::AppDefinition;

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

/// One Marathon constraint: `[field, operator, value?]`.
#[derive(Debug, Clone)]
pub enum Constraint {
    Unique(String),
    Cluster(String, Option<String>),
    GroupBy(String, Option<u32>),
    Like(String, Regex),
    Unlike(String, Regex),
    MaxPer(String, u32),
}

impl Constraint {
    pub fn parse(parts: &[String]) -> Result<Constraint, String> {
        let field = parts.first().cloned().unwrap_or_default();
        if field.is_empty() {
            return Err("a constraint is [field, operator, value?]".into());
        }
        let op = parts
            .get(1)
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        let value = parts.get(2).cloned();
        if parts.len() > 3 {
            return Err(format!("too many parts in {parts:?}"));
        }
        let regex = |v: Option<String>| -> Result<Regex, String> {
            let v = v.ok_or_else(|| format!("{op} needs a regular expression"))?;
            Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("bad regular expression: {e}"))
        };
        let number = |v: Option<String>| -> Result<u32, String> {
            v.ok_or_else(|| format!("{op} needs a number"))?
                .parse::<u32>()
                .map_err(|_| format!("{op} needs a whole number"))
        };
        Ok(match op.as_str() {
            "UNIQUE" => Constraint::Unique(field),
            "CLUSTER" => Constraint::Cluster(field, value),
            "GROUP_BY" => Constraint::GroupBy(field, value.map(|_| number(parts.get(2).cloned())).transpose()?),
            "LIKE" => Constraint::Like(field, regex(value)?),
            "UNLIKE" => Constraint::Unlike(field, regex(value)?),
            "MAX_PER" => Constraint::MaxPer(field, number(value)?),
            other => {
                return Err(format!(
                    "unknown operator {other:?}: use UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE or MAX_PER"
                ))
            }
        })
    }

    fn field(&self) -> &str {
        match self {
            Constraint::Unique(f)
            | Constraint::Cluster(f, _)
            | Constraint::GroupBy(f, _)
            | Constraint::Like(f, _)
            | Constraint::Unlike(f, _)
            | Constraint::MaxPer(f, _) => f,
        }
    }

    /// Whether an instance may go on an agent whose `field` is `value`, given the values of the
    /// app's instances already placed.
    fn allows(&self, value: Option<&str>, placed: &[Option<String>]) -> bool {
        let count = |v: &str| placed.iter().filter(|p| p.as_deref() == Some(v)).count();
        match self {
            Constraint::Unique(_) => value.is_some_and(|v| count(v) == 0),
            Constraint::Cluster(_, Some(want)) => value == Some(want.as_str()),
            Constraint::Cluster(_, None) => match placed.iter().flatten().next() {
                Some(first) => value == Some(first.as_str()),
                None => value.is_some(),
            },
            Constraint::GroupBy(_, groups) => {
                let Some(v) = value else { return false };
                let here = count(v);
                let mut placed_groups: Vec<&str> =
                    placed.iter().flatten().map(String::as_str).collect();
                placed_groups.sort_unstable();
                placed_groups.dedup();
                // Until the expected number of groups is reached, only new groups.
                if let Some(g) = groups {
                    if here > 0 && placed_groups.len() < *g as usize {
                        return false;
                    }
                }
                // Even spread: a new group, or one with no more than the fewest placed.
                here == 0 || placed_groups.iter().map(|k| count(k)).min().unwrap_or(0) >= here
            }
            Constraint::Like(_, re) => value.is_some_and(|v| re.is_match(v)),
            Constraint::Unlike(_, re) => value.is_none_or(|v| !re.is_match(v)),
            Constraint::MaxPer(_, n) => value.is_some_and(|v| count(v) < *n as usize),
        }
    }
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
