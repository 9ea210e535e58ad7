//! Command-line settings of `drove router`.

use std::net::SocketAddr;
use std::time::Duration;

/// `drove router --paas URL [--listen 127.0.0.1:8080] [--admin 127.0.0.1:8081] [--domain localhost]`
#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    /// Base URL of the PaaS (route stream, wake and stats endpoints live under it).
    #[arg(long, env = "DROVE_PAAS")]
    pub paas: String,
    /// Address the proxy listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the HTTPS listener (TLS with the certificates the PaaS sends, chosen by SNI;
    /// HTTP/2 and HTTP/1.1); none without it.
    #[arg(long)]
    pub https_listen: Option<SocketAddr>,
    /// Address of the admin listener (`/health`, `/metrics`); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin: SocketAddr,
    /// Apps are served at `<app>.<domain>`.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Requests held per app while it wakes; more get 503 at once.
    #[arg(long, default_value_t = 1000)]
    pub hold_queue: usize,
    /// How long a request may be held waiting for a backend (e.g. `30s`, `500ms`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub hold_timeout: Duration,
    /// While requests stay held and the app has no usable backend, the wake call is repeated
    /// this often.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub wake_resend: Duration,
    /// Seconds announced in `Retry-After` on 503 answers.
    #[arg(long, default_value_t = 5)]
    pub retry_after: u64,
    /// Proxy worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Upstream connect timeout.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// How long an idle upstream keep-alive connection is kept in the pool.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// Connect attempts per request (a refused connect moves on to another backend).
    #[arg(long, default_value_t = 3)]
    pub connect_attempts: u32,
    /// How often stats are pushed to the PaaS.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,
    /// Name this router reports in its stats (default: `router@<listen>`).
    #[arg(long)]
    pub id: Option<String>,
    /// Roots (PEM) to trust for a PaaS reached over HTTPS (`--paas https://…`, its
    /// `--tls-listen`): the route stream carries certificates' private keys, so between
    /// machines it goes over TLS.
    #[arg(long, value_name = "FILE")]
    pub paas_ca_file: Option<std::path::PathBuf>,
    /// The PaaS's router token, sent as `Authorization: Bearer` on every call to the PaaS.
    #[arg(long, env = "DROVE_ROUTER_TOKEN", hide_env_values = true)]
    pub paas_token: Option<String>,
    /// The router token, read from a file (mode 0600): the form to use, since a command line is
    /// readable by every local user.
    #[arg(
        long,
        env = "DROVE_ROUTER_TOKEN_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "paas_token"
    )]
    pub paas_token_file: Option<String>,
    /// A token `/metrics` on the admin listener then requires (`Authorization: Bearer`); it
    /// names every app and its traffic. `/health` stays open.
    #[arg(long, env = "DROVE_ROUTER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// The metrics token, read from a file (mode 0600): the form to use, since a command line is
    /// readable by every local user.
    #[arg(
        long,
        env = "DROVE_ROUTER_METRICS_TOKEN_FILE",
        value_name = "FILE",
        value_parser = drove_proto::secret::from_file,
        conflicts_with = "metrics_token"
    )]
    pub metrics_token_file: Option<String>,
}

impl RouterArgs {
    /// Settings with every default, for embedding (`drove up`) and tests.
    pub fn new(paas: impl Into<String>, listen: SocketAddr, admin: SocketAddr) -> Self {
        Self {
            paas: paas.into(),
            listen,
            https_listen: None,
            admin,
            domain: "localhost".into(),
            hold_queue: 1000,
            hold_timeout: Duration::from_secs(30),
            wake_resend: crate::wake::WAKE_RESEND,
            retry_after: 5,
            threads: None,
            connect_timeout: Duration::from_secs(2),
            upstream_idle_timeout: Duration::from_secs(60),
            connect_attempts: 3,
            stats_interval: Duration::from_secs(1),
            id: None,
            paas_ca_file: None,
            paas_token: None,
            paas_token_file: None,
            metrics_token: None,
            metrics_token_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RouterArgs,
    }

    #[test]
    fn durations_read_like_every_other_component_s() {
        let cli = Cli::try_parse_from(["x", "--paas", "u", "--hold-timeout", "1h"]).expect("1h");
        assert_eq!(cli.args.hold_timeout, Duration::from_secs(3600));
        let cli =
            Cli::try_parse_from(["x", "--paas", "u", "--wake-resend", "1m 30s"]).expect("1m 30s");
        assert_eq!(cli.args.wake_resend, Duration::from_secs(90));
        assert!(Cli::try_parse_from(["x", "--paas", "u", "--hold-timeout", "soon"]).is_err());
    }

    #[test]
    fn cli_defaults() {
        let cli = Cli::try_parse_from(["x", "--paas", "http://127.0.0.1:9"]).expect("parses");
        assert_eq!(cli.args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cli.args.wake_resend, Duration::from_secs(10));
        assert_eq!(cli.args.admin.to_string(), "127.0.0.1:8081");
        assert_eq!(cli.args.domain, "localhost");
        assert_eq!(cli.args.hold_queue, 1000);
        assert_eq!(cli.args.hold_timeout, Duration::from_secs(30));
        let cli =
            Cli::try_parse_from(["x", "--paas", "u", "--hold-timeout", "250ms"]).expect("parses");
        assert_eq!(cli.args.hold_timeout, Duration::from_millis(250));
    }
}
