//! Marathon's event bus: every event is an [`Event`] (tagged `eventType`, with a `timestamp`),
//! broadcast to `/v2/events` subscribers (server-sent events) and the dashboard's live pages. A
//! subscriber that falls behind loses the oldest events (and is told with a comment line),
//! never slows the scheduler.

use drove_proto::mesos::TaskStatus;
pub use drove_proto::paas::Event;
use drove_proto::paas::{Group, Plan, PlanAction, Step};
use tokio::sync::broadcast;

use crate::model::app::AppDefinition;
use crate::model::deployment::{Action, Deployment};
use crate::model::instance::Instance;
use crate::model::timestamp;

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
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

    pub fn publish(&self, event: Event) {
        tracing::debug!(event = event.kind(), "event");
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

pub fn api_post(client_ip: &str, uri: &str, def: &AppDefinition) -> Event {
    Event::ApiPost {
        client_ip: client_ip.to_string(),
        uri: uri.to_string(),
        app_definition: def.to_json(),
        timestamp: timestamp(),
    }
}

pub fn status_update(i: &Instance, status: &TaskStatus) -> Event {
    Event::StatusUpdate {
        slave_id: i.agent_id.clone(),
        task_id: i.task_id.clone(),
        task_status: status.state.as_str().to_string(),
        message: status.message.clone().unwrap_or_default(),
        app_id: i.app_id.clone(),
        host: i.host.clone(),
        ports: i.ports.clone(),
        ip_addresses: Vec::new(),
        version: i.version.clone(),
        timestamp: timestamp(),
    }
}

pub fn health_changed(i: &Instance, alive: bool) -> Event {
    Event::HealthStatusChanged {
        app_id: i.app_id.clone(),
        task_id: i.task_id.clone(),
        instance_id: i.task_id.clone(),
        version: i.version.clone(),
        alive,
        timestamp: timestamp(),
    }
}

pub fn unhealthy_kill(i: &Instance, reason: &str) -> Event {
    Event::UnhealthyTaskKill {
        app_id: i.app_id.clone(),
        task_id: i.task_id.clone(),
        version: i.version.clone(),
        reason: reason.to_string(),
        host: i.host.clone(),
        slave_id: i.agent_id.clone(),
        timestamp: timestamp(),
    }
}

pub fn instance_changed(i: &Instance, condition: &str) -> Event {
    Event::InstanceChanged {
        instance_id: i.task_id.clone(),
        condition: condition.to_string(),
        run_spec_id: i.app_id.clone(),
        agent_id: i.agent_id.clone(),
        host: i.host.clone(),
        run_spec_version: i.version.clone(),
        goal: if i.killing {
            "Decommissioned"
        } else {
            "Running"
        }
        .to_string(),
        timestamp: timestamp(),
    }
}

fn step(action: Action, app_id: &str) -> Step {
    Step {
        actions: vec![PlanAction {
            action,
            app: app_id.to_string(),
        }],
    }
}

fn plan(d: &Deployment, app_id: &str) -> Plan {
    Plan {
        id: d.id.clone(),
        version: d.version.clone(),
        steps: vec![step(d.action, app_id)],
        original: Group::root(d.previous.iter().map(|p| p.to_json()).collect()),
        target: None,
    }
}

pub fn deployment_info(d: &Deployment, def: &AppDefinition, action: Action) -> Event {
    let mut p = plan(d, &def.id);
    p.target = Some(Group::root(vec![def.to_json()]));
    Event::DeploymentInfo {
        plan: p,
        current_step: step(action, &def.id),
        timestamp: timestamp(),
    }
}

pub fn deployment_success(d: &Deployment, app_id: &str) -> Event {
    Event::DeploymentSuccess {
        id: d.id.clone(),
        plan: plan(d, app_id),
        timestamp: timestamp(),
    }
}

pub fn deployment_failed(d: &Deployment, app_id: &str, reason: &str) -> Event {
    Event::DeploymentFailed {
        id: d.id.clone(),
        plan: plan(d, app_id),
        reason: reason.to_string(),
        timestamp: timestamp(),
    }
}

pub fn app_terminated(app_id: &str) -> Event {
    Event::AppTerminated {
        app_id: app_id.to_string(),
        timestamp: timestamp(),
    }
}
