//! Real cgroups (v1 on the hybrid dev host, v2 in the VM of tests/vm/run-cgroup-v2.sh): limit
//! files, the kill-everything path, the OOM counter, a nested root. Fails — never skips — when
//! cgroups are unusable.

use drove_testkit::agent as support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use drove_agent::cgroups::{CgroupManager, Limits};
use drove_testkit::wait::blocking_until;
use support::{pid_alive, CgroupRoot};

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

/// Spawns `sh -c script` already inside `procs` files (joins via a tiny shell prelude).
fn spawn_in(procs: &[std::path::PathBuf], script: &str) -> std::process::Child {
    let mut joins = String::new();
    for p in procs {
        joins.push_str(&format!("echo $$ > {} && ", p.display()));
    }
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{joins} exec /bin/sh -c '{script}'"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

#[test]
fn creates_cgroups_with_cpu_and_memory_limits() {
    let root = CgroupRoot::new("limits");
    let mgr = CgroupManager::detect(&root.0).expect("cgroups must be usable for this test");
    let cg = mgr
        .create(
            "c1",
            &Limits {
                cpus: 1.5,
                mem_mb: 96.0,
                cfs_quota: true,
                pids_max: None,
                boost: false,
                cpu_limit: None,
            },
        )
        .unwrap();
    if mgr.is_v2() {
        let dir = Path::new("/sys/fs/cgroup").join(&root.0).join("c1");
        assert_eq!(
            read(dir.join("cpu.weight")),
            drove_agent::cgroups::shares_to_weight(1536).to_string()
        );
        assert_eq!(read(dir.join("cpu.max")), "150000 100000");
        assert_eq!(read(dir.join("memory.max")), (96u64 << 20).to_string());
        if dir.join("memory.swap.max").exists() {
            assert_eq!(read(dir.join("memory.swap.max")), "0");
        }
        // The agent enabled the controllers itself, top-down, nothing was pre-enabled for it.
        for d in [Path::new("/sys/fs/cgroup").to_path_buf(), dir.join("..")] {
            let enabled = read(d.join("cgroup.subtree_control"));
            for c in ["cpu", "memory"] {
                assert!(
                    enabled.split_whitespace().any(|x| x == c),
                    "{c} not enabled in {}: {enabled:?}",
                    d.display()
                );
            }
        }
        let controllers = read(dir.join("cgroup.controllers"));
        assert!(controllers.contains("cpu") && controllers.contains("memory"));
    } else {
        let cpu = Path::new("/sys/fs/cgroup/cpu").join(&root.0).join("c1");
        let mem = Path::new("/sys/fs/cgroup/memory").join(&root.0).join("c1");
        assert_eq!(read(cpu.join("cpu.shares")), "1536");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "150000");
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
        if mem.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(mem.join("memory.memsw.limit_in_bytes")),
                (96u64 << 20).to_string()
            );
        }
    }
    assert_eq!(cg.memory_limit(), Some(96 << 20));
    assert!(cg.procs_files().len() >= 2 || mgr.is_v2());

    // No CFS quota: shares only.
    let cg2 = mgr
        .create(
            "c2",
            &Limits {
                cpus: 0.25,
                mem_mb: 0.0,
                cfs_quota: false,
                pids_max: None,
                boost: false,
                cpu_limit: None,
            },
        )
        .unwrap();
    if mgr.is_v2() {
        let dir = Path::new("/sys/fs/cgroup").join(&root.0).join("c2");
        assert_eq!(
            read(dir.join("cpu.weight")),
            drove_agent::cgroups::shares_to_weight(256).to_string()
        );
        assert_eq!(read(dir.join("cpu.max")), "max 100000");
        assert_eq!(read(dir.join("memory.max")), "max");
    } else {
        let cpu = Path::new("/sys/fs/cgroup/cpu").join(&root.0).join("c2");
        assert_eq!(read(cpu.join("cpu.shares")), "256");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "-1");
    }
    cg.destroy(Duration::from_secs(5)).unwrap();
    cg2.destroy(Duration::from_secs(5)).unwrap();
    assert!(!cg.exists());
}

#[test]
fn kill_all_leaves_no_process_and_destroy_removes_the_cgroup() {
    let root = CgroupRoot::new("killall");
    let mgr = CgroupManager::detect(&root.0).expect("cgroups must be usable for this test");
    let cg = mgr
        .create(
            "k",
            &Limits {
                cpus: 0.1,
                mem_mb: 64.0,
                cfs_quota: true,
                pids_max: None,
                boost: false,
                cpu_limit: None,
            },
        )
        .unwrap();
    let mut child = spawn_in(
        &cg.procs_files(),
        "setsid sleep 300 & sleep 300 & sleep 300",
    );
    blocking_until("4 processes in the cgroup", Duration::from_secs(10), || {
        cg.pids().len() >= 4
    });
    let pids = cg.pids();
    assert!(cg.kill_all(Duration::from_secs(5)));
    let _ = child.wait();
    cg.destroy(Duration::from_secs(5)).unwrap();
    // A killed process leaves its cgroup before it is a zombie (cgroup_exit comes first in
    // do_exit), so the cgroup can be gone while /proc still shows it exiting: wait for each to
    // end, boundedly, rather than read its state once.
    blocking_until(
        "every killed process to end",
        Duration::from_secs(5),
        || pids.iter().all(|p| !pid_alive(*p)),
    );
    assert!(!cg.exists());
}

#[test]
fn oom_kill_is_counted_and_only_hits_the_cgroup() {
    let root = CgroupRoot::new("oom");
    let mgr = CgroupManager::detect(&root.0).expect("cgroups must be usable for this test");
    let cg = mgr
        .create(
            "hog",
            &Limits {
                cpus: 0.5,
                mem_mb: 32.0,
                cfs_quota: false,
                pids_max: None,
                boost: false,
                cpu_limit: None,
            },
        )
        .unwrap();
    assert_eq!(cg.oom_kills(), 0);
    let mut child = spawn_in(
        &cg.procs_files(),
        "head -c 300m /dev/zero | tail > /dev/null",
    );
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(cg.oom_kills() >= 1, "no OOM kill recorded");
    let peak = cg.memory_peak().unwrap();
    assert!((16 << 20..=33 << 20).contains(&peak), "peak {peak}");
    cg.destroy(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_nested_cgroup_root_works() {
    let root = CgroupRoot::new("nested");
    let mgr = CgroupManager::detect(&format!("{}/agents/a1", root.0))
        .expect("cgroups must be usable for this test");
    let cg = mgr
        .create(
            "n",
            &Limits {
                cpus: 0.5,
                mem_mb: 48.0,
                cfs_quota: true,
                pids_max: None,
                boost: false,
                cpu_limit: None,
            },
        )
        .unwrap();
    assert_eq!(cg.memory_limit(), Some(48 << 20));
    let mut child = spawn_in(&cg.procs_files(), "sleep 300");
    blocking_until(
        "a process to join the cgroup",
        Duration::from_secs(10),
        || !cg.pids().is_empty(),
    );
    assert!(cg.kill_all(Duration::from_secs(5)));
    let _ = child.wait();
    cg.destroy(Duration::from_secs(5)).unwrap();
    assert!(!cg.exists());
}
