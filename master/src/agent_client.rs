//! Requests from the master to agents (launch, kill, acknowledge, shutdown).
//!
//! Every request is spawned, so callers holding the cluster lock never wait on the network.
//! Launch failures come back to the master loop as [`Internal::LaunchFailed`]; kills and
//! shutdowns are retried a few times; acknowledgements are best effort (an agent re-sends an
//! unacknowledged update, and the framework acknowledges it again).

use std::time::Duration;

use drove_proto::agent::{
    AcknowledgeUpdate, KillTask, LaunchTask, ShutdownFramework, ACKNOWLEDGE_PATH, KILL_PATH,
    LAUNCH_PATH, SHUTDOWN_PATH,
};
use serde::Serialize;
use tokio::sync::mpsc;

/// An HTTP client for calls to agents: every request carries the cluster secret, if any, and
/// is bounded in time.
pub fn agent_http(secret: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(Ok(mut v)) =
        secret.map(|s| reqwest::header::HeaderValue::from_str(&drove_proto::auth::bearer(s)))
    {
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

/// Work for the master's own loop, raised from spawned requests.
#[derive(Debug)]
pub enum Internal {
    LaunchDelivered {
        framework_id: String,
        task_id: String,
    },
    LaunchFailed {
        framework_id: String,
        task_id: String,
        message: String,
    },
}

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    internal: mpsc::UnboundedSender<Internal>,
}

impl AgentClient {
    /// A client whose every call carries `secret`, when the cluster has one.
    pub fn new(internal: mpsc::UnboundedSender<Internal>, secret: Option<&str>) -> Self {
        AgentClient {
            http: agent_http(secret),
            internal,
        }
    }

    pub fn launch(&self, endpoint: &str, msg: LaunchTask) {
        let this = self.clone();
        let url = format!("{endpoint}{LAUNCH_PATH}");
        tokio::spawn(async move {
            let result = this.post(&url, &msg).await;
            if result.is_ok() {
                let _ = this.internal.send(Internal::LaunchDelivered {
                    framework_id: msg.framework_id.value.clone(),
                    task_id: msg.task.task_id.value.clone(),
                });
            }
            if let Err(message) = result {
                tracing::warn!(%url, task = %msg.task.task_id, %message, "launch not delivered");
                let _ = this.internal.send(Internal::LaunchFailed {
                    framework_id: msg.framework_id.value,
                    task_id: msg.task.task_id.value,
                    message: format!("agent could not be reached to launch the task: {message}"),
                });
            }
        });
    }

    pub fn kill(&self, endpoint: &str, msg: KillTask) {
        self.retrying(format!("{endpoint}{KILL_PATH}"), msg, 5);
    }

    pub fn shutdown(&self, endpoint: &str, msg: ShutdownFramework) {
        self.retrying(format!("{endpoint}{SHUTDOWN_PATH}"), msg, 5);
    }

    pub fn acknowledge(&self, endpoint: &str, msg: AcknowledgeUpdate) {
        self.retrying(format!("{endpoint}{ACKNOWLEDGE_PATH}"), msg, 1);
    }

    fn retrying<T: Serialize + Send + Sync + 'static>(&self, url: String, msg: T, attempts: u32) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=attempts {
                match this.post(&url, &msg).await {
                    Ok(()) => return,
                    Err(message) if attempt == attempts => {
                        tracing::warn!(%url, %message, "request to agent failed; giving up");
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
    }

    async fn post<T: Serialize>(&self, url: &str, msg: &T) -> Result<(), String> {
        let resp = self
            .http
            .post(url)
            .json(msg)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Err(format!("{status}: {body}"))
        }
    }
}
