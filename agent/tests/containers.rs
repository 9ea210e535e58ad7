//! Tasks in containers (`--isolation container`) against a fake master: the real OCI runtime
//! (crun by default, runc too), real CNI plugins and iptables, real namespaces. Runs as root.

mod support;

use drove_agent::Isolation;
use drove_proto::mesos::TaskState;
use support::*;

async fn started(
    tag: &str,
    runtime: &str,
) -> (FakeMaster, tempfile::TempDir, CgroupRoot, TestAgent, String) {
    init_tracing();
    let master = FakeMaster::start().await;
    let dir = support::tempdir();
    let root = CgroupRoot::new(tag);
    let mut args = agent_args(&master, dir.path(), &root.0);
    args.isolation = Isolation::Container;
    args.oci_runtime = runtime.into();
    let agent = TestAgent::start(args);
    let reg = master.wait_registrations(1).await;
    (master, dir, root, agent, reg.endpoint)
}

fn stdout_of(dir: &std::path::Path, task: &str) -> String {
    let mut found = String::new();
    for entry in walk(dir) {
        if entry.ends_with("stdout") && entry.to_string_lossy().contains(task) {
            found = std::fs::read_to_string(&entry).unwrap_or_default();
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    out
}

async fn runs_confined(runtime: &str) {
    let (master, dir, _root, agent, ep) = started(&format!("ctr-{runtime}"), runtime).await;
    let work = dir.path().display().to_string();
    let cmd = format!(
        "echo uid=$(id -u) host=$HOST; ls /; echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); ls /proc | grep '^[0-9]' > /tmp/pids; echo procs=$(wc -l < /tmp/pids); \
         test -e $MESOS_SANDBOX/stdout && echo OWN-\"\"SANDBOX; test -e {work}/meta && echo SEES-\"\"WORK; test -e /root && echo SEES-\"\"ROOT; \
         test -e /srv && echo SEES-\"\"SRV; echo hi > /tmp/x && echo tmp-ok; \
         touch /usr/x 2>/dev/null || echo usr-ro; node -e 'console.log(\"node-ok\")'"
    );
    let body = launch_body("confined", &cmd, 0.5, 128.0, Some((31000, 31000)));
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    let running = master.wait_state("confined", TaskState::TaskRunning).await;
    let ip = running
        .status
        .container_status
        .as_ref()
        .and_then(|c| c.ip_address())
        .map(str::to_string)
        .expect("a container on its own network reports its address");
    assert!(ip.starts_with("10.213."), "{ip}");
    let fin = master.wait_state("confined", TaskState::TaskFinished).await;
    let out = stdout_of(dir.path(), "confined");
    assert!(out.contains(&format!("host={ip}")), "{out}\n{fin:?}");
    assert!(
        out.contains("tmp-ok") && out.contains("usr-ro") && out.contains("node-ok"),
        "{out}"
    );
    // Its own PID namespace: pid 1 is its init, and it sees a handful of processes (the host
    // has hundreds).
    assert!(out.contains("pid1=/usr/bin/tini -- /bin/sh -c"), "{out}");
    let procs: usize = out
        .rsplit("procs=")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a process count in {out}"));
    assert!((2..10).contains(&procs), "only its own processes: {out}");
    // The positive control of the probes below: `test -e` finds what is there.
    assert!(out.contains("OWN-SANDBOX"), "{out}");
    for leak in ["SEES-WORK", "SEES-ROOT", "SEES-SRV"] {
        assert!(!out.contains(leak), "{leak}: {out}");
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_confined_with_crun() {
    runs_confined("crun").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_confined_with_runc() {
    runs_confined("runc").await;
}
