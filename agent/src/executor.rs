//! The per-task supervisor (`drove executor --spec FILE`), Mesos's command-executor model.
//!
//! The agent spawns it in its own process group. Still root, it joins the task's cgroups by
//! writing its pid to each `cgroup.procs`, then spawns the real command in a new process group
//! (pgid = the task's pid) with uid/gid dropped, stdin from /dev/null and stdout/stderr appended
//! straight to the sandbox files (so output survives an agent restart). It writes the task's pid
//! to `pid_file` and, once the command ends, its exit code or signal to `status_file`
//! (atomically: temp file + rename), then exits. The agent watches the supervisor's pid, which
//! also works after the agent restarted and is no longer the supervisor's parent.
//!
//! For a container (`--isolation container`) it only joins the cgroup, opens the streams and
//! then execs `drove-monitor` ([`ExecutorSpec::exec`]), which runs the OCI runtime's detached
//! `run` and supervises the container (~0.1 MB of its own).

use std::fs;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde::{Deserialize, Serialize};

/// `drove executor` arguments (hidden subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// The launch spec the agent wrote (JSON [`ExecutorSpec`]).
    #[arg(long)]
    pub spec: PathBuf,
}

/// Everything the supervisor needs; written by the agent next to the container's other files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorSpec {
    pub program: String,
    /// `argv[0]` when it differs from `program`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg0: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// The complete environment of the task (nothing is inherited).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// `cgroup.procs` files to join before spawning the command.
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    pub pid_file: PathBuf,
    pub status_file: PathBuf,
    /// Become the command (exec, same pid) instead of supervising it: for `drove-monitor`,
    /// which then is the supervisor (its runtime writes the task's pid file, it writes the
    /// exit status).
    #[serde(default)]
    pub exec: bool,
}

/// How the command ended, as the supervisor records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExitRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The command could not be started (or the supervisor failed before it could).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExitRecord {
    pub fn success(&self) -> bool {
        self.error.is_none() && self.code == Some(0)
    }

    /// A human description: `exited with status 3`, `terminated by signal SIGKILL`.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("failed to start: {e}");
        }
        if let Some(s) = self.signal {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {s}"));
            return format!("terminated by signal {name}");
        }
        match self.code {
            Some(c) => format!("exited with status {c}"),
            None => "ended without a recorded status".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("reading spec {path}: {source}")]
    ReadSpec {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing spec {path}: {source}")]
    ParseSpec {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("joining cgroup {path}: {source}")]
    JoinCgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening {path}: {source}")]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spawning {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for the task: {0}")]
    Wait(std::io::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads a supervisor's exit record, if it wrote one.
pub fn read_exit_record(path: &Path) -> Option<ExitRecord> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads the task pid a supervisor recorded.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Entry point of `drove executor`.
pub fn run_executor(args: ExecutorArgs) -> ExitCode {
    let spec = match load_spec(&args.spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("drove executor: {e}");
            return ExitCode::from(2);
        }
    };
    match supervise(&spec) {
        Ok(record) => {
            if let Err(e) = write_record(&spec.status_file, &record) {
                eprintln!("drove executor: {e}");
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drove executor: {e}");
            let record = ExitRecord {
                error: Some(e.to_string()),
                ..Default::default()
            };
            if let Err(e) = write_record(&spec.status_file, &record) {
                eprintln!("drove executor: {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn load_spec(path: &Path) -> Result<ExecutorSpec, ExecutorError> {
    let bytes = fs::read(path).map_err(|source| ExecutorError::ReadSpec {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ExecutorError::ParseSpec {
        path: path.to_path_buf(),
        source,
    })
}

fn write_record(path: &Path, record: &ExitRecord) -> Result<(), ExecutorError> {
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    write_atomic(path, &bytes).map_err(|source| ExecutorError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn supervise(spec: &ExecutorSpec) -> Result<ExitRecord, ExecutorError> {
    let me = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        fs::write(procs, &me).map_err(|source| ExecutorError::JoinCgroup {
            path: procs.clone(),
            source,
        })?;
    }
    let open = |path: &Path| {
        crate::logs::open_for_append(path).map_err(|source| ExecutorError::OpenLog {
            path: path.to_path_buf(),
            source,
        })
    };
    let stdout = open(&spec.stdout)?;
    let stderr = open(&spec.stderr)?;

    // The agent runs with umask 0077 (its state is private); a task gets the usual 0022, as
    // under Mesos and Docker (its sandbox is 0700 either way).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let mut cmd = Command::new(&spec.program);
    if let Some(a) = &spec.arg0 {
        cmd.arg0(a);
    }
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    // std drops supplementary groups (setgroups(0)) when a root parent sets a uid.
    if let Some(gid) = spec.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = spec.uid {
        cmd.uid(uid);
    }
    if spec.exec {
        // Only returns on failure.
        let source = cmd.exec();
        return Err(ExecutorError::Spawn {
            program: spec.program.clone(),
            source,
        });
    }
    let mut child = cmd.spawn().map_err(|source| ExecutorError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let pid = child.id();
    if let Err(e) = write_atomic(&spec.pid_file, pid.to_string().as_bytes()) {
        eprintln!("drove executor: writing {}: {e}", spec.pid_file.display());
    }
    let status = child.wait().map_err(ExecutorError::Wait)?;
    Ok(ExitRecord {
        pid: Some(pid),
        code: status.code(),
        signal: status.signal(),
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exits() {
        let ok = ExitRecord {
            code: Some(0),
            ..Default::default()
        };
        assert!(ok.success());
        let sig = ExitRecord {
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(sig.describe(), "terminated by signal SIGKILL");
        let code = ExitRecord {
            code: Some(3),
            ..Default::default()
        };
        assert_eq!(code.describe(), "exited with status 3");
    }

    #[test]
    fn supervises_a_command_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ExecutorSpec {
            program: "/bin/sh".into(),
            arg0: None,
            args: vec!["-c".into(), "echo out; echo err >&2; exit 7".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: dir.path().to_path_buf(),
            uid: None,
            gid: None,
            stdout: dir.path().join("stdout"),
            stderr: dir.path().join("stderr"),
            cgroup_procs: vec![],
            pid_file: dir.path().join("pid"),
            status_file: dir.path().join("status"),
            exec: false,
        };
        let record = supervise(&spec).unwrap();
        assert_eq!(record.code, Some(7));
        assert_eq!(fs::read_to_string(&spec.stdout).unwrap(), "out\n");
        assert_eq!(fs::read_to_string(&spec.stderr).unwrap(), "err\n");
        assert_eq!(read_pid_file(&spec.pid_file), record.pid);
    }
}
