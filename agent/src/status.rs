//! The status-update manager: ordered, checkpointed, at-least-once delivery per task.
//!
//! Every update gets a fresh uuid (16 random bytes, base64) and is appended to its task's
//! queue (checkpointed). One update per task is in flight: the head is POSTed to
//! `{master}/agent/v1/status` and resent every 1 s, doubling to 10 s, (and at once after a
//! (re-)registration) until `POST /agent/v1/acknowledge` names its uuid; then the next one goes.
//! A terminal task whose queue is empty is forgotten (its sandbox stays).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use drove_proto::agent::{AcknowledgeUpdate, StatusUpdate, STATUS_PATH};
use drove_proto::mesos::{
    ContainerStatus, IpAddress, Label, Labels, NetworkInfo, PortMapping, TaskSource, TaskState,
    TaskStatus, STEP_LABEL,
};

use crate::checkpoint::Durable;
use crate::node::{key_of, Node, TaskKey};

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// How long after `failures` failed sends in a row an update is sent again: [`FIRST_RETRY`],
/// doubling up to [`MAX_RETRY`] (backon's exponential schedule, without jitter: the master
/// dedupes by uuid, and agents are few).
pub fn retry_delay(failures: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(MAX_RETRY)
        .with_factor(2.0)
        .without_max_times()
        .build()
        // Past 16 doublings every delay is the cap.
        .nth(failures.clamp(1, 16) as usize - 1)
        .unwrap_or(MAX_RETRY)
}

/// Optional parts of an update.
#[derive(Debug, Clone, Default)]
pub struct UpdateOpts {
    pub source: Option<TaskSource>,
    pub reason: Option<&'static str>,
    pub message: Option<String>,
    pub healthy: Option<bool>,
}

impl UpdateOpts {
    pub fn executor() -> Self {
        UpdateOpts {
            source: Some(TaskSource::SourceExecutor),
            ..Default::default()
        }
    }
    pub fn agent() -> Self {
        UpdateOpts {
            source: Some(TaskSource::SourceAgent),
            ..Default::default()
        }
    }
    pub fn reason(mut self, r: &'static str) -> Self {
        self.reason = Some(r);
        self
    }
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }
    /// Adds lines below the message (what a failed task last wrote).
    pub fn append_message(mut self, more: &str) -> Self {
        self.message = Some(match self.message.take() {
            Some(m) => format!("{m}\n{more}"),
            None => more.to_string(),
        });
        self
    }
    pub fn healthy(mut self, h: Option<bool>) -> Self {
        self.healthy = h;
        self
    }
}

pub fn new_uuid() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// Records a new state for a task and queues the update. Returns false for an unknown task.
pub fn update(node: &Node, key: &TaskKey, state: TaskState, opts: UpdateOpts) -> bool {
    let agent_id = node.agent_id();
    {
        let mut tasks = node.tasks();
        let Some(rec) = tasks.get_mut(key) else {
            return false;
        };
        if rec.state.is_terminal() {
            tracing::warn!(task = %rec.task.task_id, state = state.as_str(), "ignoring update after a terminal state");
            return false;
        }
        let mut status = TaskStatus::new(rec.task.task_id.clone(), state);
        status.source = opts.source;
        status.reason = opts.reason.map(str::to_string);
        status.message = opts.message;
        status.agent_id = agent_id.clone();
        status.uuid = Some(new_uuid());
        if opts.healthy.is_some() {
            rec.healthy = opts.healthy;
        }
        status.healthy = opts.healthy.or(if rec.task.health_check.is_some() {
            rec.healthy
        } else {
            None
        });
        let network_infos: Vec<NetworkInfo> = rec
            .network
            .iter()
            .map(|a| NetworkInfo {
                name: Some(crate::container::network::NETWORK_NAME.into()),
                ip_addresses: vec![IpAddress {
                    protocol: Some("IPv4".into()),
                    ip_address: Some(a.ip.to_string()),
                }],
                port_mappings: a
                    .ports
                    .iter()
                    .map(|p| PortMapping {
                        host_port: u32::from(p.host_port),
                        container_port: u32::from(p.container_port),
                        protocol: Some(p.protocol.as_str().into()),
                    })
                    .collect(),
            })
            .collect();
        if state == TaskState::TaskRunning && !rec.steps.is_empty() {
            status.labels = Some(Labels {
                labels: rec
                    .steps
                    .iter()
                    .map(|(step, d)| Label {
                        key: format!("{STEP_LABEL}{step}"),
                        value: Some(format!("{:.3}", d.as_secs_f64() * 1000.0)),
                    })
                    .collect(),
            });
        }
        if rec.task_pid.is_some() || !network_infos.is_empty() {
            status.container_status = Some(ContainerStatus {
                executor_pid: rec.task_pid,
                network_infos,
            });
        }
        tracing::info!(
            task = %rec.task.task_id,
            state = state.as_str(),
            reason = status.reason.as_deref().unwrap_or(""),
            message = status.message.as_deref().unwrap_or(""),
            "status update"
        );
        rec.state = state;
        rec.latest = Some(status.clone());
        let was_empty = rec.pending.is_empty();
        rec.pending.push_back(StatusUpdate {
            agent_id: agent_id.unwrap_or_else(|| drove_proto::mesos::AgentId::new("")),
            framework_id: rec.framework_id.clone(),
            status,
        });
        if was_empty {
            rec.next_send = Some(Instant::now());
            rec.failed_sends = 0;
        }
        // Sent only once on disk, so an update the master saw survives an agent crash.
        rec.durable = node.checkpoint(rec);
    }
    node.status_wakeup.notify_one();
    true
}

/// Handles an acknowledgement. Returns whether it matched a pending update.
pub fn acknowledge(node: &Node, ack: &AcknowledgeUpdate) -> bool {
    let key = key_of(&ack.framework_id, &ack.task_id);
    let matched;
    {
        let mut tasks = node.tasks();
        let Some(rec) = tasks.get_mut(&key) else {
            return false;
        };
        let pos = rec
            .pending
            .iter()
            .position(|u| u.status.uuid.as_deref() == Some(ack.uuid.as_str()));
        matched = pos.is_some();
        if let Some(pos) = pos {
            rec.pending.remove(pos);
            if pos == 0 {
                rec.failed_sends = 0;
                rec.next_send = Some(Instant::now());
            }
        }
        if rec.state.is_terminal() && rec.pending.is_empty() && !rec.busy() {
            tracing::info!(task = %rec.task.task_id, "terminal task fully acknowledged; forgetting it");
            node.remove_checkpoint(&rec.container_id);
            if let Some(c) = &rec.cancel {
                c.cancel();
            }
            tasks.remove(&key);
        } else if matched {
            node.checkpoint(rec);
        }
    }
    if matched {
        node.status_wakeup.notify_one();
    }
    matched
}

/// Makes every pending head due now (after a re-registration).
pub fn resend_all_now(node: &Node) {
    let now = Instant::now();
    for rec in node.tasks().values_mut() {
        if !rec.pending.is_empty() {
            rec.next_send = Some(now);
            rec.failed_sends = 0;
        }
    }
    node.status_wakeup.notify_one();
}

/// Forgets terminal tasks without pending updates (after recovery).
pub fn forget_finished(node: &Node) {
    let mut tasks = node.tasks();
    let done: Vec<TaskKey> = tasks
        .iter()
        .filter(|(_, r)| r.state.is_terminal() && r.pending.is_empty() && !r.busy())
        .map(|(k, _)| k.clone())
        .collect();
    for k in done {
        if let Some(r) = tasks.remove(&k) {
            node.remove_checkpoint(&r.container_id);
        }
    }
}

/// The sender loop; returns when the agent shuts down.
pub async fn run_sender(node: Arc<Node>) {
    let mut registered = node.registered.subscribe();
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = node.status_wakeup.notified() => {}
            _ = registered.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if !node.is_registered() {
            continue;
        }
        let now = Instant::now();
        let due: Vec<(TaskKey, StatusUpdate, Option<Durable>)> = {
            let mut tasks = node.tasks();
            tasks
                .iter_mut()
                .filter_map(|(k, r)| {
                    let head = r.pending.front()?;
                    if r.in_flight || r.next_send.is_some_and(|t| t > now) {
                        return None;
                    }
                    r.in_flight = true;
                    Some((k.clone(), head.clone(), r.durable.clone()))
                })
                .collect()
        };
        for (key, update, durable) in due {
            let node = node.clone();
            tokio::spawn(async move {
                if let Some(d) = durable {
                    d.wait().await;
                }
                send_one(&node, &key, update).await;
            });
        }
    }
}

async fn send_one(node: &Node, key: &TaskKey, mut update: StatusUpdate) {
    // The agent id may have been assigned after the update was queued.
    if let Some(id) = node.agent_id() {
        update.agent_id = id.clone();
        if update.status.agent_id.is_none() {
            update.status.agent_id = Some(id);
        }
    }
    let url = format!("{}{}", node.config.master, STATUS_PATH);
    let generation = node.registration_generation();
    let mut req = node.client.post(&url).json(&update);
    if let Some(session) = node.session() {
        req = req.header(drove_proto::agent::SESSION_HEADER, session);
    }
    let result = req.send().await;
    match result {
        Ok(resp) if resp.status().is_success() => {
            tracing::debug!(task = %update.status.task_id, state = update.status.state.as_str(), "update sent");
        }
        Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {
            if node.request_reregistration(generation) {
                tracing::warn!(task = %update.status.task_id, "the master does not know this agent; re-registering");
            } else {
                tracing::debug!(task = %update.status.task_id, "status 404 while (or before) re-registering; no new registration");
            }
        }
        Ok(resp) => {
            tracing::warn!(task = %update.status.task_id, status = %resp.status(), "master refused a status update");
        }
        Err(e) => {
            tracing::debug!(task = %update.status.task_id, error = %e, "sending a status update failed");
        }
    }
    let mut tasks = node.tasks();
    if let Some(rec) = tasks.get_mut(key) {
        rec.in_flight = false;
        let same_head =
            rec.pending.front().and_then(|u| u.status.uuid.clone()) == update.status.uuid;
        if same_head {
            rec.failed_sends = rec.failed_sends.saturating_add(1);
            rec.next_send = Some(Instant::now() + retry_delay(rec.failed_sends));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_double_from_the_first_retry_up_to_the_cap() {
        assert_eq!(retry_delay(1), FIRST_RETRY);
        assert_eq!(retry_delay(2), FIRST_RETRY * 2);
        assert_eq!(retry_delay(3), FIRST_RETRY * 4);
        assert_eq!(retry_delay(5), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }
}
