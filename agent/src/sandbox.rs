//! Task sandboxes (`<work-dir>/sandboxes/<framework>/<task>/<run-uuid>`) and task users.
//!
//! User policy, when the agent runs as root: every task runs under a uid the agent allocates
//! from `--task-uids` (no passwd entry needed), one per framework and task user name
//! (`CommandInfo.user`, else `FrameworkInfo.user`, else `task`), so two apps a framework names
//! differently never share a uid; gid = uid, no supplementary groups, never root. The mapping is
//! kept in `<work-dir>/task-uids.json`, so a restarted agent gives the same names the same uids.
//! An agent not running as root cannot switch users and runs tasks as itself.
//!
//! Sandboxes: the framework and task directories are root's with mode 0711 (reachable, not
//! listable); a run's directory is created root's with mode 0700, filled by the fetcher, and
//! only then handed to the task's uid ([`hand_over`]), so nothing else writes into it while the
//! agent works there and no other task's uid can read it afterwards.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::unistd::{chown, Gid, Uid, User};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "invalid {what} {value:?}: ids must be non-empty, without '/', NUL, or a '.'/'..' name"
    )]
    InvalidId { what: &'static str, value: String },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("changing the owner of {path}: {source}")]
    Chown { path: PathBuf, source: nix::Error },
    #[error("--task-uids {0:?}: expected FIRST-LAST, e.g. 600000-665535, above 0")]
    BadRange(String),
    #[error("no free uid left in --task-uids {first}-{last} for {key:?}")]
    Exhausted { first: u32, last: u32, key: String },
    #[error("{path}: {message}")]
    UidTable { path: PathBuf, message: String },
    #[error(
        "task users cannot reach the work dir: {dir} (mode {mode:o}) is not traversable by \
         others; `chmod o+x {dir}` or choose a --work-dir under traversable directories"
    )]
    Unreachable { dir: PathBuf, mode: u32 },
}

/// The user a task runs as. `switch` is false when the agent cannot (or need not) change users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub switch: bool,
}

impl TaskUser {
    /// The user the agent itself runs as (no switching).
    pub fn current() -> TaskUser {
        let uid = Uid::effective();
        let user = User::from_uid(uid).ok().flatten();
        TaskUser {
            name: user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| uid.to_string()),
            uid: uid.as_raw(),
            gid: Gid::effective().as_raw(),
            home: user.map(|u| u.dir).unwrap_or_else(|| PathBuf::from("/")),
            switch: false,
        }
    }
}

/// The default `--task-uids`: 65,536 ids inside the range systemd sets aside for containers.
pub const DEFAULT_TASK_UIDS: &str = "600000-665535";

/// Allocates task uids per (framework, user name); see the module docs.
#[derive(Debug)]
pub struct TaskUids {
    first: u32,
    last: u32,
    path: PathBuf,
    /// `<framework id>/<user name>` → uid.
    table: Mutex<BTreeMap<String, u32>>,
    /// False when the agent is not root: every task runs as the agent's own user.
    switch: bool,
}

impl TaskUids {
    /// Opens (or starts) the table at `<work_dir>/task-uids.json` for the range `spec`.
    pub fn open(work_dir: &Path, spec: &str) -> Result<TaskUids, SandboxError> {
        let bad = || SandboxError::BadRange(spec.to_string());
        let (a, b) = spec.split_once('-').ok_or_else(bad)?;
        let first: u32 = a.trim().parse().map_err(|_| bad())?;
        let last: u32 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        let path = work_dir.join("task-uids.json");
        let table = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SandboxError::UidTable {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(SandboxError::UidTable {
                    path,
                    message: e.to_string(),
                })
            }
        };
        Ok(TaskUids {
            first,
            last,
            path,
            table: Mutex::new(table),
            switch: Uid::effective().is_root(),
        })
    }

    /// The user for a task of `framework_id` asking for `requested` names (first non-empty
    /// wins); allocates and records a uid on first use.
    pub fn user_for(
        &self,
        framework_id: &str,
        requested: &[Option<&str>],
        home: &Path,
    ) -> Result<TaskUser, SandboxError> {
        if !self.switch {
            return Ok(TaskUser::current());
        }
        let name = requested
            .iter()
            .flatten()
            .map(|n| n.trim())
            .find(|n| !n.is_empty())
            .unwrap_or("task")
            .to_string();
        let key = format!("{framework_id}/{name}");
        let mut table = match self.table.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        let uid = match table.get(&key) {
            Some(uid) => *uid,
            None => {
                let used: std::collections::HashSet<u32> = table.values().copied().collect();
                let uid = (self.first..=self.last)
                    .find(|u| !used.contains(u))
                    .ok_or_else(|| SandboxError::Exhausted {
                        first: self.first,
                        last: self.last,
                        key: key.clone(),
                    })?;
                table.insert(key.clone(), uid);
                let bytes =
                    serde_json::to_vec_pretty(&*table).map_err(|e| SandboxError::UidTable {
                        path: self.path.clone(),
                        message: e.to_string(),
                    })?;
                if let Err(e) = crate::executor::write_atomic(&self.path, &bytes) {
                    table.remove(&key);
                    return Err(SandboxError::UidTable {
                        path: self.path.clone(),
                        message: e.to_string(),
                    });
                }
                tracing::info!(key = %key, uid, "task uid allocated");
                uid
            }
        };
        Ok(TaskUser {
            name,
            uid,
            gid: uid,
            home: home.to_path_buf(),
            switch: true,
        })
    }
}

/// Checks that a task's uid (an "other" to every directory) can reach `work_dir`: every
/// directory from `/` down must be traversable by others. Only meaningful when root.
pub fn check_reachable(work_dir: &Path) -> Result<(), SandboxError> {
    let real = fs::canonicalize(work_dir).map_err(|source| SandboxError::Create {
        path: work_dir.to_path_buf(),
        source,
    })?;
    for dir in real.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let meta = fs::metadata(dir).map_err(|source| SandboxError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 && dir != real {
            return Err(SandboxError::Unreachable {
                dir: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// Rejects ids that cannot safely be a path component.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), SandboxError> {
    if value.is_empty()
        || value == "."
        || value == ".."
        || value.contains('/')
        || value.contains('\0')
        || value.len() > 255
    {
        return Err(SandboxError::InvalidId {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<(), SandboxError> {
    let err = |source| SandboxError::Create {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(path).map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(())
}

/// Makes sure others can traverse `dir` (so an unprivileged task can reach its sandbox).
pub fn ensure_traversable(dir: &Path) -> Result<(), SandboxError> {
    let err = |source| SandboxError::Create {
        path: dir.to_path_buf(),
        source,
    };
    let meta = fs::metadata(dir).map_err(err)?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode((mode | 0o011) & 0o7777))
            .map_err(err)?;
    }
    Ok(())
}

/// Creates a fresh sandbox for one run of a task: root's, mode 0700, until [`hand_over`].
pub fn create(
    work_dir: &Path,
    framework_id: &str,
    task_id: &str,
    run: &str,
) -> Result<PathBuf, SandboxError> {
    validate_id("framework id", framework_id)?;
    validate_id("task id", task_id)?;
    validate_id("run id", run)?;
    ensure_traversable(work_dir)?;
    let base = work_dir.join("sandboxes");
    mkdir(&base, 0o711)?;
    let fw = base.join(framework_id);
    mkdir(&fw, 0o711)?;
    let task = fw.join(task_id);
    mkdir(&task, 0o711)?;
    let sandbox = task.join(run);
    mkdir(&sandbox, 0o700)?;
    Ok(sandbox)
}

/// Hands a filled sandbox to its task's user: everything in it becomes theirs (links are
/// changed themselves, never followed); the sandbox stays mode 0700.
pub fn hand_over(sandbox: &Path, user: &TaskUser) -> Result<(), SandboxError> {
    chown_recursive(sandbox, user)
}

/// The most recently created sandbox of `task_id` under any framework (for logs of tasks the
/// agent no longer tracks).
pub fn latest_run(work_dir: &Path, task_id: &str) -> Option<PathBuf> {
    validate_id("task id", task_id).ok()?;
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for fw in fs::read_dir(work_dir.join("sandboxes")).ok()?.flatten() {
        let Ok(runs) = fs::read_dir(fw.path().join(task_id)) else {
            continue;
        };
        for run in runs.flatten() {
            let Ok(meta) = run.metadata() else { continue };
            let t = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if meta.is_dir() && best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, run.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// Changes the owner of `path` to the task user (no-op when not switching users).
pub fn chown_to(path: &Path, user: &TaskUser) -> Result<(), SandboxError> {
    if !user.switch {
        return Ok(());
    }
    chown(
        path,
        Some(Uid::from_raw(user.uid)),
        Some(Gid::from_raw(user.gid)),
    )
    .map_err(|source| SandboxError::Chown {
        path: path.to_path_buf(),
        source,
    })
}

/// Recursively hands `path` to the task user (symlinks themselves are not followed).
pub fn chown_recursive(path: &Path, user: &TaskUser) -> Result<(), SandboxError> {
    if !user.switch {
        return Ok(());
    }
    let meta = fs::symlink_metadata(path).map_err(|source| SandboxError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(|source| {
            SandboxError::Create {
                path: path.to_path_buf(),
                source,
            }
        });
    }
    chown_to(path, user)?;
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|source| SandboxError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            chown_recursive(&entry.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("task id", "web.1-abc").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(validate_id("task id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uids_are_allocated_per_framework_and_user_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let uids = TaskUids::open(dir.path(), "700000-700003").unwrap();
        if !uids.switch {
            return; // not root: tasks run as the agent's user
        }
        let a = uids.user_for("fw", &[Some("app-a"), None], home).unwrap();
        let a2 = uids.user_for("fw", &[None, Some(" app-a ")], home).unwrap();
        let b = uids.user_for("fw", &[Some("app-b")], home).unwrap();
        let other_fw = uids.user_for("fw2", &[Some("app-a")], home).unwrap();
        let root = uids.user_for("fw", &[Some("root")], home).unwrap();
        assert_eq!(a.uid, a2.uid);
        assert_ne!(a.uid, b.uid);
        assert_ne!(a.uid, other_fw.uid);
        assert_ne!(root.uid, 0);
        assert_eq!(a.gid, a.uid);
        // The range (four) is exhausted; a restart keeps the table.
        drop(uids);
        let uids = TaskUids::open(dir.path(), "700000-700003").unwrap();
        assert_eq!(
            uids.user_for("fw", &[Some("app-b")], home).unwrap().uid,
            b.uid
        );
        let err = uids.user_for("fw", &[Some("more")], home).unwrap_err();
        assert!(err.to_string().contains("no free uid"), "{err}");
        assert!(TaskUids::open(dir.path(), "0-10").is_err());
        assert!(TaskUids::open(dir.path(), "10").is_err());
    }

    #[test]
    fn unreachable_work_dirs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        fs::create_dir_all(&inner).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_reachable(&inner).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        if check_reachable(Path::new("/tmp")).is_ok() {
            check_reachable(&inner).unwrap();
        }
    }

    #[test]
    fn sandbox_is_root_only_until_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let uids = TaskUids::open(dir.path(), DEFAULT_TASK_UIDS).unwrap();
        let sb = create(dir.path(), "fw", "task", "run1").unwrap();
        assert!(sb.ends_with("sandboxes/fw/task/run1"));
        assert_eq!(
            fs::metadata(&sb).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let user = uids.user_for("fw", &[Some("app")], &sb).unwrap();
        fs::write(sb.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sb.join("l")).unwrap();
        hand_over(&sb, &user).unwrap();
        assert_eq!(fs::metadata(&sb).unwrap().uid(), user.uid);
        assert_eq!(fs::metadata(sb.join("f")).unwrap().uid(), user.uid);
        // The link itself changed hands, not what it points at.
        assert_eq!(fs::metadata("/etc/passwd").unwrap().uid(), 0);
        assert!(create(dir.path(), "fw", "../x", "r").is_err());
    }
}
