//! Task sandboxes (`<work-dir>/sandboxes/<framework>/<task>/<run-uuid>`) and the task user.
//!
//! User policy: `CommandInfo.user`, else `FrameworkInfo.user`, is honoured when that user
//! exists on this machine and is not root (uid 0); otherwise the task runs as `--task-user`
//! (default `nobody` when the agent is root). An agent not running as root cannot switch users
//! and runs tasks as itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("looking up user {name:?}: {source}")]
    Lookup { name: String, source: nix::Error },
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
    pub fn lookup(name: &str) -> Result<TaskUser, SandboxError> {
        let user = User::from_name(name)
            .map_err(|source| SandboxError::Lookup {
                name: name.to_string(),
                source,
            })?
            .ok_or_else(|| SandboxError::UnknownUser(name.to_string()))?;
        Ok(TaskUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
            switch: Uid::effective().is_root(),
        })
    }

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

    /// The default `--task-user`: `nobody` when root, else the current user.
    pub fn default_name() -> String {
        if Uid::effective().is_root() {
            "nobody".into()
        } else {
            TaskUser::current().name
        }
    }
}

/// Picks the task's user following the policy in the module docs.
pub fn resolve_user(requested: &[Option<&str>], default: &TaskUser) -> TaskUser {
    if !Uid::effective().is_root() {
        return default.clone();
    }
    for name in requested.iter().flatten() {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        match TaskUser::lookup(name) {
            Ok(u) if u.uid != 0 => return u,
            Ok(_) => tracing::debug!(
                user = name,
                "not running a task as root; using the task user"
            ),
            Err(e) => tracing::debug!(user = name, error = %e, "requested user unusable"),
        }
    }
    default.clone()
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

/// Creates a fresh sandbox for one run of a task, owned by the task user.
pub fn create(
    work_dir: &Path,
    framework_id: &str,
    task_id: &str,
    run: &str,
    user: &TaskUser,
) -> Result<PathBuf, SandboxError> {
    validate_id("framework id", framework_id)?;
    validate_id("task id", task_id)?;
    ensure_traversable(work_dir)?;
    let base = work_dir.join("sandboxes");
    mkdir(&base, 0o755)?;
    let fw = base.join(framework_id);
    mkdir(&fw, 0o755)?;
    let task = fw.join(task_id);
    mkdir(&task, 0o755)?;
    let sandbox = task.join(run);
    mkdir(&sandbox, 0o755)?;
    chown_to(&sandbox, user)?;
    Ok(sandbox)
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

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("task id", "web.1-abc").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(validate_id("task id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn root_is_never_honoured() {
        let default = TaskUser::current();
        let u = resolve_user(&[Some("root")], &default);
        assert_eq!(u, default);
        let u = resolve_user(&[Some("no-such-user-drove"), None], &default);
        assert_eq!(u, default);
    }

    #[test]
    fn sandbox_is_created_owned_by_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let user = TaskUser::lookup(&TaskUser::default_name()).unwrap();
        let sb = create(dir.path(), "fw", "task", "run1", &user).unwrap();
        assert!(sb.ends_with("sandboxes/fw/task/run1"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&sb).unwrap().uid(), user.uid);
        assert!(create(dir.path(), "fw", "../x", "r", &user).is_err());
    }
}
