//! Tasks in containers (`--isolation container`) against a fake master: the real OCI runtime
//! (crun by default, runc too), real CNI plugins and iptables, real namespaces. Runs as root.

use drove_testkit::agent as support;

use drove_agent::Isolation;
use drove_proto::mesos::TaskState;
use drove_testkit::wait::{until, until_ok};
use support::*;

async fn started(
    tag: &str,
    runtime: &str,
) -> (FakeMaster, tempfile::TempDir, CgroupRoot, TestAgent, String) {
    started_with(tag, |args| {
        args.isolation = Isolation::Container;
        args.oci_runtime = runtime.into();
    })
    .await
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

/// A network namespace the test makes outside the task network, wired to the host by a veth
/// pair: the host's end stands in for the host's own services, the namespace's end for the
/// internet (the npm registry) that tasks reach through NAT.
struct Outside {
    name: String,
    host_ip: String,
    ns_ip: String,
}

fn sh(cmd: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Outside {
    fn new(n: u8) -> Outside {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let name = format!("dt-out-{tag}");
        let (host_ip, ns_ip) = (format!("198.18.{n}.1"), format!("198.18.{n}.2"));
        let (h, p) = (format!("dth{tag}"), format!("dtp{tag}"));
        sh(&format!(
            "ip netns add {name} && ip link add {h} type veth peer name {p} && \
             ip link set {p} netns {name} && ip addr add {host_ip}/30 dev {h} && ip link set {h} up && \
             ip -n {name} addr add {ns_ip}/30 dev {p} && ip -n {name} link set {p} up && \
             ip -n {name} link set lo up"
        ));
        Outside {
            name,
            host_ip,
            ns_ip,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A node script run in a task: connects to each `name=host:port` argument and prints
/// `name=connected`, `name=refused:<code>` or `name=timeout`.
const PROBE: &str = r#"
const net = require("net");
const targets = process.argv.slice(2);
let left = targets.length;
const done = () => { if (--left === 0) process.exit(0); };
for (const t of targets) {
  const [name, addr] = t.split("=");
  const [host, port] = addr.split(":");
  const s = net.connect({ host, port: +port, timeout: 3000 });
  s.on("connect", () => { console.log(name + "=connected"); s.destroy(); done(); });
  s.on("error", e => { console.log(name + "=refused:" + e.code); done(); });
  s.on("timeout", () => { console.log(name + "=timeout"); s.destroy(); done(); });
}
"#;

fn probe_cmd(targets: &[(&str, String)]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(PROBE);
    let args: Vec<String> = targets.iter().map(|(n, a)| format!("{n}={a}")).collect();
    format!(
        "echo {b64} | base64 -d > /tmp/probe.js && node /tmp/probe.js {}",
        args.join(" ")
    )
}

async fn wait_output(dir: &std::path::Path, task: &str, marker: &str) -> String {
    until_ok(
        &format!("{marker:?} from {task}"),
        std::time::Duration::from_secs(30),
        || async {
            let out = stdout_of(dir, task);
            if out.contains(marker) {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaches_the_outside_but_not_other_tasks_or_the_host() {
    let (master, dir, _root, agent, ep) = started("net", "crun").await;
    let outside = Outside::new(7);
    // The host's own service, on an address of the host's (the veth's host end).
    let host_service = tokio::net::TcpListener::bind((outside.host_ip.as_str(), 0))
        .await
        .unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = host_service.accept().await {
            drop(s);
        }
    });
    // The "registry", outside: a server in the namespace the test made.
    let registry_port = 18080;
    let mut registry = std::process::Command::new("ip")
        .args(["netns", "exec", &outside.name, "node", "-e"])
        .arg(format!(
            "require('net').createServer(s => s.end('pong')).listen({registry_port}, '{}')",
            outside.ns_ip
        ))
        .spawn()
        .unwrap();

    // App B serves on its own address.
    let b = launch_body(
        "app-b",
        "exec node -e \"require('http').createServer((q,s)=>s.end('b')).listen(process.env.PORT)\"",
        0.2,
        128.0,
        Some((31010, 31010)),
    );
    assert_eq!(post(&ep, "/agent/v1/launch", &b).await, 202);
    let running = master.wait_state("app-b", TaskState::TaskRunning).await;
    let b_ip = running
        .status
        .container_status
        .and_then(|c| c.ip_address().map(str::to_string))
        .unwrap();
    // Positive control: the host (the router, health checks) reaches B at its address.
    let b_url = format!("http://{b_ip}:31010/");
    until_ok(
        "B to answer the host",
        std::time::Duration::from_secs(20),
        || async {
            let r = reqwest::get(&b_url).await.map_err(|e| e.to_string())?;
            assert_eq!(r.text().await.unwrap(), "b");
            Ok(())
        },
    )
    .await;
    // And the host reaches its own service and the agent (controls of the refusals below).
    assert!(std::net::TcpStream::connect((outside.host_ip.as_str(), host_port)).is_ok());
    let agent_port = ep.rsplit(':').next().unwrap().to_string();
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{agent_port}")).is_ok());

    let a = launch_body(
        "app-a",
        &probe_cmd(&[
            ("b", format!("{b_ip}:31010")),
            ("host", format!("{}:{host_port}", outside.host_ip)),
            ("agent", format!("127.0.0.1:{agent_port}")),
            ("gateway", format!("10.213.0.1:{agent_port}")),
            ("registry", format!("{}:{registry_port}", outside.ns_ip)),
        ]),
        0.2,
        128.0,
        Some((31011, 31011)),
    );
    // The registry may take a moment to listen: retry A until it reaches it (bounded).
    let mut out = String::new();
    for attempt in 0..10 {
        let id = format!("app-a{attempt}");
        let mut body = a.clone();
        body["task"]["task_id"]["value"] = id.clone().into();
        assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
        master.wait_state(&id, TaskState::TaskFinished).await;
        out = wait_output(dir.path(), &id, "registry=").await;
        if out.contains("registry=connected") {
            break;
        }
    }
    let _ = registry.kill();
    let _ = registry.wait();
    assert!(
        out.contains("registry=connected"),
        "egress through NAT: {out}"
    );
    for target in ["b", "host", "agent", "gateway"] {
        assert!(
            out.contains(&format!("{target}=refused")),
            "{target} must be refused: {out}"
        );
    }
    let kill =
        serde_json::json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "app-b"}});
    assert_eq!(post(&ep, "/agent/v1/kill", &kill).await, 202);
    master.wait_state("app-b", TaskState::TaskKilled).await;
    agent.stop().await;
}

/// Refusals a container adds, each probed twice: in a container (refused) and as a plain
/// cgroup task (allowed: the positive control that the probe itself works).
const SYSCALL_PROBES: &str = "unshare -r true 2>/dev/null && echo UNSHARE=ok || echo UNSHARE=refused; \
    unshare -rm sh -c 'mount -t tmpfs none /tmp' 2>/dev/null && echo MOUNT=ok || echo MOUNT=refused; \
    python3 -c 'import ctypes; print(\"PTRACE=ok\" if ctypes.CDLL(None).ptrace(0, 0, 0, 0) == 0 else \"PTRACE=refused\")'; \
    python3 -c 'import os, time\nn = 0\ntry:\n    while n < 400:\n        if os.fork() == 0:\n            time.sleep(3); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(\"FORKS=%d\" % n)'";

async fn probe_syscalls(isolation: Isolation) -> String {
    let (master, dir, _root, agent, ep) =
        started_with("sys", |args| args.isolation = isolation).await;
    let body = launch_body("probes", SYSCALL_PROBES, 0.5, 256.0, None);
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    let out = wait_output(dir.path(), "probes", "FORKS=").await;
    master.wait_state("probes", TaskState::TaskFinished).await;
    agent.stop().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_unshare_and_ptrace_are_refused_and_a_fork_bomb_stops_at_pids_max() {
    let confined = probe_syscalls(Isolation::Container).await;
    let plain = probe_syscalls(Isolation::Cgroups).await;
    for probe in ["UNSHARE", "MOUNT", "PTRACE"] {
        assert!(
            plain.contains(&format!("{probe}=ok")),
            "the probe works outside a container: {plain}"
        );
        assert!(
            confined.contains(&format!("{probe}=refused")),
            "{probe} is refused in a container: {confined}"
        );
    }
    // pids.max is 64 in these tests: the bomb stops below it, and did fork (not refused
    // outright).
    let forks: u32 = confined
        .rsplit("FORKS=")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fork count: {confined}"));
    assert!((10..64).contains(&forks), "forks: {forks}: {confined}");
}

/// This agent's network namespaces, their address leases and their NAT rules.
fn network_footprint(work_dir: &std::path::Path) -> (usize, usize, usize) {
    let prefix = format!(
        "drove-{}-",
        drove_agent::container::network::tag_of(work_dir)
    );
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0);
    let leases = std::fs::read_dir("/run/drove/cni/drove")
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.starts_with(&prefix)))
                .count()
        })
        .unwrap_or(0);
    let nat = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("-A POSTROUTING") && l.contains(&prefix))
                .count()
        })
        .unwrap_or(0);
    (netns, leases, nat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_launches_and_kills_leave_nothing_behind() {
    let (master, dir, root, agent, ep) = started("churn", "crun").await;
    // Positive control: a running container holds a namespace, a lease and a NAT rule.
    let body = launch_body(
        "held",
        "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done",
        0.1,
        32.0,
        None,
    );
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    master.wait_state("held", TaskState::TaskRunning).await;
    let held = network_footprint(dir.path());
    assert!(held.0 >= 1 && held.1 >= 1 && held.2 >= 1, "{held:?}");
    // A kill is a SIGTERM the task handles (tini, its pid 1, passes it on), well within the
    // grace period.
    let kill = serde_json::json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "held"},
        "kill_policy": {"grace_period": {"nanoseconds": 20_000_000_000i64}}});
    let asked = std::time::Instant::now();
    assert_eq!(post(&ep, "/agent/v1/kill", &kill).await, 202);
    master.wait_state("held", TaskState::TaskKilled).await;
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    wait_output(dir.path(), "held", "got-term").await;

    for batch in 0..5 {
        let ids: Vec<String> = (0..10).map(|i| format!("churn-{batch}-{i}")).collect();
        for id in &ids {
            let body = launch_body(id, "sleep 600", 0.1, 32.0, None);
            assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
        }
        for id in &ids {
            master.wait_state(id, TaskState::TaskRunning).await;
        }
        for id in &ids {
            let kill =
                serde_json::json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": id}});
            assert_eq!(post(&ep, "/agent/v1/kill", &kill).await, 202);
        }
        for id in &ids {
            master.wait_state(id, TaskState::TaskKilled).await;
        }
    }
    // Everything of the 51 containers is released; what remains is the pool of ready
    // namespaces (2 in these tests), each with its lease and NAT rule, and nothing else.
    let settled = |f: (usize, usize, usize)| f.0 <= 2 && f.1 == f.0 && f.2 == f.0;
    until_ok(
        "the containers' namespaces, leases and NAT rules to be released",
        std::time::Duration::from_secs(20),
        || async {
            let left = network_footprint(dir.path());
            if settled(left) {
                Ok(())
            } else {
                Err(format!("namespaces, leases and NAT rules left: {left:?}"))
            }
        },
    )
    .await;
    until("the task cgroups to go", T, || {
        task_cgroups(&root.0).is_empty()
    })
    .await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let work = dir.path().canonicalize().unwrap().display().to_string();
    assert!(!mounts.contains(&work), "no mount of the work dir is left");
    // A bundle goes after its task's end is reported: wait for the last to go.
    let containers = dir.path().join("meta/containers");
    assert!(containers.is_dir(), "the agent keeps its bundles there");
    until("every container's bundle to go", T, || {
        std::fs::read_dir(&containers).is_ok_and(|mut d| d.next().is_none())
    })
    .await;
    agent.stop().await;
}

/// An agent restart kills no container, and one that ended while no agent ran is reported
/// with its exit status (its monitor wrote it down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_its_containers_and_learns_how_they_ended() {
    let (master, dir, root, agent, ep) = started("recover", "crun").await;
    let body = launch_body("survivor", "sleep 300", 0.1, 32.0, None);
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    // A second one ends with status 3 on SIGUSR1, sent while the agent is down.
    let body = launch_body(
        "quitter",
        "trap 'exit 3' USR1; while :; do sleep 0.05; done",
        0.1,
        32.0,
        None,
    );
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    let quitter = master.wait_state("quitter", TaskState::TaskRunning).await;
    let quitter_monitor = quitter
        .status
        .container_status
        .unwrap()
        .executor_pid
        .unwrap();
    let running = master.wait_state("survivor", TaskState::TaskRunning).await;
    let pid = running
        .status
        .container_status
        .as_ref()
        .unwrap()
        .executor_pid
        .unwrap();
    let ip = running
        .status
        .container_status
        .as_ref()
        .unwrap()
        .ip_address()
        .unwrap()
        .to_string();
    agent.stop().await;
    assert!(pid_alive(pid), "the container outlives its agent");
    // The container's process is its monitor's (adopted) child.
    let children = std::fs::read_to_string(format!(
        "/proc/{quitter_monitor}/task/{quitter_monitor}/children"
    ))
    .unwrap();
    let init: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    // Reaped here, as if by the agent that is gone: its exit status is not what tells.
    until("the quitter's monitor to end", T, || {
        let pid = nix::unistd::Pid::from_raw(quitter_monitor as i32);
        let flags = Some(nix::sys::wait::WaitPidFlag::WNOHANG);
        !matches!(
            nix::sys::wait::waitpid(pid, flags),
            Ok(nix::sys::wait::WaitStatus::StillAlive)
        )
    })
    .await;
    master.lock().knows_agent = false;
    let mut args = agent_args(&master, dir.path(), &root.0);
    args.isolation = Isolation::Container;
    let agent = TestAgent::start(args);
    let reg = master.wait_registrations(2).await;
    let survivor = reg
        .tasks
        .iter()
        .find(|t| t.task.task_id.value == "survivor")
        .unwrap();
    assert_eq!(survivor.state, TaskState::TaskRunning);
    // How the other ended while no agent watched is known: its monitor recorded it.
    let failed = master.wait_state("quitter", TaskState::TaskFailed).await;
    let said = failed.status.message.clone().unwrap_or_default();
    assert!(said.contains("exited with status 3"), "{failed:?}");
    // Its network is still its own: the sweep of unused namespaces spared it.
    let (netns, _, _) = network_footprint(dir.path());
    assert!(netns >= 1);
    let ns_ok = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("ip -o addr | grep -q ' {ip}/' || ls /run/netns | grep -q drove"),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ns_ok);
    assert!(pid_alive(pid));
    let kill =
        serde_json::json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "survivor"}});
    post(&reg.endpoint, "/agent/v1/kill", &kill).await;
    master.wait_state("survivor", TaskState::TaskKilled).await;
    assert!(!pid_alive(pid));
    agent.stop().await;
}

/// Kill and OOM reporting are what they are without containers: a memory hog in a container is
/// a memory limitation (its cgroup's limit, /tmp counted in), and its neighbour lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_in_a_container_is_a_memory_limitation() {
    let (master, _dir, _root, agent, ep) = started("oom", "crun").await;
    let body = launch_body("bystander", "sleep 300", 0.1, 32.0, None);
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    let by = master.wait_state("bystander", TaskState::TaskRunning).await;
    let by_pid = by.status.container_status.unwrap().executor_pid.unwrap();
    let body = launch_body(
        "hog",
        "head -c 400m /dev/zero | tail > /dev/null",
        1.0,
        64.0,
        None,
    );
    assert_eq!(post(&ep, "/agent/v1/launch", &body).await, 202);
    let failed = master.wait_state("hog", TaskState::TaskFailed).await;
    assert_eq!(
        failed.status.reason.as_deref(),
        Some("REASON_CONTAINER_LIMITATION_MEMORY"),
        "{failed:?}"
    );
    assert!(pid_alive(by_pid), "the bystander died too");
    let kill =
        serde_json::json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "bystander"}});
    assert_eq!(post(&ep, "/agent/v1/kill", &kill).await, 202);
    master.wait_state("bystander", TaskState::TaskKilled).await;
    agent.stop().await;
}

/// A Docker `ContainerInfo` is refused (drove runs its own containers), naming the field; a
/// `MESOS` one on drove's network runs (the positive control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_container_is_a_task_error() {
    let (master, _dir, _root, agent, ep) = started("docker", "crun").await;
    let mut docker = launch_body("docker", "true", 0.1, 32.0, None);
    docker["task"]["container"] =
        serde_json::json!({"type": "DOCKER", "docker": {"image": "nginx"}});
    assert_eq!(post(&ep, "/agent/v1/launch", &docker).await, 202);
    let refused = master.wait_state("docker", TaskState::TaskError).await;
    let msg = refused.status.message.unwrap_or_default();
    assert!(msg.contains("TaskInfo.container.type"), "{msg}");
    let mut mesos = launch_body("mesos", "true", 0.1, 32.0, None);
    mesos["task"]["container"] =
        serde_json::json!({"type": "MESOS", "network_infos": [{"name": "drove"}]});
    assert_eq!(post(&ep, "/agent/v1/launch", &mesos).await, 202);
    master.wait_state("mesos", TaskState::TaskFinished).await;
    agent.stop().await;
}

/// Mesos `port_mappings`: a host port of the task's forwards to its container's port (the CNI
/// `portmap` plugin), from another machine (here a namespace outside, through the host's
/// address) as from the host; it goes when the task does. A host port that is not the task's
/// is refused, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_host_port_reaches_the_container_and_goes_with_it() {
    let (master, _dir, _root, agent, ep) = started("portmap", "crun").await;
    let outside = Outside::new(8);
    let mut mapped = launch_body(
        "mapped",
        "exec node -e \"require('http').createServer((q,s)=>s.end('mapped')).listen(8080)\"",
        0.2,
        128.0,
        Some((31020, 31020)),
    );
    mapped["task"]["container"] = serde_json::json!({"type": "MESOS", "network_infos": [
        {"name": "drove", "port_mappings": [{"host_port": 31020, "container_port": 8080}]}]});
    assert_eq!(post(&ep, "/agent/v1/launch", &mapped).await, 202);
    let running = master.wait_state("mapped", TaskState::TaskRunning).await;
    let infos = running.status.container_status.unwrap().network_infos;
    assert_eq!(infos[0].port_mappings[0].host_port, 31020, "{infos:?}");
    assert_eq!(infos[0].port_mappings[0].container_port, 8080);
    // From outside the host, to the host's address and the mapped port.
    let get = format!(
        "require('http').get('http://{}:31020/', r => r.on('data', d => process.stdout.write(d)))\
         .on('error', e => {{ process.stdout.write('error:' + e.code); }})",
        outside.host_ip
    );
    let from_outside = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &outside.name, "node", "-e", &get])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut said = String::new();
    for _ in 0..100 {
        said = from_outside();
        if said == "mapped" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(said, "mapped", "through the mapping, from outside");
    // From the host itself, at the same address.
    let body = reqwest::get(format!("http://{}:31020/", outside.host_ip))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "mapped");
    let nat = || {
        let out = std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(nat().contains("--dport 31020"), "the mapping's rule");
    let kill =
        serde_json::json!({"framework_id": {"value": "fw-1"}, "task_id": {"value": "mapped"}});
    assert_eq!(post(&ep, "/agent/v1/kill", &kill).await, 202);
    master.wait_state("mapped", TaskState::TaskKilled).await;
    until("the mapping's rules to go", T, || {
        !nat().contains("--dport 31020")
    })
    .await;
    let after = from_outside();
    assert!(
        after.starts_with("error:"),
        "nothing answers once it is gone: {after}"
    );

    let mut stray = launch_body("stray", "true", 0.1, 32.0, Some((31021, 31021)));
    stray["task"]["container"] = serde_json::json!({"type": "MESOS", "network_infos": [
        {"port_mappings": [{"host_port": 31022, "container_port": 80}]}]});
    assert_eq!(post(&ep, "/agent/v1/launch", &stray).await, 202);
    let refused = master.wait_state("stray", TaskState::TaskError).await;
    let msg = refused.status.message.unwrap_or_default();
    assert!(
        msg.contains("port_mappings[0].host_port: 31022 is not one of the task's port resources"),
        "{msg}"
    );
    agent.stop().await;
}
