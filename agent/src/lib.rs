//! drove's agent: registers with the master, runs tasks in containers (an OCI runtime, CNI
//! networks; or as cgroup-isolated processes) under a small per-task supervisor, reports their
//! status until acknowledged, and recovers running tasks across its own restarts. See
//! ARCHITECTURE.md (`## agent`).
#![forbid(unsafe_code)]

pub mod cgroups;
pub mod checkpoint;
pub mod container;
pub mod executor;
pub mod fetcher;
pub mod gc;
pub mod health;
pub mod http;
pub mod launcher;
pub mod layers;
pub mod logs;
pub mod machine;
pub mod node;
pub mod registration;
pub mod sandbox;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use executor::{run_executor, ExecutorArgs};

/// How tasks are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// Each task in a container (its own mount, PID, IPC, UTS, network and cgroup namespaces,
    /// a read-only root, no capabilities, seccomp) run by an OCI runtime, in its cgroup.
    Container,
    /// One cgroup per task (cpu shares, CFS quota, memory limit) and nothing else: the task
    /// sees the host's files, processes and network. Refuses to start without cgroups.
    Cgroups,
    /// No isolation: plain processes in their own process group.
    None,
}

/// `drove agent` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The master's base URL, e.g. http://127.0.0.1:5050.
    #[arg(long, env = "DROVE_MASTER")]
    pub master: String,
    /// Address to listen on (the master reaches the agent here).
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
    /// Work directory: sandboxes, fetch cache, checkpoints.
    #[arg(long, default_value = "/var/lib/drove/agent")]
    pub work_dir: PathBuf,
    /// Resources to offer, Mesos style ("cpus:2;mem:2048;ports:[31000-32000]"); named
    /// resources replace the detected ones.
    #[arg(long)]
    pub resources: Option<String>,
    /// Hostname reported to the master and given to tasks as HOST (default: the listen IP when
    /// it is not unspecified, else the machine's hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Agent attributes, e.g. "rack:r1;zone:a".
    #[arg(long)]
    pub attributes: Option<String>,
    /// Task isolation: `container` (default), `cgroups` (the task sees the host's files,
    /// processes and network) or `none`.
    #[arg(long, value_enum, default_value = "container")]
    pub isolation: Isolation,
    /// The OCI runtime containers run with: `crun`, `runc`, `youki` or a path.
    #[arg(long, default_value = "crun")]
    pub oci_runtime: String,
    /// The tasks' network (CIDR): each container gets an address in it. Agents sharing a host
    /// may share it; agents on different hosts need their own.
    #[arg(long, default_value = "10.213.0.0/16")]
    pub task_network: String,
    /// Where the CNI plugins are.
    #[arg(long, default_value = container::network::DEFAULT_PLUGIN_DIR)]
    pub cni_plugin_dir: PathBuf,
    /// Network namespaces kept wired and ready, so a launch runs no CNI plugin.
    #[arg(long, default_value_t = 4)]
    pub network_pool: usize,
    /// Size of each task's private /tmp (a tmpfs counted in its memory), in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub task_tmp_bytes: u64,
    /// Let tasks that ask for the host's network have it (a Mesos `ContainerInfo` without
    /// network infos or naming `host`; Marathon's `networks: [{mode: host}]`). Off: every task
    /// gets its own network, and asking for the host's is refused.
    #[arg(long)]
    pub allow_host_network: bool,
    /// Do not cap tasks' CPU with a CFS quota (shares only).
    #[arg(long)]
    pub no_cfs_quota: bool,
    /// The secret the master and this agent prove to each other on the agent protocol
    /// (`Authorization: Bearer`); the same value as the master's --cluster-secret.
    #[arg(long, env = "DROVE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The cluster secret, read from a file (mode 0600): the form to use, since a command
    /// line is readable by every local user.
    #[arg(
        long,
        env = "DROVE_CLUSTER_SECRET_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "cluster_secret"
    )]
    pub cluster_secret_file: Option<String>,
    /// Listen on a non-loopback address without a cluster secret: anyone who reaches the
    /// port may then run tasks here. Without this flag such an agent refuses to start.
    #[arg(long)]
    pub insecure: bool,
    /// Bound on one artifact download, request to last byte (e.g. `10m`, `30s`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub fetch_timeout: std::time::Duration,
    /// Largest artifact the fetcher accepts, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    pub fetch_max_bytes: u64,
    /// Most processes and threads one task may have (its cgroup's `pids.max`); 0: no limit.
    #[arg(long, default_value_t = 1024)]
    pub task_pids_max: u64,
    /// Uids the agent gives tasks when it runs as root, FIRST-LAST: one per framework and task
    /// user name, never root, no passwd entries needed.
    #[arg(long, default_value = sandbox::DEFAULT_TASK_UIDS)]
    pub task_uids: String,
    /// A directory local (`file://`, absolute path) URIs may be fetched from; repeatable.
    /// None by default: tasks fetch over http only.
    #[arg(long = "fetch-allow-dir")]
    pub fetch_allow_dirs: Vec<PathBuf>,
    /// Total size of the fetcher's download cache, in bytes (least recently used go first).
    #[arg(long, default_value_t = 2 << 30)]
    pub fetch_cache_max_bytes: u64,
    /// Name of the cgroup under which task cgroups are created.
    #[arg(long, default_value = "drove")]
    pub cgroup_root: String,
    /// Ping interval in seconds (default: what the master says at registration).
    #[arg(long)]
    pub ping_interval: Option<f64>,
    /// A starting task's CFS quota is raised to at least one core until 5 s after its first
    /// passed health check (so a wake's first requests are served boosted too), or, until it
    /// passes one, this long at most (`0s`: no boost). Shares are not raised, so it only takes
    /// CPU nobody else wants; a cold start stops waiting on a 0.1-cpu quota.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub startup_cpu_boost: std::time::Duration,
    /// Per-stream size limit of a task's stdout/stderr before rotation, in bytes.
    #[arg(long, default_value_t = logs::DEFAULT_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// Extract every archive into each sandbox, instead of unpacking a cached one once and
    /// mounting it under the sandboxes of the tasks that use it (an overlay; root only).
    #[arg(long)]
    pub no_artifact_layers: bool,
    /// The most ended tasks' sandboxes (kept for their logs, the last two per app) may take,
    /// in bytes; the oldest go first.
    #[arg(long, default_value_t = 1 << 30)]
    pub sandbox_keep_bytes: u64,
    /// The most artifact layers no sandbox mounts may take, in bytes (kept for the next wake;
    /// the least recently used go first).
    #[arg(long, default_value_t = 4 << 30)]
    pub layers_keep_bytes: u64,
    /// The binary run as `<path> executor --spec FILE` to supervise a task (default: this
    /// executable).
    #[arg(long, hide = true)]
    pub executor_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--resources {spec:?}: {source}")]
    Resources {
        spec: String,
        source: drove_proto::ResourceError,
    },
    #[error("--attributes: {0}")]
    Attributes(String),
    #[error(transparent)]
    Cgroups(#[from] cgroups::CgroupError),
    #[error(transparent)]
    TaskUsers(#[from] sandbox::SandboxError),
    #[error(transparent)]
    Container(#[from] container::ContainerError),
    #[error("finding the executor binary: {0}")]
    ExecutorPath(std::io::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    StateDir(#[from] drove_proto::state_dir::StateDirError),
    #[error(
        "--listen {0} is not a loopback address and there is no --cluster-secret-file: anyone \
         who reaches it could run tasks on this machine. Give the cluster secret (or \
         --insecure to accept that)"
    )]
    Unprotected(SocketAddr),
}

/// Resolves flags into a configuration (without binding anything).
fn configure(args: &AgentArgs, bound: SocketAddr) -> Result<node::Config, AgentError> {
    std::fs::create_dir_all(&args.work_dir).map_err(|source| AgentError::WorkDir {
        path: args.work_dir.clone(),
        source,
    })?;
    let work_dir = args
        .work_dir
        .canonicalize()
        .map_err(|source| AgentError::WorkDir {
            path: args.work_dir.clone(),
            source,
        })?;
    // What only the agent reads (checkpoints with tasks' environments, its key, the fetch
    // cache of every app's artifacts) is root's alone; sandboxes get their own modes.
    for dir in [work_dir.join("meta"), work_dir.join("cache")] {
        for w in drove_proto::state_dir::warnings(&drove_proto::state_dir::make_private(&dir)?) {
            tracing::warn!("{w}");
        }
    }
    let detected = machine::detect(&work_dir);
    let resources =
        machine::with_overrides(detected, args.resources.as_deref()).map_err(|source| {
            AgentError::Resources {
                spec: args.resources.clone().unwrap_or_default(),
                source,
            }
        })?;
    let attributes = match &args.attributes {
        Some(a) => machine::parse_attributes(a).map_err(AgentError::Attributes)?,
        None => Vec::new(),
    };
    let hostname = match &args.hostname {
        Some(h) => h.clone(),
        None if !bound.ip().is_unspecified() => bound.ip().to_string(),
        None => machine::machine_hostname(),
    };
    let endpoint = if bound.ip().is_unspecified() {
        format!("http://{}:{}", hostname, bound.port())
    } else {
        format!("http://{bound}")
    };
    let executor_path = match &args.executor_path {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(AgentError::ExecutorPath)?,
    };
    let containers = match args.isolation {
        Isolation::Container => Some(std::sync::Arc::new(containers(args, &work_dir)?)),
        _ => None,
    };
    let cgroups = match args.isolation {
        Isolation::Cgroups | Isolation::Container => {
            Some(cgroups::CgroupManager::detect(&args.cgroup_root)?)
        }
        Isolation::None => None,
    };
    if nix::unistd::geteuid().is_root() {
        sandbox::check_reachable(&work_dir)?;
    }
    let task_uids = std::sync::Arc::new(sandbox::TaskUids::open(&work_dir, &args.task_uids)?);
    let mut master = args.master.trim().trim_end_matches('/').to_string();
    if !master.contains("://") {
        master = format!("http://{master}");
    }
    Ok(node::Config {
        master,
        hostname,
        endpoint,
        work_dir,
        resources,
        attributes,
        cgroups,
        containers,
        cfs_quota: !args.no_cfs_quota,
        pids_max: (args.task_pids_max > 0).then_some(args.task_pids_max),
        cluster_secret: args.cluster_secret.clone(),
        fetch_limits: fetcher::FetchLimits {
            timeout: args.fetch_timeout,
            max_bytes: args.fetch_max_bytes,
            cache_max_bytes: args.fetch_cache_max_bytes,
            allow_dirs: args.fetch_allow_dirs.clone(),
        },
        task_uids,
        executor_path,
        log_max_bytes: args.log_max_bytes.max(1024),
        artifact_layers: !args.no_artifact_layers,
        sandbox_keep_bytes: args.sandbox_keep_bytes,
        layers_keep_bytes: args.layers_keep_bytes,
        startup_boost: (!args.startup_cpu_boost.is_zero() && !args.no_cfs_quota)
            .then_some(args.startup_cpu_boost),
        ping_interval: args.ping_interval,
    })
}

/// The container settings of `--isolation container`, checked against the host.
fn containers(
    args: &AgentArgs,
    work_dir: &std::path::Path,
) -> Result<container::Containers, AgentError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(container::ContainerError::NotRoot.into());
    }
    let monitor = container::install_monitor(&work_dir.join("meta"))?;
    let runtime = container::Runtime::resolve(&args.oci_runtime)?;
    if runtime.kind == container::RuntimeKind::Crun {
        // crun refuses a hybrid host whose v2 hierarchy holds controllers.
        cgroups::give_v2_controllers_v1_hierarchies()?;
    }
    let tag = container::network::tag_of(work_dir);
    let network = container::Network::new(
        &args.task_network,
        &args.cni_plugin_dir,
        &tag,
        args.network_pool,
    );
    network.setup().map_err(container::ContainerError::from)?;
    let init = std::path::Path::new(container::TINI)
        .is_file()
        .then(|| PathBuf::from(container::TINI));
    if init.is_none() {
        tracing::warn!(
            "no {} (apt install tini): a task is its container's pid 1, which ignores SIGTERM \
             unless it handles it",
            container::TINI
        );
    }
    let seccomp_bpf = match runtime.kind {
        container::RuntimeKind::Crun => {
            match container::seccomp::precompile(&runtime, &work_dir.join("meta")) {
                Ok(bpf) => Some(bpf),
                Err(e) => {
                    tracing::warn!(error = %e, "precompiling the seccomp filter failed; each start compiles it");
                    None
                }
            }
        }
        _ => None,
    };
    Ok(container::Containers {
        seccomp_bpf,
        runtime,
        network,
        tmp_bytes: args.task_tmp_bytes,
        allow_host_network: args.allow_host_network,
        init,
        monitor,
    })
}

/// Runs the agent until `shutdown` fires. Tasks keep running after it returns; the next agent
/// started on the same work dir recovers them.
pub async fn run(mut args: AgentArgs, shutdown: CancellationToken) -> Result<(), AgentError> {
    if let Some(secret) = args.cluster_secret_file.take() {
        args.cluster_secret = Some(secret);
    }
    if args.cluster_secret.is_none() && !args.listen.ip().is_loopback() && !args.insecure {
        return Err(AgentError::Unprotected(args.listen));
    }
    if args.cluster_secret.is_none() {
        tracing::warn!(
            "no cluster secret: any process on this host, every task included, may launch and \
             kill tasks here and read their logs; give --cluster-secret-file (for development \
             only without one)"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: args.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: args.listen,
        source,
    })?;
    let config = configure(&args, bound)?;
    let meta = checkpoint::Meta::open(&config.work_dir)?;
    tracing::info!(
        listen = %bound,
        endpoint = %config.endpoint,
        master = %config.master,
        resources = %config.resources,
        isolation = ?args.isolation,
        cgroup_v2 = config.cgroups.as_ref().map(|c| c.is_v2()),
        task_uids = %args.task_uids,
        "agent starting"
    );
    let inner = shutdown.child_token();
    let node = Arc::new(node::Node::new(config, meta, inner.clone()));
    launcher::recover(&node).await;

    let app = http::router(node.clone());
    let server_token = inner.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_token.cancelled().await })
            .await
    });
    let registration = tokio::spawn(registration::run(node.clone()));
    tokio::spawn(gc::run(node.clone()));
    let sender = tokio::spawn(status::run_sender(node.clone()));

    shutdown.cancelled().await;
    inner.cancel();
    tracing::info!("agent stopping; tasks keep running");
    let _ = registration.await;
    let _ = sender.await;
    // Queued checkpoints reach the disk before the next agent on this work dir reads them.
    if tokio::time::timeout(std::time::Duration::from_secs(10), node.flush_checkpoints())
        .await
        .is_err()
    {
        tracing::warn!("some task checkpoints were still being written at shutdown");
    }
    // Ready namespaces no container uses are released; running containers keep theirs.
    if let Some(c) = node.config.containers.clone() {
        let _ = tokio::task::spawn_blocking(move || c.network.drain()).await;
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) | Err(_) => Ok(()),
        Ok(Ok(Err(e))) => Err(AgentError::Serve(e)),
        Ok(Err(e)) => Err(AgentError::Serve(std::io::Error::other(e.to_string()))),
    }
}
