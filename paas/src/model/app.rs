//! Marathon's app definition: the fields drove supports, their defaults, and validation that
//! names the field at fault (Marathon's `{"message", "details":[{"path","errors"}]}` shape).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use drove_proto::marathon::ErrorBody;
use drove_proto::routing::HttpsPolicy;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use drove_proto::marathon::Violation;

/// Why a definition was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvalidApp {
    /// Not JSON at all: 400.
    #[error("Invalid JSON: {0}")]
    Json(String),
    /// JSON, but a field has the wrong type or breaks a rule: 422.
    #[error("Object is not valid: {}", .0.iter().map(|v| format!("{}: {}", v.path, v.errors.join("; "))).collect::<Vec<_>>().join(", "))]
    Rules(Vec<Violation>),
}

impl InvalidApp {
    pub fn field(path: &str, error: impl Into<String>) -> Self {
        InvalidApp::Rules(vec![Violation {
            path: path.to_string(),
            errors: vec![error.into()],
        }])
    }

    /// Marathon's error body.
    pub fn body(&self) -> ErrorBody {
        let (message, details) = match self {
            InvalidApp::Json(e) => {
                let at_root = Violation {
                    path: "/".into(),
                    errors: vec![e.clone()],
                };
                ("Invalid JSON", vec![at_root])
            }
            InvalidApp::Rules(v) => ("Object is not valid", v.clone()),
        };
        ErrorBody {
            details,
            ..ErrorBody::new(message)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: u32,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl PortDefinition {
    /// A TCP port the agent picks.
    pub fn any() -> PortDefinition {
        PortDefinition {
            port: 0,
            protocol: tcp(),
            name: None,
            labels: BTreeMap::new(),
        }
    }
}

fn tcp() -> String {
    "tcp".into()
}

/// One of Marathon's `networks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkDef {
    /// `host`, `container` or `container/bridge`.
    #[serde(default = "container_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn container_mode() -> String {
    "container".into()
}

/// Marathon's `container`, the part drove reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDef {
    #[serde(rename = "type", default = "mesos_type")]
    pub kind: String,
    #[serde(default)]
    pub port_mappings: Vec<PortMappingDef>,
}

fn mesos_type() -> String {
    "MESOS".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingDef {
    #[serde(default)]
    pub container_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    #[serde(default)]
    pub executable: bool,
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

impl FetchUri {
    /// An archive unpacked into the sandbox (`cache`: kept on the agent for the next task).
    pub fn archive(uri: String, cache: bool) -> FetchUri {
        FetchUri {
            uri,
            executable: false,
            extract: true,
            cache,
            output_file: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckDef {
    #[serde(default = "http")]
    pub protocol: String,
    #[serde(default = "slash", skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub port_index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default = "d15")]
    pub grace_period_seconds: u32,
    #[serde(default = "d10")]
    pub interval_seconds: u32,
    #[serde(default = "d20")]
    pub timeout_seconds: u32,
    #[serde(default = "d3")]
    pub max_consecutive_failures: u32,
    #[serde(default)]
    pub ignore_http1xx: bool,
}

impl HealthCheckDef {
    /// A check on the app's first port: `path` over HTTP, or a TCP connect without one.
    pub fn first_port(path: Option<String>) -> HealthCheckDef {
        HealthCheckDef {
            protocol: if path.is_some() { http() } else { "TCP".into() },
            path,
            port_index: 0,
            command: None,
            grace_period_seconds: d15(),
            interval_seconds: d10(),
            timeout_seconds: d20(),
            max_consecutive_failures: d3(),
            ignore_http1xx: false,
        }
    }
}

fn http() -> String {
    "HTTP".into()
}
fn slash() -> Option<String> {
    Some("/".into())
}
fn d15() -> u32 {
    15
}
fn d10() -> u32 {
    10
}
fn d20() -> u32 {
    20
}
fn d3() -> u32 {
    3
}

/// Marathon's `resourceLimits`: how far above its `cpus` an instance may go when the machine
/// has CPU idle (a number of cpus, or `"unlimited"`); `cpus` stays what it is guaranteed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResourceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Limit>,
}

/// A resource limit: a number, or `"unlimited"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Limit {
    Value(f64),
    Named(String),
}

impl Limit {
    /// The limit in cpus (`unlimited`: the machine's every core, as far as a quota goes).
    pub fn cpus(&self) -> Option<f64> {
        match self {
            Limit::Value(v) if v.is_finite() && *v > 0.0 => Some(*v),
            Limit::Named(n) if n == "unlimited" => Some(UNLIMITED_CPUS),
            _ => None,
        }
    }
}

/// What `"unlimited"` means for a CPU quota.
pub const UNLIMITED_CPUS: f64 = 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "one_f")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one_f")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

fn one_f() -> f64 {
    1.0
}

/// An app as Marathon defines it (v1 app model, the fields drove runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    pub id: String,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default = "one_u")]
    pub instances: u32,
    #[serde(default = "one_f")]
    pub cpus: f64,
    #[serde(default = "mem_default")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    /// Input only (deprecated in Marathon): folded into `portDefinitions`.
    #[serde(default, skip_serializing)]
    pub ports: Option<Vec<u32>>,
    #[serde(default)]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub fetch: Vec<FetchUri>,
    /// Input only: folded into `fetch`.
    #[serde(default, skip_serializing)]
    pub uris: Option<Vec<String>>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheckDef>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default = "one_f")]
    pub backoff_seconds: f64,
    #[serde(default = "backoff_factor_default")]
    pub backoff_factor: f64,
    #[serde(default = "max_delay_default")]
    pub max_launch_delay_seconds: f64,
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    /// Marathon's: what an instance may burst to above its `cpus` when CPU is idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<ResourceLimits>,
    /// Marathon's networks: `[{"mode": "host"}]` asks for the agent's network (refused unless
    /// the agent allows it, `--allow-host-network`); `container` or `container/bridge` (and no
    /// `networks`, unlike Marathon's host default) give each instance its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkDef>,
    /// Marathon's `container` (`type: MESOS`): its `portMappings` name the ports the app listens
    /// on in its own network (`containerPort`; 0: one is given in `$PORTn`). drove reaches an
    /// instance at its own address, so a mapping's host port is its container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerDef>,
    /// drove's own: how the scaler may move `instances` (see `scaler::Scaling`). Absent: the
    /// count stays what it is set to, as in Marathon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<crate::model::scaling::Scaling>,
    /// drove's own: HTTP→HTTPS redirects and HSTS (both off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<drove_proto::routing::HttpsPolicy>,
}

fn one_u() -> u32 {
    1
}
fn mem_default() -> f64 {
    128.0
}
fn backoff_factor_default() -> f64 {
    1.15
}
fn max_delay_default() -> f64 {
    3600.0
}

/// Upper bounds that keep a definition from asking for the absurd.
pub const MAX_INSTANCES: u32 = 10_000;
const MAX_PORTS: usize = 64;

/// Marathon's id segment rule.
fn segment_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$",
        )
        .unwrap_or_else(|e| panic!("static regex: {e}"))
    })
}

/// Normalises an app id to Marathon's absolute form (`shop` → `/shop`), or says why it is not
/// one.
pub fn normalize_id(id: &str) -> Result<String, String> {
    let trimmed = id.trim_matches('/');
    if trimmed.is_empty() {
        return Err("id must not be empty".into());
    }
    for seg in trimmed.split('/') {
        if !segment_re().is_match(seg) {
            return Err(format!(
                "'{seg}' in '{id}' is not a valid path segment: use lowercase letters, digits, \
                 dashes and dots, starting and ending with a letter or digit"
            ));
        }
    }
    Ok(format!("/{trimmed}"))
}

/// The host name label an app is served under: `/shop` → `shop`, `/team/shop` → `team-shop`
/// (segments joined by `-`, dots become `-`). `None` when that is longer than a DNS label.
pub fn route_name(id: &str) -> Option<String> {
    let name = id.trim_matches('/').replace(['/', '.'], "-");
    (!name.is_empty() && name.len() <= 63).then_some(name)
}

/// The task id prefix Marathon uses: `/team/shop` → `team_shop`.
pub fn task_prefix(id: &str) -> String {
    id.trim_matches('/').replace('/', "_")
}

/// Converts serde_path_to_error's `a.b[0].c` into Marathon's `/a/b(0)/c`.
fn marathon_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        return "/".into();
    }
    let mut out = String::from("/");
    for part in path.split('.') {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(&part.replace('[', "(").replace(']', ")"));
    }
    out
}

impl AppDefinition {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<AppDefinition, InvalidApp> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| InvalidApp::Json(e.to_string()))?;
        AppDefinition::from_value(value)
    }

    /// An app `id` with every other field at its default, to fill in and then
    /// [`validated`](Self::validated): how drove defines the apps it makes itself (releases,
    /// builds).
    pub fn named(id: &str) -> Result<AppDefinition, InvalidApp> {
        let only_id = serde_json::Map::from_iter([("id".to_string(), Value::from(id))]);
        serde_json::from_value(Value::Object(only_id)).map_err(|e| InvalidApp::Json(e.to_string()))
    }

    /// This definition normalized and checked as a posted one is.
    pub fn validated(mut self) -> Result<AppDefinition, InvalidApp> {
        self.normalize()?;
        self.validate()?;
        Ok(self)
    }

    /// Decodes and validates a JSON object (after a merge, for PUT/PATCH).
    pub fn from_value(value: Value) -> Result<AppDefinition, InvalidApp> {
        if !value.is_object() {
            return Err(InvalidApp::field("/", "expected a JSON object"));
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| InvalidApp::Json(e.to_string()))?;
        let mut def: AppDefinition = drove_proto::decode(&bytes)
            .map_err(|e| InvalidApp::field(&marathon_path(&e.path), e.message))?;
        def.normalize()?;
        def.validate()?;
        Ok(def)
    }

    /// Folds the deprecated forms into the current ones and makes the id absolute.
    fn normalize(&mut self) -> Result<(), InvalidApp> {
        self.id = normalize_id(&self.id).map_err(|e| InvalidApp::field("/id", e))?;
        if let Some(ports) = self.ports.take() {
            if let Some(defs) = &self.port_definitions {
                // Marathon shows both; a definition read back and sent again carries both.
                if defs.iter().map(|d| d.port).eq(ports.iter().copied()) {
                    return self.normalize_rest();
                }
                return Err(InvalidApp::field(
                    "/ports",
                    "give either ports or portDefinitions, not both",
                ));
            }
            self.port_definitions = Some(
                ports
                    .into_iter()
                    .map(|port| PortDefinition {
                        port,
                        protocol: tcp(),
                        name: None,
                        labels: BTreeMap::new(),
                    })
                    .collect(),
            );
        }
        self.normalize_rest()
    }

    fn normalize_rest(&mut self) -> Result<(), InvalidApp> {
        // Port mappings are the ports of a container network: the ones the app listens on.
        let mapped = self
            .container
            .as_ref()
            .map(|c| c.port_mappings.clone())
            .unwrap_or_default();
        if self.port_definitions.is_none() && !mapped.is_empty() {
            self.require_ports |= mapped.iter().any(|m| m.container_port != 0);
            self.port_definitions = Some(
                mapped
                    .into_iter()
                    .map(|m| PortDefinition {
                        port: m.container_port,
                        protocol: m.protocol,
                        name: m.name,
                        labels: m.labels,
                    })
                    .collect(),
            );
        }
        if self.port_definitions.is_none() {
            // Marathon's default: one port.
            self.port_definitions = Some(vec![PortDefinition {
                port: 0,
                protocol: tcp(),
                name: None,
                labels: BTreeMap::new(),
            }]);
        }
        if let Some(uris) = self.uris.take() {
            if !self.fetch.is_empty() {
                if uris.iter().all(|u| self.fetch.iter().any(|f| &f.uri == u)) {
                    return self.normalize_checks();
                }
                return Err(InvalidApp::field(
                    "/uris",
                    "give either uris or fetch, not both",
                ));
            }
            self.fetch.extend(uris.into_iter().map(|uri| FetchUri {
                uri,
                executable: false,
                extract: true,
                cache: false,
                output_file: None,
            }));
        }
        self.normalize_checks()
    }

    fn normalize_checks(&mut self) -> Result<(), InvalidApp> {
        for hc in &mut self.health_checks {
            hc.protocol = hc.protocol.to_ascii_uppercase();
            if hc.protocol == "MESOS_HTTP" {
                hc.protocol = "HTTP".into();
            } else if hc.protocol == "MESOS_TCP" {
                hc.protocol = "TCP".into();
            }
            if hc.protocol != "HTTP" && hc.protocol != "HTTPS" {
                hc.path = None;
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), InvalidApp> {
        let mut v = Vec::new();
        let mut bad = |path: &str, e: String| {
            v.push(Violation {
                path: path.into(),
                errors: vec![e],
            })
        };
        for (i, n) in self.networks.iter().enumerate() {
            if !matches!(n.mode.as_str(), "host" | "container" | "container/bridge") {
                bad(
                    &format!("/networks({i})/mode"),
                    format!(
                        "expected host, container or container/bridge, found {:?}",
                        n.mode
                    ),
                );
            }
        }
        if let Some(c) = &self.container {
            if c.kind != "MESOS" {
                bad(
                    "/container/type",
                    format!(
                        "drove runs MESOS containers (its own runtime); found {:?}",
                        c.kind
                    ),
                );
            }
        }
        match (&self.cmd, &self.args) {
            (Some(_), Some(_)) => bad("/cmd", "give either cmd or args, not both".into()),
            (None, None) => bad(
                "/cmd",
                "AppDefinition must contain one of 'cmd' or 'args'".into(),
            ),
            (Some(c), None) if c.trim().is_empty() => bad("/cmd", "must not be empty".into()),
            (None, Some(a)) if a.is_empty() => bad("/args", "must not be empty".into()),
            _ => {}
        }
        if let Some(l) = self.resource_limits.as_ref().and_then(|l| l.cpus.as_ref()) {
            match l.cpus() {
                None => bad(
                    "/resourceLimits/cpus",
                    "expected a number of cpus or \"unlimited\"".into(),
                ),
                Some(c) if c < self.cpus => bad(
                    "/resourceLimits/cpus",
                    format!("expected at least cpus ({}), found {c}", self.cpus),
                ),
                Some(_) => {}
            }
        }
        if let Some(h) = &self.https {
            if h.hsts_max_age > HttpsPolicy::HSTS_MAX {
                bad(
                    "/https/hstsMaxAge",
                    format!(
                        "expected at most {} seconds (two years), found {}",
                        HttpsPolicy::HSTS_MAX,
                        h.hsts_max_age
                    ),
                );
            }
        }
        if let Some(s) = &self.scaling {
            for (path, e) in s.violations(MAX_INSTANCES) {
                bad(&path, e);
            }
            if s.suspended && self.instances > 0 {
                bad(
                    "/scaling/suspended",
                    format!(
                        "a suspended app runs no instances: expected instances 0, found {}",
                        self.instances
                    ),
                );
            }
        }
        if self.instances > MAX_INSTANCES {
            bad(
                "/instances",
                format!(
                    "must be between 0 and {MAX_INSTANCES}, got {}",
                    self.instances
                ),
            );
        }
        if !(self.cpus.is_finite() && self.cpus >= 0.01 && self.cpus <= 1024.0) {
            bad(
                "/cpus",
                format!("must be a number between 0.01 and 1024, got {}", self.cpus),
            );
        }
        if !(self.mem.is_finite() && self.mem >= 1.0 && self.mem <= 16.0 * 1024.0 * 1024.0) {
            bad(
                "/mem",
                format!("must be a number of MiB of at least 1, got {}", self.mem),
            );
        }
        if !(self.disk.is_finite() && self.disk >= 0.0) {
            bad("/disk", format!("must be ≥ 0, got {}", self.disk));
        }
        let ports = self.port_definitions.as_deref().unwrap_or_default();
        if ports.len() > MAX_PORTS {
            bad(
                "/portDefinitions",
                format!("at most {MAX_PORTS} ports, got {}", ports.len()),
            );
        }
        for (i, p) in ports.iter().enumerate() {
            if p.port > 65535 {
                bad(
                    &format!("/portDefinitions({i})/port"),
                    format!("must be between 0 and 65535, got {}", p.port),
                );
            }
            if p.protocol != "tcp" && p.protocol != "udp" && p.protocol != "udp,tcp" {
                bad(
                    &format!("/portDefinitions({i})/protocol"),
                    format!("must be tcp, udp or udp,tcp, got {:?}", p.protocol),
                );
            }
        }
        if self.require_ports && ports.iter().any(|p| p.port == 0) {
            bad(
                "/requirePorts",
                "requirePorts needs every port to be given (non-zero)".into(),
            );
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                bad(&format!("/env/{name}"), "not a valid variable name".into());
            }
        }
        for (i, f) in self.fetch.iter().enumerate() {
            if f.uri.trim().is_empty() {
                bad(&format!("/fetch({i})/uri"), "must not be empty".into());
            }
        }
        for (i, hc) in self.health_checks.iter().enumerate() {
            let at = |f: &str| format!("/healthChecks({i})/{f}");
            match hc.protocol.as_str() {
                "HTTP" | "HTTPS" | "TCP" => {
                    if hc.port_index as usize >= ports.len() {
                        bad(
                            &at("portIndex"),
                            format!(
                                "must name one of the app's {} port(s), got {}",
                                ports.len(),
                                hc.port_index
                            ),
                        );
                    }
                }
                "COMMAND" => {
                    if hc
                        .command
                        .as_ref()
                        .is_none_or(|c| c.value.trim().is_empty())
                    {
                        bad(&at("command"), "a COMMAND check needs command.value".into());
                    }
                }
                other => bad(
                    &at("protocol"),
                    format!("must be HTTP, HTTPS, TCP or COMMAND, got {other:?}"),
                ),
            }
            if let Some(p) = &hc.path {
                if !p.starts_with('/') {
                    bad(&at("path"), format!("must start with '/', got {p:?}"));
                }
            }
            if hc.interval_seconds == 0 || hc.interval_seconds > 86_400 {
                bad(
                    &at("intervalSeconds"),
                    format!("must be between 1 and 86400, got {}", hc.interval_seconds),
                );
            }
            if hc.timeout_seconds == 0 || hc.timeout_seconds > 86_400 {
                bad(
                    &at("timeoutSeconds"),
                    format!("must be between 1 and 86400, got {}", hc.timeout_seconds),
                );
            }
            if hc.grace_period_seconds > 86_400 {
                bad(
                    &at("gracePeriodSeconds"),
                    format!("must be at most 86400, got {}", hc.grace_period_seconds),
                );
            }
        }
        let us = &self.upgrade_strategy;
        for (name, x) in [
            ("minimumHealthCapacity", us.minimum_health_capacity),
            ("maximumOverCapacity", us.maximum_over_capacity),
        ] {
            if !(x.is_finite() && (0.0..=1.0).contains(&x)) {
                bad(
                    &format!("/upgradeStrategy/{name}"),
                    format!("must be between 0 and 1, got {x}"),
                );
            }
        }
        if !(self.backoff_seconds.is_finite() && self.backoff_seconds >= 0.0) {
            bad(
                "/backoffSeconds",
                format!("must be ≥ 0, got {}", self.backoff_seconds),
            );
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            bad(
                "/backoffFactor",
                format!("must be ≥ 1, got {}", self.backoff_factor),
            );
        }
        if !(self.max_launch_delay_seconds.is_finite() && self.max_launch_delay_seconds >= 0.0) {
            bad(
                "/maxLaunchDelaySeconds",
                format!("must be ≥ 0, got {}", self.max_launch_delay_seconds),
            );
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if let Err(e) = crate::model::constraint::Constraint::parse(c) {
                bad(&format!("/constraints({i})"), e);
            }
        }
        if route_name(&self.id).is_none() {
            bad(
                "/id",
                "too long to be served as a host name (at most 63 characters once '/' becomes '-')"
                    .into(),
            );
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(InvalidApp::Rules(v))
        }
    }

    /// Taken offline: no instances, and nothing wakes it. As in Marathon, an app without
    /// `scaling` at 0 instances is suspended; one with `scaling` only when an operator said so
    /// (at 0 it is otherwise idle, and the next request wakes it).
    pub fn suspended(&self) -> bool {
        self.instances == 0 && self.scaling.as_ref().is_none_or(|s| s.suspended)
    }

    pub fn port_definitions(&self) -> &[PortDefinition] {
        self.port_definitions.as_deref().unwrap_or_default()
    }

    /// This definition as Marathon shows it, at `version` when given.
    pub fn shown<'a>(&'a self, version: Option<&'a str>) -> Shown<'a> {
        Shown {
            def: self,
            version,
            ports: self.port_definitions().iter().map(|p| p.port).collect(),
            uris: self.fetch.iter().map(|f| f.uri.as_str()).collect(),
            executor: "",
            dependencies: [],
        }
    }

    /// Marathon's JSON for this definition (deprecated `ports` included, as Marathon shows it),
    /// as events and deployment plans carry it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.shown(None)).unwrap_or_default()
    }
}

/// An app definition as Marathon shows it: the deprecated `ports` (of `portDefinitions`) and
/// `uris` (of `fetch`) too, and its `version` when it is one of its versions.
#[derive(Debug, Serialize)]
pub struct Shown<'a> {
    #[serde(flatten)]
    pub def: &'a AppDefinition,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'a str>,
    pub ports: Vec<u32>,
    pub uris: Vec<&'a str>,
    pub executor: &'static str,
    pub dependencies: [String; 0],
}

/// Scaling a suspended app up is Marathon's way of bringing an app back: when `patch` raises
/// the count and leaves the scaling settings alone, the merged definition is no longer
/// suspended.
pub fn resume_if_scaled_up(patch: &Value, merged: &mut Value) {
    let scales_up = patch["instances"].as_u64().is_some_and(|n| n > 0);
    if scales_up && patch["scaling"].is_null() {
        if let Some(s) = merged["scaling"].as_object_mut() {
            s.remove("suspended");
        }
    }
}

/// Applies a PUT/PATCH body onto the current definition: top-level fields given replace the
/// current ones (Marathon's partial update), `id` stays.
pub fn merge(current: &AppDefinition, patch: &Value) -> Result<Value, InvalidApp> {
    let Value::Object(patch) = patch else {
        return Err(InvalidApp::field("/", "expected a JSON object"));
    };
    let mut base = serde_json::to_value(current).map_err(|e| InvalidApp::Json(e.to_string()))?;
    if let Value::Object(base) = &mut base {
        for (k, v) in patch {
            if k == "id" || k == "version" {
                continue;
            }
            // A field replaces its other form too, unless the body gives both itself (as a
            // definition read back from Marathon does).
            for (this, other) in [
                ("ports", "portDefinitions"),
                ("portDefinitions", "ports"),
                ("uris", "fetch"),
                ("fetch", "uris"),
                ("args", "cmd"),
                ("cmd", "args"),
            ] {
                if k == this && !v.is_null() && !patch.contains_key(other) {
                    base.remove(other);
                }
            }
            base.insert(k.clone(), v.clone());
        }
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_marathons() {
        let d = AppDefinition::parse(br#"{"id":"shop","cmd":"node app.js"}"#).unwrap();
        assert_eq!(d.id, "/shop");
        assert_eq!(d.instances, 1);
        assert_eq!(d.cpus, 1.0);
        assert_eq!(d.mem, 128.0);
        assert_eq!(d.port_definitions().len(), 1);
        assert_eq!(d.backoff_factor, 1.15);
        assert_eq!(d.upgrade_strategy, UpgradeStrategy::default());
    }

    #[test]
    fn errors_name_the_field() {
        let e = AppDefinition::parse(br#"{"id":"shop","cmd":"x","instances":"two"}"#).unwrap_err();
        assert!(
            matches!(&e, InvalidApp::Rules(v) if v[0].path == "/instances"),
            "{e}"
        );
        let e = AppDefinition::parse(
            br#"{"id":"shop","cmd":"x","healthChecks":[{"intervalSeconds":-1}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, InvalidApp::Rules(v) if v[0].path == "/healthChecks(0)/intervalSeconds"),
            "{e}"
        );
        let e = AppDefinition::parse(br#"{"id":"Shop!","cmd":"x"}"#).unwrap_err();
        assert!(
            matches!(&e, InvalidApp::Rules(v) if v[0].path == "/id"),
            "{e}"
        );
        let e = AppDefinition::parse(br#"{"id":"shop","cmd":"x","cpus":0}"#).unwrap_err();
        assert!(
            matches!(&e, InvalidApp::Rules(v) if v[0].path == "/cpus"),
            "{e}"
        );
        assert!(matches!(
            AppDefinition::parse(b"{not json"),
            Err(InvalidApp::Json(_))
        ));
        let e = AppDefinition::parse(br#"{"id":"shop"}"#).unwrap_err();
        assert!(
            matches!(&e, InvalidApp::Rules(v) if v[0].path == "/cmd"),
            "{e}"
        );
    }

    #[test]
    fn ids_and_route_names() {
        assert_eq!(normalize_id("a/b").unwrap(), "/a/b");
        assert!(normalize_id("/a//b").is_err());
        assert!(normalize_id("-a").is_err());
        assert_eq!(route_name("/team/shop.v2").unwrap(), "team-shop-v2");
        assert_eq!(task_prefix("/team/shop"), "team_shop");
    }

    #[test]
    fn a_definition_read_back_and_sent_again_is_the_same() {
        let d = AppDefinition::parse(
            br#"{"id":"shop","cmd":"a","uris":["/x.tgz"],
                 "portDefinitions":[{"port":0,"name":"web","protocol":"tcp"}]}"#,
        )
        .unwrap();
        let again = AppDefinition::from_value(merge(&d, &d.to_json()).unwrap()).unwrap();
        assert_eq!(again, d);
        assert_eq!(again.fetch.len(), 1);
        assert_eq!(again.port_definitions()[0].name.as_deref(), Some("web"));
        let posted = AppDefinition::from_value(d.to_json()).unwrap();
        assert_eq!(posted, d);
    }

    #[test]
    fn merge_replaces_given_fields() {
        let d = AppDefinition::parse(br#"{"id":"shop","cmd":"a","instances":2}"#).unwrap();
        let m = merge(&d, &json!({"args": ["x"], "instances": 3})).unwrap();
        let d2 = AppDefinition::from_value(m).unwrap();
        assert_eq!(d2.instances, 3);
        assert_eq!(d2.cmd, None);
        assert_eq!(d2.args, Some(vec!["x".to_string()]));
    }
}
