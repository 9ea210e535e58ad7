//! Per-task cgroups (cgroup v1, hybrid, or v2) through `cgroups_rs::fs`.
//!
//! Every task gets `<cgroup-root>/<container-id>` in the `cpu`, `cpuacct`, `memory` (and `pids`
//! when mounted) hierarchies on v1, or one directory on the unified v2 hierarchy with the `cpu`
//! and `memory` controllers enabled. Limits:
//! - `cpu.shares` = 1024 × cpus (min 2); v2 `cpu.weight` = the runc/systemd conversion of it.
//! - CFS quota = cpus × 100 ms per 100 ms period (min 1 ms), unless disabled.
//! - memory hard limit = mem MiB; v1 also `memory.memsw.limit_in_bytes` (same value) when the
//!   kernel has swap accounting, v2 `memory.swap.max = 0`, so swap cannot dodge the limit.
//! - `pids.max` (`--task-pids-max`, 1,024 by default) where the pids controller is there, so a
//!   fork bomb stays inside its task.
//!
//! A hybrid host (v1 controllers plus an empty `/sys/fs/cgroup/unified`) is treated as v1, which
//! is what `cgroups_rs::fs::hierarchies::auto()` does too.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controller, Hierarchy, MaxValue};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// CFS period drove uses (Mesos's default): 100 ms.
pub const CFS_PERIOD_US: u64 = 100_000;
/// Minimum CFS quota (Mesos): 1 ms.
pub const MIN_CFS_QUOTA_US: u64 = 1_000;
/// Minimum `cpu.shares` the kernel accepts.
pub const MIN_SHARES: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups are unusable: {0} (run as root on a host with the cpu and memory controllers, or pass --isolation none)")]
    Unusable(String),
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: String,
        source: cgroups_rs::fs::error::Error,
    },
    #[error("setting {what} on cgroup {path}: {source}")]
    Limit {
        path: String,
        what: &'static str,
        source: cgroups_rs::fs::error::Error,
    },
    #[error("cgroup {path} is missing controller {controller} (cgroup.controllers: {found:?})")]
    MissingController {
        path: String,
        controller: &'static str,
        found: String,
    },
    #[error("removing cgroup {path}: {message}")]
    Remove { path: String, message: String },
}

/// What a task's cgroup enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpus: f64,
    /// MiB; 0 means no memory limit.
    pub mem_mb: f64,
    pub cfs_quota: bool,
    /// Most processes and threads the task may have; None: no limit.
    pub pids_max: Option<u64>,
    /// Startup CPU boost: the CFS quota is at least one whole core until the launcher ends
    /// it (a few seconds after the task's first passed health check, so the first requests
    /// are served boosted too; or `--startup-cpu-boost` without one). Shares stay the task's
    /// own, so under contention the boost only takes otherwise idle CPU.
    pub boost: bool,
    /// The task's CPU limit (Mesos's `limits.cpus`): its quota, when above `cpus`; its shares
    /// stay its `cpus`, so it bursts only into CPU nobody with a claim wants.
    pub cpu_limit: Option<f64>,
}

/// The quota a boosted task gets at least, in cores.
pub const BOOST_CPUS: f64 = 1.0;

impl Limits {
    pub fn shares(&self) -> u64 {
        ((self.cpus * 1024.0).round() as u64).max(MIN_SHARES)
    }

    /// CFS quota in µs for [`CFS_PERIOD_US`], or None for "no cap" (cpus 0 or quota disabled).
    pub fn cfs_quota_us(&self) -> Option<u64> {
        if !self.cfs_quota || self.cpus <= 0.0 {
            return None;
        }
        let cpus = self.cpus.max(self.cpu_limit.unwrap_or(0.0));
        let cpus = if self.boost {
            cpus.max(BOOST_CPUS)
        } else {
            cpus
        };
        Some(((cpus * CFS_PERIOD_US as f64).round() as u64).max(MIN_CFS_QUOTA_US))
    }

    pub fn mem_bytes(&self) -> Option<u64> {
        if self.mem_mb <= 0.0 {
            return None;
        }
        Some((self.mem_mb * 1024.0 * 1024.0).round() as u64)
    }
}

/// v1 `cpu.shares` → v2 `cpu.weight` (the conversion runc, crun and systemd use):
/// 2 → 1, 1024 → 39 (≈ 100 × 1024/2621), 262144 → 10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// The `oom_kill` counter of a v2 `memory.events` file (`oom_kill 3`).
pub fn parse_memory_events_oom_kill(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == "oom_kill")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The `oom_kill` counter of a v1 `memory.oom_control` file.
pub fn parse_oom_control_oom_kill(text: &str) -> u64 {
    parse_memory_events_oom_kill(text)
}

fn enabled_controllers(dir: &Path) -> String {
    fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default()
}

/// Enables `controllers` for `dir`'s children (skipping those already enabled).
fn enable_subtree(dir: &Path, controllers: &[&str]) -> std::io::Result<()> {
    let current = enabled_controllers(dir);
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !current.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), missing.join(" "))
}

/// A hybrid host (v1 hierarchies under `/sys/fs/cgroup`, v2 at `/sys/fs/cgroup/unified`) can
/// leave controllers bound to the v2 hierarchy when no v1 one was mounted for them (hugetlb on
/// some hosts). crun refuses such a host ("cgroups in hybrid mode not supported, drop all
/// controllers from cgroupv2"), so each such controller gets the v1 hierarchy a systemd host
/// would have mounted for it, at `/sys/fs/cgroup/<name>`. The kernel moves a controller only
/// while no v2 cgroup uses it, so nothing running is affected; nothing is done elsewhere.
pub fn give_v2_controllers_v1_hierarchies() -> Result<(), CgroupError> {
    let base = Path::new("/sys/fs/cgroup");
    let unified = base.join("unified");
    if hierarchies::is_cgroup2_unified_mode() || !unified.join("cgroup.controllers").is_file() {
        return Ok(());
    }
    let on_v2 = fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
    for c in on_v2.split_whitespace() {
        if !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            continue;
        }
        let dir = base.join(c);
        fs::create_dir_all(&dir)
            .map_err(|e| CgroupError::Unusable(format!("creating {}: {e}", dir.display())))?;
        let mounted = nix::mount::mount(
            Some("cgroup"),
            &dir,
            Some("cgroup"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some(c),
        );
        // Another agent starting at the same time may have moved it first.
        let moved = || {
            !fs::read_to_string(unified.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|x| x == c)
        };
        if mounted.is_err() && moved() {
            continue;
        }
        mounted.map_err(|e| {
            CgroupError::Unusable(format!(
                "the {c} controller is on the v2 hierarchy of this hybrid host, which crun \
                 refuses, and mounting its v1 hierarchy at {} failed: {e} (use --oci-runtime runc)",
                dir.display()
            ))
        })?;
        tracing::info!(controller = c, path = %dir.display(), "gave a v2-bound controller its v1 hierarchy (crun needs it)");
    }
    Ok(())
}

/// v2: makes `<hierarchy>/<root>` a domain whose children get `controllers`.
///
/// The "no internal processes" rule forbids enabling controllers in a non-root cgroup that holds
/// processes. The real root is exempt, but inside a cgroup namespace (a container) the visible
/// root is not: if enabling there fails with EBUSY, the agent moves itself into the leaf
/// `<root>/agent` and retries (this works when the agent is the only process there). Task
/// cgroups are siblings of that leaf, so `<root>` itself never holds processes.
pub fn prepare_v2(
    hierarchy: &Path,
    root: &str,
    controllers: &[&str],
    self_pid: u32,
) -> Result<(), CgroupError> {
    let root_dir = hierarchy.join(root);
    let unusable = |what: String| CgroupError::Unusable(what);
    if let Err(e) = enable_subtree(hierarchy, controllers) {
        if e.raw_os_error() != Some(nix::libc::EBUSY) {
            return Err(unusable(format!(
                "enabling {controllers:?} in {}: {e}",
                hierarchy.display()
            )));
        }
        let leaf = root_dir.join("agent");
        fs::create_dir_all(&leaf)
            .map_err(|e| unusable(format!("creating {}: {e}", leaf.display())))?;
        fs::write(leaf.join("cgroup.procs"), self_pid.to_string())
            .map_err(|e| unusable(format!("moving the agent into {}: {e}", leaf.display())))?;
        tracing::info!(leaf = %leaf.display(), "moved the agent into a leaf cgroup (no internal processes rule)");
        enable_subtree(hierarchy, controllers).map_err(|e| {
            unusable(format!(
                "enabling {controllers:?} in {} (other processes live there?): {e}",
                hierarchy.display()
            ))
        })?;
    }
    // Every level below the hierarchy root down to `<root>` itself: a controller can be enabled
    // in `a/b` only once `a` hands it down, so a nested root (`--cgroup-root a/b`) needs `a` too.
    let mut dir = hierarchy.to_path_buf();
    for part in root.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        fs::create_dir_all(&dir)
            .map_err(|e| unusable(format!("creating {}: {e}", dir.display())))?;
        enable_subtree(&dir, controllers).map_err(|e| {
            unusable(format!(
                "enabling {controllers:?} in {}: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Creates and loads task cgroups under one root name (`drove` by default).
#[derive(Debug, Clone)]
pub struct CgroupManager {
    root: String,
    v2: bool,
}

impl CgroupManager {
    /// Checks that cgroups are usable: the cpu and memory controllers are mounted and the root
    /// cgroup can be created.
    pub fn detect(root: &str) -> Result<CgroupManager, CgroupError> {
        let root = root.trim_matches('/').to_string();
        if root.is_empty() || root.split('/').any(|p| p == ".." || p == ".") {
            return Err(CgroupError::Unusable(format!(
                "invalid cgroup root {root:?}"
            )));
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(CgroupError::Unusable(
                "the agent is not running as root".into(),
            ));
        }
        let v2 = hierarchies::is_cgroup2_unified_mode();
        let mgr = CgroupManager { root, v2 };
        if v2 {
            let controllers = fs::read_to_string(
                Path::new(hierarchies::UNIFIED_MOUNTPOINT).join("cgroup.controllers"),
            )
            .map_err(|e| CgroupError::Unusable(format!("reading cgroup.controllers: {e}")))?;
            for c in ["cpu", "memory"] {
                if !controllers.split_whitespace().any(|x| x == c) {
                    return Err(CgroupError::Unusable(format!(
                        "the v2 hierarchy lacks the {c} controller"
                    )));
                }
            }
        } else {
            let v1 = hierarchies::V1::new();
            for c in [
                cgroups_rs::fs::Controllers::Cpu,
                cgroups_rs::fs::Controllers::Mem,
            ] {
                if v1.get_mount_point(c.clone()).is_none() {
                    return Err(CgroupError::Unusable(format!(
                        "the {c} controller is not mounted"
                    )));
                }
            }
        }
        if v2 {
            let mut wanted = vec!["cpu", "memory"];
            if mgr.controllers().iter().any(|c| c == "pids") {
                wanted.push("pids");
            }
            prepare_v2(
                Path::new(hierarchies::UNIFIED_MOUNTPOINT),
                &mgr.root,
                &wanted,
                std::process::id(),
            )?;
        }
        // Create the root itself so permission problems show at start-up.
        let probe = mgr.load_path(&mgr.root);
        probe.create().map_err(|e| {
            CgroupError::Unusable(format!("creating the root cgroup {:?}: {e}", mgr.root))
        })?;
        Ok(mgr)
    }

    pub fn is_v2(&self) -> bool {
        self.v2
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    fn controllers(&self) -> Vec<String> {
        let mut c = vec!["cpu".to_string(), "memory".to_string()];
        if self.v2 {
            let available = fs::read_to_string(
                Path::new(hierarchies::UNIFIED_MOUNTPOINT).join("cgroup.controllers"),
            )
            .unwrap_or_default();
            if available.split_whitespace().any(|x| x == "pids") {
                c.push("pids".into());
            }
        } else {
            let v1 = hierarchies::V1::new();
            if v1
                .get_mount_point(cgroups_rs::fs::Controllers::CpuAcct)
                .is_some()
            {
                c.push("cpuacct".into());
            }
            if v1
                .get_mount_point(cgroups_rs::fs::Controllers::Pids)
                .is_some()
            {
                c.push("pids".into());
            }
        }
        c
    }

    fn load_path(&self, path: &str) -> Cgroup {
        let hier: Box<dyn Hierarchy> = if self.v2 {
            Box::new(hierarchies::V2::new())
        } else {
            Box::new(hierarchies::V1::new())
        };
        Cgroup::load_with_specified_controllers(hier, path, self.controllers())
    }

    /// The cgroup path (relative to each hierarchy's root) of a container.
    pub fn path_of(&self, container_id: &str) -> String {
        format!("{}/{}", self.root, container_id)
    }

    /// Loads an existing task cgroup (after an agent restart) by its relative path.
    pub fn load(&self, path: &str) -> TaskCgroup {
        TaskCgroup {
            cg: self.load_path(path),
            path: path.to_string(),
            v2: self.v2,
        }
    }

    /// Creates `<root>/<container_id>` with the given limits.
    pub fn create(&self, container_id: &str, limits: &Limits) -> Result<TaskCgroup, CgroupError> {
        let path = self.path_of(container_id);
        let cg = self.load_path(&path);
        cg.create().map_err(|source| CgroupError::Create {
            path: path.clone(),
            source,
        })?;
        let task_cg = TaskCgroup {
            cg,
            path: path.clone(),
            v2: self.v2,
        };
        if let Err(e) = task_cg.apply(limits) {
            let _ = task_cg.destroy(Duration::from_secs(1));
            return Err(e);
        }
        Ok(task_cg)
    }
}

/// One task's cgroup.
pub struct TaskCgroup {
    cg: Cgroup,
    path: String,
    v2: bool,
}

impl std::fmt::Debug for TaskCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCgroup")
            .field("path", &self.path)
            .field("v2", &self.v2)
            .finish()
    }
}

impl TaskCgroup {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Directories of this cgroup, one per hierarchy (one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let set: BTreeSet<PathBuf> = self
            .cg
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect();
        set.into_iter().collect()
    }

    /// The `cgroup.procs` files a process writes its pid to in order to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Sets the CFS quota alone (a boost ending).
    pub fn set_cpu_quota(&self, limits: &Limits) -> Result<(), CgroupError> {
        let path = self.path.clone();
        let cpu: &CpuController =
            self.cg
                .controller_of()
                .ok_or_else(|| CgroupError::MissingController {
                    path: path.clone(),
                    controller: "cpu",
                    found: String::new(),
                })?;
        let quota = limits.cfs_quota_us().map(|q| q as i64).unwrap_or(-1);
        cpu.set_cfs_quota_and_period(Some(quota), Some(CFS_PERIOD_US))
            .map_err(|source| CgroupError::Limit {
                path,
                what: "cfs quota",
                source,
            })
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let limit_err = |what: &'static str| {
            let path = self.path.clone();
            move |source| CgroupError::Limit { path, what, source }
        };
        if self.v2 {
            // cgroups-rs ignores errors enabling controllers; check they really are there.
            let dir = PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT).join(&self.path);
            let found = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            for c in ["cpu", "memory"] {
                if !found.split_whitespace().any(|x| x == c) {
                    return Err(CgroupError::MissingController {
                        path: self.path.clone(),
                        controller: c,
                        found,
                    });
                }
            }
        }
        let cpu: &CpuController =
            self.cg
                .controller_of()
                .ok_or_else(|| CgroupError::MissingController {
                    path: self.path.clone(),
                    controller: "cpu",
                    found: String::new(),
                })?;
        let shares = limits.shares();
        let value = if self.v2 {
            shares_to_weight(shares)
        } else {
            shares
        };
        cpu.set_shares(value).map_err(limit_err("cpu shares"))?;
        match limits.cfs_quota_us() {
            Some(q) => {
                cpu.set_cfs_quota_and_period(Some(q as i64), Some(CFS_PERIOD_US))
                    .map_err(limit_err("cfs quota"))?;
            }
            None => {
                cpu.set_cfs_quota_and_period(Some(-1), Some(CFS_PERIOD_US))
                    .map_err(limit_err("cfs quota"))?;
            }
        }
        let mem: &MemController =
            self.cg
                .controller_of()
                .ok_or_else(|| CgroupError::MissingController {
                    path: self.path.clone(),
                    controller: "memory",
                    found: String::new(),
                })?;
        if let Some(bytes) = limits.mem_bytes() {
            mem.set_limit(bytes as i64)
                .map_err(limit_err("memory limit"))?;
            if self.v2 {
                if self.file("memory.swap.max").exists() {
                    mem.set_memswap_limit(0)
                        .map_err(limit_err("memory.swap.max"))?;
                }
            } else if self.file("memory.memsw.limit_in_bytes").exists() {
                mem.set_memswap_limit(bytes as i64)
                    .map_err(limit_err("memory+swap limit"))?;
            }
        }
        if let Some(max) = limits.pids_max {
            let pids: Option<&PidController> = self.cg.controller_of();
            if let Some(pids) = pids {
                pids.set_pid_max(MaxValue::Value(i64::try_from(max).unwrap_or(i64::MAX)))
                    .map_err(limit_err("pids.max"))?;
            }
        }
        Ok(())
    }

    /// A file in the memory hierarchy's directory (or the only directory on v2).
    fn file(&self, name: &str) -> PathBuf {
        let mem: Option<&MemController> = self.cg.controller_of();
        match mem {
            Some(m) => m.path().join(name),
            None => PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT)
                .join(&self.path)
                .join(name),
        }
    }

    /// CPU time used by the cgroup so far, (user, system) in seconds: v2 `cpu.stat`
    /// (`user_usec`, `system_usec`), v1 `cpuacct.stat` (in USER_HZ ticks, 100 a second).
    pub fn cpu_seconds(&self) -> Option<(f64, f64)> {
        for dir in self.dirs() {
            if self.v2 {
                if let Ok(t) = fs::read_to_string(dir.join("cpu.stat")) {
                    return parse_cpu_stat(&t);
                }
            } else if let Ok(t) = fs::read_to_string(dir.join("cpuacct.stat")) {
                return parse_cpuacct_stat(&t);
            }
        }
        None
    }

    /// Times the kernel OOM killer fired inside this cgroup.
    pub fn oom_kills(&self) -> u64 {
        if self.v2 {
            fs::read_to_string(self.file("memory.events"))
                .map(|t| parse_memory_events_oom_kill(&t))
                .unwrap_or(0)
        } else {
            fs::read_to_string(self.file("memory.oom_control"))
                .map(|t| parse_oom_control_oom_kill(&t))
                .unwrap_or(0)
        }
    }

    /// The hard memory limit in bytes, if one is set.
    pub fn memory_limit(&self) -> Option<u64> {
        let name = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        fs::read_to_string(self.file(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    /// Peak memory usage in bytes (v1 `max_usage_in_bytes`, v2 `memory.peak` when present).
    pub fn memory_peak(&self) -> Option<u64> {
        let names: &[&str] = if self.v2 {
            &["memory.peak", "memory.current"]
        } else {
            &["memory.max_usage_in_bytes", "memory.usage_in_bytes"]
        };
        names.iter().find_map(|n| {
            fs::read_to_string(self.file(n))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
    }

    /// Every process in the cgroup (union over hierarchies).
    pub fn pids(&self) -> Vec<u32> {
        let mut set = BTreeSet::new();
        for f in self.procs_files() {
            if let Ok(text) = fs::read_to_string(&f) {
                set.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        set.into_iter().collect()
    }

    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }

    /// SIGKILLs every process in the cgroup until it is empty or `timeout` passes.
    /// Returns whether the cgroup ended up empty.
    pub fn kill_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if self.v2 {
                // cgroup.kill (5.14+) kills atomically, forks included.
                let _ = self.cg.kill();
            }
            for pid in pids {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            if Instant::now() >= deadline {
                return self.pids().is_empty();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills whatever is left and removes the cgroup directories.
    pub fn destroy(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        self.kill_all(timeout);
        loop {
            let mut last_err = None;
            for dir in self.dirs() {
                if dir.exists() {
                    if let Err(e) = fs::remove_dir(&dir) {
                        last_err = Some(format!("{}: {e}", dir.display()));
                    }
                }
            }
            match last_err {
                None => return Ok(()),
                Some(message) if Instant::now() >= deadline => {
                    return Err(CgroupError::Remove {
                        path: self.path.clone(),
                        message,
                    })
                }
                Some(_) => {
                    self.kill_all(Duration::from_millis(100));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// v2 `cpu.stat` → (user, system) seconds.
fn parse_cpu_stat(text: &str) -> Option<(f64, f64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((
        field("user_usec ")? as f64 / 1e6,
        field("system_usec ")? as f64 / 1e6,
    ))
}

/// v1 `cpuacct.stat` → (user, system) seconds (USER_HZ is 100 on Linux).
fn parse_cpuacct_stat(text: &str) -> Option<(f64, f64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((
        field("user ")? as f64 / 100.0,
        field("system ")? as f64 / 100.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_accounting_files_parse() {
        assert_eq!(
            parse_cpu_stat("usage_usec 3500000\nuser_usec 3000000\nsystem_usec 500000\n"),
            Some((3.0, 0.5))
        );
        assert_eq!(
            parse_cpuacct_stat("user 250\nsystem 50\n"),
            Some((2.5, 0.5))
        );
        assert_eq!(parse_cpu_stat("nothing"), None);
    }

    #[test]
    fn limits_follow_mesos() {
        let l = Limits {
            cpus: 0.5,
            mem_mb: 64.0,
            cfs_quota: true,
            pids_max: None,
            boost: false,
            cpu_limit: None,
        };
        assert_eq!(l.shares(), 512);
        assert_eq!(l.cfs_quota_us(), Some(50_000));
        assert_eq!(l.mem_bytes(), Some(64 << 20));
        let tiny = Limits {
            cpus: 0.0001,
            mem_mb: 0.0,
            cfs_quota: true,
            pids_max: None,
            boost: false,
            cpu_limit: None,
        };
        assert_eq!(tiny.shares(), 2);
        assert_eq!(tiny.cfs_quota_us(), Some(1_000));
        assert_eq!(tiny.mem_bytes(), None);
        let no_cfs = Limits {
            cfs_quota: false,
            ..l
        };
        assert_eq!(no_cfs.cfs_quota_us(), None);
        // A starting task gets at least a core of quota, and keeps its own shares.
        let boosted = Limits { boost: true, ..l };
        assert_eq!(boosted.cfs_quota_us(), Some(100_000));
        assert_eq!(boosted.shares(), 512);
        let big = Limits {
            cpus: 2.0,
            boost: true,
            cpu_limit: None,
            ..l
        };
        assert_eq!(big.cfs_quota_us(), Some(200_000));
        // A limit above its cpus is its quota; its shares stay its cpus'.
        let bursting = Limits {
            cpu_limit: Some(1.5),
            ..l
        };
        assert_eq!(bursting.cfs_quota_us(), Some(150_000));
        assert_eq!(bursting.shares(), 512);
        let below = Limits {
            cpu_limit: Some(0.1),
            ..l
        };
        assert_eq!(below.cfs_quota_us(), Some(50_000), "never below its cpus");
    }

    #[test]
    fn v2_weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
        // Monotonic.
        assert!(shares_to_weight(2048) > shares_to_weight(1024));
    }

    #[test]
    fn v2_preparation_enables_controllers_top_down() {
        // A fake unified hierarchy: plain files stand in for the kernel's.
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path();
        fs::write(h.join("cgroup.subtree_control"), "").unwrap();
        fs::create_dir_all(h.join("drove")).unwrap();
        fs::write(h.join("drove/cgroup.subtree_control"), "cpu").unwrap();
        prepare_v2(h, "drove", &["cpu", "memory"], 1).unwrap();
        assert_eq!(
            fs::read_to_string(h.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory"
        );
        // Already-enabled controllers are not written again.
        assert_eq!(
            fs::read_to_string(h.join("drove/cgroup.subtree_control")).unwrap(),
            "+memory"
        );
        assert!(!h.join("drove/agent").exists());

        // A nested root: every level hands the controllers down.
        prepare_v2(h, "outer/inner", &["cpu", "memory"], 1).unwrap();
        for d in ["outer", "outer/inner"] {
            assert_eq!(
                fs::read_to_string(h.join(d).join("cgroup.subtree_control")).unwrap(),
                "+cpu +memory",
                "{d}"
            );
        }
    }

    #[test]
    fn parses_oom_counters() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_memory_events_oom_kill(v2), 1);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_control_oom_kill(v1), 3);
        assert_eq!(parse_memory_events_oom_kill(""), 0);
    }
}
