//! drove's master: agents register their resources, the DRF allocator offers them to
//! frameworks, and frameworks drive tasks through the Mesos v1 scheduler HTTP API.
//!
//! Module map: [`cluster`] is the state machine (agents, frameworks, offers, tasks);
//! [`allocator`] is the pure DRF allocator it drives; [`scheduler_api`], [`agent_api`] and
//! [`read_api`] are the HTTP faces; [`agent_client`] carries requests to agents; [`store`]
//! persists what a restart must not lose. While the store cannot write (or its queue is full),
//! the HTTP faces refuse the calls that would change persisted state with 503 and `/health`
//! answers 503 naming the store ([`store::StoreHealth`]): the master never acknowledges a
//! change it cannot keep.
#![forbid(unsafe_code)]

pub mod agent_api;
pub mod agent_client;
pub mod allocator;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod read_api;
pub mod scheduler_api;
pub mod store;
pub mod task_logs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use drove_proto::mesos::{Address, MasterInfo};
use drove_proto::Resources;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::agent_client::AgentClient;
use crate::allocator::AllocatorConfig;
use crate::cluster::{Cluster, ClusterConfig};
use crate::store::{Store, StoreHealth};

/// `drove master` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Where the master keeps its SQLite database.
    #[arg(long, default_value = "/var/lib/drove/master")]
    pub data_dir: PathBuf,
    /// How often agents ping; an agent silent for this × --max-agent-ping-timeouts is unreachable.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub agent_ping_timeout: Duration,
    #[arg(long, default_value_t = 3)]
    pub max_agent_ping_timeouts: u32,
    /// After a master restart, agents that do not re-register within this are unreachable.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub agent_reregister_timeout: Duration,
    /// An agent unreachable this long is removed with its tasks (Mesos' registry_max_agent_age).
    #[arg(long, default_value = "14days", value_parser = humantime::parse_duration)]
    pub agent_removal_timeout: Duration,
    /// Interval of HEARTBEAT events on idle subscription streams.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Period of the batch allocation cycle (event-triggered cycles run in between).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub allocation_interval: Duration,
    /// Smallest offer worth making, Mesos-style alternatives: `cpus:0.01|mem:32`.
    #[arg(long, default_value = "cpus:0.01|mem:32", value_parser = MinAllocatable::parse)]
    pub min_allocatable_resources: MinAllocatable,
    /// Role weights for DRF, Mesos-style: `prod=2,dev=0.5` (roles not listed weigh 1).
    #[arg(long, default_value = "", value_parser = RoleWeights::parse)]
    pub weights: RoleWeights,
    /// Host name advertised in MasterInfo and /master/state.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Frameworks must authenticate (HTTP basic on the scheduler API) with a principal and
    /// secret from --credentials; a framework id can then only be resumed by its principal.
    #[arg(long)]
    pub authenticate_frameworks: bool,
    /// Mesos-style credentials file: `{"credentials":[{"principal","secret"}]}` or
    /// `principal secret` lines.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// The secret agents and the master prove to each other (`Authorization: Bearer`) on the
    /// agent protocol; without it that protocol is open to anyone who can reach the ports.
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
    /// port may then register an agent. Without this flag such a master refuses to start.
    #[arg(long)]
    pub insecure: bool,
    /// The read endpoints (`/master/state`, `/state`, `/metrics`) need a framework's
    /// credentials (HTTP basic) or the cluster secret (bearer), as Mesos's
    /// `--authenticate_http_readonly`. `/health` and `/version` stay open.
    #[arg(long)]
    pub authenticate_http_readonly: bool,
}

/// `--min-allocatable-resources`: alternatives, any one of which makes an offer worth making.
#[derive(Debug, Clone)]
pub struct MinAllocatable(pub Vec<Resources>);

impl MinAllocatable {
    fn parse(text: &str) -> Result<MinAllocatable, drove_proto::ResourceError> {
        AllocatorConfig::parse_min_allocatable(text).map(MinAllocatable)
    }
}

/// `--weights`: `role=weight` pairs.
#[derive(Debug, Clone, Default)]
pub struct RoleWeights(pub Vec<(String, f64)>);

impl RoleWeights {
    fn parse(text: &str) -> Result<RoleWeights, String> {
        let mut out = Vec::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, weight) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?}: expected role=weight"))?;
            let weight: f64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{pair:?}: weight is not a number"))?;
            if !(weight.is_finite() && weight > 0.0) {
                return Err(format!("{pair:?}: weight must be positive"));
            }
            out.push((role.trim().to_string(), weight));
        }
        Ok(RoleWeights(out))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Credentials(#[from] auth::CredentialsError),
    #[error(transparent)]
    StateDir(#[from] drove_proto::state_dir::StateDirError),
    #[error(
        "--listen {0} is not a loopback address and there is no --cluster-secret-file: anyone \
         who reaches it could register an agent and be sent tasks. Give the cluster secret \
         (or --insecure to accept that)"
    )]
    Unprotected(SocketAddr),
}

/// What the HTTP handlers share.
pub struct Shared {
    cluster: Mutex<Cluster>,
    /// Wakes the allocation loop for an event-triggered cycle.
    pub allocate: Notify,
    /// `master@ip:port`, as Mesos tools expect in `leader`/`pid`.
    pub pid: String,
    /// Set with `--authenticate-frameworks`: who may call the scheduler API.
    pub frameworks: Option<auth::Credentials>,
    /// Set with `--cluster-secret`: what agents must present.
    pub cluster_secret: Option<String>,
    /// Whether the store keeps up; calls that would queue changes are refused while it does not.
    pub store: StoreHealth,
    /// `--authenticate-http-readonly`.
    pub readonly_auth: bool,
    /// Calls to agents made on a caller's behalf (task logs), with the cluster secret.
    pub agent_http: reqwest::Client,
    /// Where the cluster's effects go: its store writes and its calls to agents.
    store_queue: Store,
    agents: AgentClient,
}

/// The cluster, locked (from [`Shared::lock`]). What its changes asked of the world (store
/// writes, calls to agents, events for frameworks) is done as the guard goes, before the lock
/// is let go, in the order the cluster asked.
pub struct Locked<'a> {
    shared: &'a Shared,
    cluster: MutexGuard<'a, Cluster>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        for effect in self.cluster.take_effects() {
            effect.apply(&self.shared.store_queue, &self.shared.agents);
        }
    }
}

impl Shared {
    /// Locks the cluster. A panic while holding the lock must not wedge the master, so a
    /// poisoned lock is taken over as is.
    pub fn lock(&self) -> Locked<'_> {
        Locked {
            shared: self,
            cluster: self.cluster.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// `Err(reason)` when the store cannot take more changes (see [`StoreHealth::unavailable`]):
    /// a call that would queue one is to be refused with 503.
    pub fn store_writable(&self) -> Result<(), String> {
        match self.store.unavailable() {
            None => Ok(()),
            Some(reason) => Err(reason),
        }
    }
}

/// Builds the master's HTTP router.
pub fn router(shared: Arc<Shared>) -> Router {
    let registry = Arc::new(read_api::metrics_registry(Arc::downgrade(&shared)));
    Router::new()
        .route("/api/v1/scheduler", post(scheduler_api::scheduler))
        .route("/master/api/v1/scheduler", post(scheduler_api::scheduler))
        .merge(
            Router::new()
                .route(drove_proto::agent::REGISTER_PATH, post(agent_api::register))
                .route(drove_proto::agent::PING_PATH, post(agent_api::ping))
                .route(drove_proto::agent::STATUS_PATH, post(agent_api::status))
                .route_layer(axum::middleware::from_fn_with_state(
                    shared.clone(),
                    agent_api::only_agents,
                )),
        )
        .merge(
            Router::new()
                .route("/state", get(read_api::state))
                .route("/state.json", get(read_api::state))
                .route("/master/state", get(read_api::state))
                .route("/master/state.json", get(read_api::state))
                .route("/metrics", get(move || read_api::metrics(registry.clone())))
                .route_layer(axum::middleware::from_fn_with_state(
                    shared.clone(),
                    auth::only_readers,
                )),
        )
        .route(task_logs::PATH, get(task_logs::task_log))
        .route(task_logs::STATS_PATH, get(task_logs::task_statistics))
        .route(task_logs::OUTPUT_PATH, get(task_logs::task_output))
        .route("/version", get(read_api::version))
        .route("/master/version", get(read_api::version))
        .route("/health", get(read_api::health))
        .route("/master/health", get(read_api::health))
        .with_state(shared)
}

/// Runs the master until `shutdown` fires.
pub async fn run(mut args: MasterArgs, shutdown: CancellationToken) -> Result<(), MasterError> {
    if let Some(secret) = args.cluster_secret_file.take() {
        args.cluster_secret = Some(secret);
    }
    if args.cluster_secret.is_none() && !args.listen.ip().is_loopback() && !args.insecure {
        return Err(MasterError::Unprotected(args.listen));
    }
    if args.cluster_secret.is_none() {
        tracing::warn!(
            "no cluster secret: any process on this host, every task included, may register an \
             agent and be sent tasks; give --cluster-secret-file (for development only without \
             one)"
        );
    }
    for w in
        drove_proto::state_dir::warnings(&drove_proto::state_dir::make_private(&args.data_dir)?)
    {
        tracing::warn!("{w}");
    }
    if args.authenticate_http_readonly
        && !args.authenticate_frameworks
        && args.cluster_secret.is_none()
    {
        return Err(auth::CredentialsError::NoReaders.into());
    }
    let frameworks = match (&args.credentials, args.authenticate_frameworks) {
        (Some(path), true) => Some(auth::Credentials::load(path)?),
        (None, true) => return Err(auth::CredentialsError::Missing.into()),
        (_, false) => None,
    };
    let (store, snapshot, writer) = Store::open(&args.data_dir).await?;
    let store_health = store.health();
    let writer = tokio::spawn(writer.run());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| MasterError::Listen {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(MasterError::Serve)?;
    let master_id = uuid::Uuid::new_v4().to_string();
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
        std::net::IpAddr::V6(_) => 0,
    };
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    let master_info = MasterInfo {
        id: master_id.clone(),
        ip,
        port: addr.port() as u32,
        hostname: Some(hostname.clone()),
        version: Some(read_api::MESOS_VERSION.into()),
        address: Some(Address {
            hostname: Some(hostname),
            ip: Some(addr.ip().to_string()),
            port: addr.port() as u32,
        }),
    };
    let config = ClusterConfig {
        agent_ping_interval: args.agent_ping_timeout,
        max_agent_ping_timeouts: args.max_agent_ping_timeouts.max(1),
        agent_reregister_timeout: args.agent_reregister_timeout,
        agent_removal_timeout: args.agent_removal_timeout,
        heartbeat_interval: args.heartbeat_interval,
        allocation_interval: args.allocation_interval,
        min_allocatable: args.min_allocatable_resources.0.clone(),
        completed_tasks_per_framework: 1000,
    };
    let (internal_tx, mut internal_rx) = mpsc::unbounded_channel();
    let mut cluster = Cluster::new(master_info, config, clock::Clock::system());
    for (role, weight) in &args.weights.0 {
        // Parsing already refused non-positive weights.
        let _ = cluster.allocator.set_role_weight(role, *weight);
    }
    cluster.recover(snapshot);
    let shared = Arc::new(Shared {
        cluster: Mutex::new(cluster),
        allocate: Notify::new(),
        pid: format!("master@{addr}"),
        frameworks,
        cluster_secret: args.cluster_secret.clone(),
        store: store_health.clone(),
        readonly_auth: args.authenticate_http_readonly,
        agent_http: agent_client::agent_http(args.cluster_secret.as_deref()),
        store_queue: store,
        agents: AgentClient::new(internal_tx, args.cluster_secret.as_deref()),
    });
    // What recovering asked for (if anything) is done before the first request.
    drop(shared.lock());
    tracing::info!(%addr, master_id, "master listening");

    // The allocation loop: a batch cycle every interval, plus event-triggered cycles. Notifies
    // that arrive while a cycle runs coalesce into one more cycle.
    let alloc = {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let interval = args.allocation_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = shared.allocate.notified() => {}
                }
                shared.lock().allocate();
            }
        })
    };
    // Liveness: agents that stopped pinging, frameworks whose failover timeout ran out, and
    // launches that never reached their agent.
    let watchdog = {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        let mut c = shared.lock();
                        c.check_agents();
                        c.check_frameworks();
                        if c.allocation_wanted { shared.allocate.notify_one(); }
                    }
                    Some(msg) = internal_rx.recv() => {
                        let mut c = shared.lock();
                        c.handle_internal(msg);
                        if c.allocation_wanted { shared.allocate.notify_one(); }
                    }
                }
            }
        })
    };

    // Subscription streams never end on their own; close them at shutdown (without treating
    // it as a disconnect) so graceful shutdown can finish.
    {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            shared.lock().close_streams();
        });
    }
    let app = router(shared.clone());
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Graceful, but bounded: a client that never reads must not keep the master alive.
    let served = tokio::select! {
        served = server => served,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => Ok(()),
    };
    alloc.abort();
    watchdog.abort();
    // Dropping the cluster drops the last store handle, which lets the writer finish.
    drop(shared);
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        tracing::error!(path = %store_health.path().display(), lost = store_health.pending(),
            "master store not drained within 5 s of shutdown: these changes are lost");
    }
    served.map_err(MasterError::Serve)
}
