//! The fetcher: `CommandInfo.uris` into the sandbox.
//!
//! - `http://` URIs are downloaded with reqwest (no TLS in drove's build); absolute paths and
//!   `file://` URIs are copied.
//! - Downloads go through a cache under `<work-dir>/cache/<sha256(uri)>/` unless `cache: false`,
//!   so a second launch of the same artifact downloads nothing. Concurrent fetches of one URI
//!   wait for each other.
//! - `extract` (default true) unpacks `.tar.gz`/`.tgz`, `.tar.zst`/`.tzst`, `.tar` and `.zip`
//!   into the sandbox; other files are copied as `output_file` or their base name.
//!   `executable: true` → mode 0755 (and no extraction).
//! - Everything placed in the sandbox is handed to the task user.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use drove_proto::mesos::Uri;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::sandbox::{chown_recursive, TaskUser};

#[derive(Debug, thiserror::Error)]
#[error("fetching {uri}: {message}")]
pub struct FetchError {
    pub uri: String,
    pub message: String,
}

impl FetchError {
    fn new(uri: &str, message: impl Into<String>) -> Self {
        FetchError {
            uri: uri.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    TarZst,
    Tar,
    Zip,
}

/// Recognised archive names.
pub fn archive_kind(name: &str) -> Option<ArchiveKind> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
        Some(ArchiveKind::TarGz)
    } else if n.ends_with(".tar.zst") || n.ends_with(".tzst") {
        Some(ArchiveKind::TarZst)
    } else if n.ends_with(".tar") {
        Some(ArchiveKind::Tar)
    } else if n.ends_with(".zip") {
        Some(ArchiveKind::Zip)
    } else {
        None
    }
}

/// The last path segment of a URI (without query or fragment).
pub fn base_name(uri: &str) -> String {
    let no_query = uri.split(['?', '#']).next().unwrap_or(uri);
    let trimmed = no_query.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name.contains(':') {
        "download".into()
    } else {
        name.to_string()
    }
}

enum Source {
    Http(String),
    Local(PathBuf),
}

fn classify(uri: &str) -> Result<Source, FetchError> {
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Source::Local(PathBuf::from(path)));
    }
    if uri.starts_with('/') {
        return Ok(Source::Local(PathBuf::from(uri)));
    }
    if uri.starts_with("http://") {
        return Ok(Source::Http(uri.to_string()));
    }
    if uri.starts_with("https://") {
        return Err(FetchError::new(
            uri,
            "https is not supported by this agent (plain http, file:// and absolute paths are)",
        ));
    }
    Err(FetchError::new(uri, "unsupported URI scheme"))
}

/// Bounds on one download.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// The whole download, from the request to the last byte.
    pub timeout: std::time::Duration,
    /// Largest artifact accepted.
    pub max_bytes: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout: std::time::Duration::from_secs(600),
            max_bytes: 4 << 30,
        }
    }
}

/// Downloads and caches artifacts.
#[derive(Clone)]
pub struct Fetcher {
    cache_dir: PathBuf,
    client: reqwest::Client,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    limits: FetchLimits,
}

impl Fetcher {
    pub fn new(cache_dir: PathBuf) -> Fetcher {
        Fetcher::with_limits(cache_dir, FetchLimits::default())
    }

    pub fn with_limits(cache_dir: PathBuf, limits: FetchLimits) -> Fetcher {
        Fetcher {
            limits,
            cache_dir,
            client: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            locks: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.locks.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(key.to_string()).or_default().clone()
    }

    /// Fetches every URI into `sandbox`, stopping at the first failure.
    pub async fn fetch_all(
        &self,
        uris: &[Uri],
        sandbox: &Path,
        user: &TaskUser,
    ) -> Result<(), FetchError> {
        for uri in uris {
            self.fetch(uri, sandbox, user).await?;
        }
        Ok(())
    }

    /// Fetches one URI into `sandbox`.
    pub async fn fetch(
        &self,
        uri: &Uri,
        sandbox: &Path,
        user: &TaskUser,
    ) -> Result<(), FetchError> {
        let value = uri.value.trim();
        let name = base_name(value);
        let mut cleanup = None;
        let src_file = match classify(value)? {
            Source::Local(path) => {
                if !path.is_file() {
                    return Err(FetchError::new(
                        value,
                        format!("{} is not a file", path.display()),
                    ));
                }
                path
            }
            Source::Http(url) => {
                if uri.cache.unwrap_or(true) {
                    self.cached_download(&url, &name).await?
                } else {
                    let dir = self
                        .cache_dir
                        .join(format!(".uncached-{}", uuid::Uuid::new_v4().simple()));
                    fs::create_dir_all(&dir).map_err(|e| {
                        FetchError::new(value, format!("creating {}: {e}", dir.display()))
                    })?;
                    cleanup = Some(dir.clone());
                    let dst = dir.join(&name);
                    if let Err(e) = self.download(&url, &dst).await {
                        let _ = fs::remove_dir_all(&dir);
                        return Err(e);
                    }
                    dst
                }
            }
        };
        let executable = uri.executable.unwrap_or(false);
        let extract = uri.extract.unwrap_or(true) && !executable;
        let output = uri.output_file.clone();
        let sandbox = sandbox.to_path_buf();
        let user = user.clone();
        let value_owned = value.to_string();
        let result = tokio::task::spawn_blocking(move || {
            place(
                &src_file,
                &name,
                output.as_deref(),
                extract,
                executable,
                &sandbox,
                &user,
            )
            .map_err(|m| FetchError::new(&value_owned, m))
        })
        .await
        .map_err(|e| FetchError::new(value, format!("fetch task failed: {e}")))?;
        if let Some(dir) = cleanup {
            let _ = fs::remove_dir_all(dir);
        }
        result
    }

    async fn cached_download(&self, url: &str, name: &str) -> Result<PathBuf, FetchError> {
        let key = hex::encode(Sha256::digest(url.as_bytes()));
        let lock = self.lock_for(&key);
        let _guard = lock.lock().await;
        let dir = self.cache_dir.join(&key);
        let file = dir.join(name);
        if file.is_file() {
            tracing::debug!(%url, path = %file.display(), "fetcher cache hit");
            return Ok(file);
        }
        fs::create_dir_all(&dir)
            .map_err(|e| FetchError::new(url, format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".{name}.partial"));
        if let Err(e) = self.download(url, &tmp).await {
            // A refused or broken download leaves nothing behind in the cache.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &file)
            .map_err(|e| FetchError::new(url, format!("renaming into {}: {e}", file.display())))?;
        Ok(file)
    }

    /// Downloads `url` to `dst` within the fetcher's time and size bounds.
    async fn download(&self, url: &str, dst: &Path) -> Result<(), FetchError> {
        let limit = self.limits.timeout;
        match tokio::time::timeout(limit, self.download_unbounded(url, dst)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::new(
                url,
                format!("the download took longer than {limit:?} (--fetch-timeout)"),
            )),
        }
    }

    async fn download_unbounded(&self, url: &str, dst: &Path) -> Result<(), FetchError> {
        tracing::info!(%url, "downloading");
        let max = self.limits.max_bytes;
        let too_big = |n: u64| {
            FetchError::new(
                url,
                format!("{n} bytes or more: larger than the {max}-byte limit (--fetch-max-bytes)"),
            )
        };
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::new(url, format!("request failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(FetchError::new(
                url,
                format!("HTTP status {}", resp.status()),
            ));
        }
        let mut out = tokio::fs::File::create(dst)
            .await
            .map_err(|e| FetchError::new(url, format!("creating {}: {e}", dst.display())))?;
        if let Some(len) = resp.content_length().filter(|l| *l > max) {
            return Err(too_big(len));
        }
        let mut body = resp.bytes_stream();
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FetchError::new(url, format!("reading body: {e}")))?;
            written = written.saturating_add(chunk.len() as u64);
            if written > max {
                return Err(too_big(written));
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| FetchError::new(url, format!("writing {}: {e}", dst.display())))?;
        }
        out.flush()
            .await
            .map_err(|e| FetchError::new(url, format!("writing {}: {e}", dst.display())))?;
        Ok(())
    }
}

/// A relative output path that stays inside the sandbox.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Places a fetched file into the sandbox: extracted, or copied (and maybe made executable).
fn place(
    src: &Path,
    name: &str,
    output_file: Option<&str>,
    extract: bool,
    executable: bool,
    sandbox: &Path,
    user: &TaskUser,
) -> Result<(), String> {
    let kind = archive_kind(output_file.unwrap_or(name));
    if extract {
        if let Some(kind) = kind {
            let before: Vec<PathBuf> = list_dir(sandbox);
            extract_archive(src, kind, sandbox)?;
            for entry in list_dir(sandbox) {
                if !before.contains(&entry) {
                    chown_recursive(&entry, user).map_err(|e| e.to_string())?;
                }
            }
            // Entries that existed before (e.g. stdout) are left alone; new files inside
            // pre-existing directories still need the owner change.
            for entry in before {
                if entry.is_dir() {
                    chown_recursive(&entry, user).map_err(|e| e.to_string())?;
                }
            }
            return Ok(());
        }
    }
    let rel = match output_file {
        Some(o) => safe_relative(o).ok_or_else(|| format!("invalid output_file {o:?}"))?,
        None => PathBuf::from(name),
    };
    let dst = sandbox.join(&rel);
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    fs::copy(src, &dst).map_err(|e| format!("copying to {}: {e}", dst.display()))?;
    if executable {
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dst.display()))?;
    }
    chown_recursive(&dst, user).map_err(|e| e.to_string())?;
    Ok(())
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Unpacks an archive into `dest`, refusing entries that would escape it.
pub fn extract_archive(src: &Path, kind: ArchiveKind, dest: &Path) -> Result<(), String> {
    let open = || File::open(src).map_err(|e| format!("opening {}: {e}", src.display()));
    let untar = |reader: Box<dyn io::Read>| -> Result<(), String> {
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive
            .unpack(dest)
            .map_err(|e| format!("extracting {}: {e}", src.display()))
    };
    match kind {
        ArchiveKind::TarGz => untar(Box::new(flate2::read::GzDecoder::new(open()?))),
        ArchiveKind::TarZst => {
            let dec = zstd::stream::read::Decoder::new(open()?)
                .map_err(|e| format!("reading {}: {e}", src.display()))?;
            untar(Box::new(dec))
        }
        ArchiveKind::Tar => untar(Box::new(open()?)),
        ArchiveKind::Zip => {
            let mut zip = zip::ZipArchive::new(open()?)
                .map_err(|e| format!("reading zip {}: {e}", src.display()))?;
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| format!("reading zip {}: {e}", src.display()))?;
                let rel = entry
                    .enclosed_name()
                    .ok_or_else(|| format!("zip entry {:?} escapes the sandbox", entry.name()))?;
                let out = dest.join(rel);
                if entry.is_dir() {
                    fs::create_dir_all(&out)
                        .map_err(|e| format!("creating {}: {e}", out.display()))?;
                    continue;
                }
                if let Some(parent) = out.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                }
                let mut f =
                    File::create(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
                io::copy(&mut entry, &mut f)
                    .map_err(|e| format!("writing {}: {e}", out.display()))?;
                if let Some(mode) = entry.unix_mode() {
                    let _ = fs::set_permissions(&out, fs::Permissions::from_mode(mode & 0o7777));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_archives_and_names() {
        assert_eq!(archive_kind("app.tar.gz"), Some(ArchiveKind::TarGz));
        assert_eq!(archive_kind("APP.TGZ"), Some(ArchiveKind::TarGz));
        assert_eq!(archive_kind("a.tar.zst"), Some(ArchiveKind::TarZst));
        assert_eq!(archive_kind("a.zip"), Some(ArchiveKind::Zip));
        assert_eq!(archive_kind("a.bin"), None);
        assert_eq!(base_name("http://h:1/x/app.tgz?sig=1"), "app.tgz");
        assert_eq!(base_name("http://h:1/"), "download");
        assert_eq!(safe_relative("../x"), None);
        assert_eq!(safe_relative("bin/run"), Some(PathBuf::from("bin/run")));
    }
}
