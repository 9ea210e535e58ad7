//! One tenant against the others and against the PaaS: what an app's code (or any npm
//! package it installs) can reach when it runs as a task next to other apps and to the
//! control plane. Each test runs the real `drove` binary and probes as a task would; each
//! negative check has its positive control (the same probe succeeding where it should).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
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
    let mut up = Up::start((24000, 24199), &[]).await;
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
    assert!(
        seen.contains(&format!("READ {}\n", control.display())),
        "the probe reads a file every user may read: {seen}"
    );
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
