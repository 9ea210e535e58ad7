//! Running the router inside any process: Pingora's `Server` on a dedicated thread (it owns
//! its runtimes), and a small control runtime on another thread for the route stream, wake
//! calls, stats pushes and the admin listener. They share state through `Arc`/`ArcSwap`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::watch;

use crate::args::RouterArgs;
use crate::proxy::Router;
use crate::routes::{Registry, Table};
use crate::stats::RouterCounters;
use crate::wake::Holder;

/// The router could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("invalid --paas URL {url:?}: {reason}")]
    PaasUrl { url: String, reason: String },
    #[error("the HTTPS listener's TLS settings: {0}")]
    Tls(String),
    #[error("--listen {0}: choose a fixed port (0 is only allowed for --admin)")]
    ListenPortZero(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {what}: {source}")]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("--paas-ca-file {path}: {why}")]
    PaasCa {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the PaaS token is not a valid header value")]
    Token,
    #[error("the proxy did not accept connections on {addr} within {waited:?}")]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// A running router. Dropping it shuts the router down.
pub struct RouterHandle {
    shutdown: watch::Sender<bool>,
    proxy: Option<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    control_rt: tokio::runtime::Handle,
    /// The proxy's listen address.
    pub listen: SocketAddr,
    /// The admin listener's address (with the real port when `--admin` used port 0).
    pub admin: SocketAddr,
}

impl RouterHandle {
    /// Starts stopping: the listeners close and in-flight requests get a short grace period.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until both threads have ended (after [`Self::shutdown`]).
    pub fn join(mut self) -> Result<(), RouterError> {
        self.join_threads()
    }

    fn join_threads(&mut self) -> Result<(), RouterError> {
        let mut result = Ok(());
        if let Some(t) = self.proxy.take() {
            if t.join().is_err() {
                result = Err(RouterError::Panicked("proxy"));
            }
        }
        if let Some(t) = self.control.take() {
            if t.join().is_err() {
                result = Err(RouterError::Panicked("control"));
            }
        }
        result
    }

    /// Shuts down on SIGINT or SIGTERM (for the standalone `drove router` command).
    pub fn shutdown_on_signals(&self) {
        let tx = self.shutdown.clone();
        self.control_rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                tracing::warn!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::info!("signal received; router shutting down");
            tx.send_replace(true);
        });
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        self.shutdown();
        let _ = self.join_threads();
    }
}

/// Runs `drove router` in the foreground until SIGINT/SIGTERM.
pub fn run(args: RouterArgs) -> Result<(), RouterError> {
    let handle = start(args)?;
    handle.shutdown_on_signals();
    handle.join()
}

struct WatchShutdown(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for WatchShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::GracefulTerminate
    }
}

fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, addr.port()).into()
        }
        _ => addr,
    }
}

/// Starts the router on two threads of its own and returns once the proxy accepts connections.
/// Safe to call from inside a tokio runtime.
pub fn start(mut args: RouterArgs) -> Result<RouterHandle, RouterError> {
    if let Some(t) = args.paas_token_file.take() {
        args.paas_token = Some(t);
    }
    if let Some(t) = args.metrics_token_file.take() {
        args.metrics_token = Some(t);
    }
    let paas = args.paas.trim_end_matches('/').to_string();
    match reqwest::Url::parse(&paas) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
        Ok(u) => {
            return Err(RouterError::PaasUrl {
                url: args.paas.clone(),
                reason: format!("unsupported scheme {:?}", u.scheme()),
            })
        }
        Err(e) => {
            return Err(RouterError::PaasUrl {
                url: args.paas.clone(),
                reason: e.to_string(),
            })
        }
    }
    if args.listen.port() == 0 {
        return Err(RouterError::ListenPortZero(args.listen));
    }
    // Fail early and clearly if a proxy port is taken (Pingora would only log it).
    for addr in std::iter::once(args.listen).chain(args.https_listen) {
        drop(
            std::net::TcpListener::bind(addr)
                .map_err(|source| RouterError::Bind { addr, source })?,
        );
    }
    let admin_listener =
        std::net::TcpListener::bind(args.admin).map_err(|source| RouterError::Bind {
            addr: args.admin,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| RouterError::Bind {
            addr: args.admin,
            source,
        })?;
    admin_listener
        .set_nonblocking(true)
        .map_err(|source| RouterError::Bind {
            addr: args.admin,
            source,
        })?;

    // Every call to the PaaS (route stream, wakes, stats) carries the router token.
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.paas_token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| RouterError::Token)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .default_headers(headers);
    if let Some(path) = &args.paas_ca_file {
        let pem = std::fs::read(path).map_err(|e| RouterError::PaasCa {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RouterError::PaasCa {
                path: path.clone(),
                why: e.to_string(),
            })?;
        for root in roots {
            client = client.add_root_certificate(root);
        }
    }
    let client = client.build().map_err(RouterError::Client)?;
    let table = Arc::new(ArcSwap::from_pointee(Table::default()));
    let global = Arc::new(RouterCounters::default());
    let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let router_id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("router@{}", args.listen));

    // Control runtime.
    let control_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("drove-router-control")
        .enable_all()
        .build()
        .map_err(|source| RouterError::Spawn {
            what: "control runtime",
            source,
        })?;
    let control_handle = control_rt.handle().clone();
    let certs;
    let challenges;
    {
        let _guard = control_rt.enter();
        let admin = tokio::net::TcpListener::from_std(admin_listener).map_err(|source| {
            RouterError::Bind {
                addr: admin_addr,
                source,
            }
        })?;
        let registry = Registry::new(&args.domain, table.clone());
        certs = registry.certs();
        control_rt.spawn(crate::route_stream::follow(
            client.clone(),
            paas.clone(),
            registry,
            global.clone(),
            shutdown_rx.clone(),
        ));
        control_rt.spawn(crate::report::window_loop(
            table.clone(),
            shutdown_rx.clone(),
        ));
        control_rt.spawn(crate::report::push_loop(
            client.clone(),
            paas.clone(),
            router_id,
            args.stats_interval.max(Duration::from_millis(50)),
            table.clone(),
            global.clone(),
            shutdown_rx.clone(),
        ));
        challenges =
            crate::acme::Challenges::new(client.clone(), &paas, control_rt.handle().clone());
        control_rt.spawn(crate::wake::wake_loop(
            client,
            paas,
            wake_rx,
            shutdown_rx.clone(),
        ));
        control_rt.spawn(crate::admin::serve(
            admin,
            table.clone(),
            global.clone(),
            args.metrics_token.clone(),
            shutdown_rx.clone(),
        ));
    }
    let mut control_shutdown = shutdown_rx.clone();
    let control = std::thread::Builder::new()
        .name("drove-router-control".into())
        .spawn(move || {
            control_rt.block_on(async move {
                let _ = control_shutdown.wait_for(|s| *s).await;
            });
            control_rt.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(|source| RouterError::Spawn {
            what: "control thread",
            source,
        })?;

    // Pingora.
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let router = Router {
        table,
        holder: Holder::new(wake_tx, args.hold_queue, args.hold_timeout)
            .with_wake_resend(args.wake_resend.max(Duration::from_millis(100))),
        global,
        max_attempts: args.connect_attempts.max(1),
        connect_timeout: args.connect_timeout,
        idle_timeout: args.upstream_idle_timeout,
        retry_after_secs: args.retry_after,
        request_ids: crate::proxy::RequestIds::new(),
        challenges,
        certs: certs.clone(),
        https_port: args.https_listen.map(|a| a.port()),
    };
    let conf = ServerConf {
        threads,
        max_retries: args.connect_attempts.max(1) as usize + 2,
        upstream_keepalive_pool_size: 4096,
        // Keep work stealing on: Pingora's no-steal runtime keeps its handles in a process-wide
        // thread-local that goes stale when a second Server starts in the same process.
        work_stealing: true,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    };
    let listen = args.listen;
    let https = match args.https_listen {
        Some(addr) => Some((addr, tls_settings(certs)?)),
        None => None,
    };
    let pingora_shutdown = shutdown_rx;
    let proxy = std::thread::Builder::new()
        .name("drove-router-proxy".into())
        .spawn(move || {
            let mut server = Server::new_with_opt_and_conf(None, conf);
            server.bootstrap();
            let mut service = pingora::proxy::http_proxy_service_with_name(
                &server.configuration,
                router,
                "drove-router",
            );
            service.add_tcp(&listen.to_string());
            if let Some((addr, settings)) = https {
                service.add_tls_with_settings(&addr.to_string(), None, settings);
            }
            server.add_service(service);
            server.run(RunArgs {
                shutdown_signal: Box::new(WatchShutdown(pingora_shutdown)),
            });
        })
        .map_err(|source| RouterError::Spawn {
            what: "proxy thread",
            source,
        })?;

    let handle = RouterHandle {
        shutdown: shutdown_tx,
        proxy: Some(proxy),
        control: Some(control),
        control_rt: control_handle,
        listen,
        admin: admin_addr,
    };
    let waited = Duration::from_secs(10);
    let began = Instant::now();
    let probe = probe_addr(listen);
    while TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_err() {
        if began.elapsed() > waited {
            return Err(RouterError::NotListening {
                addr: listen,
                waited,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::info!(%listen, admin = %admin_addr, "router started");
    Ok(handle)
}

/// The HTTPS listener's TLS (Pingora's Mozilla-intermediate settings: TLS 1.2 and 1.3), the
/// certificate chosen per SNI from `certs`, HTTP/2 or HTTP/1.1 by ALPN.
fn tls_settings(
    certs: std::sync::Arc<crate::tls::Certs>,
) -> Result<pingora::listeners::tls::TlsSettings, RouterError> {
    // No files: the resolver supplies every certificate.
    let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
        .map_err(|e| RouterError::Tls(e.to_string()))?;
    settings.set_cert_resolver(certs);
    settings.enable_h2();
    Ok(settings)
}
