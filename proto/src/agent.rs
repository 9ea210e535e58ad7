//! drove's master <-> agent protocol: HTTP/JSON, documented in ARCHITECTURE.md.
//!
//! Agent -> master (on the master's listener):
//! - `POST /agent/v1/register`  [`RegisterAgent`] -> [`Registered`] (also re-registration)
//! - `POST /agent/v1/ping`      [`Ping`] -> 200 [`Pong`], or 404 when the master does not know
//!   the agent (it restarted or declared the agent gone): the agent then re-registers.
//! - `POST /agent/v1/status`    [`StatusUpdate`] -> 202. Retried by the agent until acknowledged.
//!
//! Master -> agent (on the agent's listener):
//! - `POST /agent/v1/launch`    [`LaunchTask`] -> 202
//! - `POST /agent/v1/kill`      [`KillTask`] -> 202
//! - `POST /agent/v1/acknowledge` [`AcknowledgeUpdate`] -> 202
//! - `POST /agent/v1/shutdown`  [`ShutdownFramework`] -> 202 (kill all of a framework's tasks)
//!
//! Agent read API: `GET /agent/v1/state` ([`AgentState`]),
//! `GET /agent/v1/tasks/{task_id}/{stdout|stderr}?offset=N&length=N` (raw log bytes),
//! `GET /monitor/statistics` ([`ResourceUsage`] per task, Mesos' shape), `GET /health`.

use serde::{Deserialize, Serialize};

use crate::mesos::{
    AgentId, Attribute, FrameworkId, FrameworkInfo, KillPolicy, Resource, TaskId, TaskInfo,
    TaskState, TaskStatus,
};

pub const REGISTER_PATH: &str = "/agent/v1/register";
pub const PING_PATH: &str = "/agent/v1/ping";
pub const STATUS_PATH: &str = "/agent/v1/status";
pub const LAUNCH_PATH: &str = "/agent/v1/launch";
pub const KILL_PATH: &str = "/agent/v1/kill";
pub const ACKNOWLEDGE_PATH: &str = "/agent/v1/acknowledge";
pub const SHUTDOWN_PATH: &str = "/agent/v1/shutdown";
pub const STATE_PATH: &str = "/agent/v1/state";

/// A task as the agent reports it when (re-)registering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTask {
    pub framework_id: FrameworkId,
    pub task: TaskInfo,
    pub state: TaskState,
    /// The latest status the agent has for the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterAgent {
    /// Set when re-registering with the id an earlier registration gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    pub hostname: String,
    /// Where the master reaches the agent, e.g. `http://127.0.0.2:5051`.
    pub endpoint: String,
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    /// Tasks the agent is running (on re-registration).
    #[serde(default)]
    pub tasks: Vec<AgentTask>,
    #[serde(default)]
    pub version: String,
    /// The key the master issued at this agent id's first registration
    /// ([`Registered::agent_key`]): without it nobody re-registers the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: AgentId,
    pub master_id: String,
    /// How often the agent should ping; the master declares it unreachable after
    /// `ping_interval_seconds × max_missed_pings` of silence.
    pub ping_interval_seconds: f64,
    pub max_missed_pings: u32,
    /// A secret for this registration only: the agent sends it as [`SESSION_HEADER`] on every
    /// ping and status update, so no one else can speak for this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Issued with a new agent id (or to an agent the master had no key for): the agent keeps
    /// it and presents it as [`RegisterAgent::agent_key`] whenever it re-registers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<String>,
}

/// The header carrying [`Registered::session`].
pub const SESSION_HEADER: &str = "drove-agent-session";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    pub agent_id: AgentId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub master_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub agent_id: AgentId,
    pub framework_id: FrameworkId,
    /// Carries `uuid`, `agent_id` and `source`; the master forwards it to the framework as is.
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchTask {
    pub framework_id: FrameworkId,
    pub framework_info: FrameworkInfo,
    pub task: TaskInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillTask {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcknowledgeUpdate {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub uuid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownFramework {
    pub framework_id: FrameworkId,
}

/// `GET /agent/v1/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    pub hostname: String,
    pub resources: Vec<Resource>,
    pub tasks: Vec<AgentTaskState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTaskState {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub name: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    pub sandbox: String,
    /// Updates not yet acknowledged by the framework.
    pub pending_updates: usize,
}

/// One task's entry of an agent's `/monitor/statistics` (Mesos' `ResourceUsage`, the executor
/// being the task itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub framework_id: String,
    pub executor_id: String,
    #[serde(default)]
    pub executor_name: String,
    #[serde(default)]
    pub source: String,
    pub statistics: ResourceStatistics,
}

/// What a task has used (Mesos' `ResourceStatistics`, the fields drove measures): the master
/// answers it at `/master/frameworks/{framework}/tasks/{task}/statistics`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceStatistics {
    /// Seconds since the epoch when read.
    pub timestamp: f64,
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    #[serde(default)]
    pub cpus_limit: Option<f64>,
    #[serde(default)]
    pub mem_limit_bytes: Option<u64>,
}

impl ResourceStatistics {
    /// CPU seconds used so far, user and system.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpus_user_time_secs + self.cpus_system_time_secs
    }
}
