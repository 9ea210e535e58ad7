//! End-to-end tests of `git push` deploys: real git pushing over HTTP to the real PaaS, which
//! packs the commit, releases it and rolls it out on a real agent; the app answers through the
//! router. Bad pushes are rejected with their reason while the previous release keeps serving.

mod support;

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::paas::{agent, Drove};

/// Runs git in `dir` without any user or system configuration; (success, output).
fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=drove test",
            "-c",
            "user.email=test@drove.invalid",
        ])
        .args(["-c", "init.defaultBranch=main", "-c", "credential.helper="])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn commit(dir: &Path, package: &Value, message: &str) {
    std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
    let (ok, out) = git(dir, &["add", "-A"]);
    assert!(ok, "{out}");
    let (ok, out) = git(dir, &["commit", "-q", "-m", message]);
    assert!(ok, "{out}");
}

fn package(extra: Value) -> Value {
    let mut p = json!({
        "name": "pushed-app", "version": "1.0.0",
        "scripts": {"start": "node server.js"},
        "flock": {"instances": 1, "cpus": 0.1, "mem": 64},
        "checks": [{"path": "/health", "intervalSeconds": 1, "maxConsecutiveFailures": 2}],
        "drove": {"checkGraceSeconds": 3, "minInstances": 1}
    });
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

async fn serving(d: &Drove) -> String {
    let (status, body) = d
        .through_router("pushed.localhost", "/")
        .await
        .expect("request through the router");
    assert_eq!(status, 200, "{body}");
    body
}

/// Push a dependency-free app and it answers through the router; a bad descriptor, an app
/// that never becomes healthy and a wrong token are refused with their reason (the ref does
/// not move, v1 keeps serving); a push to another branch is stored and does not deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_push_deploys_and_bad_pushes_are_rejected() {
    let d = Drove::start(&[&agent(15)]).await;
    let (status, created) = d
        .call(
            Method::POST,
            "/v1/push/apps",
            Some(json!({"name": "pushed"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["deployToken"]
        .as_str()
        .expect("deploy token")
        .to_string();
    let remote = created["remote"].as_str().expect("remote").to_string();
    let authed = remote.replacen("http://", &format!("http://git:{token}@"), 1);

    let work = support::tempdir();
    let dir = work.path();
    let (ok, out) = git(dir, &["init", "-q"]);
    assert!(ok, "{out}");
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    commit(dir, &package(json!({})), "v1");

    // Without credentials, or with a wrong token: refused.
    let (ok, out) = git(dir, &["push", &remote, "main"]);
    assert!(!ok, "pushed without a token: {out}");
    let wrong = remote.replacen("http://", "http://git:wrong@", 1);
    let (ok, out) = git(dir, &["push", &wrong, "main"]);
    assert!(!ok && out.contains("Authentication failed"), "{out}");

    let (ok, out) = git(dir, &["push", &authed, "main"]);
    assert!(ok, "the first push: {out}");
    assert!(out.contains("released v1"), "{out}");
    let first = serving(&d).await;
    assert!(first.starts_with("hello "), "{first}");
    let app = d.app("/pushed").await;
    assert_eq!(app["labels"]["DROVE_RELEASE"], "v1", "{app}");
    let v1 = git(dir, &["rev-parse", "HEAD"]).1.trim().to_string();

    // A broken descriptor: rejected, naming the key; the ref stays at v1.
    commit(
        dir,
        &package(json!({"flock": {"instances": 1, "mem": "32MB"}})),
        "bad mem",
    );
    let (ok, out) = git(dir, &["push", &authed, "main"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("flock.mem: expected a number of MiB ≥ 16, found \"32MB\""),
        "{out}"
    );
    assert!(out.contains("pre-receive hook declined"), "{out}");
    let (_, refs) = git(dir, &["ls-remote", &authed, "refs/heads/main"]);
    assert!(refs.starts_with(&v1), "the ref did not move: {refs}");
    assert!(serving(&d).await.starts_with("hello "));

    // An app that never passes its check: rolled back, rejected; v1 still serves.
    let mut never = package(json!({}));
    never["scripts"]["start"] = json!("node server.js");
    never["checks"] = json!([{"path": "/no-such-check", "intervalSeconds": 1,
                              "maxConsecutiveFailures": 1}]);
    std::fs::write(
        dir.join("server.js"),
        "require('http').createServer((q, r) => { r.statusCode = q.url === '/' ? 200 : 500; \
         r.end('broken\\n'); }).listen(process.env.PORT0);\n",
    )
    .expect("broken server");
    commit(dir, &never, "never healthy");
    let (ok, out) = git(dir, &["push", &authed, "main"]);
    assert!(!ok, "{out}");
    assert!(out.contains("did not become healthy"), "{out}");
    let still = serving(&d).await;
    assert!(still.starts_with("hello "), "v1 keeps serving: {still}");
    let app = d
        .wait_app("/pushed", Duration::from_secs(30), "back on v1", |a| {
            a["labels"]["DROVE_RELEASE"] == "v1"
                && a["deployments"].as_array().is_some_and(|x| x.is_empty())
        })
        .await;
    assert_eq!(app["labels"]["DROVE_COMMIT"], v1.as_str());

    // Another branch: stored, not deployed.
    let (ok, out) = git(dir, &["push", &authed, "HEAD:dev"]);
    assert!(ok, "{out}");
    assert!(out.contains("only main deploys"), "{out}");
    assert_eq!(d.app("/pushed").await["labels"]["DROVE_RELEASE"], "v1");

    // Config vars: a new release whose environment the app sees.
    let target = [
        format!("--paas={}", d.paas_url()),
        format!("--token={}", support::paas::ADMIN_TOKEN),
    ];
    let cli = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(target.iter().cloned());
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            support::drove_cli(&refs).await
        }
    };
    let (ok, out) = cli(&["config:set", "pushed", "MESSAGE=configured"]).await;
    assert!(ok, "config:set: {out}");
    assert!(out.contains("released v3"), "{out}");
    assert!(serving(&d).await.starts_with("configured "));
    let (ok, out) = cli(&["config", "pushed"]).await;
    assert!(ok && out.contains("MESSAGE=configured"), "{out}");
    let (ok, out) = cli(&["releases", "pushed"]).await;
    assert!(ok, "{out}");
    for line in [
        "v1    succeeded  push",
        "v2    failed     push",
        "v3    succeeded  config",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    let (ok, out) = cli(&["releases:info", "pushed", "v2"]).await;
    assert!(
        ok && out.contains("v2 failed") && out.contains("rolling back"),
        "{out}"
    );

    // Rollback: a new release from v1's artifact and config.
    let (ok, out) = cli(&["rollback", "pushed"]).await;
    assert!(ok && out.contains("released v4"), "rollback: {out}");
    assert!(serving(&d).await.starts_with("hello "));
    let app = d.app("/pushed").await;
    assert_eq!(app["labels"]["DROVE_COMMIT"], v1.as_str(), "{app}");
    let (ok, out) = cli(&["releases", "pushed"]).await;
    assert!(
        ok && out.contains("v4    succeeded  rollback to v1"),
        "{out}"
    );
}
