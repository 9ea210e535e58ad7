//! Task lifecycle: launch (validate → sandbox → fetch → cgroup → supervisor), watch, kill,
//! finish, and recovery after an agent restart.
//!
//! The agent spawns the supervisor (`<executor-path> executor --spec FILE`, see
//! [`crate::executor`]) in its own process group and then only watches its pid (so watching
//! works the same for a recovered task whose supervisor is no longer the agent's child). The
//! supervisor writes the task pid and, at the end, the exit status into
//! `<work-dir>/meta/containers/<container-id>/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drove_proto::agent::LaunchTask;
use drove_proto::mesos::{split_argv, KillPolicy, TaskState, Uri};
use drove_proto::Resources;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cgroups::Limits;
use crate::checkpoint::{KillCause, TaskRecord};
use crate::container::network::{PortMap, Protocol};
use crate::executor::{read_exit_record, read_pid_file, ExecutorSpec, ExitRecord};
use crate::health::{self, CheckTarget, HealthAction};
use crate::layers::Layers;
use crate::logs::Stream;
use crate::node::{key_of, Node, TaskKey};
use crate::sandbox::{self, TaskUser};
use crate::status::{self, UpdateOpts};

const WATCH_TICK: Duration = Duration::from_millis(200);
/// How often a task is looked at until its process is seen: its RUNNING (and its first health
/// checks) wait on this, and a cold start's latency with them.
const STARTING_TICK: Duration = Duration::from_millis(5);
/// How long a task's startup CPU boost outlasts its first passed health check: the requests a
/// wake held reach it within milliseconds of that check (the route that releases them goes out
/// with it), so their first, cold render still runs boosted.
pub const BOOST_AFTER_READY: Duration = Duration::from_secs(5);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a task's environment is made of.
pub struct EnvInputs<'a> {
    pub host: &'a str,
    pub agent_id: &'a str,
    pub framework_id: &'a str,
    pub task_id: &'a str,
    pub sandbox: &'a Path,
    pub ports: &'a [u64],
    pub user: &'a TaskUser,
    pub command_env: &'a [(String, String)],
}

/// The task's environment: defaults, drove's variables, then `CommandInfo.environment`.
pub fn task_env(i: &EnvInputs<'_>) -> Vec<(String, String)> {
    let EnvInputs {
        host: node_host,
        agent_id,
        framework_id,
        task_id,
        sandbox,
        ports,
        user,
        command_env,
    } = *i;
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), sandbox.display().to_string()),
        ("USER".into(), user.name.clone()),
        ("LOGNAME".into(), user.name.clone()),
        ("HOST".into(), node_host.into()),
        ("MESOS_TASK_ID".into(), task_id.into()),
        ("MESOS_SANDBOX".into(), sandbox.display().to_string()),
        ("MESOS_DIRECTORY".into(), sandbox.display().to_string()),
        ("MESOS_FRAMEWORK_ID".into(), framework_id.into()),
        ("MESOS_AGENT_ID".into(), agent_id.into()),
    ];
    if let Some(first) = ports.first() {
        env.push(("PORT".into(), first.to_string()));
    }
    for (i, p) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), p.to_string()));
    }
    env.push((
        "PORTS".into(),
        ports
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    ));
    for (k, v) in command_env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Checks a launch; the error is the TASK_ERROR message.
pub fn validate(req: &LaunchTask) -> Result<Resources, String> {
    let task = &req.task;
    if task.executor.is_some() {
        return Err(
            "custom executors are not supported by drove; give the task a `command`".into(),
        );
    }
    container_info(task)?;
    let Some(cmd) = &task.command else {
        return Err("the task has no `command` (drove runs command tasks only)".into());
    };
    match cmd.value.as_deref() {
        Some(v) if !v.trim().is_empty() => {}
        _ => return Err("the task's `command.value` is missing or empty".into()),
    }
    sandbox::validate_id("framework id", &req.framework_id.value).map_err(|e| e.to_string())?;
    sandbox::validate_id("task id", &task.task_id.value).map_err(|e| e.to_string())?;
    if let Some(check) = &task.health_check {
        validate_health_check(check)?;
    }
    let res = Resources::from_mesos(&task.resources)
        .map_err(|e| format!("invalid task resources: {e}"))?;
    port_mappings(task, &res)?;
    Ok(res)
}

/// The host ports a task asks to have forwarded to its container (`ContainerInfo.network_infos
/// [].port_mappings`): each host port one of the task's own port resources, as in Mesos; only
/// on the task's own network.
fn port_mappings(
    task: &drove_proto::mesos::TaskInfo,
    res: &Resources,
) -> Result<Vec<PortMap>, String> {
    let Some(info) = container_info(task)? else {
        return Ok(Vec::new());
    };
    let mut maps = Vec::new();
    for (n, net) in info.network_infos.iter().enumerate() {
        for (m, pm) in net.port_mappings.iter().enumerate() {
            let field = format!("container.network_infos[{n}].port_mappings[{m}]");
            if net.name.as_deref() == Some("host") {
                return Err(format!(
                    "{field}: the host's network has no port mappings (its ports are the host's)"
                ));
            }
            if !res.ports.values().any(|p| p == u64::from(pm.host_port)) {
                return Err(format!(
                    "{field}.host_port: {} is not one of the task's port resources",
                    pm.host_port
                ));
            }
            let container_port = u16::try_from(pm.container_port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!(
                        "{field}.container_port: expected 1 to 65535, found {}",
                        pm.container_port
                    )
                })?;
            let protocol = match pm
                .protocol
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(other) => {
                    return Err(format!(
                        "{field}.protocol: expected tcp or udp, found {other:?}"
                    ))
                }
            };
            maps.push(PortMap {
                // Within the task's ports, which are within 0..=65535.
                host_port: u16::try_from(pm.host_port).unwrap_or(0),
                container_port,
                protocol,
            });
        }
    }
    Ok(maps)
}

/// Longest health-check delay, interval, timeout or grace period accepted: a week.
const MAX_CHECK_SECONDS: f64 = 7.0 * 86_400.0;

/// Range-checks a health check's numbers from the wire (JSON's lenient numbers let `"inf"` or
/// `1e300` through, which no timer can hold).
fn validate_health_check(check: &drove_proto::mesos::HealthCheck) -> Result<(), String> {
    for (field, value) in [
        ("delay_seconds", check.delay_seconds),
        ("interval_seconds", check.interval_seconds),
        ("timeout_seconds", check.timeout_seconds),
        ("grace_period_seconds", check.grace_period_seconds),
    ] {
        if let Some(v) = value {
            if !(0.0..=MAX_CHECK_SECONDS).contains(&v) {
                return Err(format!(
                    "health_check.{field}: expected 0 to {MAX_CHECK_SECONDS} seconds, found {v}"
                ));
            }
        }
    }
    if let Some(n) = check.consecutive_failures {
        if n > 1_000_000 {
            return Err(format!(
                "health_check.consecutive_failures: expected at most 1000000, found {n}"
            ));
        }
    }
    if let Some(port) = check
        .http
        .as_ref()
        .and_then(|h| h.port)
        .or(check.tcp.as_ref().and_then(|t| t.port))
    {
        if port > u32::from(u16::MAX) {
            return Err(format!(
                "health_check port: expected 1 to 65535, found {port}"
            ));
        }
    }
    Ok(())
}

/// Checks a launch against what this agent has free: its own resources less those of its other
/// live tasks. A forged or buggy launch (ports outside the agent's ranges, a range of millions,
/// more cpus or memory than is left) is refused here, before anything is built from it.
pub fn fits(node: &Node, key: &TaskKey, wanted: Resources) -> Result<Resources, String> {
    let mut free = node.config.resources.clone();
    for (k, r) in node.tasks().iter() {
        if k == key || r.state.is_terminal() {
            continue;
        }
        if let Ok(used) = Resources::from_mesos(&r.task.resources) {
            free.subtract(&used);
        }
    }
    if !free.ports.contains(&wanted.ports) {
        return Err(format!(
            "ports {:?} are not free on this agent (free: {:?})",
            wanted.ports.as_slice(),
            free.ports.as_slice()
        ));
    }
    if !free.contains(&wanted) {
        return Err(format!(
            "the task wants cpus {} mem {} disk {}, more than this agent has free (cpus {} mem {} disk {})",
            wanted.cpus, wanted.mem, wanted.disk, free.cpus, free.mem, free.disk
        ));
    }
    Ok(wanted)
}

/// Handles `POST /agent/v1/launch` before it is answered: the task is recorded (STAGING) at
/// once, so a kill or shutdown arriving right after the 202 always finds it. A kill for this
/// task or a shutdown of its framework that came first (tombstones, [`TOMBSTONE_TTL`]) makes
/// it end in TASK_KILLED without running anything. The launch itself goes on in the background.
///
/// [`TOMBSTONE_TTL`]: crate::node::TOMBSTONE_TTL
pub fn accept_launch(node: &Arc<Node>, req: LaunchTask) {
    let key = key_of(&req.framework_id, &req.task.task_id);
    let container_id = uuid::Uuid::new_v4().simple().to_string();
    {
        let mut tasks = node.tasks();
        if let Some(existing) = tasks.get(&key) {
            tracing::warn!(task = %req.task.task_id, state = existing.state.as_str(), "duplicate launch ignored");
            return;
        }
        let mut rec = TaskRecord::new(
            req.framework_id.clone(),
            req.framework_info.clone(),
            req.task.clone(),
            container_id.clone(),
        );
        let grace = KillPolicy::grace(req.task.kill_policy.as_ref());
        rec.kill = node.take_tombstone(&key, grace);
        if rec.kill.is_some() {
            tracing::info!(task = %req.task.task_id, "launch arrived after its kill (or its framework's shutdown)");
            rec.launch_abort.cancel();
        }
        rec.launching = true;
        node.checkpoint(&rec);
        tasks.insert(key.clone(), rec);
    }
    tokio::spawn(launch(node.clone(), key, req, container_id));
}

fn kill_requested(node: &Node, key: &TaskKey) -> bool {
    node.tasks().get(key).is_some_and(|r| r.kill.is_some())
}

/// The background part of a launch accepted by [`accept_launch`].
async fn launch(node: Arc<Node>, key: TaskKey, req: LaunchTask, container_id: String) {
    if kill_requested(&node, &key) {
        finish_killed_before_start(&node, &key);
        cleanup_container(&node, &key).await;
        return;
    }
    let resources = match validate(&req).and_then(|r| fits(&node, &key, r)) {
        Ok(r) => r,
        Err(msg) => {
            status::update(
                &node,
                &key,
                TaskState::TaskError,
                UpdateOpts::agent()
                    .reason("REASON_TASK_INVALID")
                    .message(msg),
            );
            cleanup_container(&node, &key).await;
            return;
        }
    };
    status::update(&node, &key, TaskState::TaskStarting, UpdateOpts::executor());
    if let Err((reason, msg)) =
        prepare_and_start(&node, &key, &req, &resources, &container_id).await
    {
        // A kill during the launch wins over the launch failure.
        if kill_requested(&node, &key) {
            finish_killed_before_start(&node, &key);
        } else {
            status::update(
                &node,
                &key,
                TaskState::TaskFailed,
                UpdateOpts::agent().reason(reason).message(msg),
            );
        }
        cleanup_container(&node, &key).await;
    } else if let Some(rec) = node.tasks().get_mut(&key) {
        // The watcher owns the task now.
        rec.launching = false;
    }
}

fn finish_killed_before_start(node: &Node, key: &TaskKey) {
    status::update(
        node,
        key,
        TaskState::TaskKilled,
        UpdateOpts::agent().message("killed before the task started"),
    );
}

type LaunchFailure = (&'static str, String);

async fn prepare_and_start(
    node: &Arc<Node>,
    key: &TaskKey,
    req: &LaunchTask,
    resources: &Resources,
    container_id: &str,
) -> Result<(), LaunchFailure> {
    let cfg = &node.config;
    let launch_failed = |m: String| ("REASON_CONTAINER_LAUNCH_FAILED", m);
    let killed = || -> Result<(), LaunchFailure> {
        if kill_requested(node, key) {
            return Err((
                "REASON_TASK_KILLED_DURING_LAUNCH",
                "killed during launch".into(),
            ));
        }
        Ok(())
    };
    let abort = match node.tasks().get(key) {
        Some(rec) => rec.launch_abort.clone(),
        None => return Err(launch_failed("the task record disappeared".into())),
    };
    let cmd = req.task.command.clone().unwrap_or_default();
    let sandbox_dir = {
        let work = cfg.work_dir.clone();
        let (fw, task, run) = (
            req.framework_id.value.clone(),
            req.task.task_id.value.clone(),
            container_id.to_string(),
        );
        tokio::task::spawn_blocking(move || sandbox::create(&work, &fw, &task, &run))
            .await
            .map_err(|e| launch_failed(e.to_string()))?
            .map_err(|e| launch_failed(format!("creating the sandbox: {e}")))?
    };
    // A task whose sandbox is not kept once it ends (a build).
    let discard = req.task.labels.as_ref().is_some_and(|l| {
        l.labels
            .iter()
            .any(|l| l.key == crate::gc::DISCARD_LABEL && l.value.as_deref() == Some("discard"))
    });
    if discard {
        let marker = crate::gc::discard_marker(&sandbox_dir);
        std::fs::write(&marker, b"")
            .map_err(|e| launch_failed(format!("{}: {e}", marker.display())))?;
    }
    let user = cfg
        .task_uids
        .user_for(
            &req.framework_id.value,
            &[cmd.user.as_deref(), Some(req.framework_info.user.as_str())],
            &sandbox_dir,
        )
        .map_err(|e| launch_failed(e.to_string()))?;
    let ports: Vec<u64> = resources.ports.values().collect();
    let command_env: Vec<(String, String)> = cmd
        .environment
        .iter()
        .flat_map(|e| e.variables.iter())
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    let agent_id = node.agent_id().map(|a| a.value).unwrap_or_default();
    // The container's network: its own (a pooled namespace), or the host's when asked for and
    // allowed. Recorded before anything runs in it, so a restarted agent knows it is in use.
    let network_began = Instant::now();
    let network = match &cfg.containers {
        Some(c) if !wants_host_network(&req.task).map_err(launch_failed)? => {
            let c = c.clone();
            let maps = port_mappings(&req.task, resources).map_err(launch_failed)?;
            let a = tokio::task::spawn_blocking(move || {
                let mut a = c.network.attach()?;
                if let Err(e) = c.network.map_ports(&mut a, &maps) {
                    c.network.release(a);
                    c.network.fill();
                    return Err(e);
                }
                Ok(a)
            })
            .await
            .map_err(|e| launch_failed(e.to_string()))?
            .map_err(|e| launch_failed(format!("the task's network: {e}")))?;
            Some(a)
        }
        Some(c) if !c.allow_host_network => {
            return Err(launch_failed(
                "the task asks for the host's network, which this agent does not allow \
                 (drove agent --allow-host-network)"
                    .into(),
            ));
        }
        _ => None,
    };
    if cfg.containers.is_some() {
        let mut tasks = node.tasks();
        if let Some(rec) = tasks.get_mut(key) {
            if let Some(a) = &network {
                rec.steps.push(("network", network_began.elapsed()));
                rec.network = Some(a.clone());
            }
            rec.runtime_id = Some(crate::container::runtime_id(container_id));
            node.checkpoint(rec);
        }
    }
    let mut env = task_env(&EnvInputs {
        host: &cfg.hostname,
        agent_id: &agent_id,
        framework_id: &req.framework_id.value,
        task_id: &req.task.task_id.value,
        sandbox: &sandbox_dir,
        ports: &ports,
        user: &user,
        command_env: &command_env,
    });
    if let Some(a) = &network {
        // $HOST is where the task is reached: its own address (binding the agent's would
        // leave it unreachable).
        env.retain(|(k, _)| k != "HOST");
        env.push(("HOST".into(), a.ip.to_string()));
    }
    {
        let mut tasks = node.tasks();
        if let Some(rec) = tasks.get_mut(key) {
            rec.sandbox = Some(sandbox_dir.clone());
            rec.user = Some(user.clone());
            rec.ports = ports.clone();
            rec.env = env.clone();
            node.checkpoint(rec);
        }
    }
    killed()?;

    // Archives shared as layers (unpacked once per agent): the sandbox is mounted over them,
    // and only what is not a layer is fetched into it. A kill aborts a fetch in progress.
    let layered: Vec<&Uri> = match &node.layers {
        Some(_) if layers_apply(&cmd.uris) => {
            cmd.uris.iter().filter(|u| Layers::layered(u)).collect()
        }
        _ => Vec::new(),
    };
    let rest: Vec<Uri> = cmd
        .uris
        .iter()
        .filter(|u| !layered.iter().any(|l| std::ptr::eq(*l, *u)))
        .cloned()
        .collect();
    let mounted = match (&node.layers, layered.is_empty()) {
        (Some(layers), false) => {
            let mut lowers = Vec::new();
            for uri in &layered {
                let made = tokio::select! {
                    r = layers.layer(&node.fetcher, uri, &user) => Some(r),
                    _ = abort.cancelled() => None,
                };
                match made {
                    Some(r) => {
                        lowers.push(r.map_err(|e| ("REASON_FETCHER_FAILED", e.to_string()))?)
                    }
                    None => {
                        return Err((
                            "REASON_TASK_KILLED_DURING_LAUNCH",
                            "killed during launch".into(),
                        ))
                    }
                }
            }
            // The last fetched wins, as when extracting in order: it is the top layer.
            lowers.reverse();
            let (sb, u) = (sandbox_dir.clone(), user.clone());
            tokio::task::spawn_blocking(move || crate::layers::mount(&lowers, &sb, &u))
                .await
                .map_err(|e| launch_failed(e.to_string()))?
                .map_err(|e| launch_failed(e.to_string()))?;
            true
        }
        _ => false,
    };

    // Standard streams exist before fetching, so an artifact cannot take their place.
    for stream in [Stream::Stdout, Stream::Stderr] {
        let p = stream.path_in(&sandbox_dir);
        crate::logs::open_for_append(&p)
            .map_err(|e| launch_failed(format!("creating {}: {e}", p.display())))?;
    }

    tokio::select! {
        r = node.fetcher.fetch_all(&rest, &sandbox_dir) => {
            r.map_err(|e| ("REASON_FETCHER_FAILED", e.to_string()))?;
        }
        _ = abort.cancelled() => {}
    }
    killed()?;
    {
        // Mounted, the instance's own files are its upper dir's (the layers are its already).
        let own = if mounted {
            crate::layers::upper_of(&sandbox_dir)
        } else {
            sandbox_dir.clone()
        };
        let user = user.clone();
        tokio::task::spawn_blocking(move || sandbox::hand_over(&own, &user))
            .await
            .map_err(|e| launch_failed(e.to_string()))?
            .map_err(|e| launch_failed(format!("handing the sandbox over: {e}")))?;
    }

    // Cgroup.
    let mut cgroup_procs = Vec::new();
    if let Some(mgr) = &cfg.cgroups {
        let limits = Limits {
            cpus: resources.cpus,
            mem_mb: resources.mem,
            cfs_quota: cfg.cfs_quota,
            pids_max: cfg.pids_max,
            boost: cfg.startup_boost.is_some(),
            cpu_limit: cpu_limit(&req.task),
        };
        let mgr = mgr.clone();
        let cid = container_id.to_string();
        let cg = tokio::task::spawn_blocking(move || mgr.create(&cid, &limits))
            .await
            .map_err(|e| launch_failed(e.to_string()))?
            .map_err(|e| launch_failed(e.to_string()))?;
        cgroup_procs = cg.procs_files();
        let durable = {
            let mut tasks = node.tasks();
            tasks.get_mut(key).and_then(|rec| {
                rec.cgroup = Some(cg.path().to_string());
                node.checkpoint(rec)
            })
        };
        // On disk before anything runs in it, so a restarted agent can clean it up.
        if let Some(d) = durable {
            d.wait().await;
        }
    }
    killed()?;

    // Supervisor.
    let value = cmd.value.clone().unwrap_or_default();
    let (program, arg0, args) = if cmd.shell.unwrap_or(true) {
        ("/bin/sh".to_string(), None, vec!["-c".to_string(), value])
    } else {
        let (arg0, args) = split_argv(&value, &cmd.arguments);
        (value.clone(), arg0.map(str::to_string), args.to_vec())
    };
    let cdir = node.meta.container_dir(container_id);
    std::fs::create_dir_all(&cdir)
        .map_err(|e| launch_failed(format!("creating {}: {e}", cdir.display())))?;
    let (uid, gid) = if user.switch {
        (Some(user.uid), Some(user.gid))
    } else {
        (None, None)
    };
    let stdout = Stream::Stdout.path_in(&sandbox_dir);
    let stderr = Stream::Stderr.path_in(&sandbox_dir);
    let pid_file = cdir.join("task.pid");
    let status_file = cdir.join("exit_status.json");
    let spec = match &cfg.containers {
        Some(c) => {
            let mut argv: Vec<String> = Vec::new();
            if let Some(init) = &c.init {
                argv.extend([init.display().to_string(), "--".to_string()]);
            }
            argv.push(program);
            argv.extend(args);
            let rid = crate::container::runtime_id(container_id);
            let bundle_dir = cdir.join("bundle");
            let cgroups_path = node
                .tasks()
                .get(key)
                .and_then(|r| r.cgroup.clone())
                .filter(|_| c.runtime.wants_cgroups_path())
                .map(|p| format!("/{p}/runtime"));
            let netns = network.as_ref().map(|a| a.netns_path());
            let bundle = crate::container::BundleSpec {
                dir: &bundle_dir,
                id: &rid,
                args: argv,
                env: &env,
                sandbox: &sandbox_dir,
                uid: user.uid,
                gid: user.gid,
                user_name: &user.name,
                hostname: &cfg.hostname,
                netns: netns.as_deref(),
                address: network.as_ref().map(|a| a.ip),
                tmp_bytes: c.tmp_bytes,
                cgroups_path,
                cgroup_namespace: true,
                seccomp_bpf: c.seccomp_bpf.as_deref(),
            };
            let began = Instant::now();
            crate::container::bundle::write(&bundle).map_err(|e| launch_failed(e.to_string()))?;
            if let Some(rec) = node.tasks().get_mut(key) {
                rec.steps.push(("bundle", began.elapsed()));
            }
            let mut args = vec![
                status_file.display().to_string(),
                pid_file.display().to_string(),
                c.runtime.path.display().to_string(),
            ];
            args.extend(c.runtime.run_args(&bundle_dir, &rid, &pid_file));
            ExecutorSpec {
                program: c.monitor.display().to_string(),
                arg0: None,
                args,
                env: vec![("PATH".into(), DEFAULT_PATH.into())],
                cwd: PathBuf::from("/"),
                uid: None,
                gid: None,
                stdout,
                stderr,
                cgroup_procs,
                pid_file,
                status_file,
                exec: true,
            }
        }
        None => ExecutorSpec {
            program,
            arg0,
            args,
            env,
            cwd: sandbox_dir.clone(),
            uid,
            gid,
            stdout,
            stderr,
            cgroup_procs,
            pid_file,
            status_file,
            exec: false,
        },
    };
    let spec_path = cdir.join("executor.json");
    let spec_bytes = serde_json::to_vec_pretty(&spec).map_err(|e| launch_failed(e.to_string()))?;
    crate::executor::write_atomic(&spec_path, &spec_bytes)
        .map_err(|e| launch_failed(format!("writing {}: {e}", spec_path.display())))?;
    let log_path = cdir.join("executor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| launch_failed(format!("opening {}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| launch_failed(format!("opening {}: {e}", log_path.display())))?;
    let mut command = std::process::Command::new(&cfg.executor_path);
    command
        .arg("executor")
        .arg("--spec")
        .arg(&spec_path)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    // The child is reaped by `process_alive`'s waitpid; dropping the handle neither kills nor
    // waits for it.
    let child = command.spawn().map_err(|e| {
        launch_failed(format!(
            "spawning the supervisor {}: {e}",
            cfg.executor_path.display()
        ))
    })?;
    let pid = child.id();
    drop(child);
    let start = proc_start_time(pid);
    let (kill_now, durable) = {
        let mut tasks = node.tasks();
        match tasks.get_mut(key) {
            Some(rec) => {
                rec.executor_pid = Some(pid);
                rec.executor_start = start;
                rec.spawned = Some(Instant::now());
                rec.started_at = Some(drove_proto::mesos::now_secs());
                (rec.kill.is_some(), node.checkpoint(rec))
            }
            None => (false, None),
        }
    };
    tracing::info!(task = %req.task.task_id, supervisor_pid = pid, sandbox = %sandbox_dir.display(), "task launched");
    // A kill that arrived while spawning is carried out now (it is recorded under the same
    // lock that recorded the supervisor, so it is never missed).
    start_watching(node, key);
    if kill_now {
        spawn_kill(node, key);
    }
    if let Some(d) = durable {
        d.wait().await;
    }
    Ok(())
}

/// The task's Mesos `ContainerInfo`, if it has one: `MESOS` (or no type) only, since drove
/// runs its own containers; a Docker container or an unreadable one is a TASK_ERROR.
fn container_info(
    task: &drove_proto::mesos::TaskInfo,
) -> Result<Option<drove_proto::mesos::ContainerInfo>, String> {
    let Some(raw) = &task.container else {
        return Ok(None);
    };
    let info: drove_proto::mesos::ContainerInfo =
        serde_json::from_value(raw.clone()).map_err(|e| format!("TaskInfo.container: {e}"))?;
    match info.kind.as_deref() {
        None | Some("MESOS") => Ok(Some(info)),
        Some(other) => Err(format!(
            "TaskInfo.container.type: drove runs MESOS containers (its own runtime), found {other:?}"
        )),
    }
}

/// Whether a task asks for the host's network: a `ContainerInfo` naming the `host` network.
/// Without one (or without network infos) it gets its own.
fn wants_host_network(task: &drove_proto::mesos::TaskInfo) -> Result<bool, String> {
    Ok(container_info(task)?.is_some_and(|info| {
        info.network_infos
            .iter()
            .any(|n| n.name.as_deref() == Some("host"))
    }))
}

/// Gives back what a container held besides its cgroup: its network namespace (released; the
/// pool refills) and what the runtime keeps of it (its state; a detached `run` leaves it),
/// once its runtime was `spawned`.
async fn release_container(node: &Arc<Node>, rec: &TaskRecord, spawned: bool) {
    let Some(c) = node.config.containers.clone() else {
        return;
    };
    let network = rec.network.clone();
    let rid = rec.runtime_id.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let (Some(rid), true) = (&rid, spawned) {
            c.runtime.delete(rid);
        }
        if let Some(a) = network {
            c.network.release(a);
            // The pool refills off the launch path.
            c.network.fill();
        }
    })
    .await;
}

/// Removes the cgroup of a task that never (or no longer) runs.
async fn cleanup_container(node: &Arc<Node>, key: &TaskKey) {
    let rec = node.tasks().get(key).cloned();
    if let Some(rec) = rec {
        // A runtime was asked for nothing unless its supervisor was spawned.
        let spawned = rec.executor_pid.is_some();
        release_container(node, &rec, spawned).await;
    }
    let cgroup = node.tasks().get(key).and_then(|r| r.cgroup.clone());
    if let (Some(path), Some(mgr)) = (cgroup, node.config.cgroups.clone()) {
        let _ = tokio::task::spawn_blocking(move || {
            let cg = mgr.load(&path);
            if cg.exists() {
                if let Err(e) = cg.destroy(Duration::from_secs(5)) {
                    tracing::warn!(error = %e, "removing a cgroup failed");
                }
            }
        })
        .await;
    }
    let mut tasks = node.tasks();
    if let Some(rec) = tasks.get_mut(key) {
        rec.watching = false;
        rec.launching = false;
        if rec.state.is_terminal() && rec.pending.is_empty() {
            node.remove_checkpoint(&rec.container_id);
            tasks.remove(key);
        }
    }
}

/// The parts of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
    /// Field 22: start time in clock ticks since boot.
    pub start: u64,
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    // Fields after the command: state (3), ppid (4), pgrp (5), ..., starttime (22).
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is `ancestor` or one of its near descendants: a container's process is the
/// child of the runtime's (the supervisor's child) until the runtime exits and the supervisor
/// adopts it.
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut pid = pid;
    for _ in 0..3 {
        if pid == ancestor {
            return true;
        }
        match proc_stat(pid) {
            Some(s) if s.ppid != 0 => pid = s.ppid,
            _ => return false,
        }
    }
    pid == ancestor
}

/// `/proc/<pid>/stat` field 22 (start time in clock ticks).
pub fn proc_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start)
}

fn proc_state(pid: u32) -> Option<char> {
    proc_stat(pid).map(|s| s.state)
}

/// The environment entries that mark a process as started for this task (its container's
/// sandbox path is unique).
fn task_markers(rec: &TaskRecord) -> Vec<String> {
    let markers: Vec<String> = ["MESOS_SANDBOX", "MESOS_TASK_ID", "MESOS_FRAMEWORK_ID"]
        .iter()
        .filter_map(|k| {
            rec.env
                .iter()
                .rev()
                .find(|(ek, _)| ek == k)
                .map(|(k, v)| format!("{k}={v}"))
        })
        .collect();
    if markers.len() == 3 {
        markers
    } else {
        Vec::new()
    }
}

fn has_markers(pid: u32, markers: &[String]) -> bool {
    if markers.is_empty() {
        return false;
    }
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    markers.iter().all(|m| vars.contains(&m.as_bytes()))
}

/// Sends `sig` to the task's process group, but only to processes that are provably the
/// task's: the group leader when its pid still has the recorded start time and process group
/// (or, for records without one, the task's environment); if the leader is gone, each
/// remaining member of the group that carries the task's environment. A pid or group id reused
/// by an unrelated process is never signalled. Returns whether anything was signalled.
pub fn signal_task_group(rec: &TaskRecord, sig: Signal) -> bool {
    let Some(pg) = rec.task_pgid.or(rec.task_pid) else {
        return false;
    };
    let Ok(raw) = i32::try_from(pg) else {
        return false;
    };
    let markers = task_markers(rec);
    match proc_stat(pg) {
        Some(leader) if !(rec.task_start.is_none() && leader.state == 'Z') => {
            let ours = match rec.task_start {
                Some(start) => leader.start == start && leader.pgid == pg,
                None => leader.pgid == pg && has_markers(pg, &markers),
            };
            if !ours {
                // The number now names another process, so the task's group (which would
                // hold it) is gone.
                tracing::warn!(task = %rec.task.task_id, pid = pg, "task pid reused by another process; not signalling it");
                return false;
            }
            killpg(Pid::from_raw(raw), sig).is_ok()
        }
        _ => {
            // The leader exited (or is an unverifiable zombie); its group lives on while
            // members remain.
            let mut any = false;
            for member in group_members(pg) {
                if has_markers(member, &markers) {
                    if let Ok(m) = i32::try_from(member) {
                        any |= kill(Pid::from_raw(m), sig).is_ok();
                    }
                }
            }
            any
        }
    }
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            proc_stat(*pid).is_some_and(|s| s.pgid == pgid && !matches!(s.state, 'Z' | 'X'))
        })
        .collect()
}

/// How supervisors that were the agent's children ended, by pid, until [`take_reaped`] reads
/// it: a container's supervisor is `drove-monitor`, whose exit status is the task's.
fn reaped() -> std::sync::MutexGuard<'static, std::collections::HashMap<u32, WaitStatus>> {
    static REAPED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<u32, WaitStatus>>,
    > = std::sync::OnceLock::new();
    let m = REAPED.get_or_init(Default::default);
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// How a supervisor the agent reaped ended (once).
fn take_reaped(pid: u32) -> Option<WaitStatus> {
    reaped().remove(&pid)
}

/// The exit record of a container whose monitor the agent reaped: it exits with the task's
/// status (128+N for signal N).
fn container_exit(pid: u32) -> Option<ExitRecord> {
    match take_reaped(pid)? {
        WaitStatus::Exited(_, code) => {
            let (code, signal) = crate::container::split_status(code);
            Some(ExitRecord {
                pid: None,
                code,
                signal,
                error: None,
            })
        }
        WaitStatus::Signaled(_, sig, _) => Some(ExitRecord {
            signal: Some(sig as i32),
            ..Default::default()
        }),
        _ => None,
    }
}

/// Is the supervisor still running? Reaps it if it is our child.
pub fn process_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => return true,
        Ok(status) => {
            // Taken (whatever the task's kind) when the task finishes.
            reaped().insert(pid, status);
            return false;
        }
        Err(_) => {}
    }
    match proc_state(pid) {
        None | Some('Z') | Some('X') => false,
        Some(_) => match (start, proc_start_time(pid)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        },
    }
}

/// Starts the watcher of a task whose supervisor runs.
pub fn start_watching(node: &Arc<Node>, key: &TaskKey) {
    let token = {
        let mut tasks = node.tasks();
        let Some(rec) = tasks.get_mut(key) else {
            return;
        };
        if rec.watching {
            return;
        }
        rec.watching = true;
        let token = node.shutdown.child_token();
        rec.cancel = Some(token.clone());
        token
    };
    let node = node.clone();
    let key = key.clone();
    tokio::spawn(async move { watch(node, key, token).await });
}

async fn watch(node: Arc<Node>, key: TaskKey, cancel: CancellationToken) {
    let (health_tx, mut health_rx) = mpsc::channel::<HealthAction>(8);
    let mut health_started = false;
    let mut last_rotation = Instant::now();
    let mut health_tx = Some(health_tx);
    let started = Instant::now();
    let mut seen_running = false;
    let mut boosted = node.config.startup_boost.is_some();
    // When the first passed check came: the boost lasts BOOST_AFTER_READY beyond it.
    let mut ready_at: Option<Instant> = None;
    loop {
        let tick = if seen_running {
            WATCH_TICK
        } else {
            STARTING_TICK
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
            Some(action) = health_rx.recv() => {
                if boosted && ready_at.is_none() && matches!(action, HealthAction::Report(true)) {
                    ready_at = Some(Instant::now());
                }
                on_health(&node, &key, action);
                continue;
            }
        }
        let boost_over = match ready_at {
            Some(at) => at.elapsed() >= BOOST_AFTER_READY,
            None => node
                .config
                .startup_boost
                .is_some_and(|b| started.elapsed() >= b),
        };
        if boosted && boost_over {
            boosted = false;
            end_boost(&node, &key);
        }
        let Some(mut snap) = node.tasks().get(&key).cloned() else {
            return;
        };
        let Some(epid) = snap.executor_pid else {
            return;
        };
        let cdir = node.meta.container_dir(&snap.container_id);
        if snap.task_pid.is_none() {
            if let Some(pid) = read_pid_file(&cdir.join("task.pid")) {
                mark_running(&node, &key, pid);
                // Health checks start now, not a tick later.
                match node.tasks().get(&key) {
                    Some(rec) => snap = rec.clone(),
                    None => return,
                }
            } else if started.elapsed() > Duration::from_secs(2) {
                // A supervisor this slow to start its task is not worth a 5 ms poll.
                seen_running = true;
            }
        }
        if snap.task_pid.is_some() {
            seen_running = true;
        }
        if !health_started && snap.task_pid.is_some() && snap.state == TaskState::TaskRunning {
            health_started = true;
            if let (Some(check), Some(tx)) = (snap.task.health_check.clone(), health_tx.take()) {
                let target = CheckTarget {
                    host: snap
                        .network
                        .as_ref()
                        .map(|a| a.ip.to_string())
                        .unwrap_or_else(|| node.config.hostname.clone()),
                    ports: snap.ports.clone(),
                    sandbox: snap.sandbox.clone().unwrap_or_else(|| PathBuf::from("/")),
                    env: snap.env.clone(),
                    uid: snap.user.as_ref().filter(|u| u.switch).map(|u| u.uid),
                    gid: snap.user.as_ref().filter(|u| u.switch).map(|u| u.gid),
                };
                tokio::spawn(health::run(
                    check,
                    target,
                    Instant::now(),
                    cancel.child_token(),
                    tx,
                ));
            }
        }
        let alive = process_alive(epid, snap.executor_start);
        if alive {
            // A memory limitation while running: kill the whole container (Mesos does so
            // even if the OOM killer only hit a child process).
            if snap.kill.is_none() {
                if let (Some(path), Some(mgr)) = (&snap.cgroup, &node.config.cgroups) {
                    if mgr.load(path).oom_kills() > 0 {
                        request_kill(&node, &key, KillCause::MemoryLimit);
                    }
                }
            }
            if last_rotation.elapsed() >= Duration::from_secs(1) {
                last_rotation = Instant::now();
                if let Some(sb) = snap.sandbox.clone() {
                    let max = node.config.log_max_bytes;
                    let _ = tokio::task::spawn_blocking(move || {
                        for s in [Stream::Stdout, Stream::Stderr] {
                            if let Err(e) = crate::logs::rotate_if_needed(&s.path_in(&sb), max) {
                                tracing::warn!(error = %e, "log rotation failed");
                            }
                        }
                    })
                    .await;
                }
            }
            continue;
        }
        finish(&node, &key).await;
        cancel.cancel();
        return;
    }
}

/// A task's CPU limit (`limits.cpus`), when it has a usable one.
fn cpu_limit(task: &drove_proto::mesos::TaskInfo) -> Option<f64> {
    task.limits
        .get("cpus")
        .map(|s| s.value)
        .filter(|v| v.is_finite() && *v > 0.0)
}

/// Ends a task's startup CPU boost: its CFS quota goes down to what it asked for (or its
/// limit).
fn end_boost(node: &Node, key: &TaskKey) {
    let (Some(mgr), Some(rec)) = (&node.config.cgroups, node.tasks().get(key).cloned()) else {
        return;
    };
    let Some(path) = rec.cgroup.as_deref() else {
        return;
    };
    let cpus = Resources::from_mesos(&rec.task.resources)
        .map(|r| r.cpus)
        .unwrap_or(0.0);
    let limits = Limits {
        cpus,
        mem_mb: 0.0,
        cfs_quota: node.config.cfs_quota,
        pids_max: None,
        boost: false,
        cpu_limit: cpu_limit(&rec.task),
    };
    if let Err(e) = mgr.load(path).set_cpu_quota(&limits) {
        tracing::warn!(task = %rec.task.task_id, error = %e, "ending the startup CPU boost failed");
    } else {
        tracing::debug!(task = %rec.task.task_id, "startup CPU boost over");
    }
}

/// Records the task pid, first seen, with its identity: its start time and process group,
/// taken only while it is provably the supervisor's child (the task is its group leader).
fn mark_running(node: &Node, key: &TaskKey, pid: u32) {
    let was_starting = {
        let mut tasks = node.tasks();
        let Some(rec) = tasks.get_mut(key) else {
            return;
        };
        if rec.task_pid.is_some() {
            return;
        }
        rec.task_pid = Some(pid);
        if let (Some(at), Some(_)) = (rec.spawned.take(), &rec.runtime_id) {
            // Supervisor spawned → the container's process seen: the runtime's create/start.
            rec.steps.push(("runtime", at.elapsed()));
        }
        if let (Some(stat), Some(epid)) = (proc_stat(pid), rec.executor_pid) {
            let supervisor_alive = process_alive(epid, rec.executor_start);
            if supervisor_alive && descends_from(stat.ppid, epid) && stat.pgid == pid {
                rec.task_start = Some(stat.start);
                rec.task_pgid = Some(stat.pgid);
            }
        }
        node.checkpoint(rec);
        rec.state == TaskState::TaskStarting
    };
    if was_starting {
        status::update(node, key, TaskState::TaskRunning, UpdateOpts::executor());
    }
}

fn on_health(node: &Arc<Node>, key: &TaskKey, action: HealthAction) {
    match action {
        HealthAction::None => {}
        HealthAction::Report(healthy) => {
            let running = node
                .tasks()
                .get(key)
                .is_some_and(|r| r.state == TaskState::TaskRunning && r.kill.is_none());
            if running {
                status::update(
                    node,
                    key,
                    TaskState::TaskRunning,
                    UpdateOpts::executor()
                        .healthy(Some(healthy))
                        .reason("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"),
                );
            }
        }
        HealthAction::Kill => {
            if let Some(rec) = node.tasks().get_mut(key) {
                rec.healthy = Some(false);
            }
            request_kill(node, key, KillCause::Health);
        }
    }
}

/// Reads how the task ended, cleans the container up and sends the terminal update.
async fn finish(node: &Arc<Node>, key: &TaskKey) {
    let Some(snap) = node.tasks().get(key).cloned() else {
        return;
    };
    let cdir = node.meta.container_dir(&snap.container_id);
    let mut exit: Option<ExitRecord> = read_exit_record(&cdir.join("exit_status.json"));
    // How its supervisor ended, if the agent reaped it: for a container whose monitor wrote
    // no record (it was killed), the best there is; otherwise only taken.
    let reaped = snap.executor_pid.and_then(container_exit);
    if snap.runtime_id.is_some() {
        exit = exit.or(reaped);
    }
    if snap.task_pid.is_none() {
        let pid = read_pid_file(&cdir.join("task.pid")).or(exit.as_ref().and_then(|e| e.pid));
        if let Some(pid) = pid {
            mark_running(node, key, pid);
        }
    }
    // Fresh: mark_running may just have recorded the task pid.
    let Some(snap) = node.tasks().get(key).cloned() else {
        return;
    };
    // Memory limitation and cleanup of the cgroup (kills stragglers).
    let mut oom: Option<(Option<u64>, Option<u64>)> = None;
    if let (Some(path), Some(mgr)) = (snap.cgroup.clone(), node.config.cgroups.clone()) {
        oom = tokio::task::spawn_blocking(move || {
            let cg = mgr.load(&path);
            let oom = (cg.oom_kills() > 0).then(|| (cg.memory_limit(), cg.memory_peak()));
            if let Err(e) = cg.destroy(Duration::from_secs(5)) {
                tracing::warn!(error = %e, "removing the task cgroup failed");
            }
            oom
        })
        .await
        .ok()
        .flatten();
    } else {
        // Without cgroups, at least the task's process group goes (if it still is the task's).
        signal_task_group(&snap, Signal::SIGKILL);
    }
    if snap.runtime_id.is_some() {
        release_container(node, &snap, true).await;
    }
    if snap.kill == Some(KillCause::MemoryLimit) && oom.is_none() {
        oom = Some((None, None));
    }
    let said = match &snap.sandbox {
        Some(sb) if !exit.as_ref().is_some_and(|e| e.success()) => {
            let sb = sb.clone();
            tokio::task::spawn_blocking(move || last_said(&sb))
                .await
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let (state, mut opts) = terminal_status(&snap, exit.as_ref(), oom);
    // What it said last explains a failure (a crash, a failed check), not a requested kill.
    let explains = state == TaskState::TaskFailed || snap.kill == Some(KillCause::Health);
    if !said.is_empty() && explains {
        opts = opts.append_message(&said.join("\n"));
    }
    {
        let mut tasks = node.tasks();
        if let Some(rec) = tasks.get_mut(key) {
            rec.watching = false;
        }
    }
    status::update(node, key, state, opts);
    // Forget at once if everything is already acknowledged (not the case normally).
    let mut tasks = node.tasks();
    if let Some(rec) = tasks.get(key) {
        if rec.state.is_terminal() && rec.pending.is_empty() {
            node.remove_checkpoint(&rec.container_id);
            tasks.remove(key);
        }
    }
}

/// Whether a task's URIs can use layers: every archive it extracts is a layered one (so the
/// order in which they override each other is kept).
fn layers_apply(uris: &[Uri]) -> bool {
    uris.iter().all(|u| {
        Layers::layered(u)
            || !u.extract.unwrap_or(true)
            || u.executable.unwrap_or(false)
            || crate::fetcher::archive_kind(
                u.output_file
                    .as_deref()
                    .unwrap_or(&crate::fetcher::base_name(u.value.trim())),
            )
            .is_none()
    })
}

/// How many of a failed task's last output lines its status carries, and how wide.
const SAID_LINES: usize = 8;
const SAID_WIDTH: usize = 300;

/// The last lines a task wrote: its stderr's, else its stdout's (what a crash says), without
/// a stack's frames (`at …`), which would push the error line itself out.
fn last_said(sandbox: &Path) -> Vec<String> {
    for stream in [Stream::Stderr, Stream::Stdout] {
        let lines: Vec<String> = crate::logs::read_tail(&stream.path_in(sandbox), 16 * 1024)
            .map(|b| drove_proto::output::last_lines(&b, 200, SAID_WIDTH))
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !l.trim_start().starts_with("at "))
            .collect();
        if !lines.is_empty() {
            let skip = lines.len().saturating_sub(SAID_LINES);
            return lines.into_iter().skip(skip).collect();
        }
    }
    Vec::new()
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The terminal state and details for a task that ended.
pub fn terminal_status(
    rec: &TaskRecord,
    exit: Option<&ExitRecord>,
    oom: Option<(Option<u64>, Option<u64>)>,
) -> (TaskState, UpdateOpts) {
    if let Some((limit, peak)) = oom {
        if rec.kill.is_none() || rec.kill == Some(KillCause::MemoryLimit) {
            let limit_text = limit
                .filter(|l| *l < (1u64 << 62))
                .map(|l| format!("{} ({l} bytes)", mib(l)))
                .unwrap_or_else(|| "unknown".into());
            let peak_text = peak
                .map(|p| format!("{} ({p} bytes)", mib(p)))
                .unwrap_or_else(|| "unknown".into());
            return (
                TaskState::TaskFailed,
                UpdateOpts::agent()
                    .reason("REASON_CONTAINER_LIMITATION_MEMORY")
                    .message(format!(
                        "Memory limit exceeded: limit {limit_text}, maximum used {peak_text}; the task was OOM-killed"
                    )),
            );
        }
    }
    match rec.kill {
        Some(KillCause::Health) => {
            return (
                TaskState::TaskKilled,
                UpdateOpts::executor()
                    .healthy(Some(false))
                    .reason("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED")
                    .message("killed after failing its health check"),
            )
        }
        Some(KillCause::Requested { .. }) => {
            return (
                TaskState::TaskKilled,
                UpdateOpts::executor().message(match exit {
                    Some(e) => format!("killed; command {}", e.describe()),
                    None => "killed".into(),
                }),
            )
        }
        Some(KillCause::MemoryLimit) | None => {}
    }
    match exit {
        Some(e) if e.success() => (
            TaskState::TaskFinished,
            UpdateOpts::executor().message("command exited with status 0"),
        ),
        Some(e) if e.error.is_some() => (
            TaskState::TaskFailed,
            UpdateOpts::executor()
                .reason("REASON_COMMAND_EXECUTOR_FAILED")
                .message(format!("command {}", e.describe())),
        ),
        Some(e) => (
            TaskState::TaskFailed,
            UpdateOpts::executor()
                .reason("REASON_COMMAND_EXECUTOR_FAILED")
                .message(format!("command {}", e.describe())),
        ),
        None => (
            TaskState::TaskFailed,
            UpdateOpts::agent()
                .reason("REASON_EXECUTOR_TERMINATED")
                .message("the task's supervisor ended without recording an exit status"),
        ),
    }
}

/// Marks a task for killing and starts the kill procedure.
pub fn request_kill(node: &Arc<Node>, key: &TaskKey, cause: KillCause) {
    let start = {
        let mut tasks = node.tasks();
        let Some(rec) = tasks.get_mut(key) else {
            return;
        };
        if rec.state.is_terminal() {
            return;
        }
        if rec.kill.is_none() || cause == KillCause::MemoryLimit {
            rec.kill = Some(cause);
        }
        rec.launch_abort.cancel();
        node.checkpoint(rec);
        rec.executor_pid.is_some()
    };
    if start {
        spawn_kill(node, key);
    }
}

fn spawn_kill(node: &Arc<Node>, key: &TaskKey) {
    {
        let mut tasks = node.tasks();
        let Some(rec) = tasks.get_mut(key) else {
            return;
        };
        if rec.killing {
            return;
        }
        rec.killing = true;
    }
    let node = node.clone();
    let key = key.clone();
    tokio::spawn(async move { kill_procedure(node, key).await });
}

/// SIGTERM the task's process group, SIGKILL after the grace period, then everything left in
/// its cgroup. The watcher sees the supervisor end and sends the terminal update.
async fn kill_procedure(node: Arc<Node>, key: TaskKey) {
    let Some(snap) = node.tasks().get(&key).cloned() else {
        return;
    };
    let Some(epid) = snap.executor_pid else {
        return;
    };
    let grace = match snap.kill {
        Some(KillCause::Requested { grace_ms }) => Duration::from_millis(grace_ms),
        Some(KillCause::MemoryLimit) => Duration::ZERO,
        _ => KillPolicy::grace(snap.task.kill_policy.as_ref()),
    };
    let cdir = node.meta.container_dir(&snap.container_id);
    // The supervisor may still be spawning the task.
    let mut task_pid = snap.task_pid;
    let deadline = Instant::now() + Duration::from_secs(2);
    while task_pid.is_none()
        && Instant::now() < deadline
        && process_alive(epid, snap.executor_start)
    {
        task_pid = read_pid_file(&cdir.join("task.pid"));
        match task_pid {
            Some(pid) => mark_running(&node, &key, pid),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // With the task's identity as recorded when it was first seen.
    let Some(snap) = node.tasks().get(&key).cloned() else {
        return;
    };
    let alive = || process_alive(epid, snap.executor_start);
    let wait_dead = |d: Duration| async move {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if !process_alive(epid, snap.executor_start) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        !process_alive(epid, snap.executor_start)
    };
    if snap.task_pid.is_some() {
        if !grace.is_zero() {
            tracing::info!(task = %snap.task.task_id, ?grace, "SIGTERM to the task's process group");
            signal_task_group(&snap, Signal::SIGTERM);
            if wait_dead(grace).await {
                return;
            }
        }
        tracing::info!(task = %snap.task.task_id, "SIGKILL to the task's process group");
        signal_task_group(&snap, Signal::SIGKILL);
        if wait_dead(Duration::from_secs(3)).await {
            return;
        }
    }
    if alive() {
        // Last resort: everything in the cgroup, then the supervisor itself (whose end the
        // watcher reports). Without cgroups, the task's group once more first: a supervisor
        // killed before its task would leave the task running unwatched.
        if let (Some(path), Some(mgr)) = (snap.cgroup.clone(), node.config.cgroups.clone()) {
            let _ = tokio::task::spawn_blocking(move || {
                mgr.load(&path).kill_all(Duration::from_secs(5))
            })
            .await;
        } else {
            signal_task_group(&snap, Signal::SIGKILL);
        }
        if alive() {
            if let Ok(p) = i32::try_from(epid) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
    // Allow a later kill to try again if this one could not end the supervisor.
    if let Some(rec) = node.tasks().get_mut(&key) {
        rec.killing = false;
    }
}

/// Kills every task of a framework.
/// The framework is remembered for [`crate::node::TOMBSTONE_TTL`]: its launches that arrive
/// later end in TASK_KILLED without running.
pub fn shutdown_framework(node: &Arc<Node>, framework_id: &str) {
    let keys: Vec<(TaskKey, Duration)> = {
        let tasks = node.tasks();
        node.tombstone_framework(framework_id);
        tasks
            .iter()
            .filter(|(k, r)| k.0 == framework_id && !r.state.is_terminal())
            .map(|(k, r)| (k.clone(), KillPolicy::grace(r.task.kill_policy.as_ref())))
            .collect()
    };
    for (key, grace) in keys {
        request_kill(
            node,
            &key,
            KillCause::Requested {
                grace_ms: grace.as_millis() as u64,
            },
        );
    }
}

/// Re-attaches checkpointed tasks after an agent restart.
pub async fn recover(node: &Arc<Node>) {
    let records = node.meta.load_tasks();
    let mut to_watch = Vec::new();
    let mut to_kill = Vec::new();
    let mut lost_during_launch = Vec::new();
    {
        let mut tasks = node.tasks();
        for mut rec in records {
            let key = key_of(&rec.framework_id, &rec.task.task_id);
            rec.next_send = Some(Instant::now());
            rec.failed_sends = 0;
            if !rec.state.is_terminal() {
                match rec.executor_pid {
                    Some(_) => {
                        if rec.kill.is_some() {
                            to_kill.push(key.clone());
                        }
                        to_watch.push(key.clone());
                    }
                    None => {
                        rec.launching = true;
                        lost_during_launch.push(key.clone());
                    }
                }
            }
            tracing::info!(task = %rec.task.task_id, state = rec.state.as_str(), pid = ?rec.task_pid, pending = rec.pending.len(), "recovered task");
            tasks.insert(key, rec);
        }
    }
    if let Some(c) = node.config.containers.clone() {
        let in_use: Vec<String> = node
            .tasks()
            .values()
            .filter_map(|r| r.network.as_ref().map(|a| a.name.clone()))
            .collect();
        // Namespaces no recovered container uses go (a pool from before is rebuilt fresh).
        tokio::task::spawn_blocking(move || {
            c.network.sweep(&in_use);
            c.network.fill();
        });
    }
    for key in lost_during_launch {
        if kill_requested(node, &key) {
            finish_killed_before_start(node, &key);
        } else {
            status::update(
                node,
                &key,
                TaskState::TaskFailed,
                UpdateOpts::agent()
                    .reason("REASON_AGENT_RESTARTED")
                    .message("the agent restarted while launching the task"),
            );
        }
        cleanup_container(node, &key).await;
    }
    for key in &to_watch {
        start_watching(node, key);
    }
    for key in &to_kill {
        spawn_kill(node, key);
    }
    status::forget_finished(node);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splitting() {
        let args = vec!["sleep".to_string(), "10".to_string()];
        assert_eq!(split_argv("/bin/sleep", &args), (Some("sleep"), &args[1..]));
        let args2 = vec!["10".to_string()];
        assert_eq!(split_argv("/bin/sleep", &args2), (None, &args2[..]));
        let args3 = vec!["/bin/sleep".to_string(), "1".to_string()];
        assert_eq!(
            split_argv("/bin/sleep", &args3),
            (Some("/bin/sleep"), &args3[1..])
        );
    }

    #[test]
    fn environment() {
        let user = TaskUser::current();
        let command_env = [("FOO".into(), "bar".into()), ("PATH".into(), "/x".into())];
        let env = task_env(&EnvInputs {
            host: "127.0.0.2",
            agent_id: "agent-1",
            framework_id: "fw",
            task_id: "t1",
            sandbox: Path::new("/sb"),
            ports: &[31000, 31005],
            user: &user,
            command_env: &command_env,
        });
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT1"), Some("31005"));
        assert_eq!(get("PORTS"), Some("31000,31005"));
        assert_eq!(get("HOST"), Some("127.0.0.2"));
        assert_eq!(get("MESOS_TASK_ID"), Some("t1"));
        assert_eq!(get("MESOS_SANDBOX"), Some("/sb"));
        assert_eq!(get("MESOS_FRAMEWORK_ID"), Some("fw"));
        assert_eq!(get("MESOS_AGENT_ID"), Some("agent-1"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("PATH"), Some("/x"));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
    }

    #[test]
    fn proc_stat_parsing() {
        let me = std::process::id();
        assert!(proc_start_time(me).is_some());
        assert!(process_alive(me, proc_start_time(me)));
        assert!(!process_alive(me, Some(1)));
    }
}
