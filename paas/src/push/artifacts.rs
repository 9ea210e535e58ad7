//! Artifacts: a commit's tree packed as `.tar.zst`, named by the SHA-256 of its bytes, kept
//! under `<data-dir>/artifacts/` and served to the agents' fetchers at
//! `GET /v1/artifacts/<sha256>.tar.zst` (a content address: knowing the name is knowing the
//! content, so it needs no token; the agents cache it by URL).

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::Paas;

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
}

/// Where a pushed commit's objects are: the repository, plus git's quarantine directories
/// while a pre-receive hook runs (the objects are not in the repository proper yet).
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub git_dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Objects {
    async fn git(&self, args: &[&str]) -> Result<Vec<u8>, ArtifactError> {
        let out = tokio::process::Command::new("git")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_DIR", &self.git_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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

    /// A file of the commit, or None when it has no such file.
    pub async fn file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        let spec = format!("{commit}:{path}");
        match self.git(&["cat-file", "-e", &spec]).await {
            Ok(_) => self.git(&["cat-file", "blob", &spec]).await.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Packs the commit's tree into `dir` as `<sha256>.tar.zst`; returns the file name.
    pub async fn pack(&self, commit: &str, dir: &Path) -> Result<String, ArtifactError> {
        let tar = self.git(&["archive", "--format=tar", commit]).await?;
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || store(&tar, &dir))
            .await
            .map_err(|e| ArtifactError::Io {
                path: PathBuf::from("artifacts"),
                source: std::io::Error::other(e),
            })?
    }
}

fn store(tar: &[u8], dir: &Path) -> Result<String, ArtifactError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArtifactError::Io { path, source }
    };
    let packed = zstd::stream::encode_all(tar, 3).map_err(io(dir))?;
    let name = format!("{}.tar.zst", hex::encode(Sha256::digest(&packed)));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(&name);
    if !path.exists() {
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
        std::io::Write::write_all(&mut tmp, &packed).map_err(io(&path))?;
        tmp.persist(&path).map_err(|e| ArtifactError::Io {
            path: path.clone(),
            source: e.error,
        })?;
    }
    Ok(name)
}

/// `GET /v1/artifacts/{name}`.
pub async fn serve(
    State(paas): State<std::sync::Arc<Paas>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    // `<sha256>.tar.zst` (a commit's tree), `<sha256>.tar.gz` (a build's result),
    // `deps-<sha256 of a lockfile>.tar.gz` (a dependency cache).
    let stem = name
        .strip_suffix(".tar.zst")
        .or_else(|| name.strip_suffix(".tar.gz"))
        .unwrap_or("");
    let hash = stem.strip_prefix("deps-").unwrap_or(stem);
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
