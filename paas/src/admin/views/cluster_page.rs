//! The Cluster page: agents, frameworks, offers (from the master's `/master/state`), and who
//! is starving and why (from the PaaS's launch queue).

use drove_proto::master_state::{self, MasterState};
use serde::Serialize;

use super::{charts, cpus_mem, queue, secs_ago, span, Waiting};
use crate::Paas;

#[derive(Debug, Default, Serialize)]
pub struct ClusterPage {
    /// Why the master's part is missing.
    pub master_error: Option<String>,
    pub agents: Vec<AgentRow>,
    pub frameworks: Vec<FrameworkRow>,
    pub offers: Vec<OfferRow>,
    pub starving: Vec<Waiting>,
    /// The cluster's CPU and memory in use, as bars.
    pub cpu: String,
    pub mem: String,
}

#[derive(Debug, Serialize)]
pub struct AgentRow {
    pub id: String,
    pub hostname: String,
    pub endpoint: String,
    /// `active`, `recovering` or `inactive`.
    pub status: &'static str,
    pub ok: bool,
    pub cpu: String,
    pub mem: String,
    pub heartbeat: String,
    pub offered: String,
}

#[derive(Debug, Serialize)]
pub struct FrameworkRow {
    pub name: String,
    pub id: String,
    pub active: bool,
    /// Its DRF share, `12.5 %`.
    pub share: String,
    pub used: String,
    pub tasks: usize,
    pub offers: usize,
    pub suppressed: bool,
    pub last_offer: String,
    /// `declined h1's offers: filtered for 4 s more`.
    pub filters: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OfferRow {
    pub id: String,
    pub framework: String,
    pub agent: String,
    pub resources: String,
}

fn agent(a: &master_state::Agent) -> AgentRow {
    let status = if a.active {
        "active"
    } else if a.recovering {
        "recovering"
    } else {
        "inactive"
    };
    AgentRow {
        id: a.id.clone(),
        hostname: a.hostname.clone(),
        endpoint: a.endpoint.clone(),
        status,
        ok: a.active,
        cpu: charts::bar(a.used_resources.cpus, a.resources.cpus, "cpus"),
        mem: charts::bar(a.used_resources.mem, a.resources.mem, "MB"),
        heartbeat: a
            .last_ping_seconds_ago
            .map(secs_ago)
            .unwrap_or_else(|| "—".into()),
        offered: cpus_mem(a.offered_resources.cpus, a.offered_resources.mem),
    }
}

fn framework(m: &MasterState, f: &master_state::Framework) -> FrameworkRow {
    let al = f.allocator.as_ref();
    let filters = al
        .map(|al| al.filters.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|x| {
            format!(
                "declined {}'s offers: filtered for {} more",
                m.hostname(&x.agent_id),
                span((x.expires_in_seconds * 1000.0) as u64)
            )
        })
        .collect();
    FrameworkRow {
        name: f.name.clone(),
        id: f.id.clone(),
        active: f.active,
        share: format!("{:.1} %", al.map_or(0.0, |al| al.share) * 100.0),
        used: cpus_mem(f.used_resources.cpus, f.used_resources.mem),
        tasks: f.tasks.len(),
        offers: f.offers.len(),
        suppressed: f.suppressed,
        last_offer: al
            .and_then(|al| al.last_allocation)
            .map(|l| secs_ago(l.seconds_ago))
            .unwrap_or_else(|| "never".into()),
        filters,
    }
}

/// The Cluster page; the master's part says why when the master cannot be read.
pub async fn cluster(paas: &Paas) -> ClusterPage {
    let starving = queue(paas).iter().map(Waiting::of).collect();
    let Some(m) = crate::json_answer::<MasterState>(paas.master_get("/master/state")).await else {
        return ClusterPage {
            master_error: Some(format!("the master at {} cannot be read", paas.args.master)),
            starving,
            ..ClusterPage::default()
        };
    };
    let offers = m
        .frameworks
        .iter()
        .flat_map(|f| {
            f.offers.iter().map(|o| OfferRow {
                id: o.id.clone(),
                framework: f.name.clone(),
                agent: m.hostname(&o.agent_id).to_string(),
                resources: cpus_mem(o.resources.cpus, o.resources.mem),
            })
        })
        .collect();
    let total = |f: fn(&master_state::Agent) -> f64| m.slaves.iter().map(f).sum::<f64>();
    ClusterPage {
        master_error: None,
        agents: m.slaves.iter().map(agent).collect(),
        frameworks: m.frameworks.iter().map(|f| framework(&m, f)).collect(),
        offers,
        starving,
        cpu: charts::bar(
            total(|a| a.used_resources.cpus),
            total(|a| a.resources.cpus),
            "cpus",
        ),
        mem: charts::bar(
            total(|a| a.used_resources.mem),
            total(|a| a.resources.mem),
            "MB",
        ),
    }
}
