//! Registration with the master and the ping loop.
//!
//! `POST {master}/agent/v1/register` with [`RegisterAgent`] (the saved agent id and every task
//! still tracked, on re-registration), retried with a randomized backoff doubling from 0.25 s to
//! 5 s (plus up to as much jitter) while the master is unreachable. Then `POST /agent/v1/ping` every
//! `ping_interval_seconds`; a 404 means the master forgot this agent (it restarted, or declared
//! the agent gone): the agent re-registers at once with the same id and its tasks.
//!
//! One re-registration at a time: ping and status 404s go through
//! [`Node::request_reregistration`], which ignores a 404 while a registration is wanted or in
//! flight, or when the request that got it was sent before the latest registration completed.

use std::sync::Arc;
use std::time::Duration;

use drove_proto::agent::{Ping, RegisterAgent, Registered, PING_PATH, REGISTER_PATH};

use crate::node::Node;
use crate::status;

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Delays between registration attempts: doubling from 0.25 s to 5 s, each with up to as much
/// again of random jitter (so agents restarted together spread out).
fn delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}

fn register_body(node: &Node) -> RegisterAgent {
    RegisterAgent {
        agent_id: node.agent_id(),
        hostname: node.config.hostname.clone(),
        endpoint: node.config.endpoint.clone(),
        resources: node.config.resources.to_mesos(),
        attributes: node.config.attributes.clone(),
        tasks: node.agent_tasks(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        agent_key: node.meta.load_agent_key(),
    }
}

/// Registers, retrying until it works or the agent shuts down.
async fn register(node: &Node) -> Option<Registered> {
    let url = format!("{}{}", node.config.master, REGISTER_PATH);
    let mut delays = delays();
    loop {
        let body = register_body(node);
        let result = node.client.post(&url).json(&body).send().await;
        let err = match result {
            Ok(resp) if resp.status().is_success() => match resp.json::<Registered>().await {
                Ok(r) => return Some(r),
                Err(e) => format!("undecodable Registered: {e}"),
            },
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                format!("HTTP {status}: {text}")
            }
            Err(e) => e.to_string(),
        };
        let delay = delays.next().unwrap_or(MAX_BACKOFF);
        tracing::warn!(master = %node.config.master, error = %err, retry_in = ?delay, "registration failed");
        tokio::select! {
            _ = node.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Registration + ping loop; returns when the agent shuts down.
pub async fn run(node: Arc<Node>) {
    loop {
        node.registration_started();
        let Some(reg) = register(&node).await else {
            return;
        };
        let generation = node.registration_done();
        let reregistered = node.agent_id().is_some();
        tracing::info!(agent_id = %reg.agent_id, master_id = %reg.master_id, reregistered, "registered with the master");
        node.set_agent_id(reg.agent_id.clone());
        if let Some(key) = &reg.agent_key {
            if let Err(e) = node.meta.save_agent_key(key) {
                tracing::error!(error = %e, "could not persist the agent key; the next \
                    re-registration of this id will be refused");
            }
        }
        node.set_session(reg.session.clone());
        node.registered.send_replace(true);
        status::resend_all_now(&node);

        let interval = node
            .config
            .ping_interval
            .unwrap_or(reg.ping_interval_seconds);
        let interval = Duration::from_secs_f64(if interval.is_finite() && interval > 0.0 {
            interval.clamp(0.05, 60.0)
        } else {
            5.0
        });
        let url = format!("{}{}", node.config.master, PING_PATH);
        loop {
            tokio::select! {
                _ = node.shutdown.cancelled() => {
                    node.registered.send_replace(false);
                    return;
                }
                _ = node.reregister.notified() => {
                    // A stale wake-up (its request was answered by this registration) is
                    // ignored: one re-registration per 404 episode.
                    if node.reregistration_wanted() {
                        node.registered.send_replace(false);
                        break;
                    }
                    continue;
                }
                _ = tokio::time::sleep(interval) => {}
            }
            let ping = Ping {
                agent_id: reg.agent_id.clone(),
            };
            let mut req = node.client.post(&url).json(&ping);
            if let Some(session) = node.session() {
                req = req.header(drove_proto::agent::SESSION_HEADER, session);
            }
            match req.send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {
                    tracing::warn!("the master does not know this agent any more; re-registering");
                    node.request_reregistration(generation);
                    node.registered.send_replace(false);
                    break;
                }
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => tracing::warn!(status = %resp.status(), "ping refused"),
                Err(e) => tracing::warn!(error = %e, "ping failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_five_seconds_with_jitter() {
        let mut want = MIN_BACKOFF;
        for d in delays().take(12) {
            assert!(d >= want && d <= want * 2, "{d:?} vs {want:?}");
            want = (want * 2).min(MAX_BACKOFF);
        }
    }
}
