//! Disk that stays bounded: the sandboxes of ended tasks and unused artifact layers are
//! collected, so an app that sleeps and wakes all day does not fill the machine.
//!
//! - An ended task's sandbox is kept for its logs: the last [`KEEP_PER_APP`] per app (tasks
//!   named `<app>.<id>`, as Marathon names them; another id is its own app), all of them
//!   within `--sandbox-keep-bytes` (the oldest go first). A task labelled
//!   `DROVE_SANDBOX=discard` (a build, whose output its framework has read) keeps none.
//! - A layer no sandbox mounts goes, least recently used first, once the unused ones take
//!   more than `--layers-keep-bytes`.
//!
//! It runs every [`EVERY`], and soon after a task ends.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::node::Node;

/// How often collection runs (besides after a task ends).
pub const EVERY: Duration = Duration::from_secs(60);
/// Ended sandboxes kept per app.
pub const KEEP_PER_APP: usize = 2;
/// The label (`DROVE_SANDBOX=discard`) of a task whose sandbox goes as soon as it ends.
pub const DISCARD_LABEL: &str = "DROVE_SANDBOX";
/// How long after it ended a discarded sandbox waits (its framework's last read of its logs).
pub const DISCARD_AFTER: Duration = Duration::from_secs(30);

/// What one collection freed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    pub sandboxes: usize,
    pub layers: usize,
    pub bytes: u64,
}

/// Collects until the agent stops: every [`EVERY`], and when `node.collect` is notified.
pub async fn run(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
            _ = node.collect.notified() => {}
        }
        let n = node.clone();
        match tokio::task::spawn_blocking(move || collect(&n)).await {
            Ok(c) if c != Collected::default() => tracing::info!(
                sandboxes = c.sandboxes,
                layers = c.layers,
                mib = c.bytes >> 20,
                "collected ended sandboxes and unused layers"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "collection failed"),
        }
    }
}

/// One ended run's sandbox.
struct Ended {
    path: PathBuf,
    app: (String, String),
    used: SystemTime,
    bytes: u64,
    discard: bool,
}

/// Collects once; see the module docs.
pub fn collect(node: &Node) -> Collected {
    let live: HashSet<PathBuf> = node
        .tasks()
        .values()
        .filter_map(|r| r.sandbox.clone())
        .collect();
    let mut ended = ended_runs(&node.config.work_dir.join("sandboxes"), &live);
    let mut done = Collected::default();
    let remove = |e: &Ended, done: &mut Collected| {
        if remove_run(&e.path) {
            done.sandboxes += 1;
            done.bytes += e.bytes;
        }
    };
    // Newest first within each app; the discarded and those past the app's keep go.
    ended.sort_by_key(|e| std::cmp::Reverse(e.used));
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut kept = Vec::new();
    for e in ended {
        let n = seen.entry(e.app.clone()).or_default();
        if e.discard {
            // A discarded one goes once its framework has had time to read it.
            if e.used.elapsed().is_ok_and(|age| age >= DISCARD_AFTER) {
                remove(&e, &mut done);
            }
        } else if *n >= KEEP_PER_APP {
            remove(&e, &mut done);
        } else {
            *n += 1;
            kept.push(e);
        }
    }
    // Then, oldest first, whatever is over the byte budget.
    let budget = node.config.sandbox_keep_bytes;
    let mut total: u64 = kept.iter().map(|e| e.bytes).sum();
    for e in kept.iter().rev() {
        if total <= budget {
            break;
        }
        total = total.saturating_sub(e.bytes);
        remove(e, &mut done);
    }
    if let Some(layers) = &node.layers {
        let mounted = mounted_lowers();
        let mut unused: Vec<(SystemTime, PathBuf, u64)> = layers
            .all()
            .into_iter()
            .filter(|l| !mounted.contains(l))
            .map(|l| {
                let used = fs::metadata(&l)
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let bytes = crate::layers::size_of(&l);
                (used, l, bytes)
            })
            .collect();
        unused.sort();
        let mut total: u64 = unused.iter().map(|u| u.2).sum();
        for (_, l, bytes) in unused {
            if total <= node.config.layers_keep_bytes {
                break;
            }
            total = total.saturating_sub(bytes);
            if layers.remove(&l) {
                done.layers += 1;
                done.bytes += bytes;
            }
        }
    }
    done
}

/// Every run dir under `sandboxes/<framework>/<task>/` that no tracked task uses.
fn ended_runs(base: &Path, live: &HashSet<PathBuf>) -> Vec<Ended> {
    let mut out = Vec::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    };
    for fw in dirs(base) {
        for task in dirs(&fw) {
            let task_id = task
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let app = task_id
                .rsplit_once('.')
                .map_or(task_id.clone(), |(a, _)| a.to_string());
            for run in dirs(&task) {
                let name = run.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_none_or(|n| n.contains('.')) || live.contains(&run) {
                    continue;
                }
                let mounted = crate::layers::upper_of(&run);
                let own = if mounted.is_dir() {
                    mounted
                } else {
                    run.clone()
                };
                let used = fs::metadata(crate::logs::Stream::Stdout.path_in(&run))
                    .or_else(|_| fs::metadata(&run))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(Ended {
                    discard: discard_marker(&run).exists(),
                    bytes: crate::layers::tree_bytes(&own),
                    app: (
                        fw.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        app.clone(),
                    ),
                    used,
                    path: run,
                });
            }
        }
    }
    out
}

/// The marker beside a run's sandbox saying it goes as soon as its task ends.
pub fn discard_marker(run: &Path) -> PathBuf {
    let mut name = run.file_name().unwrap_or_default().to_os_string();
    name.push(".discard");
    run.with_file_name(name)
}

/// Removes a run's sandbox (unmounted first), its overlay dirs and marker, and its task dir
/// once empty; true when the sandbox is gone.
fn remove_run(run: &Path) -> bool {
    if let Err(e) = crate::layers::unmount(run) {
        tracing::warn!(error = %e, "collecting a sandbox");
        return false;
    }
    let mut gone = true;
    for p in [
        run.to_path_buf(),
        crate::layers::upper_of(run),
        crate::layers::work_of(run),
    ] {
        match fs::remove_dir_all(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "collecting a sandbox");
                gone = false;
            }
        }
    }
    let _ = fs::remove_file(discard_marker(run));
    if let Some(task) = run.parent() {
        let _ = fs::remove_dir(task);
    }
    gone
}

/// The lower dirs of every overlay mounted now (from `/proc/self/mounts`).
fn mounted_lowers() -> HashSet<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("overlay"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .flat_map(|opts| opts.split(','))
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|l| l.split(':'))
        .map(PathBuf::from)
        .collect()
}
