//! The router ⇄ PaaS contract: the wire types and paths of ARCHITECTURE.md's
//! "router ⇄ PaaS" section (what a PaaS must implement for `drove router --paas <url>`).
//!
//! All endpoints are HTTP/JSON under the PaaS's base URL (HTTPS between machines):
//! - `GET {paas}`[`ROUTES_STREAM_PATH`]: newline-delimited JSON, one [`RouteMessage`] per line
//!   (a snapshot first, then upserts/removes/heartbeats), each [`AppSpec`] describing an app
//!   and its [`BackendSpec`]s.
//! - `POST {paas}`[`wake_path`]`(app)`: body [`WakeRequest`]; the PaaS answers `2xx` and then
//!   announces the instance with an upsert on the route stream. `404` = unknown app.
//! - `POST {paas}`[`STATS_PATH`]: body [`StatsReport`], every second.
//! - `GET {paas}`[`ACME_CHALLENGES_PATH`]`/{token}?host={hostname}`: the key authorization
//!   (`text/plain`) of the PaaS's pending ACME HTTP-01 challenge `token` for `hostname`, which
//!   the router answers `GET http://{hostname}/.well-known/acme-challenge/{token}` with;
//!   `404` = no such challenge pending.
//!
//! These are plain serde types with no behaviour beyond the pure checks a PaaS may want as
//! well ([`valid_app_name`]); the router's live state stays in the router.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The route stream: `GET {paas}/v1/routes/stream`, newline-delimited [`RouteMessage`]s.
pub const ROUTES_STREAM_PATH: &str = "/v1/routes/stream";
/// The stats push: `POST {paas}/v1/router/stats` with a [`StatsReport`].
pub const STATS_PATH: &str = "/v1/router/stats";

/// Pending ACME HTTP-01 challenges: `GET {paas}/v1/acme/challenges/{token}?host={hostname}`.
pub const ACME_CHALLENGES_PATH: &str = "/v1/acme/challenges";
/// Where an ACME CA fetches an HTTP-01 challenge's answer: `/.well-known/acme-challenge/{token}`
/// on port 80 of the hostname (RFC 8555 §8.3).
pub const ACME_WELL_KNOWN: &str = "/.well-known/acme-challenge/";

/// Whether `token` may be an ACME challenge token: base64url, as RFC 8555 §8.3 makes them
/// (anything else is never looked up).
pub fn valid_acme_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The wake call's path for `app`: `/v1/apps/{app}/wake` (`POST`, body [`WakeRequest`]).
/// `app` is a route-stream app name, which [`valid_app_name`] restricts to characters that
/// need no escaping in a path.
pub fn wake_path(app: &str) -> String {
    format!("/v1/apps/{app}/wake")
}

/// One message of the route stream (`GET {paas}/v1/routes/stream`, newline-delimited JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouteMessage {
    /// The complete table; replaces whatever the router had.
    Snapshot { apps: Vec<AppSpec> },
    /// Add or replace one app.
    Upsert { app: AppSpec },
    /// Remove one app by name.
    Remove { app: String },
    /// Keeps the connection visibly alive; carries no change.
    Heartbeat,
    /// The complete set of certificates the routers serve over TLS (each chosen by the
    /// client's SNI); replaces whatever set the router had.
    Certificates { certs: Vec<CertSpec> },
}

/// A certificate chain and its private key (PEM), served for `hostnames`. Its key travels
/// only on the authenticated route stream; `Debug` leaves it out.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct CertSpec {
    pub hostnames: Vec<String>,
    /// The leaf first, then its intermediates.
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSpec")
            .field("hostnames", &self.hostnames)
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &"(secret)")
            .finish()
    }
}

impl RouteMessage {
    /// Whether applying this message may look up a host name (a backend given as `name:port`
    /// rather than `ip:port`), which blocks.
    pub fn needs_name_lookup(&self) -> bool {
        let named = |app: &AppSpec| {
            app.backends
                .iter()
                .any(|b| b.addr.parse::<SocketAddr>().is_err())
        };
        match self {
            RouteMessage::Snapshot { apps } => apps.iter().any(named),
            RouteMessage::Upsert { app } => named(app),
            RouteMessage::Remove { .. }
            | RouteMessage::Heartbeat
            | RouteMessage::Certificates { .. } => false,
        }
    }
}

/// An app as the PaaS describes it on the route stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppSpec {
    /// The app's name; it is reachable at `<name>.<domain>`.
    pub name: String,
    /// Extra hostnames (custom domains), matched case-insensitively.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// `running`, `idle` (scaled to zero, woken on demand) or `stopped` (never woken).
    #[serde(default)]
    pub state: AppState,
    /// Maximum in-flight requests per backend; 0 or absent means unlimited.
    #[serde(default)]
    pub concurrency_limit: u32,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// What the router does about HTTPS for it (nothing unless the app asks).
    #[serde(default, skip_serializing_if = "HttpsPolicy::is_off")]
    pub https: HttpsPolicy,
}

/// An app's HTTPS asks, off by default (`"https"` in its definition; `drove.httpsRedirect` and
/// `drove.hstsMaxAge` in `package.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpsPolicy {
    /// Plain HTTP requests for a hostname the router has a certificate for are redirected
    /// (308) to the same URL over HTTPS.
    #[serde(default)]
    pub redirect: bool,
    /// HTTPS responses carry `Strict-Transport-Security: max-age=<this>` (seconds; 0: none)
    /// unless the app set one.
    #[serde(default)]
    pub hsts_max_age: u32,
}

impl HttpsPolicy {
    /// The longest HSTS max-age accepted: two years (hstspreload.org asks for one at least).
    pub const HSTS_MAX: u32 = 2 * 365 * 86_400;

    pub fn is_off(&self) -> bool {
        *self == HttpsPolicy::default()
    }
}

/// One instance of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendSpec {
    /// `ip:port` (a hostname is resolved once when the route is applied).
    pub addr: String,
    /// Whether the PaaS's health checks pass; unhealthy backends get no traffic.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Backup backends only get traffic while no primary is healthy.
    #[serde(default)]
    pub backup: bool,
}

fn yes() -> bool {
    true
}

/// An app's state on the route stream (`"running"` when absent).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    #[default]
    Running,
    /// Scaled to zero: requests are held and the app is woken.
    Idle,
    /// Deliberately off: requests get 503 at once and no wake is sent.
    Stopped,
}

/// Whether `name` is a valid app name: 1 to 63 lowercase ASCII letters, digits and `-`, not
/// starting or ending with `-` (a DNS label, since the app is served at `<name>.<domain>`).
/// The router skips an app whose name is invalid.
pub fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The body of `POST {paas}/v1/apps/{app}/wake`: `{"app":"shop","held":17}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WakeRequest {
    /// The app to wake (also in the path).
    pub app: String,
    /// Requests held for the app when the call was sent.
    pub held: u64,
    /// How long the first of them had been held when the call was sent (ms): the first step
    /// of the wake's timeline.
    #[serde(default)]
    pub held_for_ms: u64,
}

/// A report's responses by status class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Responses {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirect: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// Requests that ended without any response (client gone, backend failed mid-stream).
    pub failed: u64,
}

/// Latency quantiles in milliseconds over the last minute; `None` (`null`) without requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Counters shared by the app and backend entries of a report (cumulative since the router
/// started, except the gauges `in_flight`/`held`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CounterReport {
    pub requests: u64,
    pub responses: Responses,
    pub in_flight: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_request_ms: Option<u64>,
    pub latency_ms: Quantiles,
    pub connect_failures: u64,
}

/// One backend's entry in an [`AppReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendReport {
    pub addr: String,
    pub healthy: bool,
    pub backup: bool,
    pub passive_down: bool,
    #[serde(flatten)]
    pub counters: CounterReport,
}

/// One app's entry in a [`StatsReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppReport {
    pub app: String,
    #[serde(flatten)]
    pub counters: CounterReport,
    pub held: u64,
    pub held_total: u64,
    pub hold_timeouts: u64,
    pub hold_rejected: u64,
    pub wakes: u64,
    pub backends: Vec<BackendReport>,
}

/// The body of `POST {paas}/v1/router/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsReport {
    pub router: String,
    pub at_ms: u64,
    pub unknown_host: u64,
    pub apps: Vec<AppReport>,
}

/// The answer to a wake: the app and the instances it now wants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WakeAnswer {
    pub app: String,
    pub instances: u32,
}

/// `GET {paas}/v1/apps/{app}/stats`: what the routers reported for an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppStats {
    pub app: String,
    /// Router name → its latest report.
    pub routers: std::collections::BTreeMap<String, RouterAppReport>,
    /// The reports of the last minutes, oldest first.
    pub history: Vec<StatsSample>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouterAppReport {
    pub at_ms: u64,
    pub report: AppReport,
}

/// One router's report on an app, as the history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsSample {
    pub router: String,
    pub at_ms: u64,
    pub requests: u64,
    pub in_flight: u64,
    pub held: u64,
    pub last_request_ms: Option<u64>,
    pub latency_ms: Quantiles,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, addrs: &[&str]) -> AppSpec {
        AppSpec {
            https: Default::default(),
            name: name.into(),
            hostnames: vec![],
            state: AppState::Running,
            concurrency_limit: 0,
            backends: addrs
                .iter()
                .map(|a| BackendSpec {
                    addr: (*a).into(),
                    healthy: true,
                    backup: false,
                })
                .collect(),
        }
    }

    #[test]
    fn messages_parse() {
        let m: RouteMessage = serde_json::from_str(
            r#"{"type":"snapshot","apps":[{"name":"a","backends":[{"addr":"127.0.0.1:1"}]}]}"#,
        )
        .expect("snapshot parses");
        let RouteMessage::Snapshot { apps } = m else {
            panic!("not a snapshot")
        };
        assert!(apps[0].backends[0].healthy);
        assert!(!apps[0].backends[0].backup);
        assert_eq!(apps[0].state, AppState::Running);
        assert_eq!(apps[0].concurrency_limit, 0);
        assert!(apps[0].hostnames.is_empty());
        let m: RouteMessage =
            serde_json::from_str(r#"{"type":"remove","app":"a"}"#).expect("remove parses");
        assert_eq!(m, RouteMessage::Remove { app: "a".into() });
        let m: RouteMessage =
            serde_json::from_str(r#"{"type":"heartbeat"}"#).expect("heartbeat parses");
        assert_eq!(m, RouteMessage::Heartbeat);
    }

    #[test]
    fn messages_serialize_as_documented() {
        let mut app = spec("shop", &["127.0.0.1:31005"]);
        app.hostnames = vec!["shop.example.com".into()];
        app.state = AppState::Idle;
        let v = serde_json::to_value(RouteMessage::Upsert { app }).expect("serializes");
        assert_eq!(
            v,
            json!({"type":"upsert","app":{"name":"shop","hostnames":["shop.example.com"],
                "state":"idle","concurrency_limit":0,
                "backends":[{"addr":"127.0.0.1:31005","healthy":true,"backup":false}]}})
        );
        let v = serde_json::to_value(RouteMessage::Heartbeat).expect("serializes");
        assert_eq!(v, json!({"type":"heartbeat"}));
    }

    #[test]
    fn only_named_backends_need_a_lookup() {
        let ips = spec("a", &["127.0.0.1:80", "[::1]:80"]);
        let named = spec("b", &["app.internal:80"]);
        assert!(!RouteMessage::Upsert { app: ips.clone() }.needs_name_lookup());
        assert!(RouteMessage::Upsert { app: named.clone() }.needs_name_lookup());
        assert!(RouteMessage::Snapshot {
            apps: vec![ips, named]
        }
        .needs_name_lookup());
        assert!(!RouteMessage::Remove { app: "b".into() }.needs_name_lookup());
    }

    #[test]
    fn app_names() {
        for ok in ["a", "shop", "my-app-2", "0", &"a".repeat(63)] {
            assert!(valid_app_name(ok), "{ok:?}");
        }
        for bad in [
            "",
            "Shop",
            "bad_name",
            "-a",
            "a-",
            "a.b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!valid_app_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_and_wake_body() {
        assert_eq!(ROUTES_STREAM_PATH, "/v1/routes/stream");
        assert_eq!(STATS_PATH, "/v1/router/stats");
        assert_eq!(wake_path("shop"), "/v1/apps/shop/wake");
        let body = WakeRequest {
            app: "shop".into(),
            held: 17,
            held_for_ms: 3,
        };
        assert_eq!(
            serde_json::to_string(&body).expect("serializes"),
            r#"{"app":"shop","held":17,"held_for_ms":3}"#
        );
        // A router that does not send it yet is still understood.
        let old: WakeRequest = serde_json::from_str(r#"{"app":"shop","held":1}"#).expect("old");
        assert_eq!(old.held_for_ms, 0);
        let back: WakeRequest =
            serde_json::from_str(r#"{"app":"shop","held":17,"held_for_ms":3}"#).expect("parses");
        assert_eq!(back, body);
    }

    #[test]
    fn stats_report_shape() {
        let counters = CounterReport {
            requests: 30,
            responses: Responses {
                informational: 0,
                success: 25,
                redirect: 0,
                client_error: 5,
                server_error: 0,
                failed: 0,
            },
            in_flight: 0,
            bytes_in: 0,
            bytes_out: 210,
            last_request_ms: Some(1_764_000_000_000),
            latency_ms: Quantiles {
                p50: Some(0.4),
                p95: None,
                p99: None,
            },
            connect_failures: 0,
        };
        let report = StatsReport {
            router: "router@127.0.0.1:8080".into(),
            at_ms: 1_764_000_000_000,
            unknown_host: 3,
            apps: vec![AppReport {
                app: "shop".into(),
                counters: counters.clone(),
                held: 0,
                held_total: 0,
                hold_timeouts: 0,
                hold_rejected: 0,
                wakes: 0,
                backends: vec![BackendReport {
                    addr: "127.0.0.1:31005".into(),
                    healthy: true,
                    backup: false,
                    passive_down: false,
                    counters,
                }],
            }],
        };
        let v = serde_json::to_value(&report).expect("serializes");
        let responses = json!({"1xx":0,"2xx":25,"3xx":0,"4xx":5,"5xx":0,"failed":0});
        let latency = json!({"p50":0.4,"p95":null,"p99":null});
        assert_eq!(
            v,
            json!({"router":"router@127.0.0.1:8080","at_ms":1_764_000_000_000u64,"unknown_host":3,
                "apps":[{"app":"shop","requests":30,"responses":responses,"in_flight":0,
                    "bytes_in":0,"bytes_out":210,"last_request_ms":1_764_000_000_000u64,
                    "latency_ms":latency,"connect_failures":0,
                    "held":0,"held_total":0,"hold_timeouts":0,"hold_rejected":0,"wakes":0,
                    "backends":[{"addr":"127.0.0.1:31005","healthy":true,"backup":false,
                        "passive_down":false,"requests":30,"responses":responses,"in_flight":0,
                        "bytes_in":0,"bytes_out":210,"last_request_ms":1_764_000_000_000u64,
                        "latency_ms":latency,"connect_failures":0}]}]})
        );
        let back: StatsReport = serde_json::from_value(v).expect("parses back");
        assert_eq!(back, report);
    }

    #[test]
    fn a_certificate_set_reads_back_and_never_prints_its_key() {
        let line = r#"{"type":"certificates","certs":[{"hostnames":["a.test"],"chain_pem":"C","key_pem":"SECRET-KEY"}]}"#;
        let msg: RouteMessage = serde_json::from_str(line).unwrap();
        let RouteMessage::Certificates { certs } = &msg else {
            panic!("{msg:?}");
        };
        assert_eq!(certs[0].hostnames, ["a.test"]);
        assert_eq!(certs[0].key_pem, "SECRET-KEY");
        assert!(!msg.needs_name_lookup());
        let shown = format!("{msg:?}");
        assert!(
            shown.contains("a.test") && !shown.contains("SECRET-KEY"),
            "{shown}"
        );
    }
}
