//! A task's OCI bundle: `config.json` (typed with `oci-spec`), an empty root directory and a
//! generated `/etc`.
//!
//! The root is read-only and holds only the host's runtime: `/usr` and the `/bin`, `/sbin`,
//! `/lib*` beside it (symlinks on a merged-/usr host, read-only binds otherwise), the CA
//! certificates and `alternatives` of `/etc`, and a minimal `/etc` written here (`passwd` and
//! `group` naming the task user, `hosts`, `hostname`, `resolv.conf`, `nsswitch.conf`,
//! `ld.so.cache`). Nothing else of the host is there: no `/root`, `/home`, `/srv`, `/var`, no
//! data or work directory, no other sandbox. The sandbox is bound read-write at its own path
//! (`MESOS_SANDBOX`), `/tmp` is a private size-bounded tmpfs. Its own `/proc`, Docker's masked
//! and read-only paths, no capabilities, `noNewPrivileges`, Docker's default seccomp profile
//! ([`super::seccomp`]) and rlimits complete it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, Mount, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("writing the bundle at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the OCI config for {id}: {source}")]
    Spec {
        id: String,
        source: oci_spec::OciSpecError,
    },
}

/// Everything a task's bundle is made from.
#[derive(Debug, Clone)]
pub struct BundleSpec<'a> {
    /// The bundle directory (created; holds `config.json`, `rootfs/`, `etc/`).
    pub dir: &'a Path,
    /// The runtime's container id (for errors).
    pub id: &'a str,
    /// The full argv, pid 1 first.
    pub args: Vec<String>,
    pub env: &'a [(String, String)],
    pub sandbox: &'a Path,
    pub uid: u32,
    pub gid: u32,
    pub user_name: &'a str,
    pub hostname: &'a str,
    /// The network namespace to join; None: the host's network.
    pub netns: Option<&'a Path>,
    /// The task's own address in its network, for `/etc/hosts`.
    pub address: Option<Ipv4Addr>,
    pub tmp_bytes: u64,
    /// Given to runtimes that manage cgroups themselves (all but crun, see [`super::Runtime`]).
    pub cgroups_path: Option<String>,
    /// Whether to give the container its own cgroup namespace.
    pub cgroup_namespace: bool,
    /// The seccomp filter already compiled (crun's `run.oci.seccomp_bpf_data`), instead of
    /// the profile.
    pub seccomp_bpf: Option<&'a str>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The top-level directories of the host's runtime a root gets: a symlink where the host has
/// one (merged /usr), else a read-only bind.
const RUNTIME_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Parts of the host's `/etc` a task needs (CA certificates; the `alternatives` symlinks
/// `/usr/bin` points into), bound read-only when the host has them.
const ETC_BINDS: &[&str] = &["ssl", "ca-certificates", "alternatives"];

/// Docker's masked paths (moby `oci/defaults.go`).
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Open files a task may have (soft and hard; Docker's containerd default is 1048576).
const NOFILE: u64 = 65_536;

/// Writes the bundle; returns the path of its `config.json`.
pub fn write(b: &BundleSpec<'_>) -> Result<PathBuf, BundleError> {
    let rootfs = b.dir.join("rootfs");
    let etc = b.dir.join("etc");
    for d in [&rootfs, &etc] {
        fs::create_dir_all(d).map_err(io(d))?;
    }
    let mut mounts = base_mounts(b.tmp_bytes);
    for name in RUNTIME_DIRS {
        let host = Path::new("/").join(name);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&host).map_err(io(&host))?;
                let link = rootfs.join(name);
                if fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink(&target, &link).map_err(io(&link))?;
                }
            }
            Ok(m) if m.is_dir() => mounts.push(ro_bind(&host, &host)),
            _ => {}
        }
    }
    mounts.push(ro_bind(Path::new("/usr"), Path::new("/usr")));
    write_etc(b, &etc)?;
    mounts.push(ro_bind(&etc, Path::new("/etc")));
    for name in ETC_BINDS {
        let host = Path::new("/etc").join(name);
        if host.is_dir() {
            mounts.push(ro_bind(&host, &host));
        }
    }
    mounts.push(bind(
        b.sandbox,
        b.sandbox,
        &["rbind", "rw", "nosuid", "nodev"],
    ));

    let spec = build(b, rootfs, mounts).map_err(|source| BundleError::Spec {
        id: b.id.to_string(),
        source,
    })?;
    let config = b.dir.join("config.json");
    spec.save(&config).map_err(|e| BundleError::Io {
        path: config.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(config)
}

fn build(
    b: &BundleSpec<'_>,
    rootfs: PathBuf,
    mounts: Vec<Mount>,
) -> Result<Spec, oci_spec::OciSpecError> {
    let none: Capabilities = HashSet::new();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(none.clone())
        .effective(none.clone())
        .inheritable(none.clone())
        .permitted(none.clone())
        .ambient(none)
        .build()?;
    // Not above the agent's own hard limit: the runtime sets it after dropping capabilities.
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(NOFILE))
        .unwrap_or(1024);
    let rlimits = vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(nofile)
            .hard(nofile)
            .build()?,
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitCore)
            .soft(0u64)
            .hard(0u64)
            .build()?,
    ];
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(b.uid).gid(b.gid).build()?)
        .args(b.args.clone())
        .env(
            b.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(b.sandbox)
        .capabilities(caps)
        .rlimits(rlimits)
        .no_new_privileges(true)
        .build()?;
    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    if b.cgroup_namespace {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()?,
        );
    }
    let mut sysctl = HashMap::new();
    if let Some(netns) = b.netns {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(netns)
                .build()?,
        );
        // The task network is IPv4 (CNI host-local); no link-local IPv6 side door.
        sysctl.insert("net.ipv6.conf.all.disable_ipv6".into(), "1".into());
        sysctl.insert("net.ipv6.conf.default.disable_ipv6".into(), "1".into());
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(MASKED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .sysctl(sysctl);
    let mut annotations = HashMap::new();
    match b.seccomp_bpf {
        Some(bpf) => {
            annotations.insert("run.oci.seccomp_bpf_data".to_string(), bpf.to_string());
        }
        None => linux = linux.seccomp(super::seccomp::docker_default().clone()),
    }
    if let Some(path) = &b.cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(path));
    }
    SpecBuilder::default()
        .version("1.0.2")
        .annotations(annotations)
        .root(RootBuilder::default().path(rootfs).readonly(true).build()?)
        .hostname(b.hostname)
        .mounts(mounts)
        .process(process)
        .linux(linux.build()?)
        .build()
}

fn mount(
    dest: impl Into<PathBuf>,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(source.into()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(source: &Path, dest: &Path, options: &[&str]) -> Mount {
    mount(dest, "bind", source, options)
}

fn ro_bind(source: &Path, dest: &Path) -> Mount {
    bind(source, dest, &["rbind", "ro", "nosuid", "nodev"])
}

/// `/proc`, `/dev` (with `pts`, `shm`, `mqueue`), `/sys` read-only, and the private `/tmp`.
fn base_mounts(tmp_bytes: u64) -> Vec<Mount> {
    let tmp_size = format!("size={}k", (tmp_bytes / 1024).max(1024));
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &tmp_size],
        ),
    ]
}

/// The container's `/etc`: only what naming users, hosts and resolvers needs.
fn write_etc(b: &BundleSpec<'_>, etc: &Path) -> Result<(), BundleError> {
    let name = b.user_name;
    let home = b.sandbox.display();
    let (uid, gid) = (b.uid, b.gid);
    let mut passwd = String::from("root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    if uid != 0 {
        passwd.push_str(&format!("{name}:x:{uid}:{gid}::{home}:/bin/sh\n"));
    }
    if gid != 0 {
        group.push_str(&format!("{name}:x:{gid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(a) = b.address {
        hosts.push_str(&format!("{a}\t{}\n", b.hostname));
    }
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files: [(&str, String); 6] = [
        ("passwd", passwd),
        ("group", group),
        ("hosts", hosts),
        ("hostname", format!("{}\n", b.hostname)),
        ("resolv.conf", resolv),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\n"
                .into(),
        ),
    ];
    for (file, text) in files {
        let p = etc.join(file);
        fs::write(&p, text).map_err(io(&p))?;
    }
    // The loader finds multiarch libraries through its cache.
    let cache = Path::new("/etc/ld.so.cache");
    if cache.is_file() {
        let p = etc.join("ld.so.cache");
        fs::copy(cache, &p).map_err(io(&p))?;
    }
    // Mount points of the binds under /etc (the root is read-only once mounted).
    for name in ETC_BINDS {
        if Path::new("/etc").join(name).is_dir() {
            let p = etc.join(name);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
    }
    // Readable by the task user (the agent's umask is 0077).
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(etc).map_err(io(etc))?.flatten() {
        let mode = if entry.path().is_dir() { 0o755 } else { 0o644 };
        let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode));
    }
    for d in [etc, b.dir, &b.dir.join("rootfs")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(io(d))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle as the agent writes it, run by crun (on the host's network: no CNI here, so
    /// this also runs in the cgroup v2 VM): its own PID namespace, a read-only root, nothing
    /// of the host's but the runtime, its sandbox writable, seccomp in force.
    #[test]
    fn crun_runs_the_bundle_confined() {
        crate::cgroups::give_v2_controllers_v1_hierarchies().unwrap();
        let runtime = crate::container::Runtime::resolve("crun").expect("crun is installed");
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let sandbox = dir.path().join("sandbox");
        fs::create_dir_all(&sandbox).unwrap();
        std::os::unix::fs::chown(&sandbox, Some(65534), Some(65534)).unwrap();
        fs::write(dir.path().join("secret"), "host").unwrap();
        let bundle = dir.path().join("bundle");
        let probe = format!(
            "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); echo uid=$(id -u); \
             touch /usr/x 2>/dev/null || echo usr-read-only; echo mine > own && echo own-ok; \
             cat {}/secret 2>/dev/null || echo no-host-file; \
             unshare -r true 2>/dev/null || echo unshare-refused",
            dir.path().display()
        );
        let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let bpf = crate::container::seccomp::precompile(&runtime, dir.path()).unwrap();
        write(&BundleSpec {
            dir: &bundle,
            id: "drove-unit",
            args: vec![
                crate::container::TINI.into(),
                "--".into(),
                "/bin/sh".into(),
                "-c".into(),
                probe,
            ],
            env: &env,
            sandbox: &sandbox,
            uid: 65534,
            gid: 65534,
            user_name: "task",
            hostname: "task",
            netns: None,
            address: None,
            tmp_bytes: 16 << 20,
            cgroups_path: None,
            cgroup_namespace: true,
            seccomp_bpf: Some(&bpf),
        })
        .unwrap();
        let id = format!("drove-unit-{}", std::process::id());
        let out = std::process::Command::new(&runtime.path)
            .args(runtime.run_args(&bundle, &id, &dir.path().join("pid")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("pid1=/usr/bin/tini -- /bin/sh -c"), "{text}");
        for line in [
            "uid=65534",
            "usr-read-only",
            "own-ok",
            "no-host-file",
            "unshare-refused",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert_eq!(fs::read_to_string(sandbox.join("own")).unwrap(), "mine\n");
    }

    #[test]
    fn writes_a_read_only_root_with_the_sandbox_bound() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        fs::create_dir_all(&sandbox).unwrap();
        let bundle = dir.path().join("bundle");
        let env = vec![("PORT".to_string(), "8080".to_string())];
        let config = write(&BundleSpec {
            dir: &bundle,
            id: "drove-test",
            args: vec!["/bin/true".into()],
            env: &env,
            sandbox: &sandbox,
            uid: 1234,
            gid: 1234,
            user_name: "app",
            hostname: "task",
            netns: Some(Path::new("/run/netns/x")),
            address: Some(Ipv4Addr::new(10, 88, 0, 2)),
            tmp_bytes: 64 << 20,
            cgroups_path: None,
            cgroup_namespace: true,
            seccomp_bpf: None,
        })
        .unwrap();
        let spec = Spec::load(&config).unwrap();
        assert!(spec.root().as_ref().unwrap().readonly().unwrap());
        let mounts = spec.mounts().as_ref().unwrap();
        let dest = |d: &Path| mounts.iter().find(|m| m.destination() == d).cloned();
        let sb = dest(&sandbox).expect("the sandbox is bound");
        assert!(sb.options().as_ref().unwrap().contains(&"rw".to_string()));
        let usr = dest(Path::new("/usr")).expect("/usr is bound");
        assert!(usr.options().as_ref().unwrap().contains(&"ro".to_string()));
        for absent in ["/root", "/home", "/srv", "/var"] {
            assert!(
                dest(Path::new(absent)).is_none(),
                "{absent} is not in the root"
            );
        }
        let tmp = dest(Path::new("/tmp")).unwrap();
        assert!(tmp
            .options()
            .as_ref()
            .unwrap()
            .contains(&"size=65536k".to_string()));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        assert!(process
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .is_empty());
        let passwd = fs::read_to_string(bundle.join("etc/passwd")).unwrap();
        assert!(passwd.contains("app:x:1234:1234"), "{passwd}");
    }
}
