//! End-to-end tests of the offer cluster: the real `drove` binary as a master and agents on
//! distinct 127.0.0.N addresses, real processes in real cgroups, driven by a v1 framework.
//! Needs root (cgroups); run by `cargo nextest run` / `cargo test` like everything else.

use drove_testkit as support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const SMALL: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31099]";
const T: Duration = Duration::from_secs(20);

async fn subscribe(c: &TestCluster, name: &str) -> Framework {
    Framework::subscribe(&c.master_url(), framework_info(name)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runs_to_finished_with_output_captured() {
    let c = TestCluster::start(&[SMALL, SMALL]).await;
    let mut fw = subscribe(&c, "finish").await;
    let offers = fw.offers(T).await;
    assert!(!offers.is_empty(), "no offers; logs:\n{}", c.logs());
    let offer = &offers[0];
    let mut hello = task(
        "hello",
        offer,
        0.1,
        32.0,
        "echo hello from $MESOS_TASK_ID on port $PORT; sleep 2",
    );
    hello["resources"].as_array_mut().expect("resources").push(json!(
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31005, "end": 31005}]}}
    ));
    let (code, body) = fw.launch(offer, vec![hello]).await;
    assert_eq!(code, 202, "{body}");
    let running = fw.wait_state("hello", "TASK_RUNNING", T).await;
    assert_eq!(running["agent_id"], offer["agent_id"]);
    assert!(running.get("uuid").is_some(), "agent updates carry a uuid");

    // The agent serves the captured stdout while the task runs and after it ends.
    let agent = c
        .specs
        .iter()
        .position(|s| s.ip == offer["hostname"].as_str().unwrap_or(""))
        .expect("offer hostname is an agent ip");
    let stdout_url = format!("{}/agent/v1/tasks/hello/stdout", c.agent_url(agent));
    let mut out = String::new();
    for _ in 0..40 {
        out = c
            .http
            .get(&stdout_url)
            .send()
            .await
            .expect("stdout")
            .text()
            .await
            .expect("stdout text");
        if out.contains("hello from hello") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        out.contains("hello from hello on port 31005"),
        "stdout was {out:?}"
    );
    fw.wait_state("hello", "TASK_FINISHED", T).await;

    let state = c.state().await;
    let fws = state["frameworks"].as_array().expect("frameworks");
    assert_eq!(fws.len(), 1);
    assert!(state["leader"]
        .as_str()
        .unwrap_or("")
        .starts_with("master@"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leaves_no_process() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut fw = subscribe(&c, "kill").await;
    let offer = fw.offers(T).await.remove(0);
    // The shell spawns a child too: both must be gone after the kill.
    fw.launch(
        &offer,
        vec![task(
            "sleeper",
            &offer,
            0.1,
            32.0,
            "sleep 300 & sleep 300; wait",
        )],
    )
    .await;
    let running = fw.wait_state("sleeper", "TASK_RUNNING", T).await;
    let pid = pid_of(&running).expect("RUNNING carries the task pid");
    assert!(pid_alive(pid));
    let (code, body) = fw
        .call(json!({"type": "KILL", "kill": {"task_id": {"value": "sleeper"}}}))
        .await;
    assert_eq!(code, 202, "{body}");
    fw.wait_state("sleeper", "TASK_KILLED", T).await;
    assert!(!pid_alive(pid), "task process {pid} survived the kill");
    // Nothing is left in any cgroup under the agent's root (task cgroups are
    // `<root>/<container-id>`, in every hierarchy), and the task's own cgroups are gone.
    let mut leftover = Vec::new();
    let mut seen = 0;
    for base in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
    ] {
        let root = std::path::Path::new(base).join(&c.cgroup_root);
        if !root.is_dir() {
            continue;
        }
        seen += 1;
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            let procs = dir.join("cgroup.procs");
            let text = std::fs::read_to_string(&procs)
                .unwrap_or_else(|e| panic!("reading {}: {e}", procs.display()));
            leftover.extend(text.lines().map(|l| format!("{}: {l}", dir.display())));
            for entry in std::fs::read_dir(&dir).expect("cgroup dir").flatten() {
                if entry.path().is_dir() {
                    // The only task was killed: no task cgroup may be left (`agent` is the
                    // agent's own leaf on v2).
                    assert!(
                        entry.file_name() == "agent",
                        "the task's cgroup {} was not removed",
                        entry.path().display()
                    );
                    dirs.push(entry.path());
                }
            }
        }
    }
    assert!(seen > 0, "no cgroup hierarchy holds {}", c.cgroup_root);
    assert!(leftover.is_empty(), "processes left: {leftover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_fails_with_memory_reason_and_agent_keeps_working() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut fw = subscribe(&c, "hog").await;
    let offer = fw.offers(T).await.remove(0);
    // 64 MiB limit; python allocates and touches 400 MiB.
    fw.launch(
        &offer,
        vec![task(
            "hog",
            &offer,
            0.1,
            64.0,
            "python3 -c 'import time; b = bytearray(400 * 1024 * 1024); time.sleep(30)'",
        )],
    )
    .await;
    let failed = fw.wait_state("hog", "TASK_FAILED", T).await;
    assert_eq!(
        failed["reason"], "REASON_CONTAINER_LIMITATION_MEMORY",
        "{failed}"
    );
    // The agent lives on and runs the next task.
    let offer = fw.offers(T).await.remove(0);
    fw.launch(&offer, vec![task("after", &offer, 0.1, 32.0, "sleep 1")])
        .await;
    fw.wait_state("after", "TASK_FINISHED", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_flips_healthy() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut fw = subscribe(&c, "health").await;
    let offer = fw.offers(T).await.remove(0);
    let mut t = task(
        "checked",
        &offer,
        0.1,
        32.0,
        "touch $MESOS_SANDBOX/ok; sleep 4; rm $MESOS_SANDBOX/ok; sleep 300",
    );
    t["health_check"] = json!({
        "type": "COMMAND",
        "command": {"shell": true, "value": "test -f $MESOS_SANDBOX/ok"},
        "delay_seconds": 0.0, "interval_seconds": 0.5, "timeout_seconds": 2.0,
        "consecutive_failures": 100, "grace_period_seconds": 0.0
    });
    fw.launch(&offer, vec![t]).await;
    let healthy = fw
        .next_matching(T, |e| {
            e["type"] == "UPDATE" && e["update"]["status"]["healthy"] == json!(true)
        })
        .await
        .expect("a healthy update");
    assert_eq!(healthy["update"]["status"]["state"], "TASK_RUNNING");
    let unhealthy = fw
        .next_matching(T, |e| {
            e["type"] == "UPDATE" && e["update"]["status"]["healthy"] == json!(false)
        })
        .await
        .expect("an unhealthy update");
    assert_eq!(unhealthy["update"]["status"]["task_id"]["value"], "checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_hides_agent_for_refuse_seconds() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut fw = subscribe(&c, "decline").await;
    let offer = fw.offers(T).await.remove(0);
    let declined_at = tokio::time::Instant::now();
    let (code, body) = fw.decline(&offer, 3.0).await;
    assert_eq!(code, 202, "{body}");
    // /master/state tells the framework why it gets nothing: its filter, and its last offer.
    let state = c.state().await;
    let report = &state["frameworks"][0];
    assert_eq!(
        report["allocator"]["filters"][0]["agent_id"], offer["agent_id"]["value"],
        "{report}"
    );
    assert!(
        report["last_offer"]["resources"]["cpus"].as_f64() > Some(0.0),
        "{report}"
    );
    // Nothing for a while (the batch allocator runs every second meanwhile) ...
    let early = fw.offers(Duration::from_millis(2300)).await;
    assert!(
        early.is_empty(),
        "offered again within refuse_seconds: {early:?}"
    );
    // ... then the same agent again.
    let again = fw.offers(Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["agent_id"], offer["agent_id"]);
    assert!(declined_at.elapsed() >= Duration::from_secs(3));
    assert_ne!(again[0]["id"], offer["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frameworks_get_drf_fair_shares() {
    let c = TestCluster::start(&["cpus:4;mem:4096;disk:1000;ports:[31000-31099]"]).await;
    let mut a = subscribe(&c, "drf-a").await;
    let mut b = subscribe(&c, "drf-b").await;
    // Each framework launches one 1-cpu task per offer and returns the rest, until the agent
    // is full. DRF must split the 4 cpus 2/2.
    let mut launched = [0usize; 2];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while launched.iter().sum::<usize>() < 4 && tokio::time::Instant::now() < deadline {
        for (i, fw) in [&mut a, &mut b].into_iter().enumerate() {
            for offer in fw.offers(Duration::from_millis(300)).await {
                let id = format!("{}-{}", i, launched[i]);
                let (code, body) = fw
                    .launch(&offer, vec![task(&id, &offer, 1.0, 128.0, "sleep 300")])
                    .await;
                assert_eq!(code, 202, "{body}");
                launched[i] += 1;
            }
        }
    }
    assert_eq!(launched, [2, 2], "DRF split; logs:\n{}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_tasks_are_lost_and_a_partitioned_agent_comes_back() {
    let mut c = TestCluster::start(&[SMALL, SMALL]).await;
    let mut fw = subscribe(&c, "lost").await;
    let mut placed = Vec::new();
    while placed.len() < 2 {
        for offer in fw.offers(T).await {
            let id = format!("t{}", placed.len());
            fw.launch(&offer, vec![task(&id, &offer, 0.1, 32.0, "sleep 300")])
                .await;
            placed.push((id, offer["hostname"].as_str().unwrap_or("").to_string()));
        }
    }
    for (id, _) in &placed {
        fw.wait_state(id, "TASK_RUNNING", T).await;
    }
    let ips: Vec<String> = c.specs.iter().map(|s| s.ip.clone()).collect();
    let agent_of = |host: &str| ips.iter().position(|ip| ip == host).expect("agent");
    // SIGKILL one agent: its task is LOST within the ping timeout (0.5 s × 4) and the
    // framework hears FAILURE for the agent.
    let (lost_task, lost_host) = placed[0].clone();
    let lost_agent = agent_of(&lost_host);
    let started = tokio::time::Instant::now();
    c.kill_agent(lost_agent);
    let lost = fw
        .wait_state(&lost_task, "TASK_LOST", Duration::from_secs(10))
        .await;
    assert_eq!(lost["source"], "SOURCE_MASTER");
    assert!(started.elapsed() < Duration::from_secs(8));

    // SIGSTOP the other (a partition): LOST, then SIGCONT: RUNNING again, same pid.
    let (other_task, other_host) = placed[1].clone();
    let other = agent_of(&other_host);
    let pid_before = c.agent_state(other).await["tasks"][0]["pid"].as_i64();
    c.agent_proc(other)
        .signal(nix::sys::signal::Signal::SIGSTOP);
    fw.wait_state(&other_task, "TASK_LOST", Duration::from_secs(10))
        .await;
    c.agent_proc(other)
        .signal(nix::sys::signal::Signal::SIGCONT);
    fw.wait_state(&other_task, "TASK_RUNNING", Duration::from_secs(15))
        .await;
    let pid_after = c.agent_state(other).await["tasks"][0]["pid"].as_i64();
    assert!(pid_before.is_some());
    assert_eq!(pid_before, pid_after, "the task was restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_reattaches_its_running_task() {
    let mut c = TestCluster::start(&[SMALL]).await;
    let mut fw = subscribe(&c, "agent-restart").await;
    let offer = fw.offers(T).await.remove(0);
    fw.launch(
        &offer,
        vec![task("survivor", &offer, 0.1, 32.0, "sleep 300")],
    )
    .await;
    let running = fw.wait_state("survivor", "TASK_RUNNING", T).await;
    let pid = pid_of(&running).expect("pid");
    // The rest of the agent comes back as a new offer, which the restart must rescind.
    let outstanding = fw.offers(T).await.remove(0);
    c.kill_agent(0);
    assert!(pid_alive(pid), "the task died with its agent");
    c.start_agent(0);
    c.wait_agent_http(0).await;
    c.wait_agents(1).await;
    let st = c.agent_state(0).await;
    assert_eq!(st["tasks"][0]["pid"].as_i64(), Some(pid as i64), "{st}");
    assert_eq!(st["tasks"][0]["state"], "TASK_RUNNING");
    let rescind = fw.next_of("RESCIND", T).await.expect("RESCIND");
    assert_eq!(rescind["rescind"]["offer_id"], outstanding["id"]);
    // The task is still under management: a kill works and leaves nothing.
    fw.call(json!({"type": "KILL", "kill": {"task_id": {"value": "survivor"}}}))
        .await;
    fw.wait_state("survivor", "TASK_KILLED", T).await;
    assert!(!pid_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_master_keeps_tasks_and_framework_resubscribes() {
    let mut c = TestCluster::start(&[SMALL]).await;
    // Mesos' default failover_timeout of 0: the restart must still not tear the framework down.
    let mut info = framework_info("master-restart");
    info["failover_timeout"] = json!(0.0);
    let mut fw = Framework::subscribe(&c.master_url(), info).await;
    let offer = fw.offers(T).await.remove(0);
    fw.launch(&offer, vec![task("keep", &offer, 0.1, 32.0, "sleep 300")])
        .await;
    let running = fw.wait_state("keep", "TASK_RUNNING", T).await;
    let pid = pid_of(&running).expect("pid");
    let id = fw.id.clone();
    c.kill_master();
    drop(fw);
    c.start_master();
    c.wait_agents(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pid_alive(pid), "the restarted master killed the task");
    let mut info = framework_info("master-restart");
    info["failover_timeout"] = json!(0.0);
    info["id"] = json!({"value": id});
    let mut fw = Framework::subscribe(&c.master_url(), info).await;
    assert_eq!(fw.id, id, "re-subscribed under the same id");
    let (code, body) = fw
        .call(json!({"type": "RECONCILE", "reconcile": {"tasks": []}}))
        .await;
    assert_eq!(code, 202, "{body}");
    let status = fw.update_for("keep", T).await.expect("reconciled status");
    assert_eq!(status["state"], "TASK_RUNNING");
    assert!(pid_alive(pid));
    let state = c.state().await;
    let tasks = &state["frameworks"][0]["tasks"];
    assert_eq!(tasks[0]["id"], "keep", "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let c = TestCluster::start(&[SMALL]).await;
    let url = format!("{}/api/v1/scheduler", c.master_url());
    let post = |body: &'static str| {
        c.http
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let r = post("{not json").await.expect("post");
    assert_eq!(r.status(), 400);
    let r = post(r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u"}}}"#)
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("subscribe.framework_info.name"), "{text}");
    let r = c
        .http
        .post(&url)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 415);

    let mut info = framework_info("bad");
    info["capabilities"] = json!([{"type": "PARTITION_AWARE"}]);
    let mut fw = Framework::subscribe(&c.master_url(), info).await;
    // A wrong stream id.
    let r = c
        .http
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", "not-the-stream")
        .json(&json!({"type": "REVIVE", "framework_id": {"value": fw.id}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("Mesos-Stream-Id"));
    // An ACCEPT without its payload names the field.
    let (code, body) = fw.call(json!({"type": "ACCEPT"})).await;
    assert_eq!(code, 400);
    assert!(body.contains("accept"), "{body}");

    let offer = fw.offers(T).await.remove(0);
    // More than offered: TASK_ERROR naming resources.
    let (code, _) = fw
        .launch(&offer, vec![task("greedy", &offer, 64.0, 32.0, "true")])
        .await;
    assert_eq!(code, 202);
    let err = fw.wait_state("greedy", "TASK_ERROR", T).await;
    assert!(
        err["message"].as_str().unwrap_or("").contains("resources"),
        "{err}"
    );
    // The offer is used now: a second LAUNCH on it is dropped.
    let (code, _) = fw
        .launch(&offer, vec![task("reuse", &offer, 0.1, 32.0, "true")])
        .await;
    assert_eq!(code, 202);
    let dropped = fw.wait_state("reuse", "TASK_DROPPED", T).await;
    assert_eq!(dropped["reason"], "REASON_INVALID_OFFERS");
    // An unknown offer id too.
    let fake = json!({"id": {"value": "no-such-offer"}, "agent_id": offer["agent_id"]});
    fw.launch(&fake, vec![task("ghost", &fake, 0.1, 32.0, "true")])
        .await;
    fw.wait_state("ghost", "TASK_DROPPED", T).await;
    // A task id still in use is refused.
    let offer = fw.offers(T).await.remove(0);
    fw.launch(&offer, vec![task("twice", &offer, 0.1, 32.0, "sleep 300")])
        .await;
    fw.wait_state("twice", "TASK_RUNNING", T).await;
    let offer = fw.offers(T).await.remove(0);
    fw.launch(&offer, vec![task("twice", &offer, 0.1, 32.0, "true")])
        .await;
    let err = fw.wait_state("twice", "TASK_ERROR", T).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("already in use"),
        "{err}"
    );
    // A framework that is not PARTITION_AWARE hears TASK_LOST where others hear TASK_DROPPED.
    let mut classic = subscribe(&c, "classic").await;
    let fake = json!({"id": {"value": "no-such-offer"}, "agent_id": offer["agent_id"]});
    classic
        .launch(&fake, vec![task("ghost2", &fake, 0.1, 32.0, "true")])
        .await;
    let lost = classic.wait_state("ghost2", "TASK_LOST", T).await;
    assert_eq!(lost["reason"], "REASON_INVALID_OFFERS");
    // The master is still fine.
    let r = c
        .http
        .get(format!("{}/health", c.master_url()))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
}

/// pymesos sends SUBSCRIBE with `Connection: close` and insists on a chunked answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_chunked_recordio_even_with_connection_close() {
    let c = TestCluster::start(&[SMALL]).await;
    let addr = c.master_addr;
    let reply = tokio::task::spawn_blocking(move || {
        let body = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"raw","capabilities":[{"type":"GPU_RESOURCES"}],"failover_timeout":100}}}"#;
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(
            s,
            "POST /api/v1/scheduler HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&got).contains("HEARTBEAT") {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&got).to_string()
    })
    .await
    .expect("raw subscribe");
    let lower = reply.to_ascii_lowercase();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(lower.contains("transfer-encoding: chunked"), "{reply}");
    assert!(lower.contains("mesos-stream-id:"), "{reply}");
    assert!(reply.contains(r#"{"type":"SUBSCRIBED""#), "{reply}");
    assert!(reply.contains(r#"{"type":"HEARTBEAT"}"#), "{reply}");
    // /version is numeric x.y.z.
    let v: Value = c
        .http
        .get(format!("{}/version", c.master_url()))
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    let version = v["version"].as_str().unwrap_or("");
    assert!(
        version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{version}"
    );
    let metrics = c
        .http
        .get(format!("{}/metrics", c.master_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("drove_master_agents_active 1"),
        "{metrics}"
    );
}

/// Runs one of the published-client frameworks in tests/compat against a fresh cluster.
async fn run_published_client(script: &str, master_arg: impl Fn(&TestCluster) -> String) {
    run_published_client_with(script, master_arg, &[], &[]).await
}

/// Like [`run_published_client`], with extra master flags and script arguments.
async fn run_published_client_with(
    script: &str,
    master_arg: impl Fn(&TestCluster) -> String,
    master_flags: &[&str],
    script_args: &[&str],
) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("mesos-clients-venv");
    let setup = tokio::process::Command::new("bash")
        .arg(root.join("tests/compat/setup-mesos-clients.sh"))
        .arg(&venv)
        .output()
        .await
        .expect("setup script");
    assert!(
        setup.status.success(),
        "installing the Mesos client libraries failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let c = TestCluster::start_with(&[SMALL], master_flags).await;
    let run = tokio::process::Command::new(venv.join("bin/python"))
        .arg(root.join("tests/compat").join(script))
        .arg(master_arg(&c))
        .args(script_args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the framework finished in time")
        .expect("python ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Its tasks ran in containers (drove's default), each on its own address.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ADDRESS ") && l.contains(" 10.213.")),
        "{script}'s tasks report no container address:\n{stdout}"
    );
    assert!(
        out.status.success() && stdout.contains("RESULT ok"),
        "{script} failed:\n{stdout}\n{}\nlogs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}

/// A framework written against pymesos (from PyPI) works unchanged: it launches, sees RUNNING
/// and FINISHED, kills a task and sees KILLED, acknowledging as it goes. Its tasks run in
/// containers, each reporting its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_framework_works_unchanged() {
    run_published_client("pymesos_framework.py", |c| c.master_addr.to_string()).await;
}

/// The same with mesoshttp, which only handles an event when the next record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesoshttp_framework_works_unchanged() {
    run_published_client("mesoshttp_framework.py", |c| c.master_url()).await;
}

/// Both published clients authenticate to a master with `--authenticate-frameworks` (HTTP
/// basic, as Mesos's HTTP authentication) and work as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_clients_work_with_credentials() {
    let creds = support::tempdir();
    let file = creds.path().join("credentials");
    std::fs::write(
        &file,
        "py s3cret-py
",
    )
    .expect("credentials file");
    let flags = [
        "--authenticate-frameworks",
        &format!("--credentials={}", file.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(|s| s.as_ref()).collect();
    run_published_client_with(
        "pymesos_framework.py",
        |c| c.master_addr.to_string(),
        &flags,
        &["py", "s3cret-py"],
    )
    .await;
    run_published_client_with(
        "mesoshttp_framework.py",
        |c| c.master_url(),
        &flags,
        &["py", "s3cret-py"],
    )
    .await;
}

/// A framework that stays away past its failover_timeout is torn down and its tasks killed;
/// a PARTITION_AWARE framework sees TASK_UNREACHABLE rather than TASK_LOST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_timeout_expiry_kills_tasks_and_partition_aware_sees_unreachable() {
    let mut c = TestCluster::start(&[SMALL, SMALL]).await;
    let mut info = framework_info("short-failover");
    info["failover_timeout"] = json!(1.0);
    let mut short = Framework::subscribe(&c.master_url(), info).await;
    let offer = short.offers(T).await.remove(0);
    short
        .launch(&offer, vec![task("orphan", &offer, 0.1, 32.0, "sleep 300")])
        .await;
    let pid = pid_of(&short.wait_state("orphan", "TASK_RUNNING", T).await).expect("pid");
    let short_id = short.id.clone();
    drop(short);
    wait::until(
        "the task to end after its framework's failover timeout",
        T,
        || !pid_alive(pid),
    )
    .await;
    let state = c.state().await;
    assert!(
        state["completed_frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["id"] == short_id.as_str())),
        "{state}"
    );

    let mut info = framework_info("partition-aware");
    info["capabilities"] = json!([{"type": "PARTITION_AWARE"}]);
    let mut pa = Framework::subscribe(&c.master_url(), info).await;
    let offer = pa.offers(T).await.remove(0);
    pa.launch(&offer, vec![task("pa", &offer, 0.1, 32.0, "sleep 300")])
        .await;
    pa.wait_state("pa", "TASK_RUNNING", T).await;
    let host = offer["hostname"].as_str().unwrap_or("").to_string();
    let agent = c.specs.iter().position(|s| s.ip == host).expect("agent");
    c.kill_agent(agent);
    let failure = pa.next_of("FAILURE", T).await.expect("FAILURE event");
    assert_eq!(failure["failure"]["agent_id"], offer["agent_id"]);
    let status = pa.wait_state("pa", "TASK_UNREACHABLE", T).await;
    assert_eq!(status["reason"], "REASON_AGENT_REMOVED");
}

/// `drove up` runs a master and an agent in one process, ready for a framework.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drove_up_runs_master_and_agent() {
    let dir = support::tempdir();
    // The agent's work dir is outside the data dir (and removed with the test).
    let work = support::tempdir();
    let master = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let agent = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let cgroup_root = format!("drove-test-{}", uuid_like());
    let _cleanup = CgroupTree(cgroup_root.clone());
    let args = vec![
        "up".to_string(),
        format!("--data-dir={}", dir.path().display()),
        format!("--master-listen={master}"),
        format!("--agent-listen={agent}"),
        format!("--paas-listen=127.0.0.1:{}", free_port("127.0.0.1")),
        format!("--router-listen=127.0.0.1:{}", free_port("127.0.0.1")),
        format!("--router-admin=127.0.0.1:{}", free_port("127.0.0.1")),
        "--resources=cpus:1;mem:512;ports:[31000-31009]".to_string(),
        format!("--cgroup-root={cgroup_root}"),
        format!("--agent-work-dir={}", work.path().join("agent").display()),
    ];
    let _up = Proc::spawn("up", &args, &dir.path().join("up.log"));
    let http = reqwest::Client::new();
    // drove up's master state is for operators: the generated cluster secret reads it.
    let cluster_secret = dir.path().join("cluster-secret");
    wait::until_ok("drove up's agent to register", T, || async {
        let secret = std::fs::read_to_string(&cluster_secret)
            .map_err(|e| format!("no cluster secret yet: {e}"))?;
        let v = http
            .get(format!("http://{master}/master/state"))
            .bearer_auth(secret.trim())
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json::<Value>()
            .await
            .map_err(|e| e.to_string())?;
        match v["activated_slaves"].as_u64() {
            Some(1) => Ok(()),
            active => Err(format!("{active:?} active agents")),
        }
    })
    .await;
    let anonymous = http
        .get(format!("http://{master}/master/state"))
        .send()
        .await
        .expect("state");
    assert_eq!(
        anonymous.status(),
        401,
        "drove up's master state needs credentials"
    );
    // drove up's master authenticates frameworks: use the principal it generated.
    let creds =
        std::fs::read_to_string(dir.path().join("master/credentials")).expect("credentials");
    let mut parts = creds.split_whitespace();
    let (principal, secret) = (
        parts.next().expect("principal").to_string(),
        parts.next().expect("secret").to_string(),
    );
    let unauthenticated = reqwest::Client::new()
        .post(format!("http://{master}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .json(&json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info("x")}}))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(
        unauthenticated.status(),
        401,
        "drove up authenticates frameworks by default"
    );
    let mut fw =
        Framework::subscribe_with(&format!("http://{master}"), framework_info("up"), |c| {
            c.credentials = Some(drove_driver::Credentials { principal, secret });
        })
        .await;
    let offer = fw.offers(T).await.remove(0);
    assert_eq!(offer["hostname"], "127.0.0.1");
    fw.launch(&offer, vec![task("up-task", &offer, 0.1, 32.0, "true")])
        .await;
    fw.wait_state("up-task", "TASK_FINISHED", T).await;
    drop(fw);
    drop(_up);
    kill_cgroup_tree(&cgroup_root);
}

/// A framework that fails over (re-subscribes while its old stream is still open) gets offers:
/// the old instance's offers are rescinded, not leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_the_old_stream_open_gets_offers_again() {
    let c = TestCluster::start(&[SMALL]).await;
    let mut old = subscribe(&c, "failover").await;
    let first = old.offers(T).await.remove(0);
    let mut info = framework_info("failover");
    info["id"] = json!({"value": old.id});
    let mut new = Framework::subscribe(&c.master_url(), info).await;
    assert_eq!(new.id, old.id);
    let again = new.offers(T).await;
    assert_eq!(again.len(), 1, "the new instance got no offers");
    assert_ne!(again[0]["id"], first["id"]);
    // The old stream was told and closed.
    let err = old
        .next_of("ERROR", T)
        .await
        .expect("ERROR on the old stream");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("failed over"));
}

/// An agent unreachable past --agent-removal-timeout is removed: a PARTITION_AWARE framework
/// hears TASK_GONE, and when the agent comes back it registers anew and its old task is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_unreachable_too_long_is_removed_and_its_tasks_stopped() {
    let c = TestCluster::start_with(&[SMALL], &["--agent-removal-timeout=2s"]).await;
    let mut info = framework_info("removal");
    info["capabilities"] = json!([{"type": "PARTITION_AWARE"}]);
    let mut fw = Framework::subscribe(&c.master_url(), info).await;
    let offer = fw.offers(T).await.remove(0);
    fw.launch(
        &offer,
        vec![task("stranded", &offer, 0.1, 32.0, "sleep 300")],
    )
    .await;
    let pid = pid_of(&fw.wait_state("stranded", "TASK_RUNNING", T).await).expect("pid");
    c.agent_proc(0).signal(nix::sys::signal::Signal::SIGSTOP);
    fw.wait_state("stranded", "TASK_UNREACHABLE", T).await;
    let gone = fw.wait_state("stranded", "TASK_GONE", T).await;
    assert_eq!(gone["reason"], "REASON_AGENT_REMOVED");
    c.agent_proc(0).signal(nix::sys::signal::Signal::SIGCONT);
    wait::until("the removed agent's task to end", T, || !pid_alive(pid)).await;
    c.wait_agents(1).await;
    let state = c.state().await;
    assert_ne!(
        state["slaves"][0]["id"], offer["agent_id"]["value"],
        "{state}"
    );
}

/// With a cluster secret, agents and the master only listen to each other: the agent registers
/// and runs tasks as usual, but an agent call, a registration or a status update without the
/// secret is refused (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_protocol_needs_the_cluster_secret() {
    let secret = "--cluster-secret=cluster-s3cret";
    let c = TestCluster::start_with_agents(&[SMALL], &[secret], &[secret]).await;
    let mut fw = subscribe(&c, "secured").await;
    let offer = fw.offers(T).await.remove(0);
    let (code, body) = fw
        .launch(&offer, vec![task("guarded", &offer, 0.1, 32.0, "sleep 30")])
        .await;
    assert_eq!(code, 202, "{body}");
    fw.wait_state("guarded", "TASK_RUNNING", T).await;

    let http = reqwest::Client::new();
    let forged_launch = http
        .post(format!("{}/agent/v1/launch", c.agent_url(0)))
        .json(
            &json!({"framework_id": {"value": fw.id}, "framework_info": framework_info("x"),
                      "task": task("forged", &offer, 0.1, 32.0, "true")}),
        )
        .send()
        .await
        .expect("agent");
    assert_eq!(forged_launch.status(), 401, "only the master may launch");
    let forged_kill = http
        .post(format!("{}/agent/v1/kill", c.agent_url(0)))
        .bearer_auth("wrong")
        .json(&json!({"framework_id": {"value": fw.id}, "task_id": {"value": "guarded"}}))
        .send()
        .await
        .expect("agent");
    assert_eq!(forged_kill.status(), 401);
    let forged_status = http
        .post(format!("{}/agent/v1/status", c.master_url()))
        .json(
            &json!({"agent_id": offer["agent_id"], "framework_id": {"value": fw.id},
                      "status": {"task_id": {"value": "guarded"}, "state": "TASK_FINISHED"}}),
        )
        .send()
        .await
        .expect("master");
    assert_eq!(forged_status.status(), 401, "only agents may report status");
    // Even with the cluster secret, only the registration running the task may report on it.
    let forged_status = http
        .post(format!("{}/agent/v1/status", c.master_url()))
        .bearer_auth("cluster-s3cret")
        .json(
            &json!({"agent_id": offer["agent_id"], "framework_id": {"value": fw.id},
                      "status": {"task_id": {"value": "guarded"}, "state": "TASK_FINISHED",
                                 "uuid": "Zm9yZ2Vk"}}),
        )
        .send()
        .await
        .expect("master");
    assert_eq!(
        forged_status.status(),
        404,
        "a status update without the agent's session"
    );
    let forged_register = http
        .post(format!("{}/agent/v1/register", c.master_url()))
        .json(
            &json!({"hostname": "evil", "endpoint": "http://127.0.0.9:1", "resources": [],
                      "attributes": [], "tasks": [], "version": "x"}),
        )
        .send()
        .await
        .expect("master");
    assert_eq!(forged_register.status(), 401);
    // Even with the cluster secret, an agent's id is re-registered only with the key its first
    // registration was given (kept root-only in the agent's work dir).
    let hijack = http
        .post(format!("{}/agent/v1/register", c.master_url()))
        .bearer_auth("cluster-s3cret")
        .json(&json!({"agent_id": offer["agent_id"], "hostname": "evil",
                      "endpoint": "http://127.0.0.9:1", "resources": [], "attributes": [],
                      "tasks": [], "version": "x", "agent_key": "guessed"}))
        .send()
        .await
        .expect("master");
    assert_eq!(
        hijack.status(),
        403,
        "another agent cannot take over this agent's id"
    );
    let key_file = c.specs[0].work_dir.join("meta/agent_key");
    let mode = std::fs::metadata(&key_file)
        .expect("agent key")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
        0,
        "the agent key is root's only"
    );
    // The task is untouched, and the framework heard nothing of the forgeries.
    let state = c.agent_state(0).await;
    assert!(state.to_string().contains("guarded"), "{state}");
    let heard = fw
        .next_matching(Duration::from_millis(500), |e| {
            e["type"] == "UPDATE" && e["update"]["status"]["state"] == "TASK_FINISHED"
        })
        .await;
    assert!(
        heard.is_none(),
        "a forged update reached the framework: {heard:?}"
    );
    let (code, _) = fw
        .call(json!({"type": "KILL", "kill": {"task_id": {"value": "guarded"}}}))
        .await;
    assert_eq!(code, 202);
    fw.wait_state("guarded", "TASK_KILLED", T).await;
}

/// Request bodies are bounded: an oversized call is refused with 413 once the limit is read
/// (or its connection is cut: a server that stops reading and closes may reset the connection
/// before the client reads the 413), never read whole, and the master keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let c = TestCluster::start(&[SMALL]).await;
    let huge = format!(
        r#"{{"type":"SUBSCRIBE","subscribe":{{"framework_info":{{"user":"x","name":"{}"}}}}}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let http = reqwest::Client::new();
    for url in [
        format!("{}/api/v1/scheduler", c.master_url()),
        format!("{}/agent/v1/status", c.master_url()),
        format!("{}/agent/v1/launch", c.agent_url(0)),
    ] {
        let r = http
            .post(&url)
            .header("Content-Type", "application/json")
            .body(huge.clone())
            .send()
            .await;
        match r {
            Ok(r) => assert_eq!(r.status(), 413, "{url}"),
            Err(e) => assert!(e.is_request() || e.is_body(), "{url}: {e}"),
        }
    }
    let fw = subscribe(&c, "after").await;
    assert!(!fw.id.is_empty(), "the master still serves");
}

/// The master's `/health`: status and body.
async fn master_health(c: &TestCluster) -> (u16, String) {
    let r = c
        .http
        .get(format!("{}/health", c.master_url()))
        .send()
        .await
        .expect("/health");
    let code = r.status().as_u16();
    (code, r.text().await.unwrap_or_default())
}

/// A gauge from the master's `/metrics`.
async fn master_gauge(c: &TestCluster, name: &str) -> Option<f64> {
    let text = c
        .http
        .get(format!("{}/metrics", c.master_url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Every task id a framework has in `/master/state`, whatever its state.
fn task_ids(state: &Value, framework: &str) -> Vec<String> {
    let Some(fw) = state["frameworks"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == framework))
    else {
        return Vec::new();
    };
    ["tasks", "unreachable_tasks", "completed_tasks"]
        .iter()
        .filter_map(|k| fw[*k].as_array())
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

/// A store that fails writes turns health red and loses nothing that was acknowledged: the
/// master keeps the change it could not write, refuses new ones (503) instead of acknowledging
/// them, turns healthy again once the disk takes writes, and a `kill -9` after that loses
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_writes_turns_health_red_and_loses_nothing_acknowledged() {
    let mut c = TestCluster::start(&[SMALL]).await;
    let mut fw = subscribe(&c, "durable").await;
    let offer = fw.offers(T).await.remove(0);
    let (code, body) = fw
        .launch(&offer, vec![task("first", &offer, 0.1, 32.0, "sleep 300")])
        .await;
    assert_eq!(code, 202, "{body}");
    fw.wait_state("first", "TASK_RUNNING", T).await;
    wait::until_ok_with(
        "the store to catch up",
        T,
        || async {
            match master_gauge(&c, "drove_master_store_pending_ops").await {
                Some(0.0) => Ok(()),
                pending => Err(format!("{pending:?} pending")),
            }
        },
        || format!("logs:\n{}", c.logs()),
    )
    .await;
    assert_eq!(master_health(&c).await.0, 200);

    // The disk stops taking writes (the database and its WAL, which the master has open).
    let db = c.dir.path().join("master").join("master.db");
    let wal = c.dir.path().join("master").join("master.db-wal");
    assert!(wal.exists(), "the master runs SQLite in WAL mode");
    let mut immutable = Immutable::set(&[db.clone(), wal]);

    // A change the master takes before it knows: acknowledged, and kept until it is written.
    let offer = fw.offers(T).await.remove(0);
    let (code, body) = fw
        .launch(&offer, vec![task("second", &offer, 0.1, 32.0, "sleep 300")])
        .await;
    assert_eq!(code, 202, "{body}");

    // Health turns red, naming the store and its file.
    let (code, why) = wait::until_ok_with(
        "/health to turn red",
        T,
        || async {
            match master_health(&c).await {
                (200, body) => Err(format!("/health stayed 200: {body}")),
                answer => Ok(answer),
            }
        },
        || format!("logs:\n{}", c.logs()),
    )
    .await;
    assert_eq!(
        code,
        503,
        "/health answered {code}: {why}; logs:\n{}",
        c.logs()
    );
    assert!(why.contains("store"), "{why}");
    assert!(why.contains(&db.display().to_string()), "{why}");
    assert!(why.contains("not persisted"), "{why}");
    let r = c
        .http
        .get(format!("{}/master/health", c.master_url()))
        .send()
        .await
        .expect("/master/health");
    assert_eq!(r.status(), 503);
    assert_eq!(
        master_gauge(&c, "drove_master_store_failed").await,
        Some(1.0)
    );

    // A new framework is refused rather than acknowledged.
    let r = c
        .http
        .post(format!("{}/api/v1/scheduler", c.master_url()))
        .header("Content-Type", "application/json")
        .json(&json!({"type": "SUBSCRIBE", "subscribe": {
            "framework_info": {"user": "root", "name": "refused"}}}))
        .send()
        .await
        .expect("SUBSCRIBE");
    assert_eq!(r.status(), 503);
    let refusal = r.text().await.unwrap_or_default();
    assert!(refusal.contains("store"), "{refusal}");
    // So is a launch, on an offer made meanwhile (offers persist nothing).
    let offer = fw.offers(T).await.remove(0);
    let r = c
        .http
        .post(&fw.url)
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", fw.stream_id())
        .json(&json!({"type": "ACCEPT", "framework_id": {"value": fw.id},
            "accept": {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH",
                "launch": {"task_infos": [task("third", &offer, 0.1, 32.0, "sleep 300")]}}]}}))
        .send()
        .await
        .expect("ACCEPT");
    assert_eq!(r.status(), 503);
    let refusal = r.text().await.unwrap_or_default();
    assert!(refusal.contains("store"), "{refusal}");
    let state = c.state().await;
    assert!(
        !task_ids(&state, &fw.id).contains(&"third".to_string()),
        "{state}"
    );
    assert!(
        !state["frameworks"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == "refused")),
        "{state}"
    );

    // The disk is back: the master writes what it kept and turns healthy by itself.
    immutable.clear();
    wait::until_ok("/health to turn healthy again", T, || async {
        match master_health(&c).await {
            (200, _) => Ok(()),
            (code, body) => Err(format!(
                "/health stayed {code}: {body}; logs:\n{}",
                c.logs()
            )),
        }
    })
    .await;
    assert_eq!(
        master_gauge(&c, "drove_master_store_failed").await,
        Some(0.0)
    );

    // Nothing acknowledged is lost, even to a kill -9 right away.
    let id = fw.id.clone();
    c.kill_master();
    drop(fw);
    c.start_master();
    c.wait_agents(1).await;
    let state = c.state().await;
    let tasks = task_ids(&state, &id);
    for t in ["first", "second"] {
        assert!(
            tasks.contains(&t.to_string()),
            "{t} lost; tasks {tasks:?}; state {state}"
        );
    }
    assert!(!tasks.contains(&"third".to_string()), "{state}");
}

/// With `--authenticate-http-readonly`, the master's state and metrics need a framework's
/// credentials or the cluster secret; task logs are read through the master, by the task's own
/// framework only; the agent's state and logs answer only the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_credentials_and_logs_go_to_their_own_framework() {
    let creds = support::tempdir();
    let file = creds.path().join("credentials");
    std::fs::write(&file, "alice s3cret-a\nbob s3cret-b\n").expect("credentials file");
    let secret = "--cluster-secret=cluster-s3cret";
    let c = TestCluster::start_with_agents(
        &[SMALL],
        &[
            secret,
            "--authenticate-frameworks",
            &format!("--credentials={}", file.display()),
            "--authenticate-http-readonly",
        ],
        &[secret],
    )
    .await;
    let as_principal = |principal: &'static str, secret: &'static str| {
        move |config: &mut drove_driver::Config| {
            config.credentials = Some(drove_driver::Credentials {
                principal: principal.into(),
                secret: secret.into(),
            });
        }
    };
    let mut alice = Framework::subscribe_with(
        &c.master_url(),
        framework_info("alice-fw"),
        as_principal("alice", "s3cret-a"),
    )
    .await;
    let offer = alice.offers(T).await.remove(0);
    let (code, body) = alice
        .launch(
            &offer,
            vec![task(
                "diary",
                &offer,
                0.1,
                32.0,
                "echo dear-diary; sleep 30",
            )],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    alice.wait_state("diary", "TASK_RUNNING", T).await;

    let anon = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    master_reads_need_credentials(&c, &anon).await;
    task_logs_go_to_their_own_framework(&c, &anon, &alice).await;
    the_agent_answers_the_master_only(&c, &anon).await;
    let (code, _) = alice
        .call(json!({"type": "KILL", "kill": {"task_id": {"value": "diary"}}}))
        .await;
    assert_eq!(code, 202);
    alice.wait_state("diary", "TASK_KILLED", T).await;
}

/// The master's state and metrics: 401 without credentials or with a wrong secret, 200 for any
/// framework principal and for the cluster secret; `/health` and `/version` stay open.
async fn master_reads_need_credentials(c: &TestCluster, anon: &reqwest::Client) {
    let master = c.master_url();
    for path in ["/master/state", "/state.json", "/metrics"] {
        let r = anon
            .get(format!("{master}{path}"))
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 401, "{path} without credentials");
        assert!(r.headers().get("www-authenticate").is_some(), "{path}");
        let r = anon
            .get(format!("{master}{path}"))
            .basic_auth("alice", Some("wrong"))
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 401, "{path} with a wrong secret");
        let r = anon
            .get(format!("{master}{path}"))
            .basic_auth("bob", Some("s3cret-b"))
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 200, "{path} for a framework principal");
        let r = anon
            .get(format!("{master}{path}"))
            .bearer_auth("cluster-s3cret")
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 200, "{path} with the cluster secret");
    }
    for path in ["/health", "/version"] {
        let r = anon
            .get(format!("{master}{path}"))
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 200, "{path} stays open");
    }
}

/// A task's logs, read through the master: its own framework reads them, another framework
/// gets 403 and nothing of them, no credentials 401, the cluster secret reads any.
async fn task_logs_go_to_their_own_framework(
    c: &TestCluster,
    anon: &reqwest::Client,
    alice: &Framework,
) {
    let master = c.master_url();
    let logs = format!(
        "{master}/master/frameworks/{}/tasks/diary/logs/stdout",
        alice.id
    );
    wait::until_ok("the task's log to show", T, || async {
        let r = anon
            .get(&logs)
            .basic_auth("alice", Some("s3cret-a"))
            .send()
            .await
            .expect("logs");
        assert_eq!(r.status(), 200, "alice reads her task's logs");
        let text = r.text().await.unwrap_or_default();
        if text.contains("dear-diary") {
            Ok(())
        } else {
            Err(format!("{text:?}"))
        }
    })
    .await;
    let r = anon
        .get(&logs)
        .basic_auth("bob", Some("s3cret-b"))
        .send()
        .await
        .expect("logs");
    assert_eq!(r.status(), 403, "bob cannot read alice's task's logs");
    assert!(!r.text().await.unwrap_or_default().contains("dear-diary"));
    let r = anon.get(&logs).send().await.expect("logs");
    assert_eq!(r.status(), 401);
    let r = anon
        .get(&logs)
        .bearer_auth("cluster-s3cret")
        .send()
        .await
        .expect("logs");
    assert_eq!(
        r.status(),
        200,
        "an operator with the cluster secret reads any"
    );
}

/// The agent serves its state and task logs to the master only (the cluster secret).
async fn the_agent_answers_the_master_only(c: &TestCluster, anon: &reqwest::Client) {
    let agent = c.agent_url(0);
    for path in ["/agent/v1/state", "/agent/v1/tasks/diary/stdout"] {
        let r = anon.get(format!("{agent}{path}")).send().await.expect(path);
        assert_eq!(r.status(), 401, "{path} on the agent without the secret");
        let r = anon
            .get(format!("{agent}{path}"))
            .bearer_auth("cluster-s3cret")
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 200, "{path} on the agent with the secret");
    }
}
