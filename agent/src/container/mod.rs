//! Containers: every task in its own mount, PID, IPC, UTS, network and cgroup namespaces, on a
//! read-only root built from the host's runtime, run by a standard OCI runtime (crun by
//! default; runc, youki or any other by path).
//!
//! The agent writes a bundle per task ([`bundle`]: `config.json` typed with `oci-spec`, an
//! empty root directory and a generated `/etc`), wires a network namespace with the standard
//! CNI plugins ([`network`]), then the supervisor joins the task's cgroup and *becomes*
//! `drove-monitor` (exec, same pid), which runs the runtime's detached `run` and, as child
//! subreaper, adopts the container's process once the runtime exits: it records that
//! process's exit status in the container's `exit_status.json` (read by the agent, also after
//! an agent restart) and is all that stays beside the instance (1.3 MB RSS, static; crun's
//! own monitor is 3.3 MB). The container's pid 1 is `tini` when the host has
//! it (Docker's `--init`): signals reach the task, zombies are reaped.

pub mod bundle;
pub mod network;
pub mod seccomp;

use std::path::{Path, PathBuf};

pub use bundle::{BundleError, BundleSpec};
pub use network::{Attachment, Network, NetworkError};

/// Where the host's `tini` is looked for (it runs as the container's pid 1).
pub const TINI: &str = "/usr/bin/tini";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("--oci-runtime {0:?}: no such runtime on this host (install it, e.g. `apt install crun`, or give its path)")]
    NoRuntime(String),
    #[error("containers need the agent to run as root (or use --isolation cgroups)")]
    NotRoot,
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("writing the container monitor to {path}: {source}")]
    InstallMonitor {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The container supervisor, `drove-monitor` (`agent/monitor/main.rs`), as `build.rs` built it:
/// static, ~1.3 MB.
const MONITOR_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/drove-monitor"));

/// Writes the container monitor into `dir` (the agent's root-only `meta`), mode 0700, unless
/// the same bytes are there already; its path.
pub fn install_monitor(dir: &Path) -> Result<PathBuf, ContainerError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("drove-monitor");
    let err = |source| ContainerError::InstallMonitor {
        path: path.clone(),
        source,
    };
    if std::fs::read(&path).is_ok_and(|b| b == MONITOR_BINARY) {
        return Ok(path);
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(MONITOR_BINARY).map_err(err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(path)
}

/// Which OCI runtime, and how it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Crun,
    Runc,
    /// youki or any other runtime that follows runc's command line.
    Other,
}

/// The OCI runtime the agent runs containers with.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub kind: RuntimeKind,
    pub path: PathBuf,
}

impl Runtime {
    /// `crun`, `runc`, `youki` (looked up in the usual bin directories) or a path.
    pub fn resolve(name: &str) -> Result<Runtime, ContainerError> {
        let path = if name.contains('/') {
            PathBuf::from(name)
        } else {
            [
                "/usr/bin",
                "/usr/sbin",
                "/usr/local/bin",
                "/usr/local/sbin",
                "/bin",
                "/sbin",
            ]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| ContainerError::NoRuntime(name.to_string()))?
        };
        if !path.is_file() {
            return Err(ContainerError::NoRuntime(name.to_string()));
        }
        let kind = match path.file_name().and_then(|n| n.to_str()) {
            Some("crun") => RuntimeKind::Crun,
            Some("runc") => RuntimeKind::Runc,
            _ => RuntimeKind::Other,
        };
        Ok(Runtime { kind, path })
    }

    /// The runtime's name for logs and timelines.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("runtime")
            .to_string()
    }

    /// Arguments of a detached `run` of the bundle in `bundle`: the runtime exits once the
    /// container runs, leaving it to the monitor ([`install_monitor`]). crun leaves cgroups alone (the supervisor
    /// already joined the task's); runc and the others are given a child of the task's cgroup
    /// (`cgroups_path`), which their `delete` removes.
    pub fn run_args(&self, bundle: &Path, id: &str, pid_file: &Path) -> Vec<String> {
        let mut args = Vec::new();
        if self.kind == RuntimeKind::Crun {
            args.push("--cgroup-manager=disabled".to_string());
        }
        args.extend([
            "run".to_string(),
            "--detach".to_string(),
            "--bundle".to_string(),
            bundle.display().to_string(),
            "--pid-file".to_string(),
            pid_file.display().to_string(),
            id.to_string(),
        ]);
        args
    }

    /// Whether the bundle names a cgroup for the runtime to put the container in.
    pub fn wants_cgroups_path(&self) -> bool {
        self.kind != RuntimeKind::Crun
    }

    /// Removes what the runtime keeps of an ended container (its state directory; runc's
    /// cgroup); nothing when it is already gone.
    pub fn delete(&self, id: &str) {
        let out = std::process::Command::new(&self.path)
            .args(["delete", "--force", id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(e) = out {
            tracing::debug!(error = %e, id, "runtime delete");
        }
    }
}

/// The agent's container settings (`--isolation container`).
#[derive(Debug)]
pub struct Containers {
    pub runtime: Runtime,
    pub network: Network,
    /// Size bound of each task's private `/tmp` (tmpfs, counted in its memory).
    pub tmp_bytes: u64,
    /// Whether tasks may ask for the host's network (a Mesos `ContainerInfo` without network
    /// infos, or one named `host`).
    pub allow_host_network: bool,
    /// The container's pid 1, when the host has one.
    pub init: Option<PathBuf>,
    /// The seccomp filter compiled once (crun only; see [`seccomp::precompile`]).
    pub seccomp_bpf: Option<String>,
    /// The container supervisor ([`install_monitor`]).
    pub monitor: PathBuf,
}

/// The container id the runtime knows a task's container by.
pub fn runtime_id(container_id: &str) -> String {
    format!("drove-{container_id}")
}

/// A monitor's (or runtime's) exit status of 128+N means the container's process died of
/// signal N (the shell's convention, which crun, runc, tini and `drove-monitor` follow).
pub fn split_status(code: i32) -> (Option<i32>, Option<i32>) {
    if (129..=128 + 64).contains(&code) {
        (None, Some(code - 128))
    } else {
        (Some(code), None)
    }
}
