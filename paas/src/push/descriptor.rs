//! The descriptor of a pushed app: its `package.json`.
//!
//! npm's own keys: `name`, `version`, `scripts.start` (else `main`, run with node),
//! `scripts.build`, `engines.node`, and whether it has `dependencies`. Flock's keys as Flock wrote
//! them: `"flock": {"instances", "cpus", "mem", "ports"}` and `"checks": [{"path",
//! "intervalSeconds", "maxConsecutiveFailures"}]`. drove's own, all optional, under `"drove"`
//! (defaults in [`DroveKeys::default`] and the README): `minInstances`, `maxInstances`,
//! `idleSeconds`, `targetConcurrency`, `hostnames`, `checkTimeoutSeconds`,
//! `checkGraceSeconds`, `branch`, `pruneDevDependencies`, `buildCpus`, `buildMem`, `cpusLimit`,
//! `httpsRedirect`, `hstsMaxAge`.
//!
//! Every error names the key, what was expected and what was found:
//! `flock.mem: expected a number of MiB ≥ 16, found "32MB"`.

use drove_proto::routing::HttpsPolicy;
use serde_json::{json, Map, Value};

/// A descriptor that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: expected {expected}, found {found}")]
pub struct DescriptorError {
    pub key: String,
    pub expected: String,
    pub found: String,
}

fn bad(key: &str, expected: &str, found: Option<&Value>) -> DescriptorError {
    DescriptorError {
        key: key.to_string(),
        expected: expected.to_string(),
        found: match found {
            None => "nothing".to_string(),
            Some(v) => v.to_string(),
        },
    }
}

/// How the app starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// `scripts.start`, run by the shell with `node_modules/.bin` on the PATH, as npm does.
    Script(String),
    /// `main`, run with node.
    Main(String),
}

/// One `checks` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub path: String,
    pub interval_seconds: u32,
    pub max_consecutive_failures: u32,
}

/// `drove.maxInstances` when not given (within the operator's ceiling).
pub const DEFAULT_MAX_INSTANCES: u32 = 10;

/// What an operator lets one pushed app ask for: per instance (`flock.cpus`, `flock.mem` in
/// MiB) and instances (`flock.instances`, `drove.minInstances`, `drove.maxInstances`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceilings {
    pub cpus: f64,
    pub mem: f64,
    pub instances: u32,
}

/// drove's own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct DroveKeys {
    pub min_instances: u32,
    /// `drove.maxInstances` as given; [`Descriptor::max_instances`] is what applies.
    pub max_instances: Option<u32>,
    pub idle_seconds: u32,
    pub target_concurrency: f64,
    pub hostnames: Vec<String>,
    pub check_timeout_seconds: u32,
    pub check_grace_seconds: u32,
    pub branch: String,
    /// Whether devDependencies are removed after the build (`npm prune --omit=dev`).
    pub prune_dev_dependencies: bool,
    /// What the build task asks for; the operator's defaults when not given.
    pub build_cpus: Option<f64>,
    pub build_mem: Option<f64>,
    /// The most cpus an instance may burst to when the machine has them idle (its `cpus` is
    /// what it is guaranteed); the operator's default when not given.
    pub cpus_limit: Option<f64>,
    /// `drove.httpsRedirect` and `drove.hstsMaxAge`.
    pub https: HttpsPolicy,
}

impl Default for DroveKeys {
    fn default() -> Self {
        DroveKeys {
            min_instances: 0,
            max_instances: None,
            idle_seconds: 300,
            target_concurrency: 10.0,
            hostnames: Vec::new(),
            check_timeout_seconds: 2,
            check_grace_seconds: 30,
            branch: "main".into(),
            https: HttpsPolicy::default(),
            prune_dev_dependencies: true,
            build_cpus: None,
            build_mem: None,
            cpus_limit: None,
        }
    }
}

/// A parsed `package.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub name: String,
    pub version: Option<String>,
    pub start: Start,
    pub build: Option<String>,
    pub engines_node: Option<String>,
    pub has_dependencies: bool,
    /// The names of its devDependencies (pruned before it starts, unless told otherwise).
    pub dev_dependencies: Vec<String>,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub ports: u32,
    pub checks: Vec<Check>,
    pub drove: DroveKeys,
}

fn string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, DescriptorError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(path, "a string", Some(other))),
    }
}

fn object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, DescriptorError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(bad(path, "an object", Some(other))),
    }
}

fn number(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    expected: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<Option<f64>, DescriptorError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() && ok(n) => Ok(Some(n)),
            _ => Err(bad(path, expected, Some(v))),
        },
    }
}

fn whole(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    expected: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, DescriptorError> {
    let n = number(obj, key, path, expected, |n| {
        n.fract() == 0.0 && n >= f64::from(*range.start()) && n <= f64::from(*range.end())
    })?;
    Ok(n.map(|n| n as u32))
}

impl Descriptor {
    /// Parses `package.json`'s bytes.
    pub fn parse(bytes: &[u8]) -> Result<Descriptor, DescriptorError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| DescriptorError {
            key: "package.json".into(),
            expected: "a JSON object".into(),
            found: format!("invalid JSON ({e})"),
        })?;
        let Value::Object(pkg) = &value else {
            return Err(bad("package.json", "a JSON object", Some(&value)));
        };
        let name = string(pkg, "name", "name")?
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| bad("name", "the package's name", pkg.get("name")))?;
        let version = string(pkg, "version", "version")?;
        let scripts = object(pkg, "scripts", "scripts")?;
        let start_script = match scripts {
            Some(s) => string(s, "start", "scripts.start")?,
            None => None,
        };
        let build = match scripts {
            Some(s) => string(s, "build", "scripts.build")?,
            None => None,
        };
        let start = match (start_script, string(pkg, "main", "main")?) {
            (Some(s), _) if !s.trim().is_empty() => Start::Script(s),
            (_, Some(m)) if !m.trim().is_empty() => Start::Main(m),
            _ => {
                return Err(bad(
                    "scripts.start",
                    "a start command (or a `main` file to run with node)",
                    None,
                ))
            }
        };
        let engines_node = match object(pkg, "engines", "engines")? {
            Some(e) => string(e, "node", "engines.node")?,
            None => None,
        };
        let dev_dependencies = match object(pkg, "devDependencies", "devDependencies")? {
            Some(d) => d.keys().cloned().collect(),
            None => Vec::new(),
        };
        let has_dependencies = match object(pkg, "dependencies", "dependencies")? {
            Some(d) => !d.is_empty(),
            None => false,
        };
        let flock = object(pkg, "flock", "flock")?;
        let empty = Map::new();
        let flock = flock.unwrap_or(&empty);
        let instances = whole(
            flock,
            "instances",
            "flock.instances",
            "a whole number of instances from 0 to 100",
            0..=100,
        )?
        .unwrap_or(1);
        let cpus = number(
            flock,
            "cpus",
            "flock.cpus",
            "a number of cpus above 0 and at most 64",
            |n| n > 0.0 && n <= 64.0,
        )?
        .unwrap_or(0.1);
        let mem = number(flock, "mem", "flock.mem", "a number of MiB ≥ 16", |n| {
            (16.0..=1_048_576.0).contains(&n)
        })?
        .unwrap_or(128.0);
        let ports = whole(
            flock,
            "ports",
            "flock.ports",
            "a whole number of ports from 1 to 8",
            1..=8,
        )?
        .unwrap_or(1);
        let checks = match pkg.get("checks") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("checks[{i}]");
                    let Value::Object(c) = item else {
                        return Err(bad(&at, "an object", Some(item)));
                    };
                    let path =
                        string(c, "path", &format!("{at}.path"))?.unwrap_or_else(|| "/".into());
                    if !path.starts_with('/') {
                        return Err(bad(
                            &format!("{at}.path"),
                            "a path starting with /",
                            c.get("path"),
                        ));
                    }
                    out.push(Check {
                        path,
                        interval_seconds: whole(
                            c,
                            "intervalSeconds",
                            &format!("{at}.intervalSeconds"),
                            "a whole number of seconds from 1 to 3600",
                            1..=3600,
                        )?
                        .unwrap_or(10),
                        max_consecutive_failures: whole(
                            c,
                            "maxConsecutiveFailures",
                            &format!("{at}.maxConsecutiveFailures"),
                            "a whole number from 1 to 100",
                            1..=100,
                        )?
                        .unwrap_or(3),
                    });
                }
                out
            }
            Some(other) => return Err(bad("checks", "a list of checks", Some(other))),
        };
        let mut drove = DroveKeys::default();
        if let Some(d) = object(pkg, "drove", "drove")? {
            for key in d.keys() {
                const KNOWN: [&str; 14] = [
                    "minInstances",
                    "maxInstances",
                    "idleSeconds",
                    "targetConcurrency",
                    "hostnames",
                    "checkTimeoutSeconds",
                    "checkGraceSeconds",
                    "branch",
                    "pruneDevDependencies",
                    "buildCpus",
                    "buildMem",
                    "cpusLimit",
                    "httpsRedirect",
                    "hstsMaxAge",
                ];
                if !KNOWN.contains(&key.as_str()) {
                    return Err(bad(
                        &format!("drove.{key}"),
                        &format!("one of {}", KNOWN.join(", ")),
                        Some(&json!(key)),
                    ));
                }
            }
            let count = "a whole number of instances from 0 to 100";
            if let Some(n) = whole(d, "minInstances", "drove.minInstances", count, 0..=100)? {
                drove.min_instances = n;
            }
            if let Some(n) = whole(
                d,
                "maxInstances",
                "drove.maxInstances",
                "a whole number of instances from 1 to 100",
                1..=100,
            )? {
                drove.max_instances = Some(n);
            }
            if let Some(n) = whole(
                d,
                "idleSeconds",
                "drove.idleSeconds",
                "a whole number of seconds from 1 to 2592000",
                1..=2_592_000,
            )? {
                drove.idle_seconds = n;
            }
            if let Some(n) = number(
                d,
                "targetConcurrency",
                "drove.targetConcurrency",
                "a number above 0 and at most 100000",
                |n| n > 0.0 && n <= 100_000.0,
            )? {
                drove.target_concurrency = n;
            }
            if let Some(n) = whole(
                d,
                "checkTimeoutSeconds",
                "drove.checkTimeoutSeconds",
                "a whole number of seconds from 1 to 60",
                1..=60,
            )? {
                drove.check_timeout_seconds = n;
            }
            if let Some(n) = whole(
                d,
                "checkGraceSeconds",
                "drove.checkGraceSeconds",
                "a whole number of seconds from 0 to 3600",
                0..=3600,
            )? {
                drove.check_grace_seconds = n;
            }
            match d.get("pruneDevDependencies") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => drove.prune_dev_dependencies = *b,
                Some(other) => {
                    return Err(bad(
                        "drove.pruneDevDependencies",
                        "true or false",
                        Some(other),
                    ))
                }
            }
            match d.get("httpsRedirect") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => drove.https.redirect = *b,
                Some(other) => {
                    return Err(bad("drove.httpsRedirect", "true or false", Some(other)))
                }
            }
            let seconds = "a whole number of seconds from 0 to 63072000 (two years)";
            if let Some(n) = whole(
                d,
                "hstsMaxAge",
                "drove.hstsMaxAge",
                seconds,
                0..=HttpsPolicy::HSTS_MAX,
            )? {
                drove.https.hsts_max_age = n;
            }
            drove.build_cpus = number(
                d,
                "buildCpus",
                "drove.buildCpus",
                "a number of cpus above 0 and at most 64",
                |n| n > 0.0 && n <= 64.0,
            )?;
            drove.build_mem = number(
                d,
                "buildMem",
                "drove.buildMem",
                "a number of MiB ≥ 64",
                |n| (64.0..=1_048_576.0).contains(&n),
            )?;
            drove.cpus_limit = number(
                d,
                "cpusLimit",
                "drove.cpusLimit",
                "a number of cpus above 0 and at most 64",
                |n| n > 0.0 && n <= 64.0,
            )?;
            if let Some(b) = string(d, "branch", "drove.branch")? {
                if b.is_empty() || b.contains(char::is_whitespace) || b.contains("..") {
                    return Err(bad("drove.branch", "a branch name", d.get("branch")));
                }
                drove.branch = b;
            }
            match d.get("hostnames") {
                None | Some(Value::Null) => {}
                Some(Value::Array(hs)) => {
                    for (i, h) in hs.iter().enumerate() {
                        match h.as_str() {
                            Some(s)
                                if !s.is_empty() && s.len() <= 253 && !s.contains(['/', ' ']) =>
                            {
                                drove.hostnames.push(s.to_string())
                            }
                            _ => {
                                return Err(bad(
                                    &format!("drove.hostnames[{i}]"),
                                    "a host name",
                                    Some(h),
                                ))
                            }
                        }
                    }
                }
                Some(other) => {
                    return Err(bad("drove.hostnames", "a list of host names", Some(other)))
                }
            }
            if let Some(max) = drove.max_instances.filter(|m| drove.min_instances > *m) {
                return Err(bad(
                    "drove.minInstances",
                    &format!("at most drove.maxInstances ({max})"),
                    d.get("minInstances"),
                ));
            }
        }
        Ok(Descriptor {
            name,
            version,
            start,
            build,
            engines_node,
            has_dependencies,
            dev_dependencies,
            instances,
            cpus,
            mem,
            ports,
            checks,
            drove,
        })
    }

    /// Checks what the app asks for against the operator's ceilings, naming the first key
    /// over one.
    pub fn within(&self, c: &Ceilings) -> Result<(), DescriptorError> {
        let over = |key: &str, flag: &str, limit: String, found: String| DescriptorError {
            key: key.to_string(),
            expected: format!("at most {limit} (this PaaS's --{flag})"),
            found,
        };
        if self.cpus > c.cpus {
            return Err(over(
                "flock.cpus",
                "app-max-cpus",
                c.cpus.to_string(),
                self.cpus.to_string(),
            ));
        }
        if self.mem > c.mem {
            return Err(over(
                "flock.mem",
                "app-max-mem",
                c.mem.to_string(),
                self.mem.to_string(),
            ));
        }
        for (key, flag, limit, n) in [
            (
                "drove.buildCpus",
                "app-max-cpus",
                c.cpus,
                self.drove.build_cpus,
            ),
            (
                "drove.cpusLimit",
                "app-max-cpus",
                c.cpus,
                self.drove.cpus_limit,
            ),
            ("drove.buildMem", "app-max-mem", c.mem, self.drove.build_mem),
        ] {
            if let Some(n) = n.filter(|n| *n > limit) {
                return Err(over(key, flag, limit.to_string(), n.to_string()));
            }
        }
        let most = c.instances.to_string();
        for (key, n) in [
            ("flock.instances", Some(self.instances)),
            ("drove.minInstances", Some(self.drove.min_instances)),
            ("drove.maxInstances", self.drove.max_instances),
        ] {
            if let Some(n) = n.filter(|n| *n > c.instances) {
                return Err(over(key, "app-max-instances", most, n.to_string()));
            }
        }
        Ok(())
    }

    /// The devDependency the start script runs, when devDependencies are pruned before start
    /// (`vite preview` with vite among them fails with status 127 otherwise).
    pub fn start_needs_pruned(&self) -> Option<&str> {
        let Start::Script(s) = &self.start else {
            return None;
        };
        if !self.drove.prune_dev_dependencies {
            return None;
        }
        s.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|')
            .find_map(|w| self.dev_dependencies.iter().find(|d| d.as_str() == w))
            .map(String::as_str)
    }

    /// The most instances the scaler may run: `drove.maxInstances`, else 10 (within the
    /// ceiling), and never fewer than `flock.instances` or 1.
    pub fn max_instances(&self, c: &Ceilings) -> u32 {
        self.drove
            .max_instances
            .unwrap_or(DEFAULT_MAX_INSTANCES.min(c.instances))
            .max(self.instances)
            .max(1)
    }

    /// The shell command that starts the app in its sandbox (where the artifact is unpacked).
    pub fn command(&self) -> String {
        match &self.start {
            Start::Script(s) => format!("PATH=\"$PWD/node_modules/.bin:$PATH\" exec {s}"),
            Start::Main(m) => format!("exec node {}", shell_quote(m)),
        }
    }
}

/// Whether node `have` (e.g. `v20.19.2`) meets an `engines.node` range, for the simple forms
/// (`>=18`, `>18`, `^20`, `~20.1`, `20`, `20.x`, `20.1.0`, `*`); `None` when the range is not one
/// of them (it is then not checked).
pub fn node_satisfies(range: &str, have: &str) -> Option<bool> {
    let major = |v: &str| -> Option<u64> {
        v.trim()
            .trim_start_matches('v')
            .split('.')
            .next()?
            .parse()
            .ok()
    };
    let have = major(have)?;
    let r = range.trim();
    if r.is_empty() || r == "*" || r == "x" {
        return Some(true);
    }
    if r.contains(' ') || r.contains('|') || r.contains('<') {
        return None;
    }
    if let Some(v) = r.strip_prefix(">=") {
        return Some(have >= major(v)?);
    }
    if let Some(v) = r.strip_prefix('>') {
        return Some(have > major(v)?);
    }
    let v = r.trim_start_matches(['^', '~', '=']);
    Some(have == major(v)?)
}

/// Quotes for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Descriptor, DescriptorError> {
        Descriptor::parse(v.to_string().as_bytes())
    }

    #[test]
    fn flocks_descriptor_and_defaults() {
        let d = parse(json!({
            "name": "flock-demo", "version": "1.0.1", "scripts": {"start": "node server.js"},
            "flock": {"instances": 2, "cpus": 0.1, "mem": 32, "ports": 1},
            "checks": [{"path": "/", "intervalSeconds": 15, "maxConsecutiveFailures": 3}]
        }))
        .unwrap();
        assert_eq!(d.instances, 2);
        assert_eq!(d.mem, 32.0);
        assert_eq!(d.checks[0].interval_seconds, 15);
        assert_eq!(d.start, Start::Script("node server.js".into()));
        assert!(!d.has_dependencies);
        assert_eq!(d.drove, DroveKeys::default());
        let m = parse(json!({"name": "m", "main": "index.js"})).unwrap();
        assert_eq!(m.command(), "exec node 'index.js'");
        assert_eq!(m.instances, 1);
    }

    #[test]
    fn ceilings_name_the_key_over_them() {
        let c = Ceilings {
            cpus: 2.0,
            mem: 2048.0,
            instances: 5,
        };
        let within = |v: Value| parse(v).unwrap().within(&c).map_err(|e| e.to_string());
        assert_eq!(
            within(json!({"name": "x", "main": "a", "flock": {"cpus": 64}})),
            Err("flock.cpus: expected at most 2 (this PaaS's --app-max-cpus), found 64".into())
        );
        assert_eq!(
            within(json!({"name": "x", "main": "a", "flock": {"mem": 4096}})),
            Err("flock.mem: expected at most 2048 (this PaaS's --app-max-mem), found 4096".into())
        );
        assert_eq!(
            within(json!({"name": "x", "main": "a", "drove": {"minInstances": 6}})),
            Err(
                "drove.minInstances: expected at most 5 (this PaaS's --app-max-instances), found 6"
                    .into()
            )
        );
        assert!(within(json!({"name": "x", "main": "a", "drove": {"maxInstances": 9}})).is_err());
        let plain = parse(json!({"name": "x", "main": "a"})).unwrap();
        assert!(plain.within(&c).is_ok());
        assert_eq!(
            plain.max_instances(&c),
            5,
            "the default max stays within the ceiling"
        );
    }

    #[test]
    fn a_start_script_needing_a_pruned_dev_dependency_is_named() {
        let d = parse(
            json!({"name": "x", "scripts": {"start": "vite preview --port $PORT"},
                             "devDependencies": {"vite": "^5"}}),
        )
        .unwrap();
        assert_eq!(d.start_needs_pruned(), Some("vite"));
        let kept = parse(json!({"name": "x", "scripts": {"start": "vite preview"},
                                "devDependencies": {"vite": "^5"},
                                "drove": {"pruneDevDependencies": false}}))
        .unwrap();
        assert_eq!(kept.start_needs_pruned(), None);
        let plain = parse(json!({"name": "x", "scripts": {"start": "node server.js"},
                                 "devDependencies": {"vite": "^5"}}))
        .unwrap();
        assert_eq!(plain.start_needs_pruned(), None);
    }

    #[test]
    fn engines_node_ranges() {
        assert_eq!(node_satisfies(">=18", "v20.19.2"), Some(true));
        assert_eq!(node_satisfies(">=22", "v20.19.2"), Some(false));
        assert_eq!(node_satisfies("^20.1.0", "v20.19.2"), Some(true));
        assert_eq!(node_satisfies("18.x", "v20.19.2"), Some(false));
        assert_eq!(node_satisfies("*", "v20.19.2"), Some(true));
        assert_eq!(node_satisfies(">=14 <16", "v20.19.2"), None);
    }

    #[test]
    fn errors_name_the_key_the_expectation_and_the_value() {
        let e = parse(json!({"name": "x", "main": "a.js", "flock": {"mem": "32MB"}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "flock.mem: expected a number of MiB ≥ 16, found \"32MB\""
        );
        let e = parse(json!({"name": "x"})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("scripts.start: expected a start command"),
            "{e}"
        );
        let e =
            parse(json!({"name": "x", "main": "a", "checks": [{"path": "health"}]})).unwrap_err();
        assert_eq!(e.key, "checks[0].path");
        let e = parse(json!({"name": "x", "main": "a", "drove": {"idle": 5}})).unwrap_err();
        assert_eq!(e.key, "drove.idle");
        let e = Descriptor::parse(b"{not json").unwrap_err();
        assert_eq!(e.key, "package.json");
        let e = parse(
            json!({"name": "x", "main": "a", "drove": {"minInstances": 5, "maxInstances": 2}}),
        )
        .unwrap_err();
        assert_eq!(e.key, "drove.minInstances");
    }
}
