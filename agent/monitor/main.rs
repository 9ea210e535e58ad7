//! `drove-monitor STATUS_FILE PID_FILE RUNTIME [ARG...]`: a container's supervisor, in the
//! manner of Podman's conmon, small enough to sit beside every instance (~1 MB RSS).
//!
//! `drove executor` joins the task's cgroup, opens its output files and execs this. It
//! becomes a child subreaper and runs the OCI runtime's detached `run` (`crun run --detach
//! --pid-file PID_FILE …`): the runtime starts the container and exits, and the container's
//! process (pid in `PID_FILE`) is re-parented here. When that process ends, its status goes to
//! `STATUS_FILE` (the agent's `ExitRecord` in JSON, written atomically: temp file + rename),
//! which outlives an agent restart; the monitor then exits with the same status (128+N for
//! signal N). A runtime that fails to start the container is recorded as such.
//!
//! Built by `agent/build.rs` on its own (std only, statically linked, `panic=abort`) and
//! embedded in the agent, which writes it out: linked dynamically, the C library's mapped
//! pages alone make ~1.7 MB of RSS. That leaves two system calls std has no wrapper for
//! (`prctl(PR_SET_CHILD_SUBREAPER)`, `waitpid(-1)`): the only unsafe code, below.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod sys {
    //! The two calls, declared against the C library std already links.
    use std::os::raw::{c_int, c_ulong};

    extern "C" {
        fn prctl(
            option: c_int,
            arg2: c_ulong,
            arg3: c_ulong,
            arg4: c_ulong,
            arg5: c_ulong,
        ) -> c_int;
        fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    }

    const PR_SET_CHILD_SUBREAPER: c_int = 36;

    /// Orphaned descendants are re-parented to this process rather than to init.
    pub fn become_subreaper() -> std::io::Result<()> {
        // SAFETY: prctl with integer arguments only; no memory is passed.
        let rc = unsafe { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Waits for any child: its pid and raw wait status.
    pub fn wait_any() -> std::io::Result<(i32, i32)> {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid, exclusively borrowed c_int for the call's duration.
        let pid = unsafe { waitpid(-1, &mut status, 0) };
        if pid < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok((pid, status))
        }
    }
}

/// How a process ended, from its raw wait status (`WIFEXITED`/`WIFSIGNALED` by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Exited(i32),
    Signaled(i32),
    Other,
}

impl Status {
    fn of(raw: i32) -> Status {
        let sig = raw & 0x7f;
        if sig == 0 {
            Status::Exited((raw >> 8) & 0xff)
        } else if sig != 0x7f {
            Status::Signaled(sig)
        } else {
            Status::Other
        }
    }
}

/// How the container's process (or its start) ended.
enum End {
    Ended {
        pid: i32,
        status: Status,
    },
    /// The container never ran (the runtime failed, or the monitor could not start it).
    NotStarted(String),
}

impl End {
    /// The shell's convention, which crun, runc and tini follow.
    fn exit_code(&self) -> u8 {
        let code = match self {
            End::Ended {
                status: Status::Exited(c),
                ..
            } => *c,
            End::Ended {
                status: Status::Signaled(s),
                ..
            } => 128 + s,
            _ => 125,
        };
        u8::try_from(code).unwrap_or(255)
    }

    /// The agent's `ExitRecord` in JSON. A status of 128+N from the container's init (tini
    /// passes its child's death by signal on that way) is a death by signal N.
    fn json(&self) -> String {
        match self {
            End::Ended {
                pid,
                status: Status::Exited(c),
            } if (129..=128 + 64).contains(c) => {
                format!("{{\"pid\":{pid},\"signal\":{}}}", c - 128)
            }
            End::Ended {
                pid,
                status: Status::Exited(c),
            } => format!("{{\"pid\":{pid},\"code\":{c}}}"),
            End::Ended {
                pid,
                status: Status::Signaled(s),
            } => format!("{{\"pid\":{pid},\"signal\":{s}}}"),
            End::Ended { pid, .. } => format!("{{\"pid\":{pid}}}"),
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
    let end = monitor(Path::new(&pid_file), &runtime, &rest);
    if let Err(e) = record(&status_file, &end) {
        eprintln!("drove-monitor: writing {}: {e}", status_file.display());
    }
    ExitCode::from(end.exit_code())
}

fn monitor(pid_file: &Path, runtime: &OsString, args: &[OsString]) -> End {
    if let Err(e) = sys::become_subreaper() {
        return End::NotStarted(format!("becoming a subreaper: {e}"));
    }
    let spawned = match Command::new(runtime).args(args).spawn() {
        Ok(child) => child.id() as i32,
        Err(e) => return End::NotStarted(format!("running {runtime:?}: {e}")),
    };
    let name = Path::new(runtime)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "the runtime".into());
    let mut container: Option<i32> = None;
    let mut early: Vec<(i32, Status)> = Vec::new();
    loop {
        let (pid, status) = match sys::wait_any() {
            Ok((pid, raw)) => (pid, Status::of(raw)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // No child left without the container's process having been seen to end.
            Err(e) => {
                return End::NotStarted(format!(
                    "the container's process was not seen to end ({e})"
                ))
            }
        };
        if pid == spawned {
            match status {
                Status::Exited(0) => {}
                Status::Exited(code) => {
                    return End::NotStarted(format!("{name} exited with status {code}"))
                }
                other => return End::NotStarted(format!("{name} ended: {other:?}")),
            }
            let Some(c) = read_pid(pid_file) else {
                return End::NotStarted(format!(
                    "{name} wrote no container pid to {}",
                    pid_file.display()
                ));
            };
            if let Some((_, status)) = early.iter().find(|(p, _)| *p == c) {
                return End::Ended {
                    pid: c,
                    status: *status,
                };
            }
            container = Some(c);
        } else if Some(pid) == container {
            return End::Ended { pid, status };
        } else if container.is_none() && early.len() < EARLY {
            early.push((pid, status));
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
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
