//! Mesos v1 messages in their JSON form (`include/mesos/v1/mesos.proto`).
//!
//! Unknown fields are ignored on input, as stout does. Optional fields are omitted on output.
//! Enums that Mesos may extend carry an `Unknown` catch-all so an unfamiliar value is not fatal.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::{lenient_f64, lenient_opt_f64, lenient_opt_u64, lenient_u64};

macro_rules! id_type {
    ($($name:ident),* $(,)?) => {$(
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name {
            pub value: String,
        }
        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self { value: value.into() }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.value)
            }
        }
    )*};
}

id_type!(FrameworkId, AgentId, OfferId, TaskId, ExecutorId);

// ---------------------------------------------------------------------------------------------
// Resources and attributes

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    Scalar,
    Ranges,
    Set,
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    #[serde(deserialize_with = "lenient_f64")]
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    #[serde(deserialize_with = "lenient_u64")]
    pub begin: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RangeList {
    #[serde(default)]
    pub range: Vec<Range>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Set {
    #[serde(default)]
    pub item: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub value: String,
}

/// `Resource`: `{"name","type","scalar"|"ranges"|"set","role"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<RangeList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Resource {
    pub fn scalar(name: &str, value: f64) -> Self {
        Resource {
            name: name.into(),
            kind: ValueType::Scalar,
            scalar: Some(Scalar { value }),
            ranges: None,
            set: None,
            role: Some("*".into()),
        }
    }

    pub fn ranges(name: &str, ranges: &[(u64, u64)]) -> Self {
        Resource {
            name: name.into(),
            kind: ValueType::Ranges,
            scalar: None,
            ranges: Some(RangeList {
                range: ranges
                    .iter()
                    .map(|&(begin, end)| Range { begin, end })
                    .collect(),
            }),
            set: None,
            role: Some("*".into()),
        }
    }
}

/// `Attribute`: like a resource, but TEXT/SCALAR/RANGES/SET values that describe an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<RangeList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
}

impl Attribute {
    pub fn text(name: &str, value: &str) -> Self {
        Attribute {
            name: name.into(),
            kind: ValueType::Text,
            scalar: None,
            ranges: None,
            set: None,
            text: Some(Text {
                value: value.into(),
            }),
        }
    }

    /// The flat value `/master/state` shows: scalars as numbers, everything else as text.
    pub fn flat_value(&self) -> Value {
        match self.kind {
            ValueType::Scalar => self
                .scalar
                .as_ref()
                .map(|s| Value::from(s.value))
                .unwrap_or(Value::Null),
            ValueType::Text => self
                .text
                .as_ref()
                .map(|t| Value::from(t.value.clone()))
                .unwrap_or(Value::Null),
            ValueType::Ranges => {
                let r = self.ranges.clone().unwrap_or_default();
                let parts: Vec<String> = r
                    .range
                    .iter()
                    .map(|r| format!("{}-{}", r.begin, r.end))
                    .collect();
                Value::from(format!("[{}]", parts.join(", ")))
            }
            ValueType::Set => {
                let s = self.set.clone().unwrap_or_default();
                Value::from(format!("{{{}}}", s.item.join(",")))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Label {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub labels: Vec<Label>,
}

// ---------------------------------------------------------------------------------------------
// Frameworks

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    pub user: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<FrameworkId>,
    #[serde(
        default,
        deserialize_with = "lenient_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub failover_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
    /// Legacy single role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webui_url: Option<String>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

impl FrameworkInfo {
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c.kind == name)
    }

    /// The framework's roles: `roles` for MULTI_ROLE frameworks, else the legacy `role`, else `*`.
    pub fn effective_roles(&self) -> Vec<String> {
        if self.has_capability("MULTI_ROLE") && !self.roles.is_empty() {
            return self.roles.clone();
        }
        vec![self.role.clone().unwrap_or_else(|| "*".to_string())]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub port: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub id: String,
    /// IPv4 address as a uint32 in network byte order, as Mesos sends it.
    pub ip: u32,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

// ---------------------------------------------------------------------------------------------
// Offers and tasks

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    #[serde(default)]
    pub executor_ids: Vec<ExecutorId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentVariable {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Environment {
    #[serde(default)]
    pub variables: Vec<EnvironmentVariable>,
}

/// `CommandInfo.URI`: an artifact the fetcher downloads into the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uri {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<bool>,
    /// Extract archives (default true, as in Mesos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CommandInfo {
    #[serde(default)]
    pub uris: Vec<Uri>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// Run `value` with `/bin/sh -c` (default true); otherwise exec `value` with `arguments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub arguments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthCheckType {
    Command,
    Http,
    Tcp,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCheckInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The port to probe. drove also accepts `port_index` (an index into the task's ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub statuses: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpCheckInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: HealthCheckType,
    #[serde(
        default,
        deserialize_with = "lenient_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_seconds: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval_seconds: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_seconds: Option<f64>,
    #[serde(
        default,
        deserialize_with = "lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_failures: Option<u64>,
    #[serde(
        default,
        deserialize_with = "lenient_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub grace_period_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheckInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheckInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
}

impl HealthCheck {
    /// Mesos defaults: delay 15 s, interval 10 s, timeout 20 s, 3 failures, grace 10 s.
    pub fn delay(&self) -> f64 {
        self.delay_seconds.unwrap_or(15.0)
    }
    pub fn interval(&self) -> f64 {
        self.interval_seconds.unwrap_or(10.0)
    }
    pub fn timeout(&self) -> f64 {
        self.timeout_seconds.unwrap_or(20.0)
    }
    pub fn max_consecutive_failures(&self) -> u64 {
        self.consecutive_failures.unwrap_or(3)
    }
    pub fn grace_period(&self) -> f64 {
        self.grace_period_seconds.unwrap_or(10.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DurationInfo {
    #[serde(deserialize_with = "crate::json::lenient_i64")]
    pub nanoseconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KillPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<DurationInfo>,
}

impl KillPolicy {
    /// The grace period between SIGTERM and SIGKILL; Mesos's default is 3 s.
    pub fn grace(policy: Option<&KillPolicy>) -> std::time::Duration {
        policy
            .and_then(|p| p.grace_period)
            .map(|d| std::time::Duration::from_nanos(d.nanoseconds.max(0) as u64))
            .unwrap_or(std::time::Duration::from_secs(3))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: TaskId,
    pub agent_id: AgentId,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    /// Custom executors are not supported; present only so such a launch can be refused clearly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Value>,
    /// Mesos 1.9's resource limits: `cpus` above the task's `cpus` resource lets it burst
    /// into CPU the machine has idle (its resource is what it is guaranteed).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub limits: std::collections::BTreeMap<String, Scalar>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    TaskStaging,
    TaskStarting,
    TaskRunning,
    TaskKilling,
    TaskFinished,
    TaskFailed,
    TaskKilled,
    TaskError,
    TaskLost,
    TaskDropped,
    TaskUnreachable,
    TaskGone,
    TaskGoneByOperator,
    TaskUnknown,
}

impl TaskState {
    /// Terminal states. LOST is not terminal: a lost task may come back RUNNING.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::TaskFinished
                | TaskState::TaskFailed
                | TaskState::TaskKilled
                | TaskState::TaskError
                | TaskState::TaskDropped
                | TaskState::TaskGone
                | TaskState::TaskGoneByOperator
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::TaskStaging => "TASK_STAGING",
            TaskState::TaskStarting => "TASK_STARTING",
            TaskState::TaskRunning => "TASK_RUNNING",
            TaskState::TaskKilling => "TASK_KILLING",
            TaskState::TaskFinished => "TASK_FINISHED",
            TaskState::TaskFailed => "TASK_FAILED",
            TaskState::TaskKilled => "TASK_KILLED",
            TaskState::TaskError => "TASK_ERROR",
            TaskState::TaskLost => "TASK_LOST",
            TaskState::TaskDropped => "TASK_DROPPED",
            TaskState::TaskUnreachable => "TASK_UNREACHABLE",
            TaskState::TaskGone => "TASK_GONE",
            TaskState::TaskGoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::TaskUnknown => "TASK_UNKNOWN",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskSource {
    SourceMaster,
    SourceAgent,
    SourceExecutor,
}

/// The `ContainerStatus` subset drove reports: the task's process id and, for a task in its
/// own network, its address there (what the router and health checks reach it at).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_infos: Vec<NetworkInfo>,
}

impl ContainerStatus {
    /// The first IPv4 address of the task's own network, if it has one.
    pub fn ip_address(&self) -> Option<&str> {
        self.network_infos
            .iter()
            .flat_map(|n| n.ip_addresses.iter())
            .find(|a| a.protocol.as_deref().unwrap_or("IPv4") == "IPv4")
            .and_then(|a| a.ip_address.as_deref())
    }
}

/// Prefix of the TASK_RUNNING labels in which an agent reports how long each step of a
/// container's launch took, in milliseconds (`drove.io/step/network`, `…/bundle`,
/// `…/runtime`).
pub const STEP_LABEL: &str = "drove.io/step/";

/// Mesos's `NetworkInfo`: in a `ContainerInfo`, the network a task asks to join (by `name`)
/// with its `port_mappings`; in a `ContainerStatus`, the addresses it got there.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<IpAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IpAddress {
    /// `IPv4` or `IPv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Mesos's `ContainerInfo` as drove reads it: `type` (`MESOS`; `DOCKER` is refused) and the
/// networks the task joins. No `network_infos` means the host's network in Mesos; drove gives
/// such a task its own network unless the agent allows the host's (see the agent's docs).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerInfo {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeInfo {
    pub nanoseconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TaskSource>,
    /// A `TaskStatus.Reason` name such as `REASON_CONTAINER_LIMITATION_MEMORY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<ExecutorId>,
    #[serde(
        default,
        deserialize_with = "lenient_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<f64>,
    /// Base64 bytes. Set on agent-generated updates, which must be acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_time: Option<TimeInfo>,
}

impl TaskStatus {
    pub fn new(task_id: TaskId, state: TaskState) -> Self {
        TaskStatus {
            task_id,
            state,
            source: None,
            reason: None,
            message: None,
            agent_id: None,
            executor_id: None,
            timestamp: Some(now_secs()),
            uuid: None,
            healthy: None,
            labels: None,
            container_status: None,
            unreachable_time: None,
        }
    }
}

/// `Filters`: how long declined resources stay hidden from the framework.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Filters {
    #[serde(
        default,
        deserialize_with = "lenient_opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub refuse_seconds: Option<f64>,
}

impl Filters {
    /// Mesos semantics: default 5 s, negative means the default, capped at 365 days.
    pub fn refuse_seconds(filters: Option<&Filters>) -> f64 {
        const MAX: f64 = 365.0 * 24.0 * 3600.0;
        match filters.and_then(|f| f.refuse_seconds) {
            Some(s) if s.is_nan() || s < 0.0 => 5.0,
            Some(s) => s.min(MAX),
            None => 5.0,
        }
    }
}

/// Seconds since the Unix epoch, as Mesos timestamps are.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `shell: false` commands: Mesos puts `argv[0]` first in `arguments`. When the first argument
/// is the program (or its base name) it is used as `argv[0]`; otherwise every argument is passed.
pub fn split_argv<'a>(program: &str, arguments: &'a [String]) -> (Option<&'a str>, &'a [String]) {
    let base = std::path::Path::new(program)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(program);
    match arguments.first() {
        Some(first) if first == program || first == base => (Some(first.as_str()), &arguments[1..]),
        _ => (None, arguments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_state_names_round_trip() {
        assert_eq!(
            TaskState::parse("TASK_RUNNING"),
            Some(TaskState::TaskRunning)
        );
        assert_eq!(
            TaskState::TaskGoneByOperator.as_str(),
            "TASK_GONE_BY_OPERATOR"
        );
        assert!(!TaskState::TaskLost.is_terminal());
        assert!(TaskState::TaskKilled.is_terminal());
    }

    #[test]
    fn refuse_seconds_follow_mesos_defaults() {
        assert_eq!(Filters::refuse_seconds(None), 5.0);
        let neg = Filters {
            refuse_seconds: Some(-1.0),
        };
        assert_eq!(Filters::refuse_seconds(Some(&neg)), 5.0);
    }

    #[test]
    fn scalars_may_be_strings() {
        let r: Resource =
            serde_json::from_str(r#"{"name":"cpus","type":"SCALAR","scalar":{"value":"0.5"}}"#)
                .unwrap();
        assert_eq!(r.scalar.unwrap().value, 0.5);
    }
}
