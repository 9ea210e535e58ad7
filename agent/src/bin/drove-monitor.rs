//! `drove-monitor STATUS_FILE PID_FILE RUNTIME [ARG...]`: a container's supervisor, in the
//! manner of Podman's conmon, small enough to sit beside every instance (~1 MB).
//!
//! `drove executor` joins the task's cgroup, opens its output files and execs this. It
//! becomes a child subreaper and runs the OCI runtime's detached `run` (`crun run --detach
//! --pid-file PID_FILE …`): the runtime starts the container and exits, and the container's
//! process (pid in `PID_FILE`) is re-parented here. When that process ends, its status goes to
//! `STATUS_FILE` (JSON, written atomically: temp file + rename), which outlives an agent
//! restart; the monitor then exits with the same status (128+N for signal N). A runtime that
//! fails to start the container is recorded as such, with its exit status.
//!
//! Nothing else lives here: no runtime, no allocator-heavy work, no logging set-up.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Exit statuses of processes that ended before the runtime said which one is the container's
/// (at most this many are kept; only the container's process is re-parented here).
const EARLY: usize = 8;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(status_file), Some(pid_file), Some(runtime)) =
        (args.next(), args.next(), args.next())
    else {
        eprintln!("usage: drove-monitor STATUS_FILE PID_FILE RUNTIME [ARG...]");
        return ExitCode::from(2);
    };
    let status_file = PathBuf::from(status_file);
    let rest: Vec<OsString> = args.collect();
    let end = monitor(&PathBuf::from(pid_file), &runtime, &rest);
    let code = end.exit_code();
    if let Err(e) = record(&status_file, &end) {
        eprintln!("drove-monitor: writing {}: {e}", status_file.display());
    }
    ExitCode::from(code)
}

/// How the container's process (or its start) ended.
enum End {
    Exited {
        pid: i32,
        code: i32,
    },
    Signaled {
        pid: i32,
        signal: i32,
    },
    /// The container never ran (the runtime failed, or the monitor could not start it).
    NotStarted(String),
}

impl End {
    fn of(status: WaitStatus) -> Option<End> {
        match status {
            WaitStatus::Exited(pid, code) => Some(End::Exited {
                pid: pid.as_raw(),
                code,
            }),
            WaitStatus::Signaled(pid, sig, _) => Some(End::Signaled {
                pid: pid.as_raw(),
                signal: sig as i32,
            }),
            _ => None,
        }
    }

    /// The shell's convention, which crun, runc and tini follow.
    fn exit_code(&self) -> u8 {
        let code = match self {
            End::Exited { code, .. } => *code,
            End::Signaled { signal, .. } => 128 + signal,
            End::NotStarted(_) => 125,
        };
        u8::try_from(code).unwrap_or(255)
    }

    /// The agent's `ExitRecord` in JSON. A status of 128+N from the container's init (tini
    /// passes its child's signal on that way) is a death by signal N.
    fn json(&self) -> String {
        match self {
            End::Exited { pid, code } if (129..=128 + 64).contains(code) => {
                format!("{{\"pid\":{pid},\"signal\":{}}}", code - 128)
            }
            End::Exited { pid, code } => format!("{{\"pid\":{pid},\"code\":{code}}}"),
            End::Signaled { pid, signal } => format!("{{\"pid\":{pid},\"signal\":{signal}}}"),
            End::NotStarted(why) => {
                let why: String = why
                    .chars()
                    .map(|c| {
                        if c == '"' || c == '\\' || c.is_control() {
                            ' '
                        } else {
                            c
                        }
                    })
                    .collect();
                format!("{{\"error\":\"{why}\"}}")
            }
        }
    }
}

fn monitor(pid_file: &Path, runtime: &OsString, args: &[OsString]) -> End {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return End::NotStarted(format!("becoming a subreaper: {e}"));
    }
    let spawned = match Command::new(runtime).args(args).spawn() {
        Ok(child) => Pid::from_raw(child.id() as i32),
        Err(e) => return End::NotStarted(format!("running {runtime:?}: {e}")),
    };
    let name = Path::new(runtime)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "the runtime".into());
    let mut container: Option<Pid> = None;
    let mut early: Vec<WaitStatus> = Vec::new();
    loop {
        let status = match waitpid(None::<Pid>, None) {
            Ok(s) => s,
            Err(Errno::EINTR) => continue,
            // No child left without the container's process having been seen to end.
            Err(e) => {
                return End::NotStarted(format!(
                    "the container's process was not seen to end ({e})"
                ))
            }
        };
        let Some(pid) = status.pid() else { continue };
        if pid == spawned {
            match status {
                WaitStatus::Exited(_, 0) => {}
                WaitStatus::Exited(_, code) => {
                    return End::NotStarted(format!("{name} exited with status {code}"))
                }
                _ => return End::NotStarted(format!("{name} ended: {status:?}")),
            }
            let Some(c) = read_pid(pid_file) else {
                return End::NotStarted(format!(
                    "{name} wrote no container pid to {}",
                    pid_file.display()
                ));
            };
            if let Some(s) = early.iter().find(|s| s.pid() == Some(c)) {
                return End::of(*s).unwrap_or(End::NotStarted("unknown status".into()));
            }
            container = Some(c);
        } else if Some(pid) == container {
            if let Some(end) = End::of(status) {
                return end;
            }
        } else if container.is_none() && early.len() < EARLY {
            early.push(status);
        }
    }
}

fn read_pid(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().map(Pid::from_raw)
}

/// Writes the record next to its final name, then renames it there.
fn record(path: &Path, end: &End) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(end.json().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
