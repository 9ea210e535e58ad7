//! The agent's real cgroup tests on a pure cgroup v2 kernel: `tests/vm/run-cgroup-v2.sh` boots a
//! qemu VM (Debian's cloud kernel, `cgroup_no_v1=all`, everything in an initramfs) and runs this
//! build's `drove_agent` unit tests, the `cgroups` and `agent` integration tests and the
//! `containers` ones named below (crun containers on CNI networks) in it, then
//! the `cgroups` tests again inside a cgroup namespace rooted at a non-root cgroup (as in a
//! container). The dev host is hybrid (v1), so this is the only real run of the v2 path. Needs
//! root and Debian's packages (the script installs them); fails — never skips — without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

/// The test binary `<name>-<16 hex>` in cargo's deps dir that lists `marker`: the newest one,
/// i.e. the one the build that produced this binary made (or found fresh) from these sources.
fn sibling(deps: &Path, name: &str, marker: &str) -> PathBuf {
    let mut candidates: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(deps)
        .unwrap_or_else(|e| panic!("reading {}: {e}", deps.display()))
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let hash = file.strip_prefix(name)?.strip_prefix('-')?;
            if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .map(|(_, p)| p)
        .find(|p| {
            Command::new(p)
                .args(["--list", "--format", "terse"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(marker))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| {
            panic!(
                "no test binary {name}-* listing {marker} in {}",
                deps.display()
            )
        })
}

/// The container tests that run in the VM too: a container under its v2 cgroup (confined,
/// its memory limit, an agent restart) on its own CNI network (egress, refusals).
const CONTAINER_TESTS: &str = "a_task_runs_confined_with_crun \
     a_memory_hog_in_a_container_is_a_memory_limitation \
     a_restarted_agent_keeps_its_containers_and_learns_how_they_ended \
     a_task_reaches_the_outside_but_not_other_tasks_or_the_host";

#[test]
fn agent_cgroup_tests_pass_on_a_pure_cgroup_v2_kernel() {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    // <target>/<profile>/deps/<this binary>
    let target = deps.parent().and_then(Path::parent).unwrap();
    let binaries = format!(
        "lib={} cgroups={} agent={} containers={} executor={}",
        sibling(
            deps,
            "drove_agent",
            "cgroups::tests::v2_preparation_enables_controllers_top_down"
        )
        .display(),
        sibling(deps, "cgroups", "a_nested_cgroup_root_works").display(),
        sibling(deps, "agent", "memory_hog_is_killed_alone").display(),
        sibling(deps, "containers", "a_task_runs_confined_with_crun").display(),
        env!("CARGO_BIN_EXE_drove-agent-executor"),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/run-cgroup-v2.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .env("DROVE_VM_BINARIES", &binaries)
        .env("DROVE_VM_WORK", target.join("vm-cgroup-v2"))
        .env("DROVE_VM_TESTS", "lib cgroups agent containers")
        .env("DROVE_VM_ARGS_containers", CONTAINER_TESTS)
        .env("DROVE_VM_NS_TESTS", "cgroups")
        .env("DROVE_VM_TIMEOUT", "600")
        .output()
        .expect("running tests/vm/run-cgroup-v2.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The VM's summary lines, always; its whole console on failure.
    for line in stdout.lines().filter(|l| {
        l.starts_with("DROVE-VM-") || l.starts_with("test result:") || l.contains("FAILED")
    }) {
        println!("{line}");
    }
    println!("{stderr}");
    println!("VM run took {:.0?}", started.elapsed());
    assert!(
        out.status.success(),
        "cgroup v2 VM run failed ({}); console:\n{stdout}",
        out.status
    );
    assert!(stdout.lines().any(|l| l == "DROVE-VM-SUMMARY PASS"));
}
