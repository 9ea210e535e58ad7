//! The agent end to end against a fake master: real supervisor processes, real cgroups (v1 on
//! the hybrid dev host, v2 in the VM of tests/vm/run-cgroup-v2.sh), real sandboxes. Runs as
//! root; fails (never skips) without cgroups.

use drove_testkit::agent as support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use drove_proto::mesos::TaskState;
use drove_testkit::wait::{until, until_ok};
use serde_json::json;
use support::*;

async fn started(tag: &str) -> (FakeMaster, tempfile::TempDir, CgroupRoot, TestAgent, String) {
    started_with(tag, |_| {}).await
}

/// Waits for `what`: the agent at `ep` listing no task.
async fn forgotten(ep: &str, what: &str) {
    until_ok(what, T, || async {
        let st = get_json(&format!("{ep}/agent/v1/state")).await;
        if st["tasks"].as_array().unwrap().is_empty() {
            Ok(())
        } else {
            Err(format!("{st}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_runs_a_task_and_serves_its_logs() {
    let (master, _dir, root, agent, ep) = started("run").await;
    let reg = master.wait_registrations(1).await;
    assert!(reg.agent_id.is_none());
    assert!(ep.starts_with("http://127.0.0.1:"), "{ep}");
    assert_eq!(reg.hostname, "127.0.0.1");
    assert_eq!(reg.attributes[0].name, "rack");
    let body = launch_body(
        "hello",
        "echo port=$PORT ports=$PORTS task=$MESOS_TASK_ID agent=$MESOS_AGENT_ID uid=$(id -u) groups=$(id -G) host=$HOST; echo oops >&2",
        0.5,
        64.0,
        Some((31000, 31001)),
    );
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    let running = master.wait_state("hello", TaskState::TaskRunning).await;
    let pid = running
        .status
        .container_status
        .unwrap()
        .executor_pid
        .unwrap();
    assert!(pid > 0);
    let fin = master.wait_state("hello", TaskState::TaskFinished).await;
    assert_eq!(fin.status.agent_id.unwrap().value, "agent-S0");
    let states: Vec<TaskState> = master
        .updates_for("hello")
        .iter()
        .map(|u| u.status.state)
        .collect();
    let firsts: Vec<TaskState> = states.iter().copied().fold(Vec::new(), |mut v, s| {
        if !v.contains(&s) {
            v.push(s);
        }
        v
    });
    assert_eq!(
        firsts,
        vec![
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ]
    );
    // Fresh uuids on every update.
    let uuids: std::collections::HashSet<_> = master
        .updates_for("hello")
        .iter()
        .map(|u| u.status.uuid.clone().unwrap())
        .collect();
    assert!(uuids.len() >= 3);

    // The terminal task is forgotten once everything is acked, but its sandbox (and so its
    // logs) stays.
    forgotten(&ep, "the terminal task to be forgotten").await;
    let logged = reqwest::get(format!("{ep}/agent/v1/tasks/hello/stderr"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(logged, "oops\n");
    let sandbox_root = _dir.path().join("sandboxes/fw-1/hello");
    let run = std::fs::read_dir(&sandbox_root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = std::fs::read_to_string(run.join("stdout")).unwrap();
    assert!(
        out.contains(
            "port=31000 ports=31000,31001 task=hello agent=agent-S0 uid=600000 groups=600000 host=127.0.0.1"
        ),
        "the task runs under the first uid of --task-uids, no other group: {out}"
    );
    let meta = std::fs::metadata(&run).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (600000, 0o700));
    assert_eq!(
        std::fs::read_to_string(run.join("stderr")).unwrap(),
        "oops\n"
    );
    // No cgroup left behind.
    assert!(task_cgroups(&root.0).is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_api_and_failures() {
    let (master, _dir, _root, agent, ep) = started("fail").await;
    // A long-running task whose logs are read while it runs.
    let body = launch_body("talker", "echo 0123456789; sleep 300", 0.1, 32.0, None);
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    master.wait_state("talker", TaskState::TaskRunning).await;
    let client = reqwest::Client::new();
    let mut text = String::new();
    for _ in 0..100 {
        text = client
            .get(format!(
                "{ep}/agent/v1/tasks/talker/stdout?offset=2&length=3"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(text, "234");
    let st = get_json(&format!("{ep}/agent/v1/state")).await;
    assert_eq!(st["tasks"][0]["task_id"]["value"], "talker");
    assert_eq!(st["tasks"][0]["state"], "TASK_RUNNING");
    assert!(st["tasks"][0]["pid"].as_u64().is_some());
    let missing = client
        .get(format!("{ep}/agent/v1/tasks/nope/stdout"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Non-zero exit.
    let body = launch_body("exit3", "exit 3", 0.1, 32.0, None);
    post(&ep, "/agent/v1/launch", &body).await;
    let failed = master.wait_state("exit3", TaskState::TaskFailed).await;
    assert!(
        failed
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("exited with status 3"),
        "{failed:?}"
    );
    // Killed by a signal.
    let body = launch_body("sig", "kill -SEGV $$", 0.1, 32.0, None);
    post(&ep, "/agent/v1/launch", &body).await;
    let failed = master.wait_state("sig", TaskState::TaskFailed).await;
    assert!(
        failed
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("SIGSEGV"),
        "{failed:?}"
    );
    // Custom executor → TASK_ERROR.
    let mut body = launch_body("exec", "true", 0.1, 32.0, None);
    body["task"]["executor"] = json!({"executor_id": {"value": "x"}});
    post(&ep, "/agent/v1/launch", &body).await;
    let err = master.wait_state("exec", TaskState::TaskError).await;
    assert!(err.status.message.unwrap().contains("executor"));
    // Missing command → TASK_ERROR.
    let mut body = launch_body("nocmd", "true", 0.1, 32.0, None);
    body["task"].as_object_mut().unwrap().remove("command");
    post(&ep, "/agent/v1/launch", &body).await;
    let err = master.wait_state("nocmd", TaskState::TaskError).await;
    assert_eq!(err.status.reason.as_deref(), Some("REASON_TASK_INVALID"));
    // Non-shell command that does not exist → FAILED naming it.
    let mut body = launch_body("noexe", "/no/such/binary", 0.1, 32.0, None);
    body["task"]["command"]["shell"] = json!(false);
    post(&ep, "/agent/v1/launch", &body).await;
    let failed = master.wait_state("noexe", TaskState::TaskFailed).await;
    assert!(failed.status.message.unwrap().contains("/no/such/binary"));
    // Bad JSON → 400.
    let resp = client
        .post(format!("{ep}/agent/v1/launch"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    shutdown_framework(&ep, "fw-1").await;
    master.wait_state("talker", TaskState::TaskKilled).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leaves_nothing_behind() {
    let (master, _dir, root, agent, ep) = started("kill").await;
    // A child in another process group escapes killpg; the cgroup still catches it.
    let body = launch_body(
        "sleeper",
        "setsid sleep 300 & sleep 300 & trap '' TERM; wait",
        0.1,
        32.0,
        None,
    );
    post(&ep, "/agent/v1/launch", &body).await;
    let running = master.wait_state("sleeper", TaskState::TaskRunning).await;
    let pid = running
        .status
        .container_status
        .unwrap()
        .executor_pid
        .unwrap();
    let cg_dir = task_cgroups(&root.0).pop().expect("a task cgroup");
    until("3 task processes + supervisor in the cgroup", T, || {
        std::fs::read_to_string(cg_dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 4
    })
    .await;
    let procs: Vec<u32> = std::fs::read_to_string(cg_dir.join("cgroup.procs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let kill = json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "sleeper"},
        "kill_policy": {"grace_period": {"nanoseconds": 300_000_000i64}}});
    let asked = std::time::Instant::now();
    assert_eq!(post(&ep, "/agent/v1/kill", &kill).await, 202);
    let killed = master.wait_state("sleeper", TaskState::TaskKilled).await;
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(
        killed.status.container_status.unwrap().executor_pid,
        Some(pid)
    );
    for p in procs {
        wait_ended(p, "the kill").await;
    }
    assert!(!cg_dir.exists(), "cgroup {} not removed", cg_dir.display());
    assert!(!cpu_cgroup_dir(&format!(
        "{}/{}",
        root.0,
        cg_dir.file_name().unwrap().to_string_lossy()
    ))
    .exists());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_killed_alone() {
    let (master, _dir, _root, agent, ep) = started("oom").await;
    let body = launch_body("bystander", "sleep 300", 0.1, 32.0, None);
    post(&ep, "/agent/v1/launch", &body).await;
    let by = master.wait_state("bystander", TaskState::TaskRunning).await;
    let by_pid = by.status.container_status.unwrap().executor_pid.unwrap();
    // `tail` keeps the whole newline-free input in memory: 400 MiB against a 64 MiB limit.
    let body = launch_body(
        "hog",
        "head -c 400m /dev/zero | tail > /dev/null",
        // A whole cpu, so the hog reaches its limit quickly even on an emulated CPU.
        1.0,
        64.0,
        None,
    );
    post(&ep, "/agent/v1/launch", &body).await;
    let failed = master.wait_state("hog", TaskState::TaskFailed).await;
    assert_eq!(
        failed.status.reason.as_deref(),
        Some("REASON_CONTAINER_LIMITATION_MEMORY"),
        "{failed:?}"
    );
    assert_eq!(
        failed.status.source,
        Some(drove_proto::mesos::TaskSource::SourceAgent)
    );
    let msg = failed.status.message.unwrap();
    assert!(msg.contains("64.0 MiB"), "{msg}");
    assert!(pid_alive(by_pid), "the bystander died too");
    let st = get_json(&format!("{ep}/agent/v1/state")).await;
    assert!(st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["task_id"]["value"] == "bystander"));
    post(
        &ep,
        "/agent/v1/kill",
        &json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "bystander"}}),
    )
    .await;
    master.wait_state("bystander", TaskState::TaskKilled).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reattaches_running_tasks_and_reports_ended_ones() {
    let (master, dir, root, agent, ep) = started("restart").await;
    master.lock().auto_ack = true;
    post(
        &ep,
        "/agent/v1/launch",
        &launch_body("survivor", "sleep 300", 0.1, 32.0, None),
    )
    .await;
    post(
        &ep,
        "/agent/v1/launch",
        &launch_body(
            "quitter",
            "read x < /dev/null; sleep 2; exit 4",
            0.1,
            32.0,
            None,
        ),
    )
    .await;
    let running = master.wait_state("survivor", TaskState::TaskRunning).await;
    master.wait_state("quitter", TaskState::TaskRunning).await;
    let pid = running
        .status
        .container_status
        .unwrap()
        .executor_pid
        .unwrap();
    agent.stop().await;
    assert!(pid_alive(pid), "task died with the agent");
    // The quitter ends while the agent is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    master.lock().knows_agent = false;

    let agent = TestAgent::start(agent_args(&master, dir.path(), &root.0));
    let reg = master.wait_registrations(2).await;
    assert_eq!(reg.agent_id.as_ref().unwrap().value, "agent-S0");
    let survivor = reg
        .tasks
        .iter()
        .find(|t| t.task.task_id.value == "survivor")
        .unwrap();
    assert_eq!(survivor.state, TaskState::TaskRunning);
    let failed = master.wait_state("quitter", TaskState::TaskFailed).await;
    assert!(failed
        .status
        .message
        .unwrap()
        .contains("exited with status 4"));
    let ep2 = reg.endpoint.clone();
    let st = get_json(&format!("{ep2}/agent/v1/state")).await;
    let t = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"]["value"] == "survivor")
        .unwrap()
        .clone();
    assert_eq!(t["pid"].as_u64(), Some(pid as u64), "{st}");
    assert!(pid_alive(pid));
    // Still managed: kill works.
    post(
        &ep2,
        "/agent/v1/kill",
        &json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "survivor"}}),
    )
    .await;
    master.wait_state("survivor", TaskState::TaskKilled).await;
    wait_ended(pid, "the kill").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_retried_until_acked_in_order_and_survive_restart() {
    let (master, dir, root, agent, ep) = started("ack").await;
    master.lock().auto_ack = false;
    post(
        &ep,
        "/agent/v1/launch",
        &launch_body("quick", "true", 0.1, 32.0, None),
    )
    .await;
    // Only STARTING goes out, again and again, until acked.
    until("STARTING resent", T, || {
        master.updates_for("quick").len() >= 2
    })
    .await;
    let ups = master.updates_for("quick");
    assert!(
        ups.iter()
            .all(|u| u.status.state == TaskState::TaskStarting),
        "{ups:?}"
    );
    assert_eq!(ups[0].status.uuid, ups[1].status.uuid);
    // `true` ends at once; on a slow (emulated) CPU that may take longer than the first resend.
    until_ok("all 3 updates pending", T, || async {
        let st = get_json(&format!("{ep}/agent/v1/state")).await;
        if st["tasks"][0]["pending_updates"].as_u64() == Some(3) {
            Ok(())
        } else {
            Err(format!("{st}"))
        }
    })
    .await;
    // Restart the agent with the updates unacked: they are resent.
    agent.stop().await;
    let before = master.updates_for("quick").len();
    let agent = TestAgent::start(agent_args(&master, dir.path(), &root.0));
    let reg = master.wait_registrations(2).await;
    assert_eq!(reg.tasks[0].state, TaskState::TaskFinished);
    until("resent after restart", T, || {
        master.updates_for("quick").len() > before
    })
    .await;
    let ep = reg.endpoint;
    // Ack each head in turn.
    for expected in [
        TaskState::TaskStarting,
        TaskState::TaskRunning,
        TaskState::TaskFinished,
    ] {
        let head = master.wait_state("quick", expected).await;
        let ack = json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "quick"}, "uuid": head.status.uuid.unwrap()});
        assert_eq!(post(&ep, "/agent/v1/acknowledge", &ack).await, 202);
    }
    // Fully acked terminal task → forgotten.
    forgotten(&ep, "the fully acked terminal task to be forgotten").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_404_triggers_reregistration_with_tasks() {
    let (master, _dir, _root, agent, ep) = started("ping").await;
    post(
        &ep,
        "/agent/v1/launch",
        &launch_body("svc", "sleep 300", 0.1, 32.0, None),
    )
    .await;
    master.wait_state("svc", TaskState::TaskRunning).await;
    master.lock().knows_agent = false;
    let reg = master.wait_registrations(2).await;
    assert_eq!(reg.agent_id.unwrap().value, "agent-S0");
    assert_eq!(reg.tasks.len(), 1);
    assert_eq!(reg.tasks[0].state, TaskState::TaskRunning);
    assert_eq!(
        reg.tasks[0].status.as_ref().unwrap().state,
        TaskState::TaskRunning
    );
    shutdown_framework(&ep, "fw-1").await;
    master.wait_state("svc", TaskState::TaskKilled).await;
    agent.stop().await;
}

/// A launch the agent cannot have offered (a port range of billions, more cpus than it has)
/// is TASK_ERROR, and the agent keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_launch_with_a_huge_port_range_is_task_error() {
    let (master, _dir, _root, agent, ep) = started("forged").await;
    let body = launch_body("forged", "sleep 60", 0.1, 32.0, Some((1, 4_000_000_000)));
    post(&ep, "/agent/v1/launch", &body).await;
    let u = master.wait_state("forged", TaskState::TaskError).await;
    let msg = u.status.message.clone().unwrap_or_default();
    assert!(msg.contains("ports"), "{msg}");
    let greedy = launch_body("greedy", "sleep 60", 64.0, 32.0, None);
    post(&ep, "/agent/v1/launch", &greedy).await;
    let u = master.wait_state("greedy", TaskState::TaskError).await;
    assert!(u.status.message.unwrap_or_default().contains("cpus"));
    // Health-check numbers no timer can hold are refused, naming the field.
    for (task, field, value) in [
        ("inf-interval", "interval_seconds", json!("inf")),
        ("huge-timeout", "timeout_seconds", json!(1e300)),
        ("negative-delay", "delay_seconds", json!(-1.0)),
    ] {
        let mut b = launch_body(task, "sleep 60", 0.1, 32.0, None);
        b["task"]["health_check"] = json!({"type": "COMMAND", "command": {"value": "true"}});
        b["task"]["health_check"][field] = value;
        post(&ep, "/agent/v1/launch", &b).await;
        let u = master.wait_state(task, TaskState::TaskError).await;
        let msg = u.status.message.unwrap_or_default();
        assert!(msg.contains(field), "{task}: {msg}");
    }
    // Still working: a task that fits runs.
    post(
        &ep,
        "/agent/v1/launch",
        &launch_body("fine", "sleep 60", 0.1, 32.0, Some((31000, 31000))),
    )
    .await;
    master.wait_state("fine", TaskState::TaskRunning).await;
    agent.stop().await;
}

/// A fork bomb stops at the task's `pids.max` (64 in these tests, `--task-pids-max`); the
/// agent lives, and the task can still be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_stops_at_pids_max_and_the_agent_lives() {
    let (master, _dir, root, agent, ep) = started("forkbomb").await;
    let body = launch_body(
        "bomb",
        // Forks until the kernel refuses, and keeps running (a shell would exit on EAGAIN).
        "exec python3 -c 'import os, time\nfor _ in range(300):\n  try:\n    if os.fork() == 0:\n      time.sleep(120)\n      os._exit(0)\n  except OSError:\n    pass\ntime.sleep(120)'",
        0.5,
        64.0,
        None,
    );
    post(&ep, "/agent/v1/launch", &body).await;
    master.wait_state("bomb", TaskState::TaskRunning).await;
    let cid = task_cgroups(&root.0)
        .first()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .expect("the task's cgroup");
    let dir = pids_cgroup_dir(&format!("{}/{cid}", root.0));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(read("pids.max").trim(), "64");
    // Bounded wait until the bomb has filled its cgroup (the shell keeps failing to fork).
    until_ok("the bomb to fill its cgroup", T, || async {
        let current = read("pids.current");
        if current.trim().parse::<u64>().unwrap_or(0) < 60 {
            Err(format!("pids.current {current}"))
        } else {
            Ok(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let current: u64 = read("pids.current").trim().parse().unwrap_or(999);
    assert!(current <= 64, "pids.current {current} above pids.max");
    // The agent still answers and still kills.
    let health = reqwest::get(format!("{ep}/health"))
        .await
        .expect("agent health");
    assert!(health.status().is_success());
    post(&ep, "/agent/v1/kill", &kill_body("fw-1", "bomb")).await;
    master.wait_state("bomb", TaskState::TaskKilled).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_check_kills_the_task() {
    let (master, _dir, _root, agent, ep) = started("health").await;
    // Serves HTTP on $PORT for ~4 s, then stops listening but keeps running.
    let mut body = launch_body(
        "web",
        "timeout 4 python3 -m http.server $PORT --bind $HOST >/dev/null 2>&1; sleep 300",
        // A whole cpu: python's start-up under a 0.1-cpu quota on an emulated CPU (the v2 VM)
        // takes longer than the time it serves.
        1.0,
        64.0,
        Some((31050, 31050)),
    );
    body["task"]["health_check"] = json!({
        "type": "HTTP", "http": {"port_index": 0, "path": "/"},
        "delay_seconds": 0.0, "interval_seconds": 0.2, "timeout_seconds": 1.0,
        "consecutive_failures": 3, "grace_period_seconds": 5.0
    });
    post(&ep, "/agent/v1/launch", &body).await;
    let healthy = until_ok("a healthy update for web", T, || async {
        let updates = master.updates_for("web");
        match updates.iter().find(|u| u.status.healthy == Some(true)) {
            Some(u) => Ok(u.clone()),
            None => Err(format!("{updates:?}")),
        }
    })
    .await;
    assert_eq!(healthy.status.state, TaskState::TaskRunning);
    let killed = master.wait_state("web", TaskState::TaskKilled).await;
    assert_eq!(killed.status.healthy, Some(false));
    assert_eq!(
        killed.status.reason.as_deref(),
        Some("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED")
    );
    assert!(master
        .updates_for("web")
        .iter()
        .any(|u| u.status.state == TaskState::TaskRunning && u.status.healthy == Some(false)));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_none_runs_and_kills_process_groups() {
    init_tracing();
    let master = FakeMaster::start().await;
    let dir = support::tempdir();
    let mut args = agent_args(&master, dir.path(), "unused");
    args.isolation = drove_agent::Isolation::None;
    let agent = TestAgent::start(args);
    let ep = master.wait_registrations(1).await.endpoint;
    post(
        &ep,
        "/agent/v1/launch",
        &launch_body("plain", "sleep 300 & sleep 300; wait", 0.1, 32.0, None),
    )
    .await;
    let running = master.wait_state("plain", TaskState::TaskRunning).await;
    let pid = running
        .status
        .container_status
        .unwrap()
        .executor_pid
        .unwrap();
    let kill = json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "plain"}});
    post(&ep, "/agent/v1/kill", &kill).await;
    master.wait_state("plain", TaskState::TaskKilled).await;
    wait_ended(pid, "the kill").await;
    let pgrep = std::process::Command::new("pgrep")
        .arg("-g")
        .arg(pid.to_string())
        .output()
        .unwrap();
    // Zombies awaiting their reaper do not count.
    let alive: Vec<u32> = String::from_utf8_lossy(&pgrep.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p| pid_alive(*p))
        .collect();
    let ps = std::process::Command::new("ps")
        .args(["-o", "pid,stat,args", "-g", &pid.to_string()])
        .output()
        .unwrap();
    assert!(
        alive.is_empty(),
        "process group {pid} survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_usable_cgroups() {
    let master = FakeMaster::start().await;
    let dir = support::tempdir();
    let args = agent_args(&master, dir.path(), "../escape");
    let err = drove_agent::run(args, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, drove_agent::AgentError::Cgroups(_)), "{err}");
    assert!(err.to_string().contains("--isolation none"), "{err}");
}

fn files_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_named(&p, name));
            } else if p.file_name().is_some_and(|n| n == name) {
                out.push(p);
            }
        }
    }
    out
}

fn kill_body(fw: &str, task: &str) -> serde_json::Value {
    json!({"framework_id": {"value": fw}, "task_id": {"value": task},
        "kill_policy": {"grace_period": {"nanoseconds": 100_000_000i64}}})
}

fn launch_in(fw: &str, task: &str, cmd: &str) -> serde_json::Value {
    let mut b = launch_body(task, cmd, 0.1, 32.0, None);
    b["framework_id"]["value"] = json!(fw);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_shutdowns_racing_launches_are_never_lost() {
    let (master, dir, root, agent, ep) = started("race").await;
    let cmd = "touch started; sleep 300";
    // The positive control: a task let run leaves its marker where the checks below look.
    assert_eq!(
        post(&ep, "/agent/v1/launch", &launch_in("fw-1", "control", cmd)).await,
        202
    );
    master.wait_state("control", TaskState::TaskRunning).await;
    let control = dir.path().join("sandboxes/fw-1/control");
    until("the control task's marker", T, || {
        !files_named(&control, "started").is_empty()
    })
    .await;
    assert_eq!(
        post(&ep, "/agent/v1/kill", &kill_body("fw-1", "control")).await,
        202
    );
    master.wait_state("control", TaskState::TaskKilled).await;
    // A kill overtaken by nothing: it arrives before its launch (reordered requests).
    assert_eq!(
        post(&ep, "/agent/v1/kill", &kill_body("fw-1", "early")).await,
        202
    );
    assert_eq!(
        post(&ep, "/agent/v1/launch", &launch_in("fw-1", "early", cmd)).await,
        202
    );
    // A framework shut down before one of its launches arrives.

    assert_eq!(shutdown_framework(&ep, "fw-2").await, 202);
    assert_eq!(
        post(&ep, "/agent/v1/launch", &launch_in("fw-2", "orphan", cmd)).await,
        202
    );
    // Launch and kill sent at the same time, in either order.
    let racers: Vec<String> = (0..8).map(|i| format!("racer{i}")).collect();
    futures::future::join_all(racers.iter().map(|id| {
        let ep = ep.clone();
        async move {
            let launch = launch_in("fw-1", id, cmd);
            let kill = kill_body("fw-1", id);
            tokio::join!(
                post(&ep, "/agent/v1/launch", &launch),
                post(&ep, "/agent/v1/kill", &kill)
            )
        }
    }))
    .await;
    // ACCEPT then TEARDOWN: launches answered, then the framework shut down at once.
    let torn: Vec<String> = (0..6).map(|i| format!("torn{i}")).collect();
    futures::future::join_all(
        torn.iter()
            .map(|id| async { post(&ep, "/agent/v1/launch", &launch_in("fw-3", id, cmd)).await }),
    )
    .await;
    assert_eq!(shutdown_framework(&ep, "fw-3").await, 202);

    for id in ["early", "orphan"] {
        let killed = master.wait_state(id, TaskState::TaskKilled).await;
        assert!(
            master
                .updates_for(id)
                .iter()
                .all(|u| u.status.state == TaskState::TaskKilled),
            "{id} started: {:?}",
            master.updates_for(id)
        );
        assert_eq!(killed.status.task_id.value, id);
    }
    for id in racers.iter().chain(&torn) {
        master.wait_state(id, TaskState::TaskKilled).await;
    }
    // Tombstoned launches never ran their command.
    for fw_task in ["fw-1/early", "fw-2/orphan"] {
        let d = dir.path().join("sandboxes").join(fw_task);
        assert!(files_named(&d, "started").is_empty(), "{fw_task} ran");
    }
    // Nothing left running: every task cgroup is gone.
    until("task cgroups removed", T, || {
        task_cgroups(&root.0).is_empty()
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_404s_during_reregistration_register_once() {
    let (master, _dir, _root, agent, ep) = started("rereg").await;
    {
        let mut m = master.lock();
        m.auto_ack = false;
        m.pings_ok_when_unknown = true;
        m.status_404_when_unknown = true;
        m.status_404_stagger = Duration::from_millis(150);
        m.register_delay = Duration::from_millis(600);
    }
    let ids: Vec<String> = (0..5).map(|i| format!("svc{i}")).collect();
    futures::future::join_all(ids.iter().map(|id| async {
        let body = launch_body(id, "sleep 300", 0.1, 16.0, None);
        post(&ep, "/agent/v1/launch", &body).await
    }))
    .await;
    until("every STARTING sent", T, || {
        ids.iter().all(|id| !master.updates_for(id).is_empty())
    })
    .await;
    // The next resend round (unacked STARTINGs) is answered 404, the answers staggered so
    // that some arrive while the re-registration they caused is still in flight.
    master.lock().knows_agent = false;
    master.wait_registrations(2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, st404) = {
        let m = master.lock();
        (m.registrations.len(), m.status_404s)
    };
    assert!(
        st404 >= 2,
        "only {st404} status 404s: the race was not provoked"
    );
    assert_eq!(n, 2, "re-registered {} times for one 404 episode", n - 1);
    master.lock().auto_ack = true;
    shutdown_framework(&ep, "fw-1").await;
    for id in &ids {
        master.wait_state(id, TaskState::TaskKilled).await;
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_never_signals_a_reused_task_pid() {
    init_tracing();
    let master = FakeMaster::start().await;
    let dir = support::tempdir();
    let mut args = agent_args(&master, dir.path(), "unused");
    args.isolation = drove_agent::Isolation::None;
    let agent = TestAgent::start(args.clone());
    let ep = master.wait_registrations(1).await.endpoint;
    post(
        &ep,
        "/agent/v1/launch",
        &launch_body("quitter", "sleep 2; exit 4", 0.1, 32.0, None),
    )
    .await;
    master.wait_state("quitter", TaskState::TaskRunning).await;
    agent.stop().await;
    // The task ends while the agent is down...
    let meta = dir.path().join("meta");
    until("the task ended", T, || {
        !files_named(&meta.join("containers"), "exit_status.json").is_empty()
    })
    .await;
    // ...and its pid is reused by an unrelated process group leader.
    let mut innocent = std::process::Command::new("sleep");
    std::os::unix::process::CommandExt::process_group(&mut innocent, 0);
    let mut innocent = innocent.arg("300").spawn().unwrap();
    let record = std::fs::read_dir(meta.join("tasks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    rec["task_pid"] = json!(innocent.id());
    std::fs::write(&record, serde_json::to_vec(&rec).unwrap()).unwrap();

    let agent = TestAgent::start(args);
    let failed = master.wait_state("quitter", TaskState::TaskFailed).await;
    assert!(failed
        .status
        .message
        .unwrap()
        .contains("exited with status 4"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let survived = innocent.try_wait().unwrap().is_none();
    let _ = innocent.kill();
    let _ = innocent.wait();
    assert!(
        survived,
        "the agent killed an unrelated process with a reused pid"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_aborts_a_fetch_in_progress() {
    let (master, dir, _root, agent, ep) = started("fetchkill").await;
    // A URI that takes 60 s to answer.
    let app = axum::Router::new().route(
        "/slow.tar.gz",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow.tar.gz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut body = launch_body("fetching", "touch started; sleep 300", 0.1, 32.0, None);
    body["task"]["command"]["uris"] = json!([{"value": url}]);
    post(&ep, "/agent/v1/launch", &body).await;
    master.wait_state("fetching", TaskState::TaskStarting).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    post(&ep, "/agent/v1/kill", &kill_body("fw-1", "fetching")).await;
    let killed = master.wait_state("fetching", TaskState::TaskKilled).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the kill waited for the fetch: {:?}",
        asked.elapsed()
    );
    assert!(master
        .updates_for("fetching")
        .iter()
        .all(|u| u.status.state != TaskState::TaskRunning));
    assert!(killed.status.message.is_some());
    // Its sandbox is where a run would have left the marker (the fetch was writing there).
    let sb = dir.path().join("sandboxes/fw-1/fetching");
    assert!(sb.is_dir(), "the sandbox {} is there", sb.display());
    assert!(files_named(&sb, "started").is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_spawn_removes_the_cgroup_even_when_acked_at_once() {
    init_tracing();
    let master = FakeMaster::start().await;
    let dir = support::tempdir();
    let root = CgroupRoot::new("spawnfail");
    let mut args = agent_args(&master, dir.path(), &root.0);
    args.executor_path = Some("/nonexistent/drove-executor".into());
    let agent = TestAgent::start(args);
    let ep = master.wait_registrations(1).await.endpoint;
    for i in 0..5 {
        let id = format!("nospawn{i}");
        post(
            &ep,
            "/agent/v1/launch",
            &launch_body(&id, "true", 0.1, 16.0, None),
        )
        .await;
    }
    for i in 0..5 {
        let failed = master
            .wait_state(&format!("nospawn{i}"), TaskState::TaskFailed)
            .await;
        assert_eq!(
            failed.status.reason.as_deref(),
            Some("REASON_CONTAINER_LAUNCH_FAILED")
        );
    }
    until("no task cgroup left", T, || {
        task_cgroups(&root.0).is_empty()
    })
    .await;
    until("failed tasks forgotten", T, || {
        std::fs::read_dir(dir.path().join("meta/tasks"))
            .map(|rd| rd.count() == 0)
            .unwrap_or(false)
    })
    .await;
    agent.stop().await;
}

/// The sandbox of `task` (its only run) under framework `fw`.
fn sandbox_of(dir: &std::path::Path, fw: &str, task: &str) -> std::path::PathBuf {
    let runs = dir.join("sandboxes").join(fw).join(task);
    std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}", runs.display()))
        .flatten()
        .next()
        .expect("one run")
        .path()
}

/// A task that swaps its log files for links to root-only host files can neither read them
/// through the log API nor make the root agent's rotation copy or truncate them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cannot_use_its_log_files_to_reach_host_files() {
    init_tracing();
    let master = FakeMaster::start().await;
    let dir = support::tempdir();
    let root = CgroupRoot::new("logln");
    let mut args = agent_args(&master, dir.path(), &root.0);
    args.log_max_bytes = 1024;
    let agent = TestAgent::start(args);
    let ep = master.wait_registrations(1).await.endpoint;
    let secret = dir.path().join("secret");
    let secret2 = dir.path().join("secret2");
    let content = "S".repeat(4096);
    for f in [&secret, &secret2] {
        std::fs::write(f, &content).unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Links in place of stdout and of rotation's temporary file; then enough stderr to make
    // the agent rotate (it rotates stdout first, then stderr, every second).
    let cmd = format!(
        "rm -f stdout stdout.1.tmp; ln -s {} stdout; ln -s {} stdout.1.tmp; \
         head -c 5000 /dev/zero | tr '\\0' x >&2; exec sleep 300",
        secret.display(),
        secret2.display()
    );
    let body = launch_body("sneaky", &cmd, 0.1, 32.0, None);
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    master.wait_state("sneaky", TaskState::TaskRunning).await;
    let sb = sandbox_of(dir.path(), "fw-1", "sneaky");
    until("stderr rotated", T, || sb.join("stderr.1").is_file()).await;
    for f in [&secret, &secret2] {
        assert_eq!(
            std::fs::read_to_string(f).unwrap(),
            content,
            "{} intact",
            f.display()
        );
    }
    assert!(
        !sb.join("stdout.1").exists(),
        "nothing of the host file was copied"
    );
    let resp = reqwest::get(format!("{ep}/agent/v1/tasks/sneaky/stdout"))
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains("SSSS") && text.contains("symlink"), "{text}");
    // The real stream is still served.
    let err = reqwest::get(format!("{ep}/agent/v1/tasks/sneaky/stderr"))
        .await
        .unwrap();
    assert_eq!(err.status(), 200);
    shutdown_framework(&ep, "fw-1").await;
    master.wait_state("sneaky", TaskState::TaskKilled).await;
    agent.stop().await;
}

/// Tasks of two apps (different task users) get different uids: one cannot read the other's
/// sandbox or signal its process; a second task of the same app can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_different_apps_cannot_read_or_signal_each_other() {
    let (master, dir, _root, agent, ep) = started("apps").await;
    let as_user = |task: &str, user: &str, cmd: &str| {
        let mut b = launch_body(task, cmd, 0.1, 32.0, None);
        b["task"]["command"]["user"] = json!(user);
        b
    };
    let owner = as_user(
        "a1",
        "app-a",
        "echo pid=$$; echo private > mine.txt; exec sleep 300",
    );
    assert_eq!(post(&ep, "/agent/v1/launch", &owner).await, 202);
    master.wait_state("a1", TaskState::TaskRunning).await;
    let a1 = sandbox_of(dir.path(), "fw-1", "a1");
    until("a1 wrote its file", T, || a1.join("mine.txt").is_file()).await;
    let out = std::fs::read_to_string(a1.join("stdout")).unwrap();
    let pid: u32 = out
        .trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let probe = format!(
        "cat {0}/mine.txt; echo cat=$?; ls {0} >/dev/null; echo ls=$?; kill -0 {pid}; echo kill=$?; \
         kill -9 {pid}; echo kill9=$?",
        a1.display()
    );
    let other = as_user("b1", "app-b", &probe);
    post(&ep, "/agent/v1/launch", &other).await;
    master.wait_state("b1", TaskState::TaskFinished).await;
    let b_out =
        std::fs::read_to_string(sandbox_of(dir.path(), "fw-1", "b1").join("stdout")).unwrap();
    for line in ["cat=1", "ls=2", "kill=1", "kill9=1"] {
        assert!(
            b_out.contains(line),
            "another app's task: {line} expected in {b_out}"
        );
    }
    assert!(!b_out.contains("private"), "{b_out}");
    assert!(pid_alive(pid), "the other app's process survived");
    // The same app's next instance shares the uid, so the check above is not vacuous.
    let same = as_user(
        "a2",
        "app-a",
        &format!("cat {}/mine.txt; echo cat=$?", a1.display()),
    );
    post(&ep, "/agent/v1/launch", &same).await;
    master.wait_state("a2", TaskState::TaskFinished).await;
    let a_out =
        std::fs::read_to_string(sandbox_of(dir.path(), "fw-1", "a2").join("stdout")).unwrap();
    assert!(
        a_out.contains("private") && a_out.contains("cat=0"),
        "{a_out}"
    );
    shutdown_framework(&ep, "fw-1").await;
    master.wait_state("a1", TaskState::TaskKilled).await;
    agent.stop().await;
}
