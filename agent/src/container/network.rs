//! Task networks: one network namespace per container, wired by the standard CNI plugins
//! (Debian's `containernetworking-plugins`): `loopback`, then `ptp` with `host-local` addresses
//! and masquerading for egress; `portmap` for a task that asks for host ports (Mesos's
//! `port_mappings`).
//!
//! `ptp` rather than `bridge`: every packet between two tasks is routed by the host, so the
//! host's filter table sees it (on a bridge, tasks would talk at layer 2, past iptables unless
//! `br_netfilter` is loaded). The agent's chains (`DROVE-INPUT`, `DROVE-FORWARD`, jumped to
//! first from `INPUT` and `FORWARD`) then refuse a task's connections to another task and to
//! the host itself (every control-plane port, whatever address it listens on: a new connection
//! from the task network is rejected), and let replies to connections the host opened (the
//! router, health checks) and egress through NAT pass.
//!
//! Namespaces are pre-wired: the agent keeps a few ready ([`Network::fill`]), a launch takes one
//! (no plugin runs on a wake's path), and an ended container's is released, the pool refilled
//! in the background. The
//! namespaces are named `drove-<tag>-<n>`, `<tag>` being the agent's, so one agent never
//! touches another's; leases live in one machine-wide directory so agents sharing a host and
//! subnet never hand out the same address.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Where `ip netns` keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The CNI network's name (leases are kept under it).
pub const NETWORK_NAME: &str = "drove";
/// Where Debian installs the CNI plugins.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";
/// host-local's lease directory, shared by every agent on the host.
pub const IPAM_DIR: &str = "/run/drove/cni";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {output}")]
    Failed { what: String, output: String },
    #[error("CNI plugin {plugin} answered {answer:?}: no IPv4 address")]
    NoAddress { plugin: String, answer: String },
    #[error("the CNI plugins are not in {0} (apt install containernetworking-plugins)")]
    NoPlugins(PathBuf),
}

/// A network namespace wired to the task network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Its name under /run/netns (also its CNI container id).
    pub name: String,
    pub ip: Ipv4Addr,
    /// Host ports forwarded to the container ([`Network::map_ports`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMap>,
}

/// A port of the host's forwarded to a port of the container (Mesos's `port_mappings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl Attachment {
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }
}

/// The tag of the agent working in `work_dir`, in its namespaces' names: stable across its
/// restarts, distinct from every other agent's on the host.
pub fn tag_of(work_dir: &Path) -> String {
    use sha2::Digest;
    let dir = work_dir
        .canonicalize()
        .unwrap_or_else(|_| work_dir.to_path_buf());
    hex::encode(&sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes())[..4])
}

/// Releases every task network an agent that worked in `work_dir` left (killed, its pool and
/// its containers' namespaces stay until it starts again): for tests and tools that end an
/// agent for good. Uses the default network and plugin directory.
pub fn release_all(work_dir: &Path) {
    Network::new(
        "10.213.0.0/16",
        Path::new(DEFAULT_PLUGIN_DIR),
        &tag_of(work_dir),
        0,
    )
    .sweep(&[]);
}

#[derive(Debug)]
pub struct Network {
    subnet: String,
    plugin_dir: PathBuf,
    prefix: String,
    pool_size: usize,
    pool: Mutex<Pool>,
}

/// Ready namespaces, and how many are being made for the pool right now (so concurrent
/// refills never overshoot it).
#[derive(Debug, Default)]
struct Pool {
    ready: Vec<Attachment>,
    making: usize,
    /// The agent is stopping: nothing is pooled any more.
    closed: bool,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Io { what, source }
}

fn run(what: &str, cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, NetworkError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io(what.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(io(what.to_string()))?;
    }
    let out = child.wait_with_output().map_err(io(what.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let mut output = text;
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(NetworkError::Failed {
            what: what.to_string(),
            output: output.trim().chars().take(500).collect(),
        });
    }
    Ok(text)
}

fn iptables(args: &[&str]) -> Result<String, NetworkError> {
    run(
        &format!("iptables {}", args.join(" ")),
        Command::new("iptables").arg("-w").args(args),
        None,
    )
}

impl Network {
    /// `subnet`: the task network (CIDR); `tag`: the agent's, in namespace names.
    pub fn new(subnet: &str, plugin_dir: &Path, tag: &str, pool_size: usize) -> Network {
        Network {
            subnet: subnet.to_string(),
            plugin_dir: plugin_dir.to_path_buf(),
            prefix: format!("drove-{tag}-"),
            pool_size,
            pool: Mutex::new(Pool::default()),
        }
    }

    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// The namespace-name prefix of this agent's attachments.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        match self.pool.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Checks the plugins and installs the isolation rules (idempotent: every agent of the host
    /// may run it, in any order).
    pub fn setup(&self) -> Result<(), NetworkError> {
        for p in ["ptp", "host-local", "loopback"] {
            if !self.plugin_dir.join(p).is_file() {
                return Err(NetworkError::NoPlugins(self.plugin_dir.clone()));
            }
        }
        std::fs::create_dir_all(IPAM_DIR).map_err(io(format!("creating {IPAM_DIR}")))?;
        // Agents of one host set the same rules up: one at a time, so none is added twice.
        let lock_path = std::path::Path::new(IPAM_DIR).join("iptables.lock");
        let lock_file = std::fs::File::create(&lock_path)
            .map_err(io(format!("creating {}", lock_path.display())))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(format!("locking {}", lock_path.display()))(e.into()))?;
        let s = self.subnet.as_str();
        let rules: [(&str, Vec<&str>); 5] = [
            (
                "DROVE-INPUT",
                vec![
                    "-s",
                    s,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
            ),
            (
                "DROVE-INPUT",
                vec![
                    "-s",
                    s,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "NEW",
                    "-j",
                    "REJECT",
                ],
            ),
            ("DROVE-FORWARD", vec!["-s", s, "-d", s, "-j", "REJECT"]),
            ("DROVE-FORWARD", vec!["-s", s, "-j", "ACCEPT"]),
            ("DROVE-FORWARD", vec!["-d", s, "-j", "ACCEPT"]),
        ];
        for chain in ["DROVE-INPUT", "DROVE-FORWARD"] {
            // Exists already when another agent (or an earlier run) made it.
            let _ = iptables(&["-N", chain]);
        }
        for (chain, rule) in &rules {
            let mut check = vec!["-C", *chain];
            check.extend(rule);
            if iptables(&check).is_err() {
                let mut add = vec!["-A", *chain];
                add.extend(rule);
                iptables(&add)?;
            }
        }
        // An earlier drove rejected everything from the task network, INVALID replies included.
        let _ = iptables(&["-D", "DROVE-INPUT", "-s", s, "-j", "REJECT"]);
        for (builtin, chain) in [("INPUT", "DROVE-INPUT"), ("FORWARD", "DROVE-FORWARD")] {
            if iptables(&["-C", builtin, "-j", chain]).is_err() {
                iptables(&["-I", builtin, "1", "-j", chain])?;
            }
        }
        Ok(())
    }

    fn ptp_config(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "type": "ptp",
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": IPAM_DIR,
            }
        })
    }

    fn plugin(
        &self,
        plugin: &str,
        command: &str,
        name: &str,
        ifname: &str,
        config: &Value,
    ) -> Result<String, NetworkError> {
        let netns = Path::new(NETNS_DIR).join(name);
        let bytes = serde_json::to_vec(config).unwrap_or_default();
        run(
            &format!("CNI {plugin} {command} {name}"),
            Command::new(self.plugin_dir.join(plugin))
                .env_clear()
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", name)
                .env("CNI_NETNS", &netns)
                .env("CNI_IFNAME", ifname)
                .env("CNI_PATH", &self.plugin_dir)
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            Some(&bytes),
        )
    }

    /// The `portmap` plugin's configuration for `a`'s mappings, chained after `ptp` (its
    /// result is what `portmap` reads the container's address from).
    fn portmap_config(&self, a: &Attachment) -> Value {
        let prefix_len = self.subnet.split('/').nth(1).unwrap_or("32");
        let mappings: Vec<Value> = a
            .ports
            .iter()
            .map(|p| {
                json!({"hostPort": p.host_port, "containerPort": p.container_port,
                       "protocol": p.protocol.as_str()})
            })
            .collect();
        json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true,
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": a.netns_path()}],
                "ips": [{"address": format!("{}/{prefix_len}", a.ip), "interface": 0}],
            }
        })
    }

    /// Forwards `ports` of the host (every address but loopback) to `a`'s container, with the
    /// CNI `portmap` plugin (DNAT); [`Network::release`] takes them back. On failure nothing
    /// stays mapped.
    pub fn map_ports(&self, a: &mut Attachment, ports: &[PortMap]) -> Result<(), NetworkError> {
        if ports.is_empty() {
            return Ok(());
        }
        a.ports = ports.to_vec();
        let config = self.portmap_config(a);
        if let Err(e) = self.plugin("portmap", "ADD", &a.name, "eth0", &config) {
            let _ = self.plugin("portmap", "DEL", &a.name, "eth0", &config);
            a.ports.clear();
            return Err(e);
        }
        Ok(())
    }

    /// Makes and wires a new namespace.
    fn create(&self) -> Result<Attachment, NetworkError> {
        let name = format!(
            "{}{}",
            self.prefix,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        run(
            "ip netns add",
            Command::new("ip").args(["netns", "add", &name]),
            None,
        )?;
        let wired = (|| {
            let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
            self.plugin("loopback", "ADD", &name, "lo", &lo)?;
            let answer = self.plugin("ptp", "ADD", &name, "eth0", &self.ptp_config())?;
            let ip = serde_json::from_str::<Value>(&answer)
                .ok()
                .and_then(|v| {
                    v["ips"].as_array()?.iter().find_map(|i| {
                        i["address"]
                            .as_str()?
                            .split('/')
                            .next()?
                            .parse::<Ipv4Addr>()
                            .ok()
                    })
                })
                .ok_or_else(|| NetworkError::NoAddress {
                    plugin: "ptp".into(),
                    answer: answer.chars().take(300).collect(),
                })?;
            Ok(ip)
        })();
        match wired {
            Ok(ip) => Ok(Attachment {
                name,
                ip,
                ports: Vec::new(),
            }),
            Err(e) => {
                self.destroy_named(&name);
                Err(e)
            }
        }
    }

    /// Undoes [`Network::create`]: the plugins' DEL (veth, lease, NAT rules), then the
    /// namespace. Best effort: each step runs whatever the one before did.
    pub fn destroy(&self, a: &Attachment) {
        if !a.ports.is_empty() {
            let config = self.portmap_config(a);
            if let Err(e) = self.plugin("portmap", "DEL", &a.name, "eth0", &config) {
                tracing::warn!(netns = a.name, error = %e, "removing a task's port mappings");
            }
        }
        self.destroy_named(&a.name);
    }

    fn destroy_named(&self, name: &str) {
        if let Err(e) = self.plugin("ptp", "DEL", name, "eth0", &self.ptp_config()) {
            tracing::warn!(netns = name, error = %e, "releasing a task network");
        }
        if let Err(e) = run(
            "ip netns del",
            Command::new("ip").args(["netns", "del", name]),
            None,
        ) {
            tracing::warn!(netns = name, error = %e, "removing a network namespace");
        }
    }

    /// A wired namespace for a new container: a ready one from the pool, else a new one.
    pub fn attach(&self) -> Result<Attachment, NetworkError> {
        let pooled = self.pool().ready.pop();
        if let Some(a) = pooled {
            if a.netns_path().exists() {
                return Ok(a);
            }
        }
        self.create()
    }

    /// Releases the namespace of an ended container (its veth, lease and NAT rule with it). It
    /// is not handed to the next container: a fresh address per container keeps connections
    /// the host still tracks to the old one (conntrack, a router's idle keep-alives) from
    /// meeting a stranger. The pool is refilled off the launch path ([`Network::fill`]).
    pub fn release(&self, a: Attachment) {
        if a.name.starts_with(&self.prefix) {
            self.destroy(&a);
        }
    }

    /// Tops the pool up (blocking: each namespace is a few plugin runs).
    pub fn fill(&self) {
        loop {
            {
                let mut pool = self.pool();
                if pool.closed || pool.ready.len() + pool.making >= self.pool_size {
                    return;
                }
                pool.making += 1;
            }
            let made = self.create();
            let mut pool = self.pool();
            pool.making -= 1;
            match made {
                Ok(a) if pool.closed => {
                    drop(pool);
                    self.destroy(&a);
                    return;
                }
                Ok(a) => pool.ready.push(a),
                Err(e) => {
                    tracing::warn!(error = %e, "preparing a task network");
                    return;
                }
            }
        }
    }

    /// This agent's namespaces, in use or not.
    pub fn existing(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }

    /// After a restart: releases every namespace of this agent no recovered container uses.
    pub fn sweep(&self, in_use: &[String]) {
        for name in self.existing() {
            if !in_use.contains(&name) {
                self.destroy_named(&name);
            }
        }
    }

    /// Releases the pool (the agent stops for good).
    pub fn drain(&self) {
        let pooled: Vec<Attachment> = {
            let mut pool = self.pool();
            pool.closed = true;
            std::mem::take(&mut pool.ready)
        };
        for a in pooled {
            self.destroy(&a);
        }
    }
}
