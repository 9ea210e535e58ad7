//! An instance: one launched task of an app, as the PaaS tracks it.

use std::time::Instant;

use drove_proto::mesos::TaskState;
use serde::{Deserialize, Serialize};

/// One launched task of an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub task_id: String,
    pub app_id: String,
    /// The app's `version` when launched (Marathon's task `version`).
    pub version: String,
    /// The app's config version when launched: instances of another config are replaced.
    pub config_version: String,
    pub agent_id: String,
    pub host: String,
    /// The task's own address when it runs in a container on its own network (the agent
    /// reports it): where it is reached at, on its `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub ports: Vec<u32>,
    pub state: TaskState,
    pub healthy: Option<bool>,
    pub staged_at: String,
    pub started_at: Option<String>,
    /// Chosen to go: out of the routes, killed once drained.
    #[serde(default)]
    pub killing: bool,
    #[serde(default)]
    pub has_checks: bool,
    #[serde(skip)]
    pub drain_started: Option<Instant>,
    #[serde(skip)]
    pub kill_sent: Option<Instant>,
    #[serde(skip)]
    pub healthy_since: Option<Instant>,
}

impl Instance {
    /// Serving: running and, if the app has health checks, passing them.
    pub fn ready(&self) -> bool {
        self.state == TaskState::TaskRunning
            && !self.killing
            && if self.has_checks {
                self.healthy == Some(true)
            } else {
                self.healthy != Some(false)
            }
    }

    /// Where the instance serves: its own address in a container network, else its agent's
    /// host, on its first port.
    pub fn addr(&self) -> Option<String> {
        let host = self.ip.as_deref().unwrap_or(&self.host);
        self.ports.first().map(|p| format!("{host}:{p}"))
    }
}
