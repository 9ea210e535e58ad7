//! End-to-end tests of `drove-driver` against the real `drove master` (and agents, where a test
//! needs tasks): failover with a stored framework id across a master restart, the heartbeat
//! watchdog against a stopped master, calls the master refuses, implicit reconciliation, and
//! cancellation with nobody reading the events. Every wait is bounded.

use drove_testkit as support;

use std::time::Duration;

use drove_driver::{CallError, Config, Driver, Event};
use drove_proto::mesos::{
    AgentId, CommandInfo, FrameworkId, FrameworkInfo, Offer, OfferId, Resource, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use drove_proto::scheduler::{Call, CallType};
use nix::sys::signal::Signal;
use support::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SMALL: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";
const T: Duration = Duration::from_secs(20);

/// A running driver, stopped when dropped.
struct Running {
    driver: Driver,
    events: mpsc::Receiver<Event>,
    /// Updates taken from `events` while waiting for another one.
    updates: Vec<TaskStatus>,
    cancel: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Running {
    fn start(config: Config) -> Running {
        let cancel = CancellationToken::new();
        let (driver, events) = Driver::start(config, cancel.clone());
        Running {
            driver,
            events,
            updates: Vec::new(),
            cancel,
        }
    }

    /// The next event for which `pick` gives a value, within `within`; panics naming `what`
    /// and the events skipped otherwise.
    async fn next<R>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&Event) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + within;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(ev)) => match pick(&ev) {
                    Some(r) => return r,
                    None => skipped.push(format!("{ev:?}")),
                },
                Ok(None) => panic!("the driver stopped while waiting for {what}; saw {skipped:?}"),
                Err(_) => panic!("no {what} within {within:?}; saw {skipped:?}"),
            }
        }
    }

    async fn subscribed(&mut self, within: Duration) -> FrameworkId {
        self.next("SUBSCRIBED", within, |e| match e {
            Event::Subscribed { framework_id, .. } => Some(framework_id.clone()),
            _ => None,
        })
        .await
    }

    async fn disconnected(&mut self, within: Duration) -> String {
        self.next("Disconnected", within, |e| match e {
            Event::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await
    }

    async fn offer(&mut self) -> Offer {
        self.next("an offer", T, |e| match e {
            Event::Offers(offers) => offers.first().cloned(),
            _ => None,
        })
        .await
    }

    /// The first update for `task` in `state`, among those seen earlier too; agent updates are
    /// acknowledged as they arrive.
    async fn update(&mut self, task: &str, state: TaskState) -> TaskStatus {
        let wanted = |s: &TaskStatus| s.task_id.value == task && s.state == state;
        if let Some(i) = self.updates.iter().position(wanted) {
            return self.updates.remove(i);
        }
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let seen: Vec<String> = self
                .updates
                .iter()
                .map(|s| format!("{} {:?}", s.task_id, s.state))
                .collect();
            let status = self
                .next(
                    &format!("{state:?} for {task} (seen {seen:?})"),
                    left,
                    |e| match e {
                        Event::Update(s) => Some(s.clone()),
                        _ => None,
                    },
                )
                .await;
            self.driver
                .acknowledge(&status)
                .await
                .expect("ACKNOWLEDGE accepted");
            if wanted(&status) {
                return status;
            }
            self.updates.push(status);
        }
    }
}

fn info(name: &str) -> FrameworkInfo {
    serde_json::from_value(framework_info(name)).expect("framework info")
}

fn config(c: &TestCluster, name: &str) -> Config {
    driver_config(&c.master_url(), info(name))
}

fn sleeper(id: &str, offer: &Offer) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: TaskId::new(id),
        agent_id: offer.agent_id.clone(),
        resources: vec![Resource::scalar("cpus", 0.1), Resource::scalar("mem", 32.0)],
        command: Some(CommandInfo {
            value: Some("sleep 300".into()),
            ..Default::default()
        }),
        executor: None,
        health_check: None,
        kill_policy: None,
        labels: None,
        discovery: None,
        container: None,
        limits: Default::default(),
    }
}

/// Sends SIGCONT to a stopped process when dropped, so a failing test never leaves it stopped.
struct Continue(i32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// A master SIGKILLed and restarted: a driver that stays up re-subscribes to its framework by
/// itself (whose task the master still has), and a new driver given a stored framework id
/// resumes that framework.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_resumes_the_framework_after_a_master_restart() {
    let mut c = TestCluster::start(&[SMALL]).await;
    let mut stays = Running::start(config(&c, "stays"));
    let stays_id = stays.subscribed(T).await;
    let offer = stays.offer().await;
    stays
        .driver
        .launch(vec![offer.id.clone()], vec![sleeper("kept", &offer)], None)
        .await
        .expect("LAUNCH accepted");
    stays.update("kept", TaskState::TaskRunning).await;

    let mut stored = Running::start(config(&c, "stored"));
    let stored_id = stored.subscribed(T).await;
    drop(stored);

    c.kill_master();
    let reason = stays.disconnected(Duration::from_secs(10)).await;
    assert!(!stays.driver.is_subscribed(), "{reason}");
    c.start_master();

    let again = stays.subscribed(T).await;
    assert_eq!(
        again, stays_id,
        "the running driver came back as another framework"
    );
    let mut info = info("stored");
    info.id = Some(stored_id.clone());
    let mut stored = Running::start(driver_config(&c.master_url(), info));
    assert_eq!(stored.subscribed(T).await, stored_id);

    // The master knows both frameworks as they were, and still has the task.
    c.wait_agents(1).await;
    let state = c.state().await;
    let frameworks = state["frameworks"].as_array().expect("frameworks");
    assert_eq!(frameworks.len(), 2, "{state}");
    let resumed = frameworks
        .iter()
        .find(|f| f["id"] == stays_id.value.as_str())
        .expect("the resumed framework");
    assert_eq!(resumed["tasks"][0]["id"], "kept", "{state}");
    stays
        .driver
        .reconcile(vec![(TaskId::new("kept"), None)])
        .await
        .expect("RECONCILE accepted");
    stays.update("kept", TaskState::TaskRunning).await;
}

/// A master that stops answering (SIGSTOP) is detected by the heartbeat watchdog within
/// `missed_heartbeats` × the heartbeat interval; after SIGCONT the driver re-subscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_watchdog_drops_a_silent_master_and_resubscribes() {
    let c = TestCluster::start(&[]).await;
    let mut config = config(&c, "watchdog");
    config.missed_heartbeats = 2;
    let mut fw = Running::start(config);
    let heartbeat = fw
        .next("SUBSCRIBED", T, |e| match e {
            Event::Subscribed {
                heartbeat_interval, ..
            } => Some(*heartbeat_interval),
            _ => None,
        })
        .await;
    // TestCluster starts the master with --heartbeat-interval=2s.
    assert_eq!(heartbeat, Duration::from_secs(2));
    let id = fw.driver.framework_id().expect("subscribed");
    let stream = fw.driver.stream_id().expect("a stream id");

    let pid = c.master.as_ref().expect("master running").pid();
    let stopped = Instant::now();
    c.master
        .as_ref()
        .expect("master running")
        .signal(Signal::SIGSTOP);
    let resume = Continue(pid);
    let reason = fw.disconnected(Duration::from_secs(10)).await;
    let silent = stopped.elapsed();
    assert!(reason.contains("heartbeat"), "{reason}");
    // The watchdog is 2 × 2 s from the last byte, which came at most one interval before.
    assert!(
        silent >= Duration::from_millis(1500) && silent <= Duration::from_secs(6),
        "took {silent:?}"
    );
    assert!(!fw.driver.is_subscribed());
    assert!(matches!(
        fw.driver.revive().await,
        Err(CallError::NotSubscribed)
    ));

    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(resume);
    assert_eq!(fw.subscribed(T).await, id);
    let new_stream = fw.driver.stream_id().expect("a stream id");
    assert_ne!(new_stream, stream, "a new SUBSCRIBE gets a new stream");
    fw.driver.revive().await.expect("calls work again");
}

/// Calls the master refuses come back as `CallError::Rejected` with the status; calls about
/// offers, tasks or agents the master does not know are answered, not fatal; a driver that
/// never reached its master says so instead of sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unknown_calls_are_reported_not_fatal() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut fw = Running::start(config(&c, "refused"));
    fw.subscribed(T).await;
    let offer = fw.offer().await;

    // ACCEPT without its payload: 400 naming the field.
    let err = fw
        .driver
        .call(Call::new(CallType::Accept, None))
        .await
        .expect_err("an empty ACCEPT is refused");
    match &err {
        CallError::Rejected {
            call,
            status,
            message,
        } => {
            assert_eq!(*call, CallType::Accept);
            assert_eq!(*status, 400);
            assert!(message.contains("accept"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(err.to_string().contains("400"), "{err}");

    // An acknowledgement the master cannot use: a uuid that is not base64, an unknown agent.
    let mut status = TaskStatus::new(TaskId::new("nobody"), TaskState::TaskRunning);
    status.agent_id = Some(offer.agent_id.clone());
    status.uuid = Some("not base64!".into());
    let err = fw.driver.acknowledge(&status).await.expect_err("bad uuid");
    assert!(
        matches!(&err, CallError::Rejected { status: 400, message, .. } if message.contains("uuid")),
        "{err:?}"
    );
    status.agent_id = Some(AgentId::new("no-such-agent"));
    status.uuid = Some("AAAAAAAAAAAAAAAAAAAAAA==".into());
    let err = fw.driver.acknowledge(&status).await.expect_err("bad agent");
    assert!(
        matches!(&err, CallError::Rejected { status: 400, .. }),
        "{err:?}"
    );

    // ACCEPT of an offer the master never made: accepted, and the task is reported lost.
    let ghost = sleeper("ghost", &offer);
    fw.driver
        .launch(vec![OfferId::new("no-such-offer")], vec![ghost], None)
        .await
        .expect("ACCEPT of an unknown offer is answered 202");
    let lost = fw.update("ghost", TaskState::TaskLost).await;
    assert_eq!(lost.reason.as_deref(), Some("REASON_INVALID_OFFERS"));
    // DECLINE of an unknown offer, KILL and RECONCILE of an unknown task: all accepted.
    fw.driver
        .decline(vec![OfferId::new("no-such-offer")], 1.0)
        .await
        .expect("DECLINE accepted");
    fw.driver
        .kill(TaskId::new("no-such-task"), None, None)
        .await
        .expect("KILL accepted");
    fw.driver
        .reconcile(vec![(TaskId::new("no-such-task"), None)])
        .await
        .expect("RECONCILE accepted");
    // The subscription is intact: the real offer is still usable.
    assert!(fw.driver.is_subscribed());
    fw.driver
        .launch(vec![offer.id.clone()], vec![sleeper("real", &offer)], None)
        .await
        .expect("LAUNCH accepted");
    fw.update("real", TaskState::TaskRunning).await;

    // A driver whose master is not there: calls fail at once as not subscribed, and each
    // failed SUBSCRIBE is reported.
    let nowhere = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
    let mut lone = Running::start(driver_config(&nowhere, info("nowhere")));
    assert!(matches!(
        lone.driver.revive().await,
        Err(CallError::NotSubscribed)
    ));
    let reason = lone.disconnected(Duration::from_secs(10)).await;
    assert!(reason.contains("SUBSCRIBE"), "{reason}");
    assert!(lone.driver.framework_id().is_none());
}

/// With `reconcile_on_subscribe`, the driver asks for every task after SUBSCRIBED: a scheduler
/// failing over hears its running tasks' states without asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_reconcile_after_subscribed_reports_running_tasks() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut first = Running::start(config(&c, "reconcile"));
    let id = first.subscribed(T).await;
    let offer = first.offer().await;
    first
        .driver
        .launch(
            vec![offer.id.clone()],
            vec![sleeper("one", &offer), sleeper("two", &offer)],
            None,
        )
        .await
        .expect("LAUNCH accepted");
    first.update("one", TaskState::TaskRunning).await;
    first.update("two", TaskState::TaskRunning).await;
    drop(first);

    let mut info = info("reconcile");
    info.id = Some(id.clone());
    let mut config = driver_config(&c.master_url(), info);
    config.reconcile_on_subscribe = true;
    let mut second = Running::start(config);
    assert_eq!(second.subscribed(T).await, id);
    let mut reported = Vec::new();
    let deadline = Instant::now() + T;
    while reported.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = second
            .next("reconciliation updates", left, |e| match e {
                Event::Update(s) => Some(s.clone()),
                _ => None,
            })
            .await;
        // Reconciliation answers are the master's own and carry no uuid; an agent update
        // re-sent meanwhile does, and is acknowledged and left aside.
        if status.uuid.is_some() {
            second
                .driver
                .acknowledge(&status)
                .await
                .expect("ACKNOWLEDGE accepted");
            continue;
        }
        assert_eq!(status.state, TaskState::TaskRunning, "{status:?}");
        reported.push(status.task_id.value);
    }
    reported.sort();
    assert_eq!(reported, ["one", "two"]);
    let state = c.state().await;
    assert_eq!(state["frameworks"].as_array().map(Vec::len), Some(1));
}

/// The framework's entry in `/master/state`, once `pred` holds for it (within `within`).
async fn framework_state(
    c: &TestCluster,
    within: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let pred = &pred;
    wait::until_ok(what, within, || async move {
        let state = c.state().await;
        let fw = &state["frameworks"][0];
        if pred(fw) {
            Ok(fw.clone())
        } else {
            Err(format!("{state}"))
        }
    })
    .await
}

/// Cancelling stops the driver and closes its stream even when its event channel is full and
/// nobody reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_driver_whose_events_are_not_read() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut config = config(&c, "unread");
    config.event_buffer = 1;
    let fw = Running::start(config);
    // SUBSCRIBED takes the channel's only slot; the first OFFERS then waits for a reader.
    framework_state(&c, T, "an outstanding offer", |f| {
        f["connected"] == true && f["offers"].as_array().is_some_and(|o| !o.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fw.cancel.cancel();
    framework_state(&c, Duration::from_secs(5), "the stream closed", |f| {
        f["connected"] == false
    })
    .await;
    drop(fw);
}

/// A framework the master removed (here by TEARDOWN) cannot be resumed: SUBSCRIBE with its id
/// gets ERROR, and the driver stops instead of retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_framework_id_cannot_be_resumed() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut first = Running::start(config(&c, "removed"));
    let id = first.subscribed(T).await;
    first.driver.teardown().await.expect("TEARDOWN");
    drop(first);
    let mut again = config(&c, "removed");
    again.framework.id = Some(id.clone());
    let mut second = Running::start(again);
    let message = second
        .next("ERROR", T, |e| match e {
            Event::Error(m) => Some(m.clone()),
            Event::Subscribed { .. } => panic!("a removed framework was resumed"),
            _ => None,
        })
        .await;
    assert!(message.contains("removed"), "{message}");
    // The driver stopped: its channel closes.
    let closed =
        tokio::time::timeout(T, async { while second.events.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the driver kept running after ERROR");
}

/// With `--authenticate-frameworks`, SUBSCRIBE needs a principal's credentials (401 without,
/// or with a wrong secret), the driver's credentials are accepted, and another principal cannot
/// take over the framework (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frameworks_authenticate_and_cannot_take_over_each_other() {
    let creds = tempfile::tempdir().expect("tempdir");
    let file = creds.path().join("credentials");
    std::fs::write(&file, "alice s3cret-a\nbob s3cret-b\n").expect("credentials file");
    let c = TestCluster::start_with(
        &[SMALL],
        &[
            "--authenticate-frameworks",
            &format!("--credentials={}", file.display()),
        ],
    )
    .await;
    let url = format!("{}/api/v1/scheduler", c.master_url());
    let subscribe = |id: Option<&str>| {
        let mut call = serde_json::json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
            {"user": "root", "name": "x", "failover_timeout": 60.0}}});
        if let Some(id) = id {
            call["framework_id"] = serde_json::json!({"value": id});
            call["subscribe"]["framework_info"]["id"] = serde_json::json!({"value": id});
        }
        reqwest::Client::new()
            .post(&url)
            .header("Content-Type", "application/json")
            .json(&call)
    };
    let r = subscribe(None).send().await.expect("subscribe");
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = subscribe(None)
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status(), 401);

    let mut config = config(&c, "alice-fw");
    config.credentials = Some(drove_driver::Credentials {
        principal: "alice".into(),
        secret: "s3cret-a".into(),
    });
    let mut alice = Running::start(config);
    let id = alice.subscribed(T).await;

    let r = subscribe(Some(&id.value))
        .basic_auth("bob", Some("s3cret-b"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status(), 403, "bob cannot resume alice's framework");
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("alice"), "{body}");
    assert!(alice.driver.is_subscribed(), "alice keeps her subscription");
}
