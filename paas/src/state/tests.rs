//! The rolling-deploy rules of `plan`, on a state with instances put in by hand.

use std::time::{Duration, Instant};

use drove_proto::mesos::TaskState;

use drove_proto::routing::RouteMessage;

use super::{new_rt, Effect, State};
use crate::model::app::AppDefinition;
use crate::model::deployment::Action;
use crate::model::instance::Instance;

/// A state alone: no store, no event bus, no runtime (its effects are only collected).
fn state() -> State {
    State::new(Duration::from_secs(10), Duration::from_secs(1))
}

fn def(n: u32, min: f64, max: f64, message: &str) -> AppDefinition {
    AppDefinition::from_value(serde_json::json!({
        "id": "/web", "cmd": "node app.js", "instances": n, "env": {"M": message},
        "upgradeStrategy": {"minimumHealthCapacity": min, "maximumOverCapacity": max},
    }))
    .expect("definition")
}

fn add(s: &mut State, config: &str, ready: bool) -> String {
    let id = format!("web.{}", uuid::Uuid::new_v4());
    s.instances.insert(
        id.clone(),
        Instance {
            task_id: id.clone(),
            app_id: "/web".into(),
            version: config.into(),
            config_version: config.into(),
            agent_id: "a1".into(),
            host: "127.0.0.2".into(),
            ip: None,
            ports: vec![31000],
            state: if ready {
                TaskState::TaskRunning
            } else {
                TaskState::TaskStaging
            },
            healthy: None,
            staged_at: format!("{config}-{id}"),
            started_at: None,
            killing: false,
            has_checks: false,
            drain_started: None,
            kill_sent: None,
            healthy_since: None,
        },
    );
    id
}

fn killing(s: &State) -> usize {
    s.instances.values().filter(|i| i.killing).count()
}

/// Installs `c1` with `n` ready instances, then changes the config to `c2`.
fn deploying(n: u32, min: f64, max: f64) -> State {
    let mut s = state();
    s.install(
        new_rt(def(n, min, max, "1"), "c1".into(), "c1".into(), "c1".into()),
        Action::StartApplication,
        None,
    );
    for _ in 0..n {
        add(&mut s, "c1", true);
    }
    s.plan(Instant::now());
    assert!(s.apps["/web"].deployment.is_none(), "c1 settled");
    s.install(
        new_rt(def(n, min, max, "2"), "c2".into(), "c2".into(), "c2".into()),
        Action::RestartApplication,
        Some(def(n, min, max, "1")),
    );
    s
}

#[test]
fn default_strategy_starts_all_new_and_keeps_the_old_until_they_serve() {
    let mut s = deploying(2, 1.0, 1.0);
    s.plan(Instant::now());
    assert_eq!(s.apps["/web"].wanted, 2);
    assert_eq!(killing(&s), 0);
    add(&mut s, "c2", false);
    add(&mut s, "c2", false);
    s.plan(Instant::now());
    assert_eq!(killing(&s), 0, "new ones not serving yet: the old stay");
    let ids: Vec<String> = s
        .instances
        .values()
        .filter(|i| i.config_version == "c2")
        .map(|i| i.task_id.clone())
        .collect();
    if let Some(i) = s.instances.get_mut(&ids[0]) {
        i.state = TaskState::TaskRunning;
    }
    s.plan(Instant::now());
    assert_eq!(killing(&s), 1, "one new serves: one old may go");
    if let Some(i) = s.instances.get_mut(&ids[1]) {
        i.state = TaskState::TaskRunning;
    }
    s.plan(Instant::now());
    assert_eq!(killing(&s), 2);
}

#[test]
fn one_zero_starts_one_new_then_kills_one_old() {
    let mut s = deploying(2, 1.0, 0.0);
    s.plan(Instant::now());
    assert_eq!(s.apps["/web"].wanted, 1, "one extra at a time");
    assert_eq!(killing(&s), 0, "the healthy floor is 2");
    add(&mut s, "c2", true);
    s.plan(Instant::now());
    assert_eq!(killing(&s), 1);
    assert_eq!(
        s.apps["/web"].wanted, 0,
        "the dying instance still counts against the ceiling"
    );
}

#[test]
fn zero_zero_never_runs_more_than_the_instances() {
    let mut s = deploying(3, 0.0, 0.0);
    s.plan(Instant::now());
    assert_eq!(killing(&s), 3, "no floor: every old instance goes");
    assert_eq!(s.apps["/web"].wanted, 0, "none new while the old still die");
    let dying: Vec<String> = s.instances.keys().cloned().collect();
    for id in dying {
        s.instances.remove(&id);
    }
    s.plan(Instant::now());
    assert_eq!(s.apps["/web"].wanted, 3);
}

#[test]
fn a_new_config_drops_the_old_backoff() {
    let mut s = deploying(1, 1.0, 1.0);
    if let Some(a) = s.apps.get_mut("/web") {
        a.failures = 5;
        a.delay_until = Some(Instant::now() + Duration::from_secs(600));
    }
    s.install(
        new_rt(def(1, 1.0, 1.0, "3"), "c3".into(), "c3".into(), "c3".into()),
        Action::RestartApplication,
        None,
    );
    s.plan(Instant::now());
    assert_eq!(s.apps["/web"].failures, 0);
    assert_eq!(s.apps["/web"].wanted, 1, "launches at once");
}

fn offer(agent: &str) -> drove_proto::mesos::Offer {
    serde_json::from_value(serde_json::json!({
        "id": {"value": format!("o-{agent}")}, "framework_id": {"value": "fw"},
        "agent_id": {"value": agent}, "hostname": agent,
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 4096.0}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31100}]}}
        ]
    }))
    .expect("offer")
}

/// A woken app starts on an agent it ran on before (its artifacts are in that agent's fetch
/// cache), whatever order the offers come in.
#[test]
fn a_wake_prefers_an_agent_the_app_ran_on() {
    let mut s = state();
    let d = def(1, 1.0, 1.0, "v1");
    s.install(
        new_rt(d.clone(), "v1".into(), "v1".into(), "v1".into()),
        Action::StartApplication,
        None,
    );
    s.plan(Instant::now());
    let calls = s.on_offers(vec![offer("a2")], Instant::now());
    assert!(!calls.is_empty(), "launched on a2");
    // To zero (the instance ends), then woken with offers from a1 first.
    let ids: Vec<String> = s.instances.keys().cloned().collect();
    s.instances.clear();
    assert_eq!(ids.len(), 1);
    let mut zero = d.clone();
    zero.instances = 0;
    s.install(
        new_rt(zero, "v2".into(), "v1".into(), "v2".into()),
        Action::ScaleApplication,
        None,
    );
    s.plan(Instant::now());
    s.install(
        new_rt(d, "v3".into(), "v1".into(), "v3".into()),
        Action::ScaleApplication,
        None,
    );
    s.plan(Instant::now());
    s.on_offers(vec![offer("a1"), offer("a2")], Instant::now());
    let placed: Vec<&str> = s.instances.values().map(|i| i.agent_id.as_str()).collect();
    assert_eq!(placed, vec!["a2"]);
}

/// The routes a state asked to send, in order.
fn routes_sent(s: &mut State) -> Vec<RouteMessage> {
    s.take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Route(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn route_changes_are_effects_sent_once_in_order() {
    let mut s = state();
    s.install(
        new_rt(def(1, 1.0, 1.0, "1"), "c1".into(), "c1".into(), "c1".into()),
        Action::StartApplication,
        None,
    );
    add(&mut s, "c1", true);
    s.take_effects();
    s.publish_routes(false, None);
    let sent = routes_sent(&mut s);
    match sent.as_slice() {
        [RouteMessage::Upsert { app }] => {
            assert_eq!(app.name, "web");
            assert_eq!(app.backends.len(), 1, "{app:?}");
            assert!(app.backends[0].healthy);
        }
        other => panic!("one upsert of web: {other:?}"),
    }
    s.publish_routes(false, None);
    assert!(
        routes_sent(&mut s).is_empty(),
        "nothing changed, nothing sent"
    );
    s.publish_routes(true, Some("/web"));
    assert_eq!(routes_sent(&mut s).len(), 1, "a forced resend");
    if let Some(a) = s.apps.get_mut("/web") {
        a.deleting = true;
    }
    s.publish_routes(false, None);
    assert!(
        matches!(routes_sent(&mut s).as_slice(), [RouteMessage::Remove { app }] if app == "web"),
        "a deleted app's route goes"
    );
}
