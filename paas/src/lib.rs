//! drove's PaaS: a framework on the master that keeps every app's instances running, rolls out
//! changes behind health checks, serves the router its routes, and answers a
//! Marathon-compatible `/v2` API.
//!
//! - [`model`]: the domain types, a leaf: Marathon's app definition and its validation, its
//!   scaling settings and constraints, instances, deployments, the clock;
//! - [`placement`]: offers' free resources, where constraints allow, why an offer did not fit;
//! - [`state`]: the state machine (apps, instances, deployments, offers, updates, routes);
//! - [`scheduler`]: the loop between the Mesos driver and the state;
//! - [`task`]: the Mesos task an instance runs as;
//! - [`store`]: SQLite persistence; [`events`]: Marathon's event bus;
//! - [`admin`]: the admin dashboard at `/admin`;
//! - [`ops`]: the service layer, every change for every caller, behind the write gate;
//! - [`http_error`]: Marathon's error shapes for ops' errors;
//! - [`api`]: the HTTP API (`/v2`, `/v1` routes for routers, `/ping`, `/metrics`) and its
//!   access rules; [`tokens`]: the admin and router tokens.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod events;
pub mod http_error;
pub mod issuer;
pub mod model;
pub mod ops;
pub mod placement;
pub mod push;
pub mod scaler;
pub mod scheduler;
pub mod state;
pub mod stats;
pub mod store;
pub mod task;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use drove_driver::{Config, Credentials, Driver};
use drove_proto::master_state::{self, MasterState};
use drove_proto::mesos::{Capability, FrameworkId, FrameworkInfo};
use drove_proto::routing::RouteMessage;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::state::{Effect, State};
use crate::store::Store;

/// `drove paas` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PaasArgs {
    /// The master's URL.
    #[arg(long, env = "DROVE_MASTER", default_value = "http://127.0.0.1:5050")]
    pub master: String,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Where the API also listens over HTTPS (with `--tls-cert` and `--tls-key`): the address
    /// for routers on other machines, since their route stream carries the certificates'
    /// private keys (`drove router --paas https://… --paas-ca-file`).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<SocketAddr>,
    /// The HTTPS listener's certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM; keep it 0600).
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub tls_key: Option<PathBuf>,
    /// Where the PaaS keeps its database and tokens.
    #[arg(long, default_value = ".drove/paas")]
    pub data_dir: PathBuf,
    /// Apps are served at `<app>.<domain>`.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// The admin token (HTTP basic password or bearer token); generated and saved under the
    /// data dir when not given.
    #[arg(long, env = "DROVE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The admin token, read from a file (mode 0600): the form to use, since a command line is
    /// readable by every local user.
    #[arg(
        long,
        env = "DROVE_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<String>,
    /// The token routers use for routes, wakes and stats; generated when not given.
    #[arg(long, env = "DROVE_ROUTER_TOKEN", hide_env_values = true)]
    pub router_token: Option<String>,
    /// The router token, read from a file (mode 0600): the form to use, since a command line is
    /// readable by every local user.
    #[arg(
        long,
        env = "DROVE_ROUTER_TOKEN_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "router_token"
    )]
    pub router_token_file: Option<String>,
    /// How long the master keeps the PaaS's instances running while the PaaS is away.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub failover_timeout: Duration,
    /// The framework's name on the master.
    #[arg(long, default_value = "drove")]
    pub framework_name: String,
    /// The framework's user (agents run tasks as their own task user, never root).
    #[arg(long, default_value = "nobody")]
    pub task_user: String,
    /// The principal for an authenticating master (with --master-secret).
    #[arg(long, env = "DROVE_MASTER_PRINCIPAL")]
    pub master_principal: Option<String>,
    #[arg(long, env = "DROVE_MASTER_SECRET", hide_env_values = true)]
    pub master_secret: Option<String>,
    /// The secret for the master, read from a file (mode 0600): the form to use, since a command line is
    /// readable by every local user.
    #[arg(
        long,
        env = "DROVE_MASTER_SECRET_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "master_secret"
    )]
    pub master_secret_file: Option<String>,
    /// The port apps are browsed on (the router's), for the dashboard's links to them.
    #[arg(long, default_value_t = 8080)]
    pub router_port: u16,
    /// The router's HTTPS port, for links to apps whose own hostname has a certificate.
    #[arg(long)]
    pub router_https_port: Option<u16>,
    /// A password for the dashboard's login (12 characters at least), besides the admin token
    /// (which always works).
    #[arg(long, env = "DROVE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// The dashboard's password, read from a file (mode 0600): the form to use, since a command line is
    /// readable by every local user.
    #[arg(
        long,
        env = "DROVE_ADMIN_PASSWORD_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "admin_password"
    )]
    pub admin_password_file: Option<String>,
    /// Mark the dashboard's cookies `Secure` (when a TLS proxy serves it).
    #[arg(long)]
    pub admin_secure_cookies: bool,
    /// How long a dashboard login lasts.
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub admin_session: Duration,
    /// How long an instance taken out of the routes may finish its requests before the kill.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// The most cpus an instance of a pushed app may ask for (`flock.cpus`).
    #[arg(long, default_value_t = 2.0)]
    pub app_max_cpus: f64,
    /// The most memory, in MiB, an instance of a pushed app may ask for (`flock.mem`).
    #[arg(long, default_value_t = 2048.0)]
    pub app_max_mem: f64,
    /// The most instances a pushed app may ask for (`flock.instances`,
    /// `drove.minInstances`, `drove.maxInstances`).
    #[arg(long, default_value_t = 10)]
    pub app_max_instances: u32,
    /// What a pushed app's build task asks for, unless its `drove.buildCpus`/`buildMem` say.
    #[arg(long, default_value_t = 1.0)]
    pub build_cpus: f64,
    #[arg(long, default_value_t = 1024.0)]
    pub build_mem: f64,
    /// The most cpus an instance of a pushed app may burst to when the machine has them idle
    /// (its `flock.cpus` is what it is guaranteed), unless its `drove.cpusLimit` says.
    #[arg(long, default_value_t = 1.0)]
    pub app_cpus_limit: f64,
    /// Between SIGTERM and SIGKILL when an instance is killed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub kill_grace: Duration,
    /// An ACME CA's directory URL (RFC 8555): custom domains then get their certificates from
    /// it, proved by HTTP-01 through the routers' HTTP port, and renewed. `letsencrypt` is
    /// Let's Encrypt's production directory, `letsencrypt-staging` its staging one.
    #[arg(long, env = "DROVE_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// The root (PEM, its first certificate) to trust for the ACME directory's HTTPS instead of
    /// the system's roots: a private or test CA's.
    #[arg(long, value_name = "FILE", requires = "acme_directory")]
    pub acme_ca_file: Option<PathBuf>,
    /// A contact address for the ACME account (the CA's notices).
    #[arg(long, requires = "acme_directory")]
    pub acme_email: Option<String>,
    /// Get the apps' own `<app>.<domain>` certificates from the ACME CA too (one per app,
    /// proved through the routers: `*.<domain>` must resolve to them).
    #[arg(long, requires = "acme_directory")]
    pub acme_own_hostnames: bool,
    /// Sign each app's own `<app>.<domain>` hostname with drove's local CA, made in the data
    /// dir (`local-ca/root.pem` is what browsers must trust): HTTPS on a machine of one's
    /// own, as `drove up` does it.
    #[arg(long, conflicts_with = "acme_directory")]
    pub local_ca: bool,
    /// After a certificate could not be had, the first retry's delay; it doubles with each
    /// failure in a row, up to 6 hours.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub certificate_retry: Duration,
}

impl Paas {
    /// Where people browse the app served as `route`: through the router, on its port.
    pub fn app_url(&self, route: &str) -> String {
        match self.args.router_port {
            80 => format!("http://{route}.{}/", self.args.domain),
            port => format!("http://{route}.{}:{port}/", self.args.domain),
        }
    }

    /// Where people browse it over HTTPS, once its own hostname has a certificate and the
    /// routers' HTTPS port is known.
    pub fn app_https_url(&self, route: &str) -> Option<String> {
        let port = self.args.router_https_port?;
        let host = format!("{route}.{}", self.args.domain);
        if !self.lock().certificates.contains_key(&host) {
            return None;
        }
        Some(match port {
            443 => format!("https://{host}/"),
            port => format!("https://{host}:{port}/"),
        })
    }
}

impl PaasArgs {
    /// What one pushed app may ask for.
    pub fn ceilings(&self) -> push::descriptor::Ceilings {
        push::descriptor::Ceilings {
            cpus: self.app_max_cpus,
            mem: self.app_max_mem,
            instances: self.app_max_instances,
        }
    }
}

/// When the master's agents were read, and what they were.
type AgentsReading = (std::time::Instant, Arc<Vec<master_state::Agent>>);

/// Everything the API handlers and the scheduler share.
pub struct Paas {
    state: Mutex<State>,
    pub store: Store,
    pub events: Events,
    /// Route changes, for the routers' streams (sent as the state makes them).
    pub routes: tokio::sync::broadcast::Sender<drove_proto::routing::RouteMessage>,
    pub driver: Driver,
    /// Wakes the scheduler loop after an API change.
    pub kick: Notify,
    /// Held (shared) by each DECLINE in flight; a REVIVE takes it whole first, so it is never
    /// overtaken by an earlier decline whose filter would then outlive it.
    pub declines: std::sync::Arc<tokio::sync::RwLock<()>>,
    pub tokens: tokens::Tokens,
    pub args: PaasArgs,
    pub stats: stats::RouterStats,
    pub scaler: scaler::Scaler,
    pub push: push::Pushes,
    pub http: reqwest::Client,
    pub metrics: api::metrics::Metrics,
    pub admin: admin::Admin,
    /// Certificates from the PaaS's authority, if it has one.
    pub issuer: issuer::Issuer,
    /// Ends the long-lived responses (route streams, event streams) at shutdown.
    pub shutdown: CancellationToken,
    agents: Mutex<Option<AgentsReading>>,
    /// The write gate: held (as an [`ops::Tx`], from [`Paas::begin`]) by every change from its
    /// checks through its store write to its install, so changes reach the disk and the state
    /// in the same order and never interleave.
    writes: tokio::sync::Mutex<()>,
    /// Why the PaaS stopped on its own, if it did.
    pub fatal: Mutex<Option<String>>,
}

/// The state, locked (from [`Paas::lock`]). What changes to it asked of the world (store
/// writes, journal lines, events, routes) is done as the guard goes, before the lock is let
/// go, in the order the state asked.
pub struct Locked<'a> {
    paas: &'a Paas,
    state: MutexGuard<'a, State>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        for effect in self.state.take_effects() {
            match effect {
                Effect::Store(op) => self.paas.store.enqueue(op),
                Effect::Journal {
                    app,
                    kind,
                    line,
                    keep,
                } => self.paas.store.journal(&app, kind, line, keep),
                Effect::Event(e) => self.paas.events.publish(e),
                Effect::Route(m) => {
                    if matches!(m, RouteMessage::Upsert { .. }) {
                        // A new app may want its own hostname's certificate (the local CA).
                        self.paas.issuer.nudge.notify_one();
                    }
                    // No router listening is fine: each reads a snapshot when it connects.
                    let _ = self.paas.routes.send(m);
                }
            }
        }
    }
}

impl Paas {
    pub fn lock(&self) -> Locked<'_> {
        Locked {
            paas: self,
            state: self.state.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// The agents of the master's `/master/state` (`slaves`), read at most every few seconds
    /// (`fresh` forces a read); `None` when the master cannot be read.
    pub async fn agents(&self, fresh: bool) -> Option<Arc<Vec<master_state::Agent>>> {
        const FRESH: Duration = Duration::from_secs(5);
        if !fresh {
            if let Some((at, agents)) = &*self.agents.lock().unwrap_or_else(|p| p.into_inner()) {
                if at.elapsed() < FRESH {
                    return Some(agents.clone());
                }
            }
        }
        let state: MasterState = json_answer(self.master_get("/master/state")).await?;
        let agents = Arc::new(state.slaves);
        *self.agents.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), agents.clone()));
        Some(agents)
    }

    /// A GET of the master's `path`, with the PaaS's framework credentials when it has them
    /// (a master with `--authenticate-http-readonly` wants them on its read endpoints).
    pub fn master_get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.args.master));
        match (&self.args.master_principal, &self.args.master_secret) {
            (Some(p), Some(s)) => req.basic_auth(p, Some(s)),
            _ => req,
        }
    }

    /// The largest agent's (cpus, mem); `None` when unknown (no master, no agents).
    pub async fn capacity(&self) -> Option<(f64, f64)> {
        let agents = self.agents(false).await?;
        let max = |f: fn(&master_state::Scalars) -> f64| {
            agents
                .iter()
                .map(|a| f(&a.resources))
                .fold(0.0_f64, f64::max)
        };
        (!agents.is_empty()).then(|| (max(|r| r.cpus), max(|r| r.mem)))
    }
}

/// The JSON a request (to the master, say) answers; `None` when it cannot be sent, is not a
/// success or is not JSON.
pub async fn json_answer<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
) -> Option<T> {
    req.send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum PaasError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Stopped(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    StateDir(#[from] drove_proto::state_dir::StateDirError),
    #[error(transparent)]
    LocalCa(#[from] issuer::local_ca::LocalCaError),
    #[error(transparent)]
    Tls(#[from] api::tls::TlsError),
}

/// A started PaaS: its API address and the tokens in force.
pub struct Started {
    pub addr: SocketAddr,
    pub admin_token: String,
    pub router_token: String,
    /// True when the tokens were generated by this start (show them to the user).
    pub generated: bool,
    pub task: tokio::task::JoinHandle<Result<(), PaasError>>,
}

/// Opens the state, binds the API and starts scheduling; returns once listening.
pub async fn start(mut args: PaasArgs, shutdown: CancellationToken) -> Result<Started, PaasError> {
    for (value, file) in [
        (&mut args.admin_token, args.admin_token_file.take()),
        (&mut args.router_token, args.router_token_file.take()),
        (&mut args.master_secret, args.master_secret_file.take()),
        (&mut args.admin_password, args.admin_password_file.take()),
    ] {
        if file.is_some() {
            *value = file;
        }
    }
    for w in
        drove_proto::state_dir::warnings(&drove_proto::state_dir::make_private(&args.data_dir)?)
    {
        tracing::warn!("{w}");
    }
    // Absolute and without links: git hands the hook the repositories' real paths, which are
    // compared with the data dir's.
    args.data_dir =
        args.data_dir
            .canonicalize()
            .map_err(|source| drove_proto::state_dir::StateDirError {
                path: args.data_dir.clone(),
                source,
            })?;
    if let Some(p) = &args.admin_password {
        if p.chars().count() < admin::session::MIN_PASSWORD {
            return Err(PaasError::Invalid(format!(
                "--admin-password (DROVE_ADMIN_PASSWORD): expected at least {} characters, found {}",
                admin::session::MIN_PASSWORD,
                p.chars().count()
            )));
        }
    }
    let (store, mut snapshot) = Store::open(&args.data_dir).await?;
    let pushed: Vec<push::PushApp> = std::mem::take(&mut snapshot.push_apps)
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let (tokens, generated) = tokens::Tokens::load_or_create(
        &args.data_dir,
        args.admin_token.clone(),
        args.router_token.clone(),
    )?;
    // Each app's past, for those that keep it: the state its wakes, the scaler its decisions,
    // the dashboard its samples.
    let (mut decisions, mut samples) = (Vec::new(), Vec::new());
    snapshot.journal.retain_mut(|(app, kind, data)| {
        let line = (std::mem::take(app), std::mem::take(data));
        match kind {
            store::Journal::Decision => decisions.push(line),
            store::Journal::Sample => samples.push(line),
            store::Journal::Wake => {
                (*app, *data) = line;
                return true;
            }
        }
        false
    });
    let authority = if let Some(directory) = &args.acme_directory {
        Some(issuer::Authority::Acme(issuer::acme::Acme::new(
            directory,
            args.acme_ca_file.clone(),
            args.acme_email.as_deref(),
            &snapshot.settings,
        )))
    } else if args.local_ca {
        let ca = issuer::local_ca::LocalCa::open_or_create(
            &args.data_dir.join("local-ca"),
            &args.domain,
        )?;
        Some(issuer::Authority::Local(Box::new(ca)))
    } else {
        None
    };
    let events = Events::new();
    let mut state = State::new(args.drain_timeout, args.kill_grace);
    state.restore(snapshot);
    let framework = FrameworkInfo {
        user: args.task_user.clone(),
        name: args.framework_name.clone(),
        id: state.framework_id.clone().map(FrameworkId::new),
        failover_timeout: Some(args.failover_timeout.as_secs_f64()),
        checkpoint: Some(true),
        role: None,
        roles: Vec::new(),
        hostname: None,
        principal: args.master_principal.clone(),
        webui_url: Some(format!("http://{}", args.listen)),
        capabilities: vec![Capability {
            kind: "TASK_KILLING_STATE".into(),
        }],
        labels: None,
    };
    let mut config = Config::new(args.master.clone(), framework);
    if let (Some(principal), Some(secret)) = (&args.master_principal, &args.master_secret) {
        config.credentials = Some(Credentials {
            principal: principal.clone(),
            secret: secret.clone(),
        });
    }
    let (driver, driver_events) = Driver::start(config, shutdown.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| PaasError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(PaasError::Serve)?;
    let tls_listener = match (args.tls_listen, &args.tls_cert, &args.tls_key) {
        (Some(at), Some(cert), Some(key)) => {
            Some(api::tls::TlsListener::bind(at, cert, key).await?)
        }
        _ => None,
    };
    let started_tokens = (tokens.admin.clone(), tokens.router.clone());
    let push_dir = args.data_dir.clone();
    let (admin_session, admin_secure_cookies) = (args.admin_session, args.admin_secure_cookies);
    let scaler = scaler::Scaler::new(store.clone(), decisions);
    let issuer = issuer::Issuer::new(authority, args.acme_own_hostnames, args.certificate_retry);
    let paas = Arc::new(Paas {
        state: Mutex::new(state),
        store,
        events,
        routes: tokio::sync::broadcast::channel(4096).0,
        driver,
        kick: Notify::new(),
        declines: Default::default(),
        tokens,
        args,
        stats: stats::RouterStats::default(),
        scaler,
        push: push::Pushes::new(push_dir, pushed),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default(),
        metrics: api::metrics::Metrics::default(),
        admin: admin::Admin::new(admin_session, admin_secure_cookies, samples),
        issuer,
        shutdown: shutdown.clone(),
        agents: Mutex::new(None),
        writes: tokio::sync::Mutex::new(()),
        fatal: Mutex::new(None),
    });
    // The restored instances are routable from the first route snapshot on.
    {
        let mut s = paas.lock();
        let scope = paas.issuer.authority.as_ref().map(|_| paas.issuer.scope);
        issuer::prune(&mut s, scope, &paas.args.domain);
        s.publish_routes(false, None);
    }
    tokio::spawn(scheduler::run(
        paas.clone(),
        driver_events,
        shutdown.clone(),
    ));
    tokio::spawn(scaler::run(paas.clone()));
    tokio::spawn(admin::history::run(paas.clone()));
    tokio::spawn(issuer::run(paas.clone()));
    let app = api::router(paas.clone());
    if let Some(tls) = tls_listener {
        use axum::serve::{Listener, ListenerExt};
        let at = tls.local_addr().map_err(PaasError::Serve)?;
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let served = axum::serve(
                tls.tap_io(|_| {}),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the API's HTTPS listener failed");
            }
        });
        tracing::info!(addr = %at, "PaaS API listening over HTTPS too");
    }
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(PaasError::Serve)?;
        // What the scheduler and the journal queued last is on disk before the process ends.
        if let Err(e) = paas.store.flush().await {
            tracing::warn!(error = %e, "the PaaS store could not be flushed at shutdown");
        }
        match paas.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(reason) => Err(PaasError::Stopped(reason)),
            None => Ok(()),
        }
    });
    tracing::info!(%addr, "PaaS API listening");
    Ok(Started {
        addr,
        admin_token: started_tokens.0,
        router_token: started_tokens.1,
        generated,
        task,
    })
}

/// `drove paas`: runs until `shutdown`.
pub async fn run(args: PaasArgs, shutdown: CancellationToken) -> Result<(), PaasError> {
    let data_dir = args.data_dir.clone();
    let started = start(args, shutdown).await?;
    if started.generated {
        println!(
            "drove paas: generated tokens, saved in {}:\n  admin token:  {}\n  router token: {}",
            data_dir.display(),
            started.admin_token,
            started.router_token
        );
    }
    started
        .task
        .await
        .map_err(|e| PaasError::Serve(std::io::Error::other(e)))?
}
