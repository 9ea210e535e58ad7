//! What a change to the cluster asks of the world. The cluster does no I/O: its changes record
//! effects in its [`Outbox`], and the guard [`crate::Shared::lock`] hands out does them, in
//! order, before it lets the lock go (as the PaaS's state does). Its tests read them instead.

use drove_proto::agent::{AcknowledgeUpdate, KillTask, LaunchTask, ShutdownFramework};
use drove_proto::scheduler::Event;

use super::{Connection, Framework};
use crate::agent_client::AgentClient;
use crate::store::{Store, StoreOp};

/// One thing to do.
#[derive(Debug)]
pub enum Effect {
    /// A write for the store's queue.
    Store(StoreOp),
    /// A call to the agent at `endpoint`.
    Agent { endpoint: String, call: AgentCall },
    /// An event for a subscription stream.
    Event { to: Connection, event: Box<Event> },
}

/// A call to an agent.
#[derive(Debug)]
pub enum AgentCall {
    Launch(Box<LaunchTask>),
    Kill(KillTask),
    Shutdown(ShutdownFramework),
    Acknowledge(AcknowledgeUpdate),
}

impl Effect {
    /// Does it: the write is queued, the call spawned, the event queued on its stream (a
    /// stream whose queue is full is closed).
    pub fn apply(self, store: &Store, agents: &AgentClient) {
        match self {
            Effect::Store(op) => store.apply(op),
            Effect::Agent { endpoint, call } => match call {
                AgentCall::Launch(m) => agents.launch(&endpoint, *m),
                AgentCall::Kill(m) => agents.kill(&endpoint, m),
                AgentCall::Shutdown(m) => agents.shutdown(&endpoint, m),
                AgentCall::Acknowledge(m) => agents.acknowledge(&endpoint, m),
            },
            Effect::Event { to, event } => to.send(*event),
        }
    }
}

/// The effects of the changes made since they were last taken.
#[derive(Debug, Default)]
pub struct Outbox(Vec<Effect>);

impl Outbox {
    pub fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.0)
    }

    /// A write for the store.
    pub fn apply(&mut self, op: StoreOp) {
        self.0.push(Effect::Store(op));
    }

    /// An event for `fw`'s subscription, if it has one.
    pub fn send(&mut self, fw: &Framework, event: Event) {
        if let Some(conn) = &fw.conn {
            self.event(conn.clone(), event);
        }
    }

    /// An event for the stream `to` (one being replaced, say).
    pub fn event(&mut self, to: Connection, event: Event) {
        self.0.push(Effect::Event {
            to,
            event: Box::new(event),
        });
    }

    fn agent(&mut self, endpoint: &str, call: AgentCall) {
        self.0.push(Effect::Agent {
            endpoint: endpoint.to_string(),
            call,
        });
    }

    pub fn launch(&mut self, endpoint: &str, msg: LaunchTask) {
        self.agent(endpoint, AgentCall::Launch(Box::new(msg)));
    }

    pub fn kill(&mut self, endpoint: &str, msg: KillTask) {
        self.agent(endpoint, AgentCall::Kill(msg));
    }

    pub fn shutdown(&mut self, endpoint: &str, msg: ShutdownFramework) {
        self.agent(endpoint, AgentCall::Shutdown(msg));
    }

    pub fn acknowledge(&mut self, endpoint: &str, msg: AcknowledgeUpdate) {
        self.agent(endpoint, AgentCall::Acknowledge(msg));
    }
}
