//! State only root may read: every component keeps its databases, tokens, repositories and
//! caches in directories of mode 0700 (files 0600), so a task (another uid) that walks up from
//! its sandbox reads none of it, wherever the data dir sits. The binary also sets a umask of
//! 0077 at start-up, so whatever a component creates later is private too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A state directory could not be made private.
#[derive(Debug, thiserror::Error)]
#[error("making {path} private: {source}")]
pub struct StateDirError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A mode that was too open, and what it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub path: PathBuf,
    pub was: u32,
    pub now: u32,
}

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was mode {:04o}, now {:04o}",
            self.path.display(),
            self.was,
            self.now
        )
    }
}

/// What to log of `fixed`: each change, then (when there was any) that whatever secret those
/// paths held may have been read while they were open, and should be replaced.
pub fn warnings(fixed: &[Fixed]) -> Vec<String> {
    let mut out: Vec<String> = fixed
        .iter()
        .map(|f| format!("state others could read made private: {f}"))
        .collect();
    if !fixed.is_empty() {
        out.push(
            "whatever secrets that state held were readable until now: rotate them (the \
             cluster secret, the admin and router tokens, apps' deploy tokens and webhook \
             secrets, config vars)"
                .to_string(),
        );
    }
    out
}

/// Creates `dir` (and its missing parents) or takes the existing one, and makes it and the
/// entries directly inside it private: directories 0700, files keep only their owner's bits
/// (links are left alone, never followed). Returns what had to change in what was already
/// there, for the caller's log (an install made before drove set these modes).
pub fn make_private(dir: &Path) -> Result<Vec<Fixed>, StateDirError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateDirError { path, source }
    };
    let existed = fs::symlink_metadata(dir).is_ok();
    fs::create_dir_all(dir).map_err(err(dir))?;
    let mut fixed = Vec::new();
    restrict(dir, &mut fixed)?;
    for entry in fs::read_dir(dir).map_err(err(dir))? {
        let entry = entry.map_err(err(dir))?;
        restrict(&entry.path(), &mut fixed)?;
    }
    if !existed {
        fixed.clear();
    }
    Ok(fixed)
}

/// Clears `path`'s group, other and special bits (a directory: mode 0700); links and other
/// kinds of file are left alone.
fn restrict(path: &Path, fixed: &mut Vec<Fixed>) -> Result<(), StateDirError> {
    let meta = fs::symlink_metadata(path).map_err(|source| StateDirError {
        path: path.to_path_buf(),
        source,
    })?;
    let was = meta.permissions().mode() & 0o7777;
    let now = if meta.is_dir() {
        0o700
    } else if meta.is_file() {
        was & 0o700
    } else {
        return Ok(());
    };
    if now != was {
        fs::set_permissions(path, fs::Permissions::from_mode(now)).map_err(|source| {
            StateDirError {
                path: path.to_path_buf(),
                source,
            }
        })?;
        fixed.push(Fixed {
            path: path.to_path_buf(),
            was,
            now,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_made_private_and_fixes_are_reported() {
        let base = std::env::temp_dir().join(format!("drove-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("data");
        fs::create_dir_all(dir.join("git")).unwrap();
        fs::write(dir.join("paas.db"), b"x").unwrap();
        fs::write(dir.join("tool"), b"x").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("git"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("paas.db"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.join("tool"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
        let fixed = make_private(&dir).unwrap();
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("git"), 0o700);
        assert_eq!(mode("paas.db"), 0o600);
        assert_eq!(mode("tool"), 0o700, "an owner's execute bit stays");
        let mut paths: Vec<_> = fixed.iter().map(|f| f.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, [dir.clone(), dir.join("git"), dir.join("paas.db")]);
        assert_eq!(fixed[0].was, 0o755);
        assert!(
            make_private(&dir).unwrap().is_empty(),
            "nothing left to fix"
        );
        // A new one is created private.
        assert!(make_private(&base.join("new/deeper")).unwrap().is_empty());
        assert_eq!(
            fs::metadata(base.join("new/deeper"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
