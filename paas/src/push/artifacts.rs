//! Artifacts: a commit's tree packed as `.tar.zst`, named by the SHA-256 of its bytes, kept
//! under `<data-dir>/artifacts/` and served to the agents' fetchers at
//! `GET /v1/artifacts/<sha256>.tar.zst` (a content address: knowing the name is knowing the
//! content, so it needs no token; the agents cache it by URL).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::Paas;

/// The largest `package.json` read (npm's own registry refuses far smaller manifests).
pub const MAX_DESCRIPTOR: u64 = 1 << 20;
/// The largest lockfile hashed.
pub const MAX_LOCKFILE: u64 = 256 << 20;
/// The largest tree packed: the bytes of the commit's files, as `git archive` writes them.
pub const MAX_TREE: u64 = 2 << 30;

/// Why a commit could not be read or packed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("git {what}: {message}")]
    Git { what: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge { what: String, size: u64, limit: u64 },
}

/// Where a pushed commit's objects are: the repository, plus git's quarantine directories
/// while a pre-receive hook runs (the objects are not in the repository proper yet).
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub git_dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Objects {
    /// `git args…` against these objects, with nothing of the PaaS's environment.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("git");
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.git_dir)
            .env("GIT_DIR", &self.git_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs git to the end; its output is small by construction (sizes, yes/no).
    async fn git(&self, args: &[&str]) -> Result<Vec<u8>, ArtifactError> {
        let out = tokio::process::Command::from(self.command(args))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| ArtifactError::Git {
                what: args.join(" "),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(ArtifactError::Git {
                what: args.join(" "),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// The size of a file of the commit, or None when it has no such file (or it is no file).
    async fn size(&self, spec: &str) -> Option<u64> {
        let kind = self.git(&["cat-file", "-t", spec]).await.ok()?;
        if kind.trim_ascii() != b"blob" {
            return None;
        }
        let size = self.git(&["cat-file", "-s", spec]).await.ok()?;
        std::str::from_utf8(&size).ok()?.trim().parse().ok()
    }

    /// `<commit>:<path>` when the commit has that file and it is at most `limit` bytes; None
    /// when it has no such file.
    async fn bounded(
        &self,
        commit: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<String>, ArtifactError> {
        let spec = format!("{commit}:{path}");
        match self.size(&spec).await {
            None => Ok(None),
            Some(size) if size > limit => Err(ArtifactError::TooLarge {
                what: path.to_string(),
                size,
                limit,
            }),
            Some(_) => Ok(Some(spec)),
        }
    }

    /// A file of the commit, read whole when it is at most `limit` bytes; None when the
    /// commit has no such file. Its size is asked first, so nothing large is ever read.
    pub async fn file(
        &self,
        commit: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ArtifactError> {
        let Some(spec) = self.bounded(commit, path, limit).await? else {
            return Ok(None);
        };
        self.git(&["cat-file", "blob", &spec]).await.map(Some)
    }

    /// The SHA-256 of a file of the commit (hex), streamed; None when it has no such file.
    pub async fn file_hash(
        &self,
        commit: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<String>, ArtifactError> {
        let Some(spec) = self.bounded(commit, path, limit).await? else {
            return Ok(None);
        };
        let cmd = self.command(&["cat-file", "blob", &spec]);
        let what = format!("cat-file blob {spec}");
        blocking(move || {
            let mut hash = Sha256::new();
            stream_out(cmd, &what, u64::MAX, &mut hash)?;
            Ok(Some(hex::encode(hash.finalize())))
        })
        .await
    }

    /// Packs the commit's tree into `dir` as `<sha256>.tar.zst`, streaming `git archive`
    /// through the compressor to disk (at most `limit` bytes of tree, [`MAX_TREE`] for a
    /// push); the file name.
    pub async fn pack(
        &self,
        commit: &str,
        dir: &Path,
        limit: u64,
    ) -> Result<String, ArtifactError> {
        let cmd = self.command(&["archive", "--format=tar", commit]);
        let (what, dir) = (format!("archive {commit}"), dir.to_path_buf());
        blocking(move || {
            let io = |path: &Path| {
                let path = path.to_path_buf();
                move |source| ArtifactError::Io { path, source }
            };
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io(&dir))?;
            let hashing = Hashing {
                inner: tmp,
                hash: Sha256::new(),
            };
            let mut encoder = zstd::stream::write::Encoder::new(hashing, 3).map_err(io(&dir))?;
            stream_out(cmd, &what, limit, &mut encoder)?;
            let hashing = encoder.finish().map_err(io(&dir))?;
            let name = format!("{}.tar.zst", hex::encode(hashing.hash.finalize()));
            let path = dir.join(&name);
            if !path.exists() {
                hashing
                    .inner
                    .persist(&path)
                    .map_err(|e| ArtifactError::Io {
                        path: path.clone(),
                        source: e.error,
                    })?;
            }
            Ok(name)
        })
        .await
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArtifactError> + Send + 'static,
) -> Result<T, ArtifactError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArtifactError::Io {
            path: PathBuf::from("artifacts"),
            source: std::io::Error::other(e),
        })?
}

/// Copies `cmd`'s stdout into `sink`, at most `limit` bytes (the child is killed past it).
fn stream_out(
    mut cmd: std::process::Command,
    what: &str,
    limit: u64,
    sink: &mut impl Write,
) -> Result<u64, ArtifactError> {
    let git_err = |message: String| ArtifactError::Git {
        what: what.to_string(),
        message,
    };
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| git_err(e.to_string()))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(git_err("no pipes".into()));
    };
    // git's stderr is drained beside, so a chatty git never blocks on it.
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut text);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        text
    });
    let copied = std::io::copy(&mut stdout.take(limit.saturating_add(1)), sink);
    let over = matches!(copied, Ok(n) if n > limit);
    if over {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| git_err(e.to_string()))?;
    let stderr = errors.join().unwrap_or_default();
    if over {
        return Err(ArtifactError::TooLarge {
            what: "the commit's files".into(),
            size: limit.saturating_add(1),
            limit,
        });
    }
    let copied = copied.map_err(|e| git_err(e.to_string()))?;
    if !status.success() {
        return Err(git_err(String::from_utf8_lossy(&stderr).trim().to_string()));
    }
    Ok(copied)
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The releases per app whose artifacts are kept (for rollback); older ones' go.
pub const RELEASES_KEPT: usize = 20;
/// An artifact younger than this is kept whatever refers to it (a push or build in flight).
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the artifacts nothing keeps: not one of an app's last [`RELEASES_KEPT`]
/// releases', nor its dependency or node_modules cache, nor younger than [`GRACE`] (a push or
/// a build in flight). Returns how many went and their bytes.
pub async fn collect(paas: &Paas) -> (usize, u64) {
    let mut keep = std::collections::HashSet::new();
    let apps: Vec<super::PushApp> = super::locked(&paas.push.apps).values().cloned().collect();
    for a in &apps {
        for c in [&a.deps_cache, &a.modules_cache].into_iter().flatten() {
            keep.insert(c.artifact.clone());
        }
        let Ok(rows) = paas.store.releases(&a.name).await else {
            // Unreadable releases: keep everything this time.
            return (0, 0);
        };
        for r in rows.iter().rev().take(RELEASES_KEPT) {
            if let Ok(r) = serde_json::from_str::<super::releases::Release>(r) {
                keep.insert(r.artifact);
                keep.extend(r.modules);
            }
        }
    }
    let dir = paas.push.artifacts_dir();
    tokio::task::spawn_blocking(move || {
        let mut gone = (0, 0);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            let young = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < GRACE);
            if !meta.is_file() || young || keep.contains(&name) {
                continue;
            }
            if std::fs::remove_file(e.path()).is_ok() {
                gone.0 += 1;
                gone.1 += meta.len();
            }
        }
        gone
    })
    .await
    .unwrap_or((0, 0))
}

/// `GET /v1/artifacts/{name}`.
pub async fn serve(
    State(paas): State<std::sync::Arc<Paas>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    // `<sha256>.tar.zst` (a commit's tree), `<sha256>.tar.gz` (a build's result or a
    // dependency cache).
    let hash = name
        .strip_suffix(".tar.zst")
        .or_else(|| name.strip_suffix(".tar.gz"))
        .unwrap_or("");
    let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return (StatusCode::NOT_FOUND, "no such artifact\n").into_response();
    }
    let path = paas.push.artifacts_dir().join(&name);
    match tokio::fs::File::open(&path).await {
        Ok(f) => (
            [(header::CONTENT_TYPE, "application/zstd")],
            Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such artifact\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    async fn files_and_trees_are_read_within_their_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work");
        git(&work, &["init", "-q"]);
        std::fs::write(work.join("package.json"), b"{}").expect("write");
        std::fs::write(work.join("big"), vec![b'x'; 200_000]).expect("write");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "c"]);
        let objects = Objects {
            git_dir: work.join(".git"),
            env: Vec::new(),
        };
        assert_eq!(
            objects.file("HEAD", "package.json", 2).await.expect("read"),
            Some(b"{}".to_vec())
        );
        assert!(objects
            .file("HEAD", "missing", 2)
            .await
            .expect("read")
            .is_none());
        let e = objects
            .file("HEAD", "big", 1000)
            .await
            .expect_err("too big");
        assert_eq!(
            e.to_string(),
            "big is 200000 bytes, over the 1000-byte limit"
        );
        let hash = objects
            .file_hash("HEAD", "big", 1 << 20)
            .await
            .expect("hash");
        assert_eq!(hash, Some(hex::encode(Sha256::digest(vec![b'x'; 200_000]))));
        let out = dir.path().join("artifacts");
        let e = objects
            .pack("HEAD", &out, 100_000)
            .await
            .expect_err("tree over the bound");
        assert!(matches!(e, ArtifactError::TooLarge { .. }), "{e}");
        let leftovers = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        assert_eq!(leftovers, 0, "a refused pack leaves nothing behind");
        let name = objects.pack("HEAD", &out, MAX_TREE).await.expect("pack");
        let bytes = std::fs::read(out.join(&name)).expect("artifact");
        assert_eq!(
            name,
            format!("{}.tar.zst", hex::encode(Sha256::digest(&bytes)))
        );
        let tar = zstd::stream::decode_all(&bytes[..]).expect("zstd");
        assert!(tar.len() > 200_000);
    }
}
