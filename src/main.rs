//! The `drove` binary: one executable for every component.
//!
//! `drove master`, `drove agent`, `drove paas` and `drove router` run one component each;
//! `drove up` runs all four on this machine in one process. `drove apps`, `drove deploy`, ... are
//! a thin client of the PaaS's API (`cli`). `drove executor` is internal: the agent starts it to
//! supervise one task.
#![forbid(unsafe_code)]

mod cli;
mod push_hook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc malloc: the router allocates per request, and glibc's malloc/free
/// were ~15 % of its CPU (see BENCHMARKS.md `## router`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "drove",
    version,
    about = "A Flock-style PaaS on an offer-based cluster"
)]
struct Cli {
    /// Log filter, e.g. `info` or `drove_master=debug` (also DROVE_LOG).
    #[arg(long, global = true, env = "DROVE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master: agent registry, DRF allocator, Mesos v1 scheduler API.
    Master(drove_master::MasterArgs),
    /// Run an agent that registers with a master and runs its tasks.
    Agent(drove_agent::AgentArgs),
    /// Run the HTTP router: host routing, balancing and scale-from-zero in front of the apps.
    Router(drove_router::RouterArgs),
    /// Run the PaaS: the framework that keeps apps running, with the Marathon-compatible API.
    Paas(drove_paas::PaasArgs),
    /// Run a master, an agent, the PaaS and the router on this machine, in one process.
    Up(UpArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Supervise one task (started by the agent; not for direct use).
    #[command(hide = true)]
    Executor(drove_agent::ExecutorArgs),
    /// git hooks of pushed apps' repositories (run by git; not for direct use).
    #[command(hide = true)]
    Hook {
        #[command(subcommand)]
        hook: push_hook::Hook,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// Where every component keeps its state (master/, agent/, paas/).
    #[arg(long, default_value = ".drove")]
    data_dir: PathBuf,
    /// The agent's work dir (sandboxes, fetch cache). Default, as root:
    /// `/var/lib/drove/agent-<hash of the data dir>`: never inside the data dir, which holds
    /// every secret and is root's alone (mode 0700), while tasks must reach their sandboxes.
    /// Not as root (tasks then run as this same user): `<data-dir>/agent`.
    #[arg(long)]
    agent_work_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:5050")]
    master_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:5051")]
    agent_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:7070")]
    paas_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8080")]
    router_listen: SocketAddr,
    /// The router's HTTPS listener: each app's own `<app>.<domain>` is served there with a
    /// certificate from drove's local CA (`<data-dir>/paas/local-ca/root.pem`, what a browser
    /// must trust).
    #[arg(long, default_value = "127.0.0.1:8443")]
    router_https_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8081")]
    router_admin: SocketAddr,
    /// Apps are served at `<app>.<domain>`.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// The agent's resources, Mesos-style (`cpus:2;mem:2048;ports:[31000-32000]`); detected if
    /// omitted.
    #[arg(long)]
    resources: Option<String>,
    /// A directory apps may fetch local files from (`file://`, absolute paths); repeatable.
    /// None by default: artifacts come over http.
    #[arg(long = "fetch-allow-dir")]
    fetch_allow_dirs: Vec<PathBuf>,
    /// The agent's startup CPU boost (see `drove agent --help`); `0s` turns it off.
    #[arg(long, default_value = "10s")]
    startup_cpu_boost: String,
    /// `container` (default: each task in its own namespaces, root filesystem and network,
    /// through an OCI runtime), `cgroups` or `none`.
    #[arg(long, default_value = "container")]
    isolation: String,
    /// The OCI runtime containers run with: `crun` (default), `runc`, `youki` or a path.
    #[arg(long, default_value = "crun")]
    oci_runtime: String,
    /// Let tasks that ask for the host's network have it (off: every task gets its own).
    #[arg(long)]
    allow_host_network: bool,
    /// Parent cgroup of the agent's task cgroups.
    #[arg(long, default_value = "drove")]
    cgroup_root: String,
}

/// Flags that carry a secret; each also has a `-file` form and an environment variable.
const SECRET_FLAGS: &[&str] = &[
    "--cluster-secret",
    "--admin-token",
    "--router-token",
    "--master-secret",
    "--admin-password",
    "--paas-token",
    "--metrics-token",
    "--token",
];

/// Parses a component's flags from an argument list, for `drove up`.
#[derive(Parser)]
struct Flags<T: clap::Args> {
    #[command(flatten)]
    inner: T,
}

fn main() -> ExitCode {
    // Whatever a component creates (databases, repositories, caches, secrets) is its owner's
    // alone unless it says otherwise; the executor gives tasks the usual 0022.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    if let Command::Executor(args) = cli.command {
        // No runtime, no logging set-up: the executor must stay small and exec quickly.
        return drove_agent::run_executor(args);
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for flag in drove_proto::secret::on_command_line(std::env::args_os(), SECRET_FLAGS) {
        tracing::warn!(
            "{flag} was given on the command line, which every local user and every task can \
             read (/proc/<pid>/cmdline); give it with {flag}-file (mode 0600) or its \
             environment variable instead"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drove: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drove: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Client(c) = command {
        return cli::run(c).await;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match command {
        Command::Paas(args) => drove_paas::run(args, shutdown).await.context("PaaS failed"),
        Command::Client(_) => unreachable!("handled above"),
        Command::Master(args) => drove_master::run(args, shutdown)
            .await
            .context("master failed"),
        Command::Agent(args) => drove_agent::run(args, shutdown)
            .await
            .context("agent failed"),
        Command::Router(args) => router(args, shutdown).await,
        Command::Up(args) => up(args, shutdown).await,
        Command::Executor(_) => unreachable!("handled before the runtime starts"),
        Command::Hook { hook } => push_hook::run(hook).await,
    }
}

async fn router(args: drove_router::RouterArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    // The router runs Pingora on threads of its own; start/join block, so keep them off the
    // async workers.
    let handle = tokio::task::spawn_blocking(move || drove_router::start(args))
        .await
        .context("router start task")?
        .context("router failed to start")?;
    shutdown.cancelled().await;
    handle.shutdown();
    tokio::task::spawn_blocking(move || handle.join())
        .await
        .context("router task")?
        .context("router failed")
}

/// Where `drove up`'s agent works; see `UpArgs::agent_work_dir`.
fn agent_work_dir(args: &UpArgs, data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let root = nix::unistd::geteuid().is_root();
    if let Some(dir) = &args.agent_work_dir {
        let absolute = std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .unwrap_or_else(|_| dir.clone());
        if root && absolute.starts_with(data_dir) {
            anyhow::bail!(
                "--agent-work-dir {} is inside the data dir {}, which tasks must not reach",
                dir.display(),
                data_dir.display()
            );
        }
        return Ok(dir.clone());
    }
    if !root {
        // Tasks run as this same user: nothing to keep from them by placing it elsewhere.
        return Ok(data_dir.join("agent"));
    }
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(
        data_dir.as_os_str().as_encoded_bytes(),
    ));
    let base = PathBuf::from("/var/lib/drove");
    let dir = base.join(format!("agent-{}", &hash[..12]));
    if dir.starts_with(data_dir) {
        anyhow::bail!(
            "the agent's work dir would be {}, inside the data dir {}, which tasks must not \
             reach: give --agent-work-dir a directory outside it",
            dir.display(),
            data_dir.display()
        );
    }
    let old = data_dir.join("agent");
    if old.join("meta").is_dir() {
        tracing::warn!(
            "{} is an agent work dir an earlier drove kept inside the data dir, which tasks \
             must not reach; the agent now works in {} and does not recover the tasks recorded \
             there: the PaaS starts new instances, and the old processes (under the cgroup \
             root) are yours to stop; remove {} once they are",
            old.display(),
            dir.display(),
            old.display()
        );
    }
    for d in [&base, &dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        // Task users must traverse to their sandboxes; nothing in these two can be listed.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .with_context(|| format!("chmod {}", d.display()))?;
    }
    Ok(dir)
}

async fn up(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    for w in drove_proto::state_dir::warnings(&drove_proto::state_dir::make_private(&data_dir)?) {
        tracing::warn!("{w}");
    }
    // Frameworks authenticate to the master: the PaaS's secret is generated on the first start
    // (`master/paas-secret`) and named in the master's credentials file.
    std::fs::create_dir_all(data_dir.join("master"))
        .with_context(|| format!("creating {}", data_dir.join("master").display()))?;
    let (secret, _) =
        drove_paas::tokens::secret_file(&data_dir.join("master").join("paas-secret"))?;
    let credentials = data_dir.join("master").join("credentials");
    write_credentials(&credentials, &secret)?;
    // The master and the agent prove themselves to each other with a generated cluster secret;
    // run more agents with `--cluster-secret "$(cat <data-dir>/cluster-secret)"`.
    let (cluster_secret, _) = drove_paas::tokens::secret_file(&data_dir.join("cluster-secret"))?;
    let master = Flags::<drove_master::MasterArgs>::try_parse_from([
        "master".to_string(),
        format!("--listen={}", args.master_listen),
        format!("--data-dir={}", data_dir.join("master").display()),
        "--authenticate-frameworks".to_string(),
        format!("--credentials={}", credentials.display()),
        format!("--cluster-secret={cluster_secret}"),
        "--authenticate-http-readonly".to_string(),
    ])
    .context("master flags")?
    .inner;
    let agent_work_dir = agent_work_dir(&args, &data_dir)?;
    let mut agent_flags = vec![
        "agent".to_string(),
        format!("--master=http://{}", args.master_listen),
        format!("--listen={}", args.agent_listen),
        format!("--work-dir={}", agent_work_dir.display()),
        format!("--isolation={}", args.isolation),
        format!("--oci-runtime={}", args.oci_runtime),
        format!("--cgroup-root={}", args.cgroup_root),
        format!("--cluster-secret={cluster_secret}"),
    ];
    if let Some(r) = &args.resources {
        agent_flags.push(format!("--resources={r}"));
    }
    if args.allow_host_network {
        agent_flags.push("--allow-host-network".to_string());
    }
    agent_flags.push(format!("--startup-cpu-boost={}", args.startup_cpu_boost));
    for dir in &args.fetch_allow_dirs {
        agent_flags.push(format!("--fetch-allow-dir={}", dir.display()));
    }
    let agent = Flags::<drove_agent::AgentArgs>::try_parse_from(agent_flags)
        .context("agent flags")?
        .inner;
    let paas = Flags::<drove_paas::PaasArgs>::try_parse_from([
        "paas".to_string(),
        format!("--master=http://{}", args.master_listen),
        format!("--listen={}", args.paas_listen),
        format!("--router-port={}", args.router_listen.port()),
        format!("--router-https-port={}", args.router_https_listen.port()),
        format!("--data-dir={}", data_dir.join("paas").display()),
        format!("--domain={}", args.domain),
        format!("--master-principal={UP_PRINCIPAL}"),
        format!("--master-secret={secret}"),
        "--local-ca".to_string(),
    ])
    .context("PaaS flags")?
    .inner;
    // Each listener's port must be free: otherwise a component would fail, or (for the
    // master's) the others would join whatever drove already listens there.
    for (what, addr) in [
        ("master", args.master_listen),
        ("agent", args.agent_listen),
        ("PaaS", args.paas_listen),
        ("router", args.router_listen),
        ("router HTTPS", args.router_https_listen),
        ("router admin", args.router_admin),
    ] {
        std::net::TcpListener::bind(addr).with_context(|| {
            format!("the {what} cannot listen on {addr} (is drove already up?)")
        })?;
    }
    let master_task = tokio::spawn(drove_master::run(master, shutdown.clone()));
    // Let the master bind before the agent's first registration attempt (it would retry anyway).
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(args.master_listen)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let agent_task = tokio::spawn(drove_agent::run(agent, shutdown.clone()));
    let paas = drove_paas::start(paas, shutdown.clone())
        .await
        .context("PaaS failed to start")?;
    let mut router = drove_router::RouterArgs::new(
        format!("http://{}", paas.addr),
        args.router_listen,
        args.router_admin,
    );
    router.domain = args.domain.clone();
    router.https_listen = Some(args.router_https_listen);
    router.paas_token = Some(paas.router_token.clone());
    // Operators read the router's metrics with the admin token.
    router.metrics_token = Some(paas.admin_token.clone());
    let router_handle = tokio::task::spawn_blocking(move || drove_router::start(router))
        .await
        .context("router start task")?
        .context("router failed to start")?;
    let root = data_dir.join("paas").join("local-ca").join("root.pem");
    println!(
        "drove is up:\n  master  http://{}  (cluster state: /master/state, with the cluster secret as a bearer token)\n  agent   http://{}  (work dir {})\n  PaaS    http://{}  (Marathon API: /v2/apps)\n  dashboard http://{}/admin  (log in with the admin token)\n  router  http://<app>.{}:{}  and  https://<app>.{}:{}\n  admin token: {}  (saved in {})\n\nHTTPS certificates come from drove's local CA (it can sign names under .{} only). Trust its\n  root, {}, per command:  curl --cacert {} https://hello.{}:{}/\n  or machine-wide:  cp {} /usr/local/share/ca-certificates/drove.crt && update-ca-certificates\n\nnext: deploy an app, e.g.\n  cargo run --release -- deploy tests/apps/hello.json\n  curl http://hello.{}:{}/",
        args.master_listen,
        args.agent_listen,
        agent_work_dir.display(),
        paas.addr,
        paas.addr,
        args.domain,
        args.router_listen.port(),
        args.domain,
        args.router_https_listen.port(),
        paas.admin_token,
        data_dir.join("paas").join("admin-token").display(),
        args.domain,
        root.display(),
        root.display(),
        args.domain,
        args.router_https_listen.port(),
        root.display(),
        args.domain,
        args.router_listen.port(),
    );
    // The first component to stop (an error, or a signal) stops the others.
    let (m, a, p) = tokio::join!(
        watch("master", master_task, shutdown.clone()),
        watch("agent", agent_task, shutdown.clone()),
        watch("PaaS", paas.task, shutdown.clone()),
    );
    router_handle.shutdown();
    tokio::task::spawn_blocking(move || router_handle.join())
        .await
        .context("router task")?
        .context("router failed")?;
    m?;
    a?;
    p?;
    Ok(())
}

/// The principal `drove up`'s PaaS authenticates to its master as.
const UP_PRINCIPAL: &str = "paas";

/// Writes the master's credentials file (`principal secret` lines, readable by root only)
/// naming the PaaS's principal with `secret`.
fn write_credentials(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{UP_PRINCIPAL} {secret}").with_context(|| format!("writing {}", path.display()))
}

/// Waits for a component of `drove up`; however it ends, the others are told to stop.
async fn watch<E>(
    name: &str,
    task: tokio::task::JoinHandle<Result<(), E>>,
    stop: CancellationToken,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let result = match task.await {
        Ok(r) => r.with_context(|| format!("{name} failed")),
        Err(e) => Err(e).with_context(|| format!("{name} task")),
    };
    stop.cancel();
    result
}

async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down (a second signal exits at once)");
    token.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    std::process::exit(130);
}
