//! Docker's default seccomp profile, as an OCI `linux.seccomp` for a task with no
//! capabilities.
//!
//! `seccomp/docker-default.json` is moby's `profiles/seccomp/default.json` as vendored in
//! moby/moby at b985e23 (2026-08), unchanged. Its entries are filtered the way Docker does for
//! a container: kept when their `includes` hold (this machine's architecture, capabilities the
//! task has: none) and their `excludes` do not. One choice differs from Docker's: `ptrace`,
//! `process_vm_readv` and `process_vm_writev` stay refused (Docker allows them on kernels from
//! 4.8): a PaaS task has no debugger to run, and a refused `ptrace` is one less way to read
//! another process's memory. And only this machine's own architecture is listed (Docker adds
//! the 32-bit ABIs, `x86` and `x32` on x86_64): a task runs the host's 64-bit runtime, a
//! 32-bit system call is refused, and the filter compiles in a third of the time.
//!
//! Compiling the filter (libseccomp, in crun) takes ~10 ms of every start, so with crun the agent compiles it once at its start
//! ([`precompile`]: crun's own output for a container it creates and deletes) and hands the
//! BPF to every container in crun's `run.oci.seccomp_bpf_data` annotation.

use std::sync::OnceLock;

use oci_spec::runtime::LinuxSeccomp;
use serde_json::{json, Value};

const PROFILE: &str = include_str!("seccomp/docker-default.json");

/// Syscalls refused although Docker's profile allows them (see the module docs).
const ALSO_REFUSED: &[&str] = &["ptrace", "process_vm_readv", "process_vm_writev"];

/// Docker's arch names (`includes.arches`) for this machine.
fn docker_arches() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "x86_64" => &["amd64", "x32", "x86"],
        "x86" => &["x86"],
        "aarch64" => &["arm64", "arm"],
        "arm" => &["arm"],
        "riscv64" => &["riscv64"],
        "s390x" => &["s390x", "s390"],
        "powerpc64" => &["ppc64le"],
        _ => &[],
    }
}

/// The libseccomp architecture of this machine (`archMap`'s key).
fn scmp_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "s390x" => "SCMP_ARCH_S390X",
        _ => "SCMP_ARCH_NATIVE",
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Converts Docker's profile for a task with `caps` on this machine.
pub fn convert(profile: &Value, caps: &[&str]) -> Value {
    let arches = docker_arches();
    let architectures = vec![scmp_arch().to_string()];
    let mut syscalls = Vec::new();
    for s in profile["syscalls"].as_array().into_iter().flatten() {
        let inc = &s["includes"];
        let exc = &s["excludes"];
        let inc_arches = strings(inc.get("arches"));
        if !inc_arches.is_empty() && !inc_arches.iter().any(|a| arches.contains(a)) {
            continue;
        }
        if !strings(inc.get("caps")).iter().all(|c| caps.contains(c)) {
            continue;
        }
        if strings(exc.get("arches"))
            .iter()
            .any(|a| arches.contains(a))
        {
            continue;
        }
        if strings(exc.get("caps")).iter().any(|c| caps.contains(c)) {
            continue;
        }
        let allow = s["action"] == "SCMP_ACT_ALLOW";
        let names: Vec<&str> = strings(s.get("names"))
            .into_iter()
            .filter(|n| !(allow && ALSO_REFUSED.contains(n)))
            .collect();
        if names.is_empty() {
            continue;
        }
        let mut entry = json!({"names": names, "action": s["action"]});
        if let Some(e) = s.get("errnoRet") {
            entry["errnoRet"] = e.clone();
        }
        if let Some(a) = s.get("args").filter(|a| !a.is_null()) {
            entry["args"] = a.clone();
        }
        syscalls.push(entry);
    }
    json!({
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": architectures,
        "syscalls": syscalls,
    })
}

/// crun's compiled BPF of [`docker_default`] on this machine, base64 (for the
/// `run.oci.seccomp_bpf_data` annotation): crun `create`s a container of nothing with the
/// profile in `dir`, the filter it wrote to its state is read back, and the container is
/// deleted. If that fails, each start compiles the profile (the caller says so).
pub fn precompile(runtime: &super::Runtime, dir: &std::path::Path) -> Result<String, String> {
    use base64::Engine;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, ProcessBuilder, RootBuilder,
        SpecBuilder,
    };
    let id = format!("drove-seccomp-{}", std::process::id());
    let bundle = dir.join(&id);
    let rootfs = bundle.join("rootfs");
    let made = (|| -> Result<Vec<u8>, String> {
        let err = |e: oci_spec::OciSpecError| e.to_string();
        // crun makes its default devices under the root's /dev.
        std::fs::create_dir_all(rootfs.join("dev")).map_err(|e| e.to_string())?;
        // `create` checks its program exists; it never runs (deleted before any `start`).
        {
            use std::os::unix::fs::PermissionsExt;
            let program = rootfs.join("nothing");
            std::fs::write(&program, b"").map_err(|e| e.to_string())?;
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        let namespaces = vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Mount)
                .build()
                .map_err(err)?,
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Pid)
                .build()
                .map_err(err)?,
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Uts)
                .build()
                .map_err(err)?,
        ];
        let spec = SpecBuilder::default()
            .version("1.0.2")
            .root(
                RootBuilder::default()
                    .path(&rootfs)
                    .readonly(true)
                    .build()
                    .map_err(err)?,
            )
            .process(
                ProcessBuilder::default()
                    .args(vec!["/nothing".to_string()])
                    .cwd("/")
                    .build()
                    .map_err(err)?,
            )
            .linux(
                LinuxBuilder::default()
                    .namespaces(namespaces)
                    .seccomp(docker_default().clone())
                    .build()
                    .map_err(err)?,
            )
            .mounts(Vec::new())
            .build()
            .map_err(err)?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| e.to_string())?;
        // The created container's init keeps crun's streams open until it is deleted: they
        // go to a file, not a pipe read to its end.
        let errors = bundle.join("stderr");
        let err_file = std::fs::File::create(&errors).map_err(|e| e.to_string())?;
        let status = std::process::Command::new(&runtime.path)
            .args(["--cgroup-manager=disabled", "create", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err_file)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            runtime.delete(&id);
            let said = std::fs::read_to_string(&errors).unwrap_or_default();
            return Err(said.trim().chars().take(500).collect());
        }
        let state = std::path::Path::new("/run/crun")
            .join(&id)
            .join("seccomp.bpf");
        let bpf = std::fs::read(&state).map_err(|e| format!("{}: {e}", state.display()));
        runtime.delete(&id);
        bpf
    })();
    let _ = std::fs::remove_dir_all(&bundle);
    match made {
        Ok(bpf) if !bpf.is_empty() => Ok(base64::engine::general_purpose::STANDARD.encode(bpf)),
        Ok(_) => Err("crun wrote an empty filter".into()),
        Err(e) => Err(e),
    }
}

/// The profile every container gets (converted once).
pub fn docker_default() -> &'static LinuxSeccomp {
    static CONVERTED: OnceLock<LinuxSeccomp> = OnceLock::new();
    CONVERTED.get_or_init(|| {
        let profile: Value = serde_json::from_str(PROFILE).unwrap_or(Value::Null);
        serde_json::from_value(convert(&profile, &[])).unwrap_or_else(|e| {
            // The profile is compiled in and covered by a test: this cannot happen at run time
            // without that test failing first. Refuse everything rather than nothing (the
            // default filter would allow every call): containers then fail, loudly.
            tracing::error!(error = %e, "converting the seccomp profile");
            let mut deny = LinuxSeccomp::default();
            deny.set_default_action(oci_spec::runtime::LinuxSeccompAction::ScmpActErrno);
            deny
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
        s.syscalls().as_ref().unwrap().iter().any(|c| {
            c.names().iter().any(|n| n == name)
                && c.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
                && c.args().is_none()
        })
    }

    #[test]
    fn refuses_what_an_unprivileged_task_must_not_do() {
        let profile: Value = serde_json::from_str(PROFILE).unwrap();
        let s: LinuxSeccomp = serde_json::from_value(convert(&profile, &[])).unwrap();
        assert_eq!(
            s.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
        for ok in ["read", "write", "epoll_wait", "accept4", "clone", "execve"] {
            assert!(
                allowed(&s, ok) || ok == "clone",
                "{ok} is allowed by Docker's profile"
            );
        }
        for refused in [
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "bpf",
            "umount2",
            "kexec_load",
        ] {
            assert!(!allowed(&s, refused), "{refused} is refused");
        }
        // Granting CAP_SYS_ADMIN brings mount back: the filter follows the capabilities.
        let admin: LinuxSeccomp =
            serde_json::from_value(convert(&profile, &["CAP_SYS_ADMIN"])).unwrap();
        assert!(allowed(&admin, "mount"));
    }

    /// crun compiles the profile once; the BPF is what the kernel takes (8-byte instructions).
    #[test]
    fn crun_precompiles_the_filter() {
        use base64::Engine;
        let runtime = crate::container::Runtime::resolve("crun").expect("crun is installed");
        // What the agent does first on a hybrid host (crun refuses one otherwise).
        crate::cgroups::give_v2_controllers_v1_hierarchies().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bpf = precompile(&runtime, dir.path()).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(bpf)
            .unwrap();
        assert!(
            raw.len() > 100 && raw.len().is_multiple_of(8),
            "{}",
            raw.len()
        );
        assert!(!std::path::Path::new("/run/crun")
            .join(format!("drove-seccomp-{}", std::process::id()))
            .exists());
    }

    #[test]
    fn the_compiled_in_profile_converts() {
        assert!(docker_default()
            .syscalls()
            .as_ref()
            .is_some_and(|s| s.len() > 5));
    }
}
