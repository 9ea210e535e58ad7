//! Marathon's event bus: every event is a JSON object with `eventType` and `timestamp`,
//! broadcast to `/v2/events` subscribers (server-sent events). A subscriber that falls behind
//! loses the oldest events (and is told with a comment line), never slows the scheduler.

use drove_proto::mesos::TaskStatus;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::app::AppDefinition;
use crate::state::{timestamp, Action, Deployment, Instance};

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Value>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        let (tx, _) = broadcast::channel(4096);
        Events { tx }
    }

    pub fn publish(&self, mut event: Value) {
        if event.get("timestamp").is_none() {
            event["timestamp"] = json!(timestamp());
        }
        tracing::debug!(event = %event["eventType"], "event");
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.tx.subscribe()
    }
}

pub fn api_post(client_ip: &str, uri: &str, def: &AppDefinition) -> Value {
    json!({"eventType": "api_post_event", "clientIp": client_ip, "uri": uri,
           "appDefinition": def.to_json()})
}

pub fn status_update(i: &Instance, status: &TaskStatus) -> Value {
    json!({
        "eventType": "status_update_event",
        "slaveId": i.agent_id, "taskId": i.task_id, "taskStatus": status.state.as_str(),
        "message": status.message.clone().unwrap_or_default(), "appId": i.app_id,
        "host": i.host, "ports": i.ports, "ipAddresses": [], "version": i.version,
    })
}

pub fn health_changed(i: &Instance, alive: bool) -> Value {
    json!({"eventType": "health_status_changed_event", "appId": i.app_id, "taskId": i.task_id,
           "instanceId": i.task_id, "version": i.version, "alive": alive})
}

pub fn unhealthy_kill(i: &Instance, reason: &str) -> Value {
    json!({"eventType": "unhealthy_task_kill_event", "appId": i.app_id, "taskId": i.task_id,
           "version": i.version, "reason": reason, "host": i.host, "slaveId": i.agent_id})
}

pub fn instance_changed(i: &Instance, condition: &str) -> Value {
    json!({"eventType": "instance_changed_event", "instanceId": i.task_id,
           "condition": condition, "runSpecId": i.app_id, "agentId": i.agent_id, "host": i.host,
           "runSpecVersion": i.version, "goal": if i.killing { "Decommissioned" } else { "Running" }})
}

fn plan(d: &Deployment, app_id: &str) -> Value {
    json!({"id": d.id, "version": d.version,
           "steps": [{"actions": [{"action": d.action, "app": app_id}]}],
           "original": {"id": "/", "apps": d.previous.iter().map(|p| p.to_json()).collect::<Vec<_>>()}})
}

pub fn deployment_info(d: &Deployment, def: &AppDefinition, action: Action) -> Value {
    let mut p = plan(d, &def.id);
    p["target"] = json!({"id": "/", "apps": [def.to_json()]});
    json!({"eventType": "deployment_info", "plan": p,
           "currentStep": {"actions": [{"action": action, "app": def.id}]}})
}

pub fn deployment_success(d: &Deployment, app_id: &str) -> Value {
    json!({"eventType": "deployment_success", "id": d.id, "plan": plan(d, app_id)})
}

pub fn deployment_failed(d: &Deployment, app_id: &str, reason: &str) -> Value {
    json!({"eventType": "deployment_failed", "id": d.id, "plan": plan(d, app_id),
           "reason": reason})
}

pub fn app_terminated(app_id: &str) -> Value {
    json!({"eventType": "app_terminated_event", "appId": app_id})
}

pub fn scheduler(event_type: &str, extra: Value) -> Value {
    let mut v = json!({"eventType": event_type});
    if let (Value::Object(v), Value::Object(e)) = (&mut v, extra) {
        v.extend(e);
    }
    v
}
