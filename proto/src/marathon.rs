//! Marathon's REST objects as the PaaS serves them (`/v2/apps`, `/v2/apps/{id}/tasks`,
//! `/v2/tasks`, `/v2/queue`), typed: the PaaS builds them, its API serializes them, the CLI, the
//! dashboard and the tests read their fields. The app definition itself is the PaaS's own type
//! (`D`), flattened into the app object as Marathon does.

use serde::{Deserialize, Serialize};

use crate::mesos::{Resource, TaskState};
use crate::paas::{Action, Step};

/// Marathon's app object: the definition and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App<D> {
    #[serde(flatten)]
    pub definition: D,
    pub version: String,
    pub version_info: VersionInfo,
    /// Deprecated in Marathon, still shown: the ports of `portDefinitions`, the URIs of `fetch`.
    #[serde(default)]
    pub ports: Vec<u32>,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub executor: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    pub tasks_running: u64,
    pub tasks_staged: u64,
    pub tasks_healthy: u64,
    pub tasks_unhealthy: u64,
    /// The deployments under way that change this app.
    #[serde(default)]
    pub deployments: Vec<DeploymentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<TaskFailure>,
    /// Present when asked for (`embed=apps.tasks`, or one app's `GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Task>>,
}

impl<D> App<D> {
    /// Its tasks, or none when they were not embedded.
    pub fn tasks(&self) -> &[Task] {
        self.tasks.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRef {
    pub id: String,
}

/// How an app's last instance ended (Marathon's `lastTaskFailure`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: String,
    pub host: String,
    /// How it ended, then the last lines it wrote to stderr.
    pub message: String,
    pub state: TaskState,
    pub task_id: String,
    pub timestamp: String,
    pub version: String,
}

/// Marathon's task object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub app_id: String,
    pub host: String,
    pub ports: Vec<u32>,
    #[serde(default)]
    pub service_ports: Vec<u32>,
    pub slave_id: String,
    pub staged_at: String,
    pub started_at: Option<String>,
    pub version: String,
    pub state: TaskState,
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    /// Present for an app with health checks: empty until the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_results: Option<Vec<HealthCheckResult>>,
}

impl Task {
    /// Its health as its checks last said: `None` for an app without checks or before the
    /// first result.
    pub fn alive(&self) -> Option<bool> {
        self.health_check_results.as_ref()?.first().map(|h| h.alive)
    }

    /// Running and, if its app has health checks, passing them.
    pub fn ready(&self) -> bool {
        self.state == TaskState::TaskRunning
            && (self.health_check_results.is_none() || self.alive() == Some(true))
    }

    /// Where it is reached: `host:port` (its first port), or its host.
    pub fn addr(&self) -> String {
        match self.ports.first() {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip_address: String,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<String>,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub task_id: String,
    pub instance_id: String,
}

/// An entry of Marathon's launch queue: an app (or a build) waiting for launches, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueEntry<D> {
    pub app: App<D>,
    /// Instances still to launch.
    pub count: u64,
    pub delay: Delay,
    pub since: String,
    pub processed_offers_summary: OffersSummary,
    #[serde(default)]
    pub last_unused_offers: Vec<UnusedOffer>,
}

/// The launch backoff an app is under after its instances failed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delay {
    pub time_left_seconds: u64,
    pub overdue: bool,
}

/// What the offers last processed for an app lacked (Marathon's `processedOffersSummary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffersSummary {
    pub processed_offers_count: u64,
    pub unused_offers_count: u64,
    pub last_unused_offer_at: Option<String>,
    pub last_used_offer_at: Option<String>,
    pub reject_summary_last_offers: Vec<RejectCount>,
}

/// Of the offers processed, how many were declined for `reason` (`InsufficientCpus`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectCount {
    pub reason: String,
    pub declined: u64,
    pub processed: u64,
}

/// An offer that did not fit, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnusedOffer {
    pub offer: OfferSummary,
    pub timestamp: String,
    pub reason: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferSummary {
    pub id: String,
    pub agent_id: String,
    pub hostname: String,
    pub resources: Vec<Resource>,
}

/// A deployment under way (`GET /v2/deployments`): one step changing one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub affected_apps: Vec<String>,
    #[serde(default)]
    pub affected_pods: Vec<String>,
    pub steps: Vec<Step>,
    pub current_actions: Vec<CurrentAction>,
    pub current_step: u32,
    pub total_steps: u32,
}

/// An action of the step under way, with what holds it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentAction {
    pub action: Action,
    pub app: String,
    #[serde(default)]
    pub readiness_check_results: Vec<ReadinessCheckResult>,
}

/// Why an action is not done yet (drove says it in `lastResponse.body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheckResult {
    pub name: String,
    pub task_id: Option<String>,
    pub ready: bool,
    pub last_response: ReadinessResponse,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Marathon's error body: `message`, with the blocking `deployments` for a locked app, or
/// per-field `details` for invalid input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Violation>,
}

impl ErrorBody {
    pub fn new(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            message: message.into(),
            deployments: Vec::new(),
            details: Vec::new(),
        }
    }
}

/// One failed rule: the field's path in Marathon's notation (`/healthChecks(0)/path`) and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub errors: Vec<String>,
}

/// `GET /v2/apps/{id}/versions`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub versions: Vec<String>,
}

/// `GET /v2/leader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leader {
    pub leader: String,
}

/// `GET /v2/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Apps<D> {
    pub apps: Vec<App<D>>,
}

/// `GET /v2/apps/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneApp<D> {
    pub app: App<D>,
}

/// `GET /v2/apps/{id}/tasks/{task}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneTask {
    pub task: Task,
}

/// `GET /v2/tasks`, `GET /v2/apps/{id}/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tasks {
    pub tasks: Vec<Task>,
}

/// `GET /v2/queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue<D> {
    pub queue: Vec<QueueEntry<D>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn an_app_object_flattens_its_definition_and_reads_back() {
        let app = App {
            definition: json!({"id": "/a", "instances": 2}),
            version: "v".into(),
            version_info: VersionInfo {
                last_scaling_at: "s".into(),
                last_config_change_at: "c".into(),
            },
            ports: vec![0],
            uris: Vec::new(),
            executor: String::new(),
            dependencies: Vec::new(),
            tasks_running: 1,
            tasks_staged: 0,
            tasks_healthy: 0,
            tasks_unhealthy: 0,
            deployments: vec![DeploymentRef { id: "d".into() }],
            last_task_failure: None,
            tasks: None,
        };
        let v = serde_json::to_value(&app).unwrap();
        assert_eq!(v["id"], "/a");
        assert_eq!(v["versionInfo"]["lastConfigChangeAt"], "c");
        assert_eq!(v["tasksRunning"], 1);
        assert!(v.get("tasks").is_none() && v.get("lastTaskFailure").is_none());
        let back: App<Value> = serde_json::from_value(v).unwrap();
        assert_eq!(back.definition, json!({"id": "/a", "instances": 2}));
        assert_eq!(back.deployments[0].id, "d");
    }

    #[test]
    fn a_task_is_ready_when_running_and_passing_its_checks() {
        let mut t: Task = serde_json::from_value(json!({
            "id": "t", "appId": "/a", "host": "h", "ports": [31000], "slaveId": "s",
            "stagedAt": "x", "startedAt": null, "version": "v", "state": "TASK_RUNNING",
        }))
        .unwrap();
        assert!(t.ready() && t.alive().is_none());
        assert_eq!(t.addr(), "h:31000");
        t.health_check_results = Some(Vec::new());
        assert!(!t.ready(), "checks without a result yet");
        t.state = TaskState::TaskStaging;
        assert!(!t.ready());
    }
}
