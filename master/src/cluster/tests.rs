//! The cluster's transitions, driven with a manual clock: registration, ping timeouts,
//! framework failover, offers accepted, declined and rescinded, acknowledgements.

use std::time::Duration;

use drove_proto::agent::RegisterAgent;
use drove_proto::mesos::{MasterInfo, Resource, TaskId, TaskState, TaskStatus};
use drove_proto::scheduler::{Call, Event, EventType};
use serde_json::json;

use super::{AgentCall, AgentStatus, Cluster, ClusterConfig, Effect, Subscription};
use crate::clock::Clock;
use crate::store::StoreOp;

const PING: Duration = Duration::from_secs(1);
/// The agent's endpoint: calls to it are effects these tests read, never sent.
const AGENT: &str = "http://agent.test:5051";

struct Fixture {
    cluster: Cluster,
    clock: Clock,
}

fn cluster() -> Fixture {
    let clock = Clock::manual();
    let config = ClusterConfig {
        agent_ping_interval: PING,
        max_agent_ping_timeouts: 3,
        agent_reregister_timeout: Duration::from_secs(10),
        agent_removal_timeout: Duration::from_secs(60),
        heartbeat_interval: Duration::from_secs(15),
        allocation_interval: Duration::from_secs(1),
        min_allocatable: Vec::new(),
        completed_tasks_per_framework: 10,
    };
    let info = MasterInfo {
        id: "m".into(),
        ip: 0,
        port: 5050,
        hostname: None,
        version: None,
        address: None,
    };
    let cluster = Cluster::new(info, config, clock.clone());
    Fixture { cluster, clock }
}

/// Delivers the events the cluster's changes made to their streams, as the lock's guard does;
/// returns its other effects (store writes, calls to agents), in order.
fn deliver(c: &mut Cluster) -> Vec<Effect> {
    c.take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Event { to, event } => {
                to.send(*event);
                None
            }
            other => Some(other),
        })
        .collect()
}

/// Registers an agent with 2 cpus and 1 GiB; its id.
fn register(c: &mut Cluster) -> String {
    let registered = c
        .register_agent(RegisterAgent {
            agent_id: None,
            hostname: "h1".into(),
            endpoint: AGENT.into(),
            resources: vec![
                Resource::scalar("cpus", 2.0),
                Resource::scalar("mem", 1024.0),
            ],
            attributes: vec![],
            tasks: vec![],
            version: String::new(),
            agent_key: None,
        })
        .expect("registers");
    registered.agent_id.value
}

fn call(v: serde_json::Value) -> Call {
    serde_json::from_value(v).expect("a call as clients send it")
}

fn subscribe(c: &mut Cluster, failover_timeout: f64) -> Subscription {
    let call = call(json!({
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": {"user": "u", "name": "f",
                                         "failover_timeout": failover_timeout}},
    }));
    c.subscribe(&call, None).expect("subscribes")
}

/// The events sent so far on a subscription, heartbeats left out.
fn events(c: &mut Cluster, sub: &mut Subscription) -> Vec<Event> {
    deliver(c);
    let mut out = Vec::new();
    while let Ok(e) = sub.events.try_recv() {
        if e.kind != EventType::Heartbeat {
            out.push(e);
        }
    }
    out
}

/// Allocates and returns the offer ids the framework was sent.
fn offers(c: &mut Cluster, sub: &mut Subscription) -> Vec<String> {
    c.allocate();
    events(c, sub)
        .into_iter()
        .filter_map(|e| e.offers)
        .flat_map(|o| o.offers)
        .map(|o| o.id.value)
        .collect()
}

/// Accepts `offer` with a launch of task `t1` (1 cpu) on `agent`.
fn launch(c: &mut Cluster, fw: &str, offer: &str, agent: &str) {
    let accept = call(json!({
        "type": "ACCEPT",
        "accept": {"offer_ids": [{"value": offer}], "operations": [{"type": "LAUNCH",
            "launch": {"task_infos": [{"name": "t", "task_id": {"value": "t1"},
                "agent_id": {"value": agent},
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}}],
                "command": {"value": "true"}}]}}]},
    }));
    c.accept(fw, accept.accept.as_ref().expect("accept"));
}

#[test]
fn a_registered_agent_is_active_and_a_silent_one_becomes_unreachable() {
    let mut f = cluster();
    let agent = register(&mut f.cluster);
    assert_eq!(f.cluster.agents[&agent].status, AgentStatus::Active);
    // Pings within the limit keep it active (the positive control).
    for _ in 0..5 {
        f.clock.advance(PING * 2);
        assert!(f.cluster.ping(&agent));
        f.cluster.check_agents();
        assert_eq!(f.cluster.agents[&agent].status, AgentStatus::Active);
    }
    // Silent past interval × max timeouts: unreachable, and its pings are refused.
    f.clock.advance(PING * 3 + Duration::from_millis(1));
    f.cluster.check_agents();
    assert!(matches!(
        f.cluster.agents[&agent].status,
        AgentStatus::Unreachable { .. }
    ));
    assert!(!f.cluster.ping(&agent), "it must re-register");
    // Unreachable past the removal timeout: removed for good.
    f.clock.advance(Duration::from_secs(61));
    f.cluster.check_agents();
    assert!(!f.cluster.agents.contains_key(&agent));
}

#[test]
fn offers_are_made_declined_accepted_and_rescinded() {
    let mut f = cluster();
    let agent = register(&mut f.cluster);
    let mut sub = subscribe(&mut f.cluster, 60.0);
    let first = events(&mut f.cluster, &mut sub);
    assert_eq!(first[0].kind, EventType::Subscribed);
    let fw = sub.framework_id.value.clone();

    let offered = offers(&mut f.cluster, &mut sub);
    assert_eq!(offered.len(), 1, "one agent, one offer");
    assert_eq!(f.cluster.offers.len(), 1);
    // Declined with a filter: not offered again until it expires.
    let decline = call(json!({
        "type": "DECLINE",
        "decline": {"offer_ids": [{"value": offered[0]}], "filters": {"refuse_seconds": 30.0}},
    }));
    f.cluster
        .decline(&fw, decline.decline.as_ref().expect("decline"));
    assert!(f.cluster.offers.is_empty());
    assert!(offers(&mut f.cluster, &mut sub).is_empty(), "filtered");
    f.clock.advance(Duration::from_secs(31));
    let again = offers(&mut f.cluster, &mut sub);
    assert_eq!(again.len(), 1, "offered again once the filter expired");

    // Accepted with a launch: the task is the master's, staging on the agent.
    launch(&mut f.cluster, &fw, &again[0], &agent);
    assert!(f.cluster.offers.is_empty());
    assert_eq!(
        f.cluster.frameworks[&fw].tasks["t1"].state,
        TaskState::TaskStaging
    );

    // The rest of the agent is refused for Mesos's default 5 s, then offered; losing the agent
    // rescinds that offer.
    assert!(offers(&mut f.cluster, &mut sub).is_empty(), "filtered");
    f.clock.advance(Duration::from_secs(6));
    let rest = offers(&mut f.cluster, &mut sub);
    assert_eq!(rest.len(), 1);
    f.clock.advance(PING * 4);
    f.cluster.check_agents();
    let rescinded: Vec<String> = events(&mut f.cluster, &mut sub)
        .iter()
        .filter_map(|e| e.rescind.as_ref())
        .map(|r| r.offer_id.value.clone())
        .collect();
    assert_eq!(rescinded, rest);
    assert!(f.cluster.offers.is_empty());
}

#[test]
fn a_disconnected_framework_fails_over_within_its_timeout_and_is_removed_after() {
    let mut f = cluster();
    register(&mut f.cluster);
    let sub = subscribe(&mut f.cluster, 30.0);
    let fw = sub.framework_id.value.clone();
    f.cluster.stream_closed(&fw, &sub.stream_id);
    // Within the failover timeout it stays, and may come back with its id.
    f.clock.advance(Duration::from_secs(20));
    f.cluster.check_frameworks();
    assert!(f.cluster.frameworks.contains_key(&fw));
    let again = call(json!({
        "type": "SUBSCRIBE", "framework_id": {"value": fw},
        "subscribe": {"framework_info": {"user": "u", "name": "f", "id": {"value": fw},
                                         "failover_timeout": 30.0}},
    }));
    let back = f.cluster.subscribe(&again, None).expect("fails over");
    assert_eq!(back.framework_id.value, fw);
    // Gone again and silent past the timeout: torn down, and it may not come back.
    f.cluster.stream_closed(&fw, &back.stream_id);
    f.clock.advance(Duration::from_secs(31));
    f.cluster.check_frameworks();
    assert!(!f.cluster.frameworks.contains_key(&fw));
    assert!(f.cluster.subscribe(&again, None).is_err());
}

#[test]
fn an_acknowledged_terminal_update_retires_the_task() {
    let mut f = cluster();
    let agent = register(&mut f.cluster);
    let mut sub = subscribe(&mut f.cluster, 60.0);
    let fw = sub.framework_id.value.clone();
    let offered = offers(&mut f.cluster, &mut sub);
    launch(&mut f.cluster, &fw, &offered[0], &agent);
    // The launch is stored before it goes to the agent.
    let launched = deliver(&mut f.cluster);
    let stored = launched
        .iter()
        .position(|e| matches!(e, Effect::Store(StoreOp::UpsertTask(_))));
    let sent = launched.iter().position(|e| {
        matches!(e, Effect::Agent { endpoint, call: AgentCall::Launch(l) }
            if endpoint == AGENT && l.task.task_id.value == "t1")
    });
    assert!(
        matches!((stored, sent), (Some(s), Some(c)) if s < c),
        "{launched:?}"
    );
    let uuid = "AAAAAAAAAAAAAAAAAAAAAA==";
    let mut finished = TaskStatus::new(TaskId::new("t1"), TaskState::TaskFinished);
    finished.uuid = Some(uuid.into());
    assert!(f
        .cluster
        .agent_status(&agent, &sub.framework_id.clone(), finished));
    let update = events(&mut f.cluster, &mut sub)
        .into_iter()
        .find_map(|e| e.update)
        .expect("the framework is sent the update");
    assert_eq!(update.status.state, TaskState::TaskFinished);
    assert!(
        f.cluster.frameworks[&fw].tasks.contains_key("t1"),
        "kept until acknowledged"
    );
    // A bad uuid is refused and changes nothing (the good one below is the positive control).
    let bad = call(json!({"type": "ACKNOWLEDGE",
        "acknowledge": {"agent_id": {"value": agent}, "task_id": {"value": "t1"}, "uuid": "%%"}}));
    assert!(f
        .cluster
        .acknowledge(&fw, bad.acknowledge.as_ref().expect("ack"))
        .is_err());
    assert!(f.cluster.frameworks[&fw].tasks.contains_key("t1"));
    let ack = call(json!({"type": "ACKNOWLEDGE",
        "acknowledge": {"agent_id": {"value": agent}, "task_id": {"value": "t1"}, "uuid": uuid}}));
    f.cluster
        .acknowledge(&fw, ack.acknowledge.as_ref().expect("ack"))
        .expect("acknowledged");
    assert!(
        !f.cluster.frameworks[&fw].tasks.contains_key("t1"),
        "retired"
    );
    // The agent is told, so it stops re-sending the update.
    let acked = deliver(&mut f.cluster);
    assert!(
        acked.iter().any(|e| matches!(e,
            Effect::Agent { endpoint, call: AgentCall::Acknowledge(a) }
                if endpoint == AGENT && a.uuid == uuid)),
        "{acked:?}"
    );
}

#[test]
fn the_state_reads_as_the_dashboards_types() {
    let mut f = cluster();
    let agent = register(&mut f.cluster);
    let mut sub = subscribe(&mut f.cluster, 60.0);
    let offered = offers(&mut f.cluster, &mut sub);
    assert_eq!(offered.len(), 1);
    let v = crate::read_api::state_json(&f.cluster, "master@127.0.0.1:5050");
    let state: drove_proto::master_state::MasterState =
        serde_json::from_value(v).expect("reads as the typed subset");
    assert_eq!(state.slaves.len(), 1);
    let a = &state.slaves[0];
    assert_eq!((a.id.as_str(), a.hostname.as_str()), (agent.as_str(), "h1"));
    assert!(a.active && !a.recovering && a.last_ping_seconds_ago.is_some());
    assert_eq!((a.resources.cpus, a.resources.mem), (2.0, 1024.0));
    assert_eq!(a.offered_resources.cpus, 2.0, "all of it is offered");
    let fw = &state.frameworks[0];
    assert_eq!((fw.name.as_str(), fw.active), ("f", true));
    assert_eq!(fw.offers.len(), 1);
    assert_eq!(fw.offers[0].id, offered[0]);
    assert_eq!(state.hostname(&fw.offers[0].agent_id), "h1");
    assert!(fw
        .allocator
        .as_ref()
        .is_some_and(|al| al.last_allocation.is_some()));
}
