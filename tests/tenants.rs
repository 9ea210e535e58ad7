//! One tenant against the others and against the PaaS: what an app's code (or any npm
//! package it installs) can reach when it runs as a task next to other apps and to the
//! control plane. Each test runs the real `drove` binary and probes as a task would; each
//! negative check has its positive control (the same probe succeeding where it should).

use drove_testkit as support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::paas::{agent, Drove};
use support::up::Up;
use support::{eventually, git};

/// A task's view of `paths`: `READ <path>` or `DENIED <path>` for each, from a probe app run
/// under `drove up` like any other app (its own uid, its own sandbox).
async fn probe_as_a_task(up: &Up, id: &str, paths: &[PathBuf]) -> String {
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let app = json!({
        "id": id,
        "cmd": "probe() { if ls -d \"$1\"/ >/dev/null 2>&1; then ls \"$1\" >/dev/null 2>&1 && \
                echo \"READ $1\" || echo \"DENIED $1\"; else cat \"$1\" >/dev/null 2>&1 && \
                echo \"READ $1\" || echo \"DENIED $1\"; fi; }; \
                echo mine > own; for p in $PROBE_PATHS \"$MESOS_SANDBOX/own\"; do probe \"$p\"; done; \
                echo 'PROBE DONE'; exec sleep 600",
        "instances": 1, "cpus": 0.1, "mem": 32,
        "env": {"PROBE_PATHS": list.join(" ")},
    });
    let file = up.dir.path().join(format!("{}.json", id.trim_matches('/')));
    std::fs::write(&file, app.to_string()).expect("the probe's definition");
    let (ok, out) = support::drove_cli(&[
        "deploy",
        file.to_str().expect("a path"),
        &up.paas_arg(),
        &up.data_arg(),
    ])
    .await;
    assert!(ok, "drove deploy: {out}");
    eventually(
        &format!("{id}'s probe output"),
        Duration::from_secs(40),
        || async {
            let (ok, out) =
                support::drove_cli(&["logs", id.trim_matches('/'), &up.paas_arg(), &up.data_arg()])
                    .await;
            (ok && out.contains("PROBE DONE")).then_some(out)
        },
    )
    .await
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A task walking up from its sandbox reads none of drove's state: not the PaaS's or the
/// master's databases, tokens and secrets, not the pushed apps' repositories and artifacts,
/// not the agent's checkpoints and fetch cache, not another app's sandbox; while a file left
/// readable beside the data dir, and its own sandbox, are read by the same probe. An install
/// whose modes were left open is made private at the next start, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_none_of_drove_s_state() {
    reads_none_of_drove_s_state(true).await;
}

/// The same with containers off (`--isolation cgroups`): the task sees the host's files, and
/// the modes alone keep drove's state from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_containers_a_task_still_reads_none_of_drove_s_state() {
    reads_none_of_drove_s_state(false).await;
}

async fn reads_none_of_drove_s_state(containers: bool) {
    let extra: &[&str] = if containers {
        &[]
    } else {
        &["--isolation=cgroups"]
    };
    let ports = if containers {
        (24000, 24099)
    } else {
        (24100, 24199)
    };
    let mut up = Up::start_with_args(ports, &[], extra).await;
    let http = reqwest::Client::new();
    // A pushed app, so there is a repository, an artifact and a cached fetch of it.
    let created: Value = http
        .post(format!("{}/v1/push/apps", up.paas_url))
        .bearer_auth(&up.token)
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("created");
    let work = support::tempdir();
    let src = work.path();
    assert!(git(src, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), src.join("server.js")).expect("server.js");
    let package = json!({"name": "shop", "scripts": {"start": "node server.js"},
                         "drove": {"minInstances": 1}});
    std::fs::write(src.join("package.json"), package.to_string()).expect("package.json");
    assert!(git(src, &["add", "-A"]).0);
    assert!(git(src, &["commit", "-qm", "v1"]).0);
    let (ok, out) = git(src, &["push", &support::push_remote(&created), "main"]);
    assert!(ok && out.contains("released v1"), "{out}\n{}", up.log());

    let data = up.data.clone();
    let agent = up.agent_work.0.clone();
    assert!(
        !agent.starts_with(&data),
        "the agent works outside the data dir: {}",
        agent.display()
    );
    let cached = files_under(&agent.join("cache"));
    assert!(!cached.is_empty(), "the agent cached the artifact");
    let artifacts = files_under(&data.join("paas/artifacts"));
    assert!(!artifacts.is_empty(), "the push made an artifact");
    let shop_sandbox_file = files_under(&agent.join("sandboxes"))
        .into_iter()
        .find(|p| p.ends_with("server.js"))
        .expect("shop's sandbox");
    let mut secret: Vec<PathBuf> = [
        "paas/paas.db",
        "paas/paas.db-wal",
        "paas/admin-token",
        "paas/router-token",
        "paas/git",
        "paas/git/shop.git/config",
        "paas/artifacts",
        "master/master.db",
        "master/paas-secret",
        "master/credentials",
        "cluster-secret",
    ]
    .iter()
    .map(|p| data.join(p))
    .collect();
    secret.extend([
        agent.join("cache"),
        agent.join("meta"),
        agent.join("meta/agent_key"),
        shop_sandbox_file,
    ]);
    secret.extend(cached);
    secret.extend(artifacts);
    for p in &secret {
        assert!(
            p.exists(),
            "{} exists (the probe is not vacuous)",
            p.display()
        );
    }
    // The positive control: readable by every user, right beside the data dir.
    let control = up.dir.path().join("left-readable");
    std::fs::write(&control, "anyone").expect("control file");
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let mut paths = secret.clone();
    paths.push(control.clone());
    let seen = probe_as_a_task(&up, "/probe", &paths).await;
    if containers {
        // Not even a file every user may read: nothing of the host but its runtime is there.
        assert!(
            seen.contains(&format!("DENIED {}\n", control.display())),
            "a container sees only its own root: {seen}"
        );
    } else {
        assert!(
            seen.contains(&format!("READ {}\n", control.display())),
            "the probe reads a file every user may read: {seen}"
        );
    }
    assert!(
        seen.lines()
            .any(|l| l.starts_with("READ ") && l.ends_with("/own")),
        "the probe reads its own sandbox: {seen}"
    );
    for p in &secret {
        assert!(
            seen.contains(&format!("DENIED {}\n", p.display())),
            "a task read {}:\n{seen}",
            p.display()
        );
    }

    // An install from before: modes left open. The next start makes them private, saying so.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let db = data.join("paas/paas.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    up.restart().await;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    let log = up.log();
    assert!(
        log.contains(&format!("{} was mode 0755, now 0700", data.display()))
            && log.contains(&format!("{} was mode 0644, now 0600", db.display())),
        "{log}"
    );
}

/// Waits until `log` contains `line`, or the process ended; the log either way.
async fn log_until(proc: &mut support::Proc, log: &Path, line: &str) -> String {
    eventually(
        &format!("{line:?} in {}", log.display()),
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let ended = proc.child.try_wait().ok().flatten().is_some();
            std::future::ready((text.contains(line) || ended).then_some(text))
        },
    )
    .await
}

/// Writes `secret` into a new file of `mode` in `dir`.
fn secret_file(dir: &Path, name: &str, secret: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("secret file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A master or agent on a non-loopback address (in a network namespace of the test's) with no
/// cluster secret refuses to start, saying why; given the secret by file, the same pair
/// starts and the agent registers; `--insecure` is the explicit way out. A secret given on the
/// command line works but is warned about; a secret file every user can read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprotected_cluster_port_refuses_to_start_and_secrets_come_by_file() {
    let ns = support::Netns::new("10.213.7.1");
    let dir = support::tempdir();
    let d = dir.path();
    let master_addr = format!("{}:5050", ns.addr);
    let master = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "master".to_string(),
            format!("--listen={master_addr}"),
            format!("--data-dir={}", d.join("master").display()),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let agent = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "agent".to_string(),
            format!("--master=http://{master_addr}"),
            format!("--listen={}:5051", ns.addr),
            format!("--work-dir={}", d.join("agent").display()),
            "--isolation=none".to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // No secret: both refuse, naming the address and the way out.
    for (what, args) in [("master", master(&[])), ("agent", agent(&[]))] {
        let log = d.join(format!("{what}-refused.log"));
        let mut p = ns.spawn(what, &args, &log);
        let status = eventually(
            &format!("the {what} to exit"),
            Duration::from_secs(20),
            || std::future::ready(p.child.try_wait().ok().flatten()),
        )
        .await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!status.success(), "the {what} started: {text}");
        assert!(
            text.contains(&format!("{}:50", ns.addr))
                && text.contains("is not a loopback address")
                && text.contains("--insecure"),
            "{what}: {text}"
        );
    }

    // The secret by file (the master) and on argv (the agent): they work together, and only
    // the agent is warned about.
    let secret = "s3cret-of-this-cluster";
    let file = secret_file(d, "cluster-secret", secret, 0o600);
    let file_arg = format!("--cluster-secret-file={}", file.display());
    let master_log = d.join("master.log");
    let mut m = ns.spawn("master", &master(&[&file_arg]), &master_log);
    let text = log_until(&mut m, &master_log, "master listening").await;
    assert!(text.contains("master listening"), "{text}");
    let agent_log = d.join("agent.log");
    let argv_secret = format!("--cluster-secret={secret}");
    let mut a = ns.spawn("agent", &agent(&[&argv_secret]), &agent_log);
    let text = log_until(&mut a, &agent_log, "registered with the master").await;
    assert!(text.contains("registered with the master"), "{text}");
    assert!(
        text.contains("--cluster-secret was given on the command line"),
        "{text}"
    );
    let text = std::fs::read_to_string(&master_log).unwrap_or_default();
    assert!(!text.contains("on the command line"), "{text}");
    drop(a);

    // `--insecure` says it out loud and starts.
    let log = d.join("agent-insecure.log");
    let mut p = ns.spawn("agent", &agent(&["--insecure"]), &log);
    let text = log_until(&mut p, &log, "agent starting").await;
    assert!(text.contains("agent starting"), "{text}");
    drop(p);

    // A secret file anyone can read is refused, naming it.
    let open = secret_file(d, "open-secret", secret, 0o644);
    let log = d.join("agent-open.log");
    let mut p = ns.spawn(
        "agent",
        &agent(&[&format!("--cluster-secret-file={}", open.display())]),
        &log,
    );
    let status = eventually("the agent to exit", Duration::from_secs(20), || {
        std::future::ready(p.child.try_wait().ok().flatten())
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{} can be read by every user (mode 0644)",
            open.display()
        )),
        "{text}"
    );
}

/// A dependency as a registry would serve it: `greeter-1.0.0.tgz` (npm installs a tarball as
/// a directory of its own in `node_modules`, as it does a registry package), made in `dir`.
fn greeter_tarball(dir: &Path) -> PathBuf {
    let src = dir.join("greeter");
    std::fs::create_dir_all(&src).expect("greeter dir");
    std::fs::write(
        src.join("package.json"),
        json!({"name": "greeter", "version": "1.0.0", "main": "index.js"}).to_string(),
    )
    .expect("dep package.json");
    std::fs::write(src.join("index.js"), "module.exports = () => 'greeted';\n")
        .expect("dep index.js");
    let out = std::process::Command::new("npm")
        .args(["pack", "--offline", "--pack-destination"])
        .arg(dir)
        .current_dir(&src)
        .env("HOME", dir)
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm pack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("greeter-1.0.0.tgz")
}

/// A pushed app's working tree: `server.js` answering with its vendored dependency
/// (`file:vendor/greeter-1.0.0.tgz`, so `npm ci` needs no network), `package.json` from `pkg`,
/// and its lockfile; committed.
fn app_with_a_dependency(dir: &Path, tarball: &Path, pkg: &Value) {
    assert!(git(dir, &["init", "-q"]).0);
    std::fs::create_dir_all(dir.join("vendor")).expect("vendor dir");
    std::fs::copy(tarball, dir.join("vendor/greeter-1.0.0.tgz")).expect("the tarball");
    std::fs::write(
        dir.join("server.js"),
        "const greet = require('greeter');\n\
         require('http').createServer((q, r) => r.end(q.url === '/health' ? 'ok' : \
         greet() + '\\n')).listen(process.env.PORT0);\n",
    )
    .expect("server.js");
    std::fs::write(dir.join("package.json"), pkg.to_string()).expect("package.json");
    support::npm_lockfile(dir);
    assert!(git(dir, &["add", "-A"]).0);
    assert!(git(dir, &["commit", "-qm", "v1"]).0);
}

/// A pushed app's `package.json` (named alike for every app, so equal dependencies make equal
/// lockfiles), with `scripts` merged in.
fn package(scripts: Value) -> Value {
    let mut p = json!({
        "name": "tenant-app", "version": "1.0.0",
        "scripts": {"start": "node server.js"},
        "dependencies": {"greeter": "file:vendor/greeter-1.0.0.tgz"},
        "flock": {"instances": 1, "cpus": 0.1, "mem": 64},
        "checks": [{"path": "/health", "intervalSeconds": 1, "maxConsecutiveFailures": 2}],
        "drove": {"checkGraceSeconds": 3, "minInstances": 1}
    });
    if let (Some(s), Some(extra)) = (p["scripts"].as_object_mut(), scripts.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    p
}

/// One app's build can never feed another's: an app whose install script tampers with its
/// installed dependencies, pushed first with the very same lockfile, leaves the next app's
/// build untouched (a fresh `npm ci`, the real dependency served), and each app's cache feeds
/// only that app's later builds. (A build names nothing: the PaaS collects what it left in its
/// sandbox, once, and names each by its SHA-256 and the lockfile hash it computed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_cannot_poison_another_apps_dependencies() {
    let d = Drove::start(&[&agent(21)]).await;
    let mallory = d.create_pushed("mallory").await;
    let victim = d.create_pushed("victim").await;

    // Pushed first: a postinstall (not covered by the lockfile) replaces the dependency.
    let shared = support::tempdir();
    let tarball = greeter_tarball(shared.path());
    let m = support::tempdir();
    let tamper =
        "echo \"module.exports = () => 'tampered=by another app'\" > node_modules/greeter/index.js";
    app_with_a_dependency(
        m.path(),
        &tarball,
        &package(json!({ "postinstall": tamper })),
    );
    let (ok, out) = git(m.path(), &["push", &mallory, "main"]);
    assert!(
        ok && out.contains("installing dependencies: npm ci"),
        "{out}"
    );
    let (_, body) = d
        .through_router("mallory.localhost", "/")
        .await
        .expect("router");
    assert_eq!(
        body.trim(),
        "tampered=by another app",
        "its own tree is its own"
    );

    // The victim, same lockfile: installs afresh and serves the real dependency.
    let v = support::tempdir();
    app_with_a_dependency(v.path(), &tarball, &package(json!({})));
    let (ok, out) = git(v.path(), &["push", &victim, "main"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("installing dependencies: npm ci") && !out.contains("from the cache"),
        "{out}"
    );
    let (_, body) = d
        .through_router("victim.localhost", "/")
        .await
        .expect("router");
    assert_eq!(body.trim(), "greeted");
    // Its own cache serves its own next build.
    std::fs::write(v.path().join("README"), "code only\n").expect("README");
    assert!(git(v.path(), &["add", "-A"]).0);
    assert!(git(v.path(), &["commit", "-qm", "code only"]).0);
    let (ok, out) = git(v.path(), &["push", &victim, "main"]);
    assert!(ok && out.contains("from the cache"), "{out}");
    let (_, body) = d
        .through_router("victim.localhost", "/")
        .await
        .expect("router");
    assert_eq!(body.trim(), "greeted");
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A push whose `package.json` is a sparse 1 GiB file (a few MB on the wire), to a side
/// branch, is refused with a message naming the file and the limit, and the PaaS's memory
/// stays flat (it asks git for the size before reading anything); a normal push
/// to the same app then deploys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_pushed_file_is_refused_without_reading_it() {
    let d = Drove::start(&[&agent(22)]).await;
    let remote = d.create_pushed("sparse").await;
    let pid = d.paas.as_ref().expect("the PaaS").pid();
    let w = support::tempdir();
    let dir = w.path();
    assert!(git(dir, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    let huge = std::fs::File::create(dir.join("package.json")).expect("package.json");
    huge.set_len(1 << 30).expect("a sparse GiB");
    drop(huge);
    let fast = ["-c", "core.compression=1", "-c", "core.looseCompression=1"];
    assert!(git(dir, &[&fast[..], &["add", "-A"]].concat()).0);
    assert!(git(dir, &["commit", "-qm", "huge"]).0);
    let before = rss(pid);
    // To a side branch: the descriptor is looked at before the branch is known not to deploy.
    let (ok, out) = git(dir, &[&fast[..], &["push", &remote, "HEAD:side"]].concat());
    assert!(!ok, "{out}");
    assert!(
        out.contains("package.json is 1073741824 bytes, over the 1048576-byte limit"),
        "{out}"
    );
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 64 << 20, "the PaaS grew by {} MiB", grown >> 20);
    // The same app takes a normal push.
    let package = json!({"name": "sparse", "scripts": {"start": "node server.js"},
                         "drove": {"minInstances": 1}});
    std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
    assert!(git(dir, &["add", "-A"]).0);
    assert!(git(dir, &["commit", "-qm", "normal"]).0);
    let (ok, out) = git(dir, &["push", &remote, "HEAD:main"]);
    assert!(ok && out.contains("released v1"), "{out}");
}

/// A pusher that stops reading while its build prints without end does not make the PaaS
/// hold the output: it is cut off (after `relay::STALL`), the build is stopped, and the PaaS's
/// memory stays flat; git's processes for it end (after `http_backend::RESPONSE_IDLE`) and
/// the app takes the next push while the first pusher is still stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pusher_does_not_grow_the_paas() {
    // Logs large enough that the build's output is not rotated away while it is relayed.
    let d = Drove::start_with_agent_args(&[&agent(23)], &["--log-max-bytes=1073741824"]).await;
    let remote = d.create_pushed("chatty").await;
    let pid = d.paas.as_ref().expect("the PaaS").pid();
    let w = support::tempdir();
    let dir = w.path();
    assert!(git(dir, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    // ~400 MB of output at once, then silence until stopped (bounded: 10 minutes).
    let flood = "node -e \"const l = 'x'.repeat(200) + '\\n'; \
                 for (let i = 0; i < 2e6; i++) process.stdout.write(i + l); \
                 setTimeout(() => {}, 600000)\"";
    let package = json!({"name": "chatty", "scripts": {"start": "node server.js", "build": flood},
                         "drove": {"minInstances": 1}});
    std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
    assert!(git(dir, &["add", "-A"]).0);
    assert!(git(dir, &["commit", "-qm", "chatty"]).0);
    let before = rss(pid);
    let log = dir.join("push.log");
    let out = std::fs::File::create(&log).expect("push log");
    let mut push = std::process::Command::new("git")
        .args(["-c", "credential.helper=", "push", &remote, "main"])
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("git push");
    let group = nix::unistd::Pid::from_raw(push.id() as i32);
    eventually("the build's output", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready(text.contains("building: npm run build").then_some(()))
    })
    .await;
    eventually("the build to run", Duration::from_secs(30), || {
        let d = &d;
        async move { build_running(d, "chatty").await.then_some(()) }
    })
    .await;
    // The pusher stops reading (its whole process group, git-remote-http included).
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let mut peak = 0;
    eventually("the build to be stopped", Duration::from_secs(60), || {
        peak = peak.max(rss(pid));
        let d = &d;
        async move { (!build_running(d, "chatty").await).then_some(()) }
    })
    .await;
    // Git's processes for the push (receive-pack, the hook) are ended too, the pusher still
    // stopped, and the app takes the next push.
    let repo = d.cluster.dir.path().join("paas/git/chatty.git");
    let in_repo = || -> usize {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|p| {
                std::fs::read_link(p.path().join("cwd")).is_ok_and(|c| c.starts_with(&repo))
            })
            .count()
    };
    assert!(
        in_repo() > 0,
        "git runs in {} while the push is held",
        repo.display()
    );
    eventually("git's processes ended", Duration::from_secs(120), || {
        std::future::ready((in_repo() == 0).then_some(()))
    })
    .await;
    let w2 = support::tempdir();
    let next = w2.path();
    assert!(git(next, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), next.join("server.js")).expect("server.js");
    let quiet = json!({"name": "chatty", "scripts": {"start": "node server.js"},
                       "drove": {"minInstances": 1}});
    std::fs::write(next.join("package.json"), quiet.to_string()).expect("package.json");
    assert!(git(next, &["add", "-A"]).0);
    assert!(git(next, &["commit", "-qm", "quiet"]).0);
    let (ok, out) = git(next, &["push", "--force", &remote, "HEAD:main"]);
    assert!(ok && out.contains("released"), "{out}");
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = push.wait();
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "the PaaS grew by {} MiB while the pusher did not read",
        grown >> 20
    );
    let paas_log = std::fs::read_to_string(d.cluster.dir.path().join("paas1.log"));
    let paas_log = paas_log.unwrap_or_default();
    assert!(paas_log.contains("cut off"), "{paas_log}");
}

/// Whether `app`'s build task runs, by the master's state.
async fn build_running(d: &Drove, app: &str) -> bool {
    let state = d.cluster.state().await;
    let name = format!("{app}-build");
    state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .any(|t| t["name"].as_str() == Some(name.as_str()) && t["state"] == "TASK_RUNNING")
}

/// A browser that cached the admin credentials cannot be steered by another site: a body that
/// is not JSON is 415 and another origin is 403, while the same call from a client (no
/// Origin) or from the API's own origin goes through. The dashboard's login budget is per
/// client and taken before the comparison: 25 concurrent wrong passwords from one client get
/// 20 refusals and 5 "too many", after which the right password waits too, and the admin token
/// still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_site_cannot_use_the_api_and_guesses_do_not_lock_out_the_token() {
    const PASSWORD: &str = "correct horse battery";
    let up = Up::start((24800, 24999), &[("DROVE_ADMIN_PASSWORD", PASSWORD)]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let app = |id: &str| {
        json!({"id": id, "cmd": "sleep 600", "instances": 0, "cpus": 0.1, "mem": 32}).to_string()
    };
    let post = |id: &str, content_type: &str, origin: Option<&str>, site: Option<&str>| {
        let mut r = http
            .post(format!("{}/v2/apps", up.paas_url))
            .basic_auth("admin", Some(&up.token))
            .header("Content-Type", content_type)
            .body(app(id));
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        if let Some(s) = site {
            r = r.header("Sec-Fetch-Site", s);
        }
        r.send()
    };
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("answered").status().as_u16();
    assert_eq!(status(post("/form", "text/plain", None, None).await), 415);
    let evil = Some("http://evil.example");
    assert_eq!(
        status(post("/evil", "application/json", evil, None).await),
        403
    );
    let cross = Some("cross-site");
    assert_eq!(
        status(post("/cross", "application/json", None, cross).await),
        403
    );
    for id in ["form", "evil", "cross"] {
        let r = http
            .get(format!("{}/v2/apps/{id}", up.paas_url))
            .bearer_auth(&up.token)
            .send()
            .await;
        assert_eq!(status(r), 404, "{id} was not created");
    }
    assert_eq!(
        status(post("/tool", "application/json", None, None).await),
        201
    );
    let own = format!(
        "http://127.0.0.1:{}",
        up.paas_url.rsplit(':').next().unwrap_or("")
    );
    let same = Some("same-origin");
    let r = post("/own", "application/json; charset=utf-8", Some(&own), same).await;
    assert_eq!(status(r), 201);

    // Password guesses, all at once from one client.
    let form = support::dashboard::login_form(&http, &up.paas_url).await;
    let guess = |secret: String| {
        let (http, form, base) = (&http, &form, &up.paas_url);
        async move {
            http.post(format!("{base}/admin/login"))
                .header("Cookie", &form.cookie)
                .form(&[("secret", secret.as_str()), ("csrf", form.csrf.as_str())])
                .send()
                .await
                .expect("a login answer")
                .status()
                .as_u16()
        }
    };
    let answers =
        futures::future::join_all((0..25).map(|i| guess(format!("wrong guess {i}")))).await;
    let count = |code| answers.iter().filter(|&&s| s == code).count();
    assert_eq!((count(401), count(429)), (20, 5), "{answers:?}");
    assert_eq!(
        guess(PASSWORD.to_string()).await,
        429,
        "the budget is spent"
    );
    assert_eq!(
        guess(up.token.clone()).await,
        303,
        "the admin token logs in"
    );
}

/// An operator's ceilings bind what a pushed app may ask for: a descriptor over them is
/// refused naming the key and the flag. An operator takes an app offline with `drove
/// suspend`: its requests get 503 at once and never wake it, until `drove resume` (after which
/// a request wakes it again). A Marathon app at 0 instances without `scaling` is suspended
/// too, as in Marathon, while one with `scaling` wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceilings_bind_pushed_apps_and_a_suspended_app_stays_down() {
    let d = Drove::start(&[&agent(24)]).await;
    let remote = d.create_pushed("greedy").await;
    let w = support::tempdir();
    let dir = w.path();
    assert!(git(dir, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    let push = |flock: Value, drove: Value| {
        let package = json!({"name": "greedy", "scripts": {"start": "node server.js"},
                             "flock": flock, "drove": drove});
        std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
        assert!(git(dir, &["add", "-A"]).0);
        assert!(git(dir, &["commit", "-qm", "next"]).0);
        git(dir, &["push", &remote, "main"])
    };
    let (ok, out) = push(json!({"instances": 100, "cpus": 64}), json!({}));
    assert!(!ok, "{out}");
    assert!(
        out.contains("flock.cpus: expected at most 2 (this PaaS's --app-max-cpus), found 64"),
        "{out}"
    );
    let (ok, out) = push(json!({}), json!({"minInstances": 50}));
    assert!(
        !ok && out.contains(
            "drove.minInstances: expected at most 10 (this PaaS's --app-max-instances), found 50"
        ),
        "{out}"
    );
    let (ok, out) = push(
        json!({"cpus": 0.1}),
        json!({"minInstances": 0, "idleSeconds": 600}),
    );
    assert!(ok && out.contains("released v1"), "{out}");
    // Served once the router has the new route (a few ms after the release).
    eventually("greedy served", Duration::from_secs(10), || async {
        let answer = d.through_router("greedy.localhost", "/").await.ok()?;
        (answer.0 == 200).then_some(())
    })
    .await;

    // Suspended with the CLI (the token from a file).
    let token = dir.join("admin-token");
    std::fs::write(&token, support::paas::ADMIN_TOKEN).expect("token file");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let target = [
        format!("--paas={}", d.paas_url()),
        format!("--token-file={}", token.display()),
    ];
    let cli = |verb: &'static str| {
        let target = target.clone();
        async move {
            let mut args = vec![verb, "greedy"];
            args.extend(target.iter().map(String::as_str));
            support::drove_cli(&args).await
        }
    };
    let (ok, out) = cli("suspend").await;
    assert!(ok && out.contains("greedy: suspended"), "{out}");
    let refused_at_once = || refused_at_once_for(&d, "greedy.localhost");
    eventually(
        "503 for the suspended app",
        Duration::from_secs(20),
        || async { refused_at_once().await.then_some(()) },
    )
    .await;
    // Its instance drains and goes; requests meanwhile and after stay 503 and wake nothing.
    eventually(
        "the suspended app's instance to go",
        Duration::from_secs(30),
        || async {
            let app = d.app("/greedy").await;
            app["tasks"]
                .as_array()
                .is_some_and(|t| t.is_empty())
                .then_some(())
        },
    )
    .await;
    for _ in 0..10 {
        assert!(
            refused_at_once().await,
            "a request to a suspended app is 503 at once"
        );
    }
    let app = d.app("/greedy").await;
    assert_eq!(app["instances"], 0, "{app}");
    // Its deploy token does not bring it back: a push is refused while it is suspended.
    let (ok, out) = push(json!({"cpus": 0.2}), json!({"minInstances": 1}));
    assert!(
        !ok && out.contains("greedy is suspended by an operator"),
        "{out}"
    );
    let app = d.app("/greedy").await;
    assert_eq!(app["instances"], 0, "{app}");
    assert!(
        app["tasks"].as_array().is_some_and(|t| t.is_empty()),
        "{app}"
    );
    let scaling = d.get("/v1/apps/greedy/scaling").await;
    assert!(
        scaling["wakes"].as_array().is_none_or(|w| w.is_empty()),
        "never woken: {scaling}"
    );
    // Resumed: idle at zero (its minimum), and the next request wakes it.
    let (ok, out) = cli("resume").await;
    assert!(ok && out.contains("greedy: resumed"), "{out}");
    let (status, body) = eventually("a request to wake it", Duration::from_secs(40), || async {
        d.through_router("greedy.localhost", "/")
            .await
            .ok()
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(status, 200, "{body}");

    // Marathon's suspension: an app without `scaling` at 0 instances is not woken.
    let mut plain = support::paas::node_app("/plain", 0, "plain");
    d.create(plain.clone()).await;
    eventually(
        "503 for the suspended Marathon app",
        Duration::from_secs(20),
        || async {
            refused_at_once_for(&d, "plain.localhost")
                .await
                .then_some(())
        },
    )
    .await;
    assert_eq!(d.app("/plain").await["instances"], 0);
    // With `scaling`, the same app at 0 is idle, and a request wakes it.
    plain["id"] = json!("/scaled");
    plain["scaling"] = json!({"minInstances": 0});
    d.create(plain).await;
    let (status, _) = eventually(
        "a request to wake the scaled app",
        Duration::from_secs(40),
        || async {
            d.through_router("scaled.localhost", "/")
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
        },
    )
    .await;
    assert_eq!(status, 200);
}

/// Whether a request to `host` through the router is 503 within 2 s.
async fn refused_at_once_for(d: &Drove, host: &str) -> bool {
    let started = std::time::Instant::now();
    let (status, _) = d.through_router(host, "/").await.expect("router");
    status == 503 && started.elapsed() < Duration::from_secs(2)
}

/// A webhook's `clone_url` that redirects elsewhere is not followed (the fetch fails, and the
/// other server is never asked, though it answers whoever asks it directly); a delivery that
/// failed is taken again when redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_fetch_follows_no_redirect() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let d = Drove::start(&[&agent(25)]).await;
    let (status, hooked) = d
        .call(
            reqwest::Method::POST,
            "/v1/push/apps",
            Some(json!({"name": "hooked"})),
        )
        .await;
    assert_eq!(status, 201, "{hooked}");
    let secret = hooked["webhookSecret"]
        .as_str()
        .expect("secret")
        .to_string();
    // Where a redirect would lead: counts every request.
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let elsewhere = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { (axum::http::StatusCode::NOT_FOUND, "elsewhere") }
    });
    let serve = |app: axum::Router| async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(l, app).await });
        port
    };
    let other = serve(elsewhere).await;
    let redirecting = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
        axum::response::Redirect::permanent(&format!("http://127.0.0.1:{other}{uri}"))
    });
    let port = serve(redirecting).await;
    let clone_url = format!("http://127.0.0.1:{port}/someone/hooked.git");
    let after = "1".repeat(40);
    let body = json!({"ref": "refs/heads/main", "after": after,
                      "repository": {"clone_url": clone_url}})
    .to_string();
    let deliver = |id: &'static str| {
        let body = body.clone();
        let sig = support::github_signature(&secret, body.as_bytes());
        let url = format!("{}/hooks/github/hooked", d.paas_url());
        async move {
            reqwest::Client::new()
                .post(url)
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", id)
                .header("X-Hub-Signature-256", sig)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .expect("a webhook answer")
        }
    };
    assert_eq!(deliver("first").await.status(), 202);
    let log = d.cluster.dir.path().join("paas1.log");
    let text = eventually("the webhook fetch to fail", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready(text.contains("webhook fetch failed").then_some(text))
    })
    .await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a redirect was followed:\n{text}"
    );
    let direct = reqwest::get(format!("http://127.0.0.1:{other}/x"))
        .await
        .expect("direct");
    assert_eq!(direct.status(), 404);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the other server answers directly"
    );
    // It was not handled, so its redelivery is taken (and fails the same way).
    let again = deliver("second").await;
    assert_eq!(again.status(), 202);
    let v: Value = again.json().await.expect("json");
    assert!(v["ignored"].is_null(), "{v}");
}

/// An app destroyed and created again under the same name runs under a new uid: what the old
/// one left behind in a shared place (a private file in the host's /tmp, with containers off)
/// is not the new one's to read, while the old one read its own file back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_app_cannot_read_what_the_old_one_left() {
    // Without containers: in one, /tmp is the task's own and nothing of the old app is there.
    let d = Drove::start_with_agent_args(&[&agent(26)], &["--isolation=cgroups"]).await;
    let leftover = format!("/tmp/drove-test-leftover-{}", support::uuid_like());
    let w = support::tempdir();
    let dir = w.path();
    assert!(git(dir, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    std::fs::write(
        dir.join("probe.sh"),
        format!(
            "f={leftover}\nif [ -e $f ]; then cat $f >/dev/null 2>&1 && echo \"READ $f\" || \
             echo \"DENIED $f\"; else (umask 077; echo mine > $f); cat $f >/dev/null && \
             echo \"WROTE $f\"; fi\nexec node server.js\n"
        ),
    )
    .expect("probe.sh");
    let package = json!({"name": "again", "scripts": {"start": "sh probe.sh"},
                         "drove": {"minInstances": 1}});
    std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
    assert!(git(dir, &["add", "-A"]).0);
    assert!(git(dir, &["commit", "-qm", "probe"]).0);
    let stdout_of_app = || async {
        let task = d.tasks("/again").await.first()?["id"].as_str()?.to_string();
        let (status, _) = d.call(reqwest::Method::GET, "/v2/apps/again", None).await;
        (status == 200).then_some(())?;
        let r = d
            .api
            .get(format!("{}/v1/tasks/{task}/logs/stdout", d.paas_url()))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    };
    let mut seen = Vec::new();
    for round in ["first", "again"] {
        // Created again once the old one's instances are gone.
        let remote = eventually("the app created", Duration::from_secs(30), || async {
            let (status, created) = d
                .call(
                    reqwest::Method::POST,
                    "/v1/push/apps",
                    Some(json!({"name": "again"})),
                )
                .await;
            (status == 201).then(|| support::push_remote(&created))
        })
        .await;
        let (ok, out) = git(dir, &["push", "--force", &remote, "main"]);
        assert!(ok && out.contains("released v1"), "{round}: {out}");
        let text = eventually(
            &format!("the {round} app's probe"),
            Duration::from_secs(30),
            || async { stdout_of_app().await.filter(|t| t.contains(&leftover)) },
        )
        .await;
        seen.push(text);
        let (status, v) = d
            .call(reqwest::Method::DELETE, "/v1/push/apps/again", None)
            .await;
        assert_eq!(status, 200, "{round}: {v}");
    }
    let _ = std::fs::remove_file(&leftover);
    assert!(
        seen[0].contains(&format!("WROTE {leftover}")),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].contains(&format!("DENIED {leftover}")),
        "{}",
        seen[1]
    );
}
