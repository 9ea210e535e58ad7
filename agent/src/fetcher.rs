//! The fetcher: `CommandInfo.uris` into the sandbox.
//!
//! - `http://` URIs are downloaded with reqwest (no TLS in drove's build); absolute paths and
//!   `file://` URIs are copied, but only from under the `--fetch-allow-dir` directories (none by
//!   default): the agent is root, and a task's URI must not read a host file for it.
//! - Downloads go through a cache under `<work-dir>/cache/<sha256(uri)>/` unless `cache: false`,
//!   so a second launch of the same artifact downloads nothing. Concurrent fetches of one URI
//!   wait for each other (a per-URI lock, held until the artifact is placed and dropped from the
//!   lock table when nobody holds or waits for it). The cache is bounded by
//!   `--fetch-cache-max-bytes`: after each download the least recently used entries not in use
//!   are removed.
//! - `extract` (default true) unpacks `.tar.gz`/`.tgz`, `.tar.zst`/`.tzst`, `.tar` and `.zip`
//!   into the sandbox; other files are copied as `output_file` or their base name.
//!   `executable: true` → mode 0755 (and no extraction). An archive entry that leaves the
//!   sandbox (an absolute or `..` path, a symlink or hard link whose target leaves it) or that
//!   would replace the task's `stdout`/`stderr` refuses the whole fetch.
//! - The sandbox is still root's (mode 0700) while this runs; the launcher hands it to the task
//!   user afterwards, so nothing else writes into it meanwhile.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use drove_proto::mesos::Uri;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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

/// Bounds on downloads and on what the fetcher may read.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// The whole download, from the request to the last byte.
    pub timeout: std::time::Duration,
    /// Largest artifact accepted.
    pub max_bytes: u64,
    /// Total size of the download cache; least recently used entries go first.
    pub cache_max_bytes: u64,
    /// Directories local (`file://`, absolute) URIs may be read from; empty: none.
    pub allow_dirs: Vec<PathBuf>,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout: std::time::Duration::from_secs(600),
            max_bytes: 4 << 30,
            cache_max_bytes: 2 << 30,
            allow_dirs: Vec::new(),
        }
    }
}

/// The local file a `file://` or absolute URI names, if it lies under an allowed directory
/// (both sides canonicalized, so neither `..` nor a symlink leads out).
fn allowed_local(uri: &str, path: &Path, allow: &[PathBuf]) -> Result<PathBuf, FetchError> {
    if allow.is_empty() {
        return Err(FetchError::new(
            uri,
            "local paths are not fetched by this agent (no --fetch-allow-dir); serve the \
             artifact over http",
        ));
    }
    let real = fs::canonicalize(path)
        .map_err(|e| FetchError::new(uri, format!("{}: {e}", path.display())))?;
    let inside = allow.iter().any(|dir| {
        fs::canonicalize(dir)
            .map(|d| real.starts_with(d))
            .unwrap_or(false)
    });
    if !inside {
        return Err(FetchError::new(
            uri,
            format!(
                "{} is outside the --fetch-allow-dir directories",
                real.display()
            ),
        ));
    }
    if !real.is_file() {
        return Err(FetchError::new(
            uri,
            format!("{} is not a file", path.display()),
        ));
    }
    Ok(real)
}

/// A cached artifact kept from eviction (see [`Fetcher::cached`]).
pub struct Held(#[allow(dead_code)] UrlLock);

/// A held per-URI lock; dropping it releases the URI and forgets the lock when unused.
struct UrlLock {
    table: LockTable,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

type LockTable = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

fn table(t: &LockTable) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
    match t.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    }
}

impl Drop for UrlLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = table(&self.table);
        // Only the table's own reference left: nobody holds or waits for this URI.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// Downloads and caches artifacts.
#[derive(Clone)]
pub struct Fetcher {
    cache_dir: PathBuf,
    client: reqwest::Client,
    locks: LockTable,
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

    fn lock_entry(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        table(&self.locks)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    async fn lock(&self, key: &str) -> UrlLock {
        let guard = self.lock_entry(key).lock_owned().await;
        UrlLock {
            table: self.locks.clone(),
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    fn try_lock(&self, key: &str) -> Option<UrlLock> {
        let guard = self.lock_entry(key).try_lock_owned().ok();
        let held = UrlLock {
            table: self.locks.clone(),
            key: key.to_string(),
            guard,
        };
        held.guard.is_some().then_some(held)
    }

    /// URIs with a lock entry (held or awaited); for tests of the table's pruning.
    pub fn lock_count(&self) -> usize {
        table(&self.locks).len()
    }

    /// The cached copy of an http `uri` (downloaded on a miss), kept from eviction while the
    /// returned hold lives.
    pub async fn cached(&self, uri: &Uri) -> Result<(PathBuf, Held), FetchError> {
        let value = uri.value.trim();
        let Source::Http(url) = classify(value)? else {
            return Err(FetchError::new(value, "only http artifacts are cached"));
        };
        let key = hex::encode(Sha256::digest(url.as_bytes()));
        let held = self.lock(&key).await;
        let file = self.cached_download(&url, &key, &base_name(value)).await?;
        Ok((file, Held(held)))
    }

    /// Fetches every URI into `sandbox`, stopping at the first failure.
    pub async fn fetch_all(&self, uris: &[Uri], sandbox: &Path) -> Result<(), FetchError> {
        for uri in uris {
            self.fetch(uri, sandbox).await?;
        }
        Ok(())
    }

    /// Fetches one URI into `sandbox`.
    pub async fn fetch(&self, uri: &Uri, sandbox: &Path) -> Result<(), FetchError> {
        let value = uri.value.trim();
        let name = base_name(value);
        let mut cleanup = None;
        // Held until the artifact is placed, so the cache cannot evict it meanwhile.
        let mut _held = None;
        let src_file = match classify(value)? {
            Source::Local(path) => allowed_local(value, &path, &self.limits.allow_dirs)?,
            Source::Http(url) => {
                if uri.cache.unwrap_or(true) {
                    let key = hex::encode(Sha256::digest(url.as_bytes()));
                    let held = self.lock(&key).await;
                    let file = self.cached_download(&url, &key, &name).await?;
                    _held = Some(held);
                    file
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
        let value_owned = value.to_string();
        let result = tokio::task::spawn_blocking(move || {
            place(
                &src_file,
                &name,
                output.as_deref(),
                extract,
                executable,
                &sandbox,
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

    /// The cached copy of `url` (the caller holds its lock), downloading it on a miss.
    async fn cached_download(
        &self,
        url: &str,
        key: &str,
        name: &str,
    ) -> Result<PathBuf, FetchError> {
        let dir = self.cache_dir.join(key);
        let file = dir.join(name);
        if file.is_file() {
            tracing::debug!(%url, path = %file.display(), "fetcher cache hit");
            touch(&dir);
            return Ok(file);
        }
        fs::create_dir_all(&dir)
            .map_err(|e| FetchError::new(url, format!("creating {}: {e}", dir.display())))?;
        let tmp = dir.join(format!(".{name}.partial"));
        if let Err(e) = self.download(url, &tmp).await {
            // A refused or broken download leaves nothing behind in the cache.
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        fs::rename(&tmp, &file)
            .map_err(|e| FetchError::new(url, format!("renaming into {}: {e}", file.display())))?;
        touch(&dir);
        let max = self.limits.cache_max_bytes;
        let (cache_dir, me) = (self.cache_dir.clone(), key.to_string());
        let this = self.clone();
        // Entries in use (locked) are skipped; the one just fetched is ours, so it is too.
        let _ = tokio::task::spawn_blocking(move || {
            prune_cache(&cache_dir, max, |k| k != me && this.try_lock(k).is_some())
        })
        .await;
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
) -> Result<(), String> {
    let kind = archive_kind(output_file.unwrap_or(name));
    if extract {
        if let Some(kind) = kind {
            return extract_archive(src, kind, sandbox);
        }
    }
    let rel = match output_file {
        Some(o) => safe_relative(o).ok_or_else(|| format!("invalid output_file {o:?}"))?,
        None => PathBuf::from(name),
    };
    refuse_reserved(&rel)?;
    refuse_under_link(sandbox, &rel)?;
    let dst = sandbox.join(&rel);
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    fs::copy(src, &dst).map_err(|e| format!("copying to {}: {e}", dst.display()))?;
    if executable {
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dst.display()))?;
    }
    Ok(())
}

/// Sets a cache entry's modification time to now: its last use, for the LRU.
fn touch(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Removes the least recently used cache entries until the cache holds at most `max_bytes`;
/// `evictable(key)` says whether an entry may go (not in use). Returns the keys removed.
pub fn prune_cache(
    cache_dir: &Path,
    max_bytes: u64,
    evictable: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut entries: Vec<(std::time::SystemTime, String, u64)> = fs::read_dir(cache_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let meta = e.metadata().ok()?;
                    // `.uncached-*` directories belong to fetches in flight.
                    (meta.is_dir() && !name.starts_with('.')).then(|| {
                        let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                        (used, name, tree_size(&e.path()))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut total: u64 = entries.iter().map(|e| e.2).sum();
    entries.sort();
    let mut removed = Vec::new();
    for (_, key, size) in entries {
        if total <= max_bytes {
            break;
        }
        if !evictable(&key) {
            continue;
        }
        match fs::remove_dir_all(cache_dir.join(&key)) {
            Ok(()) => {
                tracing::info!(entry = %key, bytes = size, "fetcher cache: evicted");
                total = total.saturating_sub(size);
                removed.push(key);
            }
            Err(e) => tracing::warn!(entry = %key, error = %e, "fetcher cache: eviction failed"),
        }
    }
    removed
}

/// Names in the sandbox's top level that belong to the agent, not the artifact.
const RESERVED: [&str; 4] = ["stdout", "stderr", "stdout.1", "stderr.1"];

fn refuse_reserved(rel: &Path) -> Result<(), String> {
    let mut comps = rel.components();
    if let (Some(Component::Normal(first)), None) = (comps.next(), comps.next()) {
        if RESERVED.iter().any(|r| first == *r) {
            return Err(format!(
                "{} would replace the task's log; refused",
                rel.display()
            ));
        }
    }
    Ok(())
}

/// Refuses an entry at `rel` whose parent directories, as already extracted into `dest`,
/// include a link: root never writes through one (a chain of links that each stay inside
/// lexically may still lead out, or onto the task's logs).
fn refuse_under_link(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut at = dest.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "entry {} lies under the link {}; refused",
                    rel.display(),
                    at.strip_prefix(dest).unwrap_or(&at).display()
                ))
            }
            Ok(_) => {}
            // Not there yet: nothing below it is either.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Checks where a link entry at `rel` points: a symlink target is taken relative to the
/// entry's directory, a hard link's relative to the archive's root; neither may leave it,
/// lexically or through a link already extracted into `dest` (links extracted later are
/// checked once the archive is in, by [`links_stay_inside`]).
fn check_link(dest: &Path, rel: &Path, target: &Path, hard: bool) -> Result<(), String> {
    check_link_lexically(rel, target, hard)?;
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    if !hard {
        if let Some(parent) = rel.parent() {
            at.extend(parent.components().map(|c| c.as_os_str().to_os_string()));
        }
    }
    for c in target.components() {
        match c {
            Component::Normal(s) => {
                at.push(s.to_os_string());
                let path: PathBuf = std::iter::once(dest.as_os_str().to_os_string())
                    .chain(at.iter().cloned())
                    .collect();
                if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(format!(
                        "{} links through the link {}; refused",
                        rel.display(),
                        path.strip_prefix(dest).unwrap_or(&path).display()
                    ));
                }
            }
            Component::ParentDir => {
                at.pop();
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_link_lexically(rel: &Path, target: &Path, hard: bool) -> Result<(), String> {
    let escapes = || {
        format!(
            "{} links to {}, outside the sandbox; refused",
            rel.display(),
            target.display()
        )
    };
    if target.is_absolute() {
        return Err(escapes());
    }
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    if !hard {
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                if let Component::Normal(s) = c {
                    depth.push(s);
                }
            }
        }
    }
    for c in target.components() {
        match c {
            Component::Normal(s) => depth.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err(escapes());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(escapes()),
        }
    }
    Ok(())
}

/// Unpacks an archive into `dest`, refusing entries that would escape it (see the module docs),
/// then checks every link now in `dest` stays inside it (links an archive makes in an order
/// that no single entry's check could see through).
pub fn extract_archive(src: &Path, kind: ArchiveKind, dest: &Path) -> Result<(), String> {
    unpack(src, kind, dest)?;
    links_stay_inside(dest)
}

/// Every symlink under `dest` (none followed while walking) resolves inside it, or to nothing.
fn links_stay_inside(dest: &Path) -> Result<(), String> {
    let root = fs::canonicalize(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut todo = vec![dest.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(real) = fs::canonicalize(e.path()) {
                    if !real.starts_with(&root) {
                        let rel = e.path();
                        return Err(format!(
                            "{} leads outside the sandbox; refused",
                            rel.strip_prefix(dest).unwrap_or(&rel).display()
                        ));
                    }
                }
            } else if meta.is_dir() {
                todo.push(e.path());
            }
        }
    }
    Ok(())
}

fn unpack(src: &Path, kind: ArchiveKind, dest: &Path) -> Result<(), String> {
    let open = || File::open(src).map_err(|e| format!("opening {}: {e}", src.display()));
    let untar = |reader: Box<dyn io::Read>| -> Result<(), String> {
        let bad = |e: io::Error| format!("extracting {}: {e}", src.display());
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = entry.path().map_err(bad)?.into_owned();
            // `./` (an archive made with `tar -C dir .`): the sandbox itself, already there.
            if path.components().all(|c| c == Component::CurDir) {
                continue;
            }
            let rel = safe_relative(&path.to_string_lossy())
                .ok_or_else(|| format!("entry {} leaves the sandbox; refused", path.display()))?;
            refuse_reserved(&rel)?;
            refuse_under_link(dest, &rel)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                // Its mode would be set through a link standing at its path.
                refuse_under_link(dest, &rel.join("x"))?;
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| format!("link {} has no target", rel.display()))?;
                check_link(dest, &rel, &target, kind.is_hard_link())?;
            } else if !(kind.is_file() || kind.is_dir() || kind.is_contiguous()) {
                if kind.is_pax_global_extensions()
                    || kind.is_pax_local_extensions()
                    || kind.is_gnu_longname()
                    || kind.is_gnu_longlink()
                {
                    continue;
                }
                return Err(format!(
                    "entry {} is a {kind:?}, not a file, directory or link; refused",
                    rel.display()
                ));
            }
            if !entry.unpack_in(dest).map_err(bad)? {
                return Err(format!(
                    "entry {} leaves the sandbox; refused",
                    rel.display()
                ));
            }
        }
        Ok(())
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
                let rel = entry.enclosed_name().ok_or_else(|| {
                    format!("zip entry {:?} leaves the sandbox; refused", entry.name())
                })?;
                refuse_reserved(&rel)?;
                // Every directory on the way is a real one (no link), so creating the missing
                // ones and the file below never follows a link as root.
                refuse_under_link(dest, &rel)?;
                if entry.is_dir() {
                    refuse_under_link(dest, &rel.join("x"))?;
                }
                let out = dest.join(&rel);
                if entry.is_dir() {
                    fs::create_dir_all(&out)
                        .map_err(|e| format!("creating {}: {e}", out.display()))?;
                    continue;
                }
                if let Some(parent) = out.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                }
                // Whatever had the name goes first; the new file never writes through a link.
                match fs::remove_file(&out) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("replacing {}: {e}", out.display())),
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&out)
                    .map_err(|e| format!("creating {}: {e}", out.display()))?;
                io::copy(&mut entry, &mut f)
                    .map_err(|e| format!("writing {}: {e}", out.display()))?;
                if let Some(mode) = entry.unix_mode() {
                    let _ = f.set_permissions(fs::Permissions::from_mode(mode & 0o777));
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
