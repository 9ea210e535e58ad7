//! The PaaS's own API types, shared by the PaaS that serves them and the clients that read
//! them (the CLI, the tests): deployments made, scaling decisions, and the `/v2/events` stream
//! as one [`Event`] enum (Marathon's event shapes, drove's own events beside them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a deployment does, in Marathon's words (its plans' `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    StartApplication,
    RestartApplication,
    ScaleApplication,
    StopApplication,
}

/// A change installed as a deployment (Marathon's answer to a change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployed {
    pub deployment_id: String,
    pub version: String,
}

/// A scaling decision: anyone's (the scaler's, a wake's, an operator's), with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub app_id: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// Who decided: `scaler`, `wake`, `api`, `dashboard`, ...
    pub by: String,
    pub timestamp: String,
}

/// Where a wake's time went: each step's time since the wake call (`held` is negative: the
/// router held the first request that long before it called).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WakeTimeline {
    pub app_id: String,
    /// When the wake came in.
    pub timestamp: String,
    /// Requests held when the router called (when it said).
    pub held: Option<u64>,
    pub total_ms: f64,
    pub steps: Vec<WakeStep>,
    /// The agent's container steps inside `starting`→`running` (`networkMs`, `bundleMs`,
    /// `runtimeMs`), when it reported them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub container: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeStep {
    pub step: String,
    pub ms: f64,
}

/// An app's load now, summed over the routers that reported it recently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    pub in_flight: u64,
    pub held: u64,
    /// The latest request any router saw (ms since the epoch).
    pub last_request_ms: Option<u64>,
}

/// One sample of an app's last hour (every 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub at_ms: u64,
    /// Requests per second since the previous sample; `None` for the first one (or after the
    /// routers' counters went backwards: a restarted router).
    pub rate: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub wanted: u32,
    pub ready: u32,
}

/// `GET /v1/apps/{app}/scaling`: an app's scaling settings, its scaler's memory (recent
/// decisions, panic mode, idle time, concurrency), its load now, its recent wakes and the open
/// one, and its last hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingView {
    pub app_id: String,
    pub instances: u32,
    /// The app's `scaling` settings as its definition has them (`null`: a fixed count).
    pub scaling: Option<Value>,
    /// Oldest first.
    pub decisions: Vec<Decision>,
    pub panicking: bool,
    /// Since the app's last request or scale-up (unknown before the scaler saw the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<f64>,
    pub load: Load,
    /// Completed wakes, oldest first.
    pub wakes: Vec<WakeTimeline>,
    /// The wake under way, if one is.
    pub waking: Option<WakeTimeline>,
    pub history: Vec<Sample>,
}

/// One action of a deployment plan's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanAction {
    pub action: Action,
    pub app: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub actions: Vec<PlanAction>,
}

/// Marathon's group: the root (`/`) with app definitions (as Marathon writes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub apps: Vec<Value>,
}

impl Group {
    pub fn root(apps: Vec<Value>) -> Group {
        Group {
            id: "/".into(),
            apps,
        }
    }
}

/// `POST /v1/apps/{app}/suspend` and `/resume`: whether it changed, and the instances it
/// now wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspension {
    pub app: String,
    pub suspended: bool,
    pub changed: bool,
    pub instances: Option<u32>,
}

/// A custom domain of an app (`/v1/apps/{app}/domains`): requests for `hostname` go to `app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub hostname: String,
    /// The app's id.
    pub app: String,
    /// When it was claimed (RFC 3339).
    pub added: String,
    /// The certificate the routers serve for it over HTTPS, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    /// How getting (or renewing) its certificate from the PaaS's certificate authority
    /// stands, when the PaaS has one (`--acme-directory`, or `drove up`'s local CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuance: Option<Issuance>,
}

impl Domain {
    /// Its HTTPS in a line, as the CLI and the dashboard show it: the certificate served (until
    /// when, from whom) and how getting the next one stands.
    pub fn https_note(&self) -> String {
        let mut note = match &self.certificate {
            Some(c) => format!("HTTPS until {} ({})", c.not_after, c.source),
            None => "no certificate".to_string(),
        };
        if let Some(i) = &self.issuance {
            note += &format!("; {} from {}", i.state.as_str(), i.authority);
            if let Some(e) = &i.error {
                note += &format!(" after {} attempts: {e}", i.attempts);
            }
            match (i.state, &i.next) {
                (IssuanceState::Failed, Some(n)) => note += &format!("; retried at {n}"),
                (IssuanceState::Issued, Some(n)) => note += &format!("; renewed at {n}"),
                _ => {}
            }
        }
        note
    }
}

/// Where a hostname's automatic certificate stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issuance {
    pub state: IssuanceState,
    /// Who issues it: the ACME directory's URL, or `local` (drove's own CA).
    pub authority: String,
    /// Why the last attempt failed, in the CA's words when it gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed attempts in a row (0 once one succeeds).
    pub attempts: u32,
    /// When the PaaS tries next (RFC 3339): the retry after a failure, or the renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// When this changed last (RFC 3339).
    pub updated: String,
}

/// `pending` until the first certificate arrives; `issued` while one is served and its
/// renewal not due; `failed` when the last attempt failed (a certificate issued before, if
/// any, is still served until it expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuanceState {
    Pending,
    Issued,
    Failed,
}

impl IssuanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuanceState::Pending => "pending",
            IssuanceState::Issued => "issued",
            IssuanceState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<IssuanceState> {
        [
            IssuanceState::Pending,
            IssuanceState::Issued,
            IssuanceState::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A domain's certificate as the API shows it (never its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// `operator` (given with `domains:cert`), or the issuing authority (`acme`, `local`).
    pub source: String,
    /// When it expires (RFC 3339).
    pub not_after: String,
    pub issuer: String,
}

/// `PUT /v1/apps/{app}/domains/{hostname}/certificate`: a certificate the operator provides.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCertificate {
    /// PEM, the leaf first, then its intermediates.
    pub chain_pem: String,
    /// PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for NewCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCertificate")
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &"(secret)")
            .finish()
    }
}

/// `GET /v1/apps/{app}/domains`: its custom domains, and its own `<app>.<domain>` when the
/// PaaS's authority gives that a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domains {
    pub domains: Vec<Domain>,
    /// Its own hostname, with its certificate and issuance (`added`: when that last changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<Domain>,
}

/// `POST /v1/apps/{app}/domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDomain {
    pub hostname: String,
}

/// A deployment plan as events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub version: String,
    pub steps: Vec<Step>,
    pub original: Group,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Group>,
}

/// An event of `/v2/events`, tagged by `eventType` as Marathon's are; each has a
/// `timestamp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum Event {
    #[serde(rename = "event_stream_attached", rename_all = "camelCase")]
    StreamAttached {
        remote_address: String,
        timestamp: String,
    },
    #[serde(rename = "api_post_event", rename_all = "camelCase")]
    ApiPost {
        client_ip: String,
        uri: String,
        app_definition: Value,
        timestamp: String,
    },
    #[serde(rename = "status_update_event", rename_all = "camelCase")]
    StatusUpdate {
        slave_id: String,
        task_id: String,
        task_status: String,
        message: String,
        app_id: String,
        host: String,
        ports: Vec<u32>,
        ip_addresses: Vec<Value>,
        version: String,
        timestamp: String,
    },
    #[serde(rename = "health_status_changed_event", rename_all = "camelCase")]
    HealthStatusChanged {
        app_id: String,
        task_id: String,
        instance_id: String,
        version: String,
        alive: bool,
        timestamp: String,
    },
    #[serde(rename = "unhealthy_task_kill_event", rename_all = "camelCase")]
    UnhealthyTaskKill {
        app_id: String,
        task_id: String,
        version: String,
        reason: String,
        host: String,
        slave_id: String,
        timestamp: String,
    },
    #[serde(rename = "instance_changed_event", rename_all = "camelCase")]
    InstanceChanged {
        instance_id: String,
        condition: String,
        run_spec_id: String,
        agent_id: String,
        host: String,
        run_spec_version: String,
        goal: String,
        timestamp: String,
    },
    #[serde(rename = "deployment_info", rename_all = "camelCase")]
    DeploymentInfo {
        plan: Plan,
        current_step: Step,
        timestamp: String,
    },
    #[serde(rename = "deployment_success", rename_all = "camelCase")]
    DeploymentSuccess {
        id: String,
        plan: Plan,
        timestamp: String,
    },
    #[serde(rename = "deployment_failed", rename_all = "camelCase")]
    DeploymentFailed {
        id: String,
        plan: Plan,
        reason: String,
        timestamp: String,
    },
    #[serde(rename = "app_terminated_event", rename_all = "camelCase")]
    AppTerminated { app_id: String, timestamp: String },
    /// drove's: an app's count changed, or the scaler kept it with a reason.
    #[serde(rename = "drove_scaling_decision_event")]
    ScalingDecision(Decision),
    /// drove's: a router's request woke an app.
    #[serde(rename = "drove_wake_event", rename_all = "camelCase")]
    Wake {
        app_id: String,
        reason: String,
        timestamp: String,
    },
    /// drove's: a completed wake's timeline (the object `/v1/apps/{app}/scaling` lists).
    #[serde(rename = "drove_wake_timeline_event")]
    WakeTimeline(WakeTimeline),
}

impl Event {
    /// Marathon's `eventType`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::StreamAttached { .. } => "event_stream_attached",
            Event::ApiPost { .. } => "api_post_event",
            Event::StatusUpdate { .. } => "status_update_event",
            Event::HealthStatusChanged { .. } => "health_status_changed_event",
            Event::UnhealthyTaskKill { .. } => "unhealthy_task_kill_event",
            Event::InstanceChanged { .. } => "instance_changed_event",
            Event::DeploymentInfo { .. } => "deployment_info",
            Event::DeploymentSuccess { .. } => "deployment_success",
            Event::DeploymentFailed { .. } => "deployment_failed",
            Event::AppTerminated { .. } => "app_terminated_event",
            Event::ScalingDecision(_) => "drove_scaling_decision_event",
            Event::Wake { .. } => "drove_wake_event",
            Event::WakeTimeline(_) => "drove_wake_timeline_event",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kind()` is what `/v2/events?event_type=` filters on: it must be the tag serde writes,
    /// for every variant.
    #[test]
    fn every_events_kind_is_its_serialized_event_type() {
        let t = || "2026-12-04T00:00:00.000Z".to_string();
        let s = || String::from("x");
        let step = || Step {
            actions: vec![PlanAction {
                action: Action::StartApplication,
                app: s(),
            }],
        };
        let plan = || Plan {
            id: s(),
            version: t(),
            steps: vec![step()],
            original: Group::root(vec![]),
            target: None,
        };
        let all = vec![
            Event::StreamAttached {
                remote_address: s(),
                timestamp: t(),
            },
            Event::ApiPost {
                client_ip: s(),
                uri: s(),
                app_definition: Value::Null,
                timestamp: t(),
            },
            Event::StatusUpdate {
                slave_id: s(),
                task_id: s(),
                task_status: s(),
                message: s(),
                app_id: s(),
                host: s(),
                ports: vec![],
                ip_addresses: vec![],
                version: s(),
                timestamp: t(),
            },
            Event::HealthStatusChanged {
                app_id: s(),
                task_id: s(),
                instance_id: s(),
                version: s(),
                alive: true,
                timestamp: t(),
            },
            Event::UnhealthyTaskKill {
                app_id: s(),
                task_id: s(),
                version: s(),
                reason: s(),
                host: s(),
                slave_id: s(),
                timestamp: t(),
            },
            Event::InstanceChanged {
                instance_id: s(),
                condition: s(),
                run_spec_id: s(),
                agent_id: s(),
                host: s(),
                run_spec_version: s(),
                goal: s(),
                timestamp: t(),
            },
            Event::DeploymentInfo {
                plan: plan(),
                current_step: step(),
                timestamp: t(),
            },
            Event::DeploymentSuccess {
                id: s(),
                plan: plan(),
                timestamp: t(),
            },
            Event::DeploymentFailed {
                id: s(),
                plan: plan(),
                reason: s(),
                timestamp: t(),
            },
            Event::AppTerminated {
                app_id: s(),
                timestamp: t(),
            },
            Event::ScalingDecision(Decision {
                app_id: s(),
                from: 0,
                to: 1,
                reason: s(),
                by: s(),
                timestamp: t(),
            }),
            Event::Wake {
                app_id: s(),
                reason: s(),
                timestamp: t(),
            },
            Event::WakeTimeline(WakeTimeline {
                app_id: s(),
                timestamp: t(),
                held: None,
                total_ms: 0.0,
                steps: vec![],
                container: BTreeMap::new(),
            }),
        ];
        for ev in all {
            let v = serde_json::to_value(&ev).expect("serializes");
            assert_eq!(v["eventType"], ev.kind(), "{v}");
            let back: Event = serde_json::from_value(v).expect("reads back");
            assert_eq!(back, ev);
        }
    }

    #[test]
    fn events_carry_marathons_event_type_and_read_back() {
        let decision = Event::ScalingDecision(Decision {
            app_id: "/shop".into(),
            from: 0,
            to: 1,
            reason: "a request arrived".into(),
            by: "wake".into(),
            timestamp: "2026-12-04T00:00:00.000Z".into(),
        });
        let v = serde_json::to_value(&decision).expect("serializes");
        assert_eq!(v["eventType"], "drove_scaling_decision_event");
        assert_eq!(v["appId"], "/shop");
        assert_eq!(v["to"], 1);
        let back: Event = serde_json::from_value(v).expect("reads back");
        assert_eq!(back, decision);
        assert_eq!(back.kind(), "drove_scaling_decision_event");

        let terminated = Event::AppTerminated {
            app_id: "/shop".into(),
            timestamp: "t".into(),
        };
        let v = serde_json::to_value(&terminated).expect("serializes");
        assert_eq!(v["eventType"], terminated.kind());
        assert_eq!(v["appId"], "/shop");
    }
}
