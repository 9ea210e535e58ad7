//! Artifacts unpacked once per agent and task user, shared read-only by the instances that
//! run them: an instance's sandbox is an overlay mount whose lower layers are its unpacked
//! artifacts and whose upper dir is its own, so a wake mounts instead of extracting (a
//! framework's `node_modules` is thousands of files), and whatever an instance writes (its
//! logs, caches, a file it changes) stays its own.
//!
//! - A layer is `<work-dir>/layers/<sha256(uri)>-<uid>`: the archive extracted (with the
//!   fetcher's checks) and handed to the task user, who owns its files as it would in a
//!   sandbox; made in a temporary dir and renamed into place, under a per-layer lock.
//!   `<work-dir>/layers` is root's alone (0700): tasks reach a layer only through a mount.
//! - A run's sandbox is the mount point; its upper and work dirs are `<sandbox>.upper` and
//!   `<sandbox>.work` beside it. The mount outlives the task (its logs are read through it)
//!   until the sandbox is collected ([`unmount`]).
//! - Layers are used when the agent runs as root and the kernel mounts overlays (tried at
//!   start); otherwise archives are extracted into each sandbox, as before.
//!
//! The same layers are what a container's root filesystem will stack its app layer from.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use drove_proto::mesos::Uri;
use sha2::{Digest, Sha256};

use crate::fetcher::{archive_kind, base_name, FetchError, Fetcher};
use crate::sandbox::{chown_recursive, TaskUser};

/// Why a sandbox could not be mounted.
#[derive(Debug, thiserror::Error)]
#[error("mounting the sandbox {path}: {message}")]
pub struct MountError {
    pub path: PathBuf,
    pub message: String,
}

/// The layers of one agent.
#[derive(Clone)]
pub struct Layers {
    dir: PathBuf,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Layers {
    /// The agent's layers, if this agent can mount overlays (root, and a kernel with
    /// overlayfs): tried once on a probe mount under `work_dir`.
    pub fn probe(work_dir: &Path) -> Option<Layers> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let dir = work_dir.join("layers");
        let made = fs::create_dir_all(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)));
        if let Err(e) = made {
            tracing::warn!(dir = %dir.display(), error = %e, "no artifact layers");
            return None;
        }
        let probe = dir.join(".probe");
        let _ = unmount(&probe.join("merged"));
        let _ = fs::remove_dir_all(&probe);
        let tried = (|| -> Result<(), String> {
            for d in ["lower", "merged", "merged.upper", "merged.work"] {
                fs::create_dir_all(probe.join(d)).map_err(|e| e.to_string())?;
            }
            fs::write(probe.join("lower/seen"), b"1").map_err(|e| e.to_string())?;
            mount_overlay(&[probe.join("lower")], &probe.join("merged")).map_err(|e| e.message)?;
            let seen = probe.join("merged/seen").is_file();
            unmount(&probe.join("merged")).map_err(|e| e.message)?;
            if seen {
                Ok(())
            } else {
                Err("the overlay did not show its lower layer".into())
            }
        })();
        let _ = fs::remove_dir_all(&probe);
        match tried {
            Ok(()) => Some(Layers {
                dir,
                locks: Arc::default(),
            }),
            Err(why) => {
                tracing::info!(%why, "overlay mounts unavailable: artifacts are extracted into each sandbox");
                None
            }
        }
    }

    /// Whether `uri` is kept as a layer: a cached http archive to extract.
    pub fn layered(uri: &Uri) -> bool {
        let value = uri.value.trim();
        value.starts_with("http://")
            && uri.cache.unwrap_or(true)
            && uri.extract.unwrap_or(true)
            && !uri.executable.unwrap_or(false)
            && archive_kind(uri.output_file.as_deref().unwrap_or(&base_name(value))).is_some()
    }

    /// The layer of `uri` for `user`, made on first use (downloaded through the fetcher's
    /// cache, extracted, handed to the user).
    pub async fn layer(
        &self,
        fetcher: &Fetcher,
        uri: &Uri,
        user: &TaskUser,
    ) -> Result<PathBuf, FetchError> {
        let value = uri.value.trim().to_string();
        let name = format!(
            "{}-{}",
            hex::encode(Sha256::digest(value.as_bytes())),
            user.uid
        );
        let path = self.dir.join(&name);
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(name.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        if path.is_dir() {
            touch(&path);
            return Ok(path);
        }
        let (archive, _cache_hold) = fetcher.cached(uri).await?;
        let kind = archive_kind(uri.output_file.as_deref().unwrap_or(&base_name(&value)))
            .ok_or_else(|| FetchError {
                uri: value.clone(),
                message: "not an archive".into(),
            })?;
        let tmp = self
            .dir
            .join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let (tmp2, path2, user2, value2) = (tmp.clone(), path.clone(), user.clone(), value.clone());
        let made = tokio::task::spawn_blocking(move || -> Result<(), String> {
            fs::create_dir_all(&tmp2).map_err(|e| format!("{}: {e}", tmp2.display()))?;
            crate::fetcher::extract_archive(&archive, kind, &tmp2)?;
            chown_recursive(&tmp2, &user2).map_err(|e| e.to_string())?;
            let bytes = tree_bytes(&tmp2);
            fs::rename(&tmp2, &path2).map_err(|e| format!("{}: {e}", path2.display()))?;
            let _ = fs::write(size_file(&path2), bytes.to_string());
            tracing::info!(uri = %value2, layer = %path2.display(), "artifact layer made");
            Ok(())
        })
        .await
        .map_err(|e| FetchError {
            uri: value.clone(),
            message: e.to_string(),
        })?;
        if let Err(message) = made {
            let _ = fs::remove_dir_all(&tmp);
            return Err(FetchError {
                uri: value,
                message,
            });
        }
        Ok(path)
    }

    /// Every layer (for collection).
    pub fn all(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
            })
            .collect()
    }

    /// Removes a layer no sandbox mounts (its lock held, so none is mounting it now).
    pub fn remove(&self, layer: &Path) -> bool {
        let name = layer
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(name.clone()).or_default().clone()
        };
        let Ok(_held) = lock.try_lock() else {
            return false;
        };
        let gone = fs::remove_dir_all(layer).is_ok();
        let _ = fs::remove_file(size_file(layer));
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        gone
    }
}

/// The upper (the instance's own files) and work dirs of a sandbox mounted over layers.
pub fn upper_of(sandbox: &Path) -> PathBuf {
    sibling(sandbox, "upper")
}

/// The overlay work dir of a sandbox mounted over layers.
pub fn work_of(sandbox: &Path) -> PathBuf {
    sibling(sandbox, "work")
}

fn sibling(sandbox: &Path, what: &str) -> PathBuf {
    let mut name = sandbox.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}"));
    sandbox.with_file_name(name)
}

/// Mounts `sandbox` as an overlay of `lowers` (the first on top) with its own upper and work
/// dirs, owned by `user` (the mount's root is the upper dir's: the user's, mode 0700).
pub fn mount(lowers: &[PathBuf], sandbox: &Path, user: &TaskUser) -> Result<(), MountError> {
    let err = |message: String| MountError {
        path: sandbox.to_path_buf(),
        message,
    };
    let upper = upper_of(sandbox);
    for d in [&upper, &work_of(sandbox)] {
        fs::create_dir_all(d).map_err(|e| err(format!("{}: {e}", d.display())))?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("{}: {e}", d.display())))?;
    }
    crate::sandbox::chown_to(&upper, user).map_err(|e| err(e.to_string()))?;
    mount_overlay(lowers, sandbox)
}

fn mount_overlay(lowers: &[PathBuf], merged: &Path) -> Result<(), MountError> {
    let err = |message: String| MountError {
        path: merged.to_path_buf(),
        message,
    };
    let text = |p: &Path| {
        let s = p.display().to_string();
        // The option string's separators may not appear in a path.
        if s.contains([',', ':', '\\']) {
            Err(err(format!("{s}: a path with , : or \\ cannot be mounted")))
        } else {
            Ok(s)
        }
    };
    let lower: Vec<String> = lowers.iter().map(|l| text(l)).collect::<Result<_, _>>()?;
    let (upper, work) = (upper_of(merged), work_of(merged));
    let mut options = format!("lowerdir={}", lower.join(":"));
    if upper.is_dir() {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            text(&upper)?,
            text(&work)?
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID,
        Some(options.as_str()),
    )
    .map_err(|e| err(e.to_string()))
}

/// Unmounts a sandbox mounted over layers (a no-op when it is not a mount).
pub fn unmount(sandbox: &Path) -> Result<(), MountError> {
    match nix::mount::umount2(sandbox, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(MountError {
            path: sandbox.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Where a layer's size is kept (measured once, when it is made).
fn size_file(layer: &Path) -> PathBuf {
    let mut name = layer.file_name().unwrap_or_default().to_os_string();
    name.push(".size");
    layer.with_file_name(name)
}

/// A layer's size in bytes.
pub fn size_of(layer: &Path) -> u64 {
    fs::read_to_string(size_file(layer))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| tree_bytes(layer))
}

/// Marks a layer used now (its modification time), for collecting the least recently used.
fn touch(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// The bytes of the files under `path` (links not followed).
pub fn tree_bytes(path: &Path) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            todo.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            total = total.saturating_add(meta.len());
        }
    }
    total
}
