//! End-to-end tests of `git push` deploys: real git pushing over HTTP to the real PaaS, which
//! packs the commit, releases it and rolls it out on a real agent; the app answers through the
//! router. Bad pushes are rejected with their reason while the previous release keeps serving.

use drove_testkit as support;

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::git;
use support::paas::{agent, Drove};
use support::wait::{eventually, until_ok};

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
    // A node the agents do not have: rejected, naming engines.node.
    commit(
        dir,
        &package(json!({"engines": {"node": ">=99"}})),
        "future node",
    );
    let (ok, out) = git(dir, &["push", &authed, "main"]);
    assert!(
        !ok && out.contains("engines.node: expected a node the agents have"),
        "{out}"
    );
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

    // Destroyed: the app, its repository and its releases.
    let (ok, out) = cli(&["apps:destroy", "pushed", "--confirm", "nope"]).await;
    assert!(!ok && out.contains("nothing destroyed"), "{out}");
    let (ok, out) = cli(&["apps:destroy", "pushed", "--confirm", "pushed"]).await;
    assert!(ok, "{out}");
    eventually(
        "the destroyed app to go",
        Duration::from_secs(30),
        || async {
            let (status, _) = d.call(Method::GET, "/v2/apps/pushed", None).await;
            (status == 404).then_some(())
        },
    )
    .await;
    let (ok, out) = git(dir, &["ls-remote", &authed]);
    assert!(!ok, "the repository is gone: {out}");
    let (status, _) = d
        .call(Method::GET, "/v1/push/apps/pushed/releases", None)
        .await;
    assert_eq!(status, 404);
}

/// `X-Hub-Signature-256` of `body` under `secret`, as GitHub computes it.
use support::github_signature as sign;

/// GitHub's push webhook: a ping is answered; a bad signature is 401; a signed push to the
/// deploy branch is fetched from `repository.clone_url` and deployed (202 at once); a replayed
/// delivery, a tag push and a branch deletion deploy nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_webhook_deploys_signed_pushes() {
    let d = Drove::start(&[&agent(16)]).await;
    // The "GitHub" repository: another pushed app's, over the same smart HTTP.
    let (_, upstream) = d
        .call(
            Method::POST,
            "/v1/push/apps",
            Some(json!({"name": "upstream"})),
        )
        .await;
    let clone_url = support::push_remote(&upstream);
    let work = support::tempdir();
    let dir = work.path();
    assert!(git(dir, &["init", "-q"]).0);
    std::fs::copy(support::paas::server_js(), dir.join("server.js")).expect("server.js");
    commit(dir, &package(json!({})), "v1");
    let (ok, out) = git(dir, &["push", &clone_url, "main"]);
    assert!(ok, "{out}");
    let head = git(dir, &["rev-parse", "HEAD"]).1.trim().to_string();

    let (status, hooked) = d
        .call(
            Method::POST,
            "/v1/push/apps",
            Some(json!({"name": "hooked"})),
        )
        .await;
    assert_eq!(status, 201, "{hooked}");
    let secret = hooked["webhookSecret"]
        .as_str()
        .expect("secret")
        .to_string();
    let url = format!("{}/hooks/github/hooked", d.paas_url());
    let http = reqwest::Client::new();
    let deliver = |event: &str, delivery: &str, body: Value, signature: Option<String>| {
        let bytes = body.to_string().into_bytes();
        let sig = signature.unwrap_or_else(|| sign(&secret, &bytes));
        http.post(&url)
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", sig)
            .header("Content-Type", "application/json")
            .body(bytes)
            .send()
    };
    let r = deliver(
        "ping",
        "d-0",
        json!({"zen": "Keep it logically awesome."}),
        None,
    )
    .await
    .expect("ping");
    assert_eq!(r.status(), 200);
    let push = json!({"ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000",
                      "after": head, "repository": {"clone_url": clone_url}});
    let r = deliver("push", "d-1", push.clone(), Some("sha256=00".into()))
        .await
        .expect("bad signature");
    assert_eq!(r.status(), 401, "a bad signature is refused");
    let started = std::time::Instant::now();
    let r = deliver("push", "d-2", push.clone(), None)
        .await
        .expect("push");
    assert_eq!(r.status(), 202);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered within GitHub's 10 s"
    );
    let app = d
        .wait_app(
            "/hooked",
            Duration::from_secs(60),
            "deployed by the webhook",
            |a| {
                a["labels"]["DROVE_RELEASE"] == "v1"
                    && a["deployments"].as_array().is_some_and(|x| x.is_empty())
            },
        )
        .await;
    assert_eq!(app["labels"]["DROVE_COMMIT"], head.as_str());
    let (status, body) = d
        .through_router("hooked.localhost", "/")
        .await
        .expect("through the router");
    assert_eq!(status, 200, "{body}");
    let (_, releases) = d
        .call(Method::GET, "/v1/push/apps/hooked/releases", None)
        .await;
    assert_eq!(releases["releases"][0]["by"], "webhook", "{releases}");

    // A redelivery, the same signed push under a new id (a captured one replayed), a tag and
    // a deletion: nothing more is deployed.
    for (delivery, body) in [
        ("d-2", push.clone()),
        ("d-2-replayed", push.clone()),
        (
            "d-3",
            json!({"ref": "refs/tags/v1.0", "after": head,
                       "repository": {"clone_url": clone_url}}),
        ),
        (
            "d-4",
            json!({"ref": "refs/heads/main", "after": "0000000000000000000000000000000000000000",
                       "deleted": true, "repository": {"clone_url": clone_url}}),
        ),
    ] {
        let r = deliver("push", delivery, body, None)
            .await
            .expect("delivery");
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.expect("json");
        assert!(v["ignored"].is_string(), "{delivery}: {v}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, releases) = d
        .call(Method::GET, "/v1/push/apps/hooked/releases", None)
        .await;
    assert_eq!(
        releases["releases"].as_array().map(|r| r.len()),
        Some(1),
        "{releases}"
    );

    // Over GitHub's 25 MB: refused unread (413, or a reset connection if the server closes
    // before the client reads the answer).
    let huge = vec![b'a'; 26 << 20];
    let r = http
        .post(&url)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sign(&secret, &huge))
        .body(huge)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413, "an oversized delivery");
    }

    // A rotated secret: deliveries signed with the old one are refused.
    let (status, rotated) = d
        .call(Method::POST, "/v1/push/apps/hooked/webhook", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["webhookSecret"], secret.as_str());
    let r = deliver("ping", "d-5", json!({}), None).await.expect("ping");
    assert_eq!(r.status(), 401, "the old secret no longer signs");
}

/// An app with a dependency (packed in its own tree, `file:`, so no network is needed) is built
/// on the cluster: `npm ci` installs it, the app uses it; a second push that changes only code
/// installs nothing (the dependency cache, keyed by the lockfile); a failing build is rejected
/// naming its step, and the previous release keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_are_built_on_the_cluster_and_cached() {
    let d = Drove::start(&[&agent(17)]).await;
    let (status, created) = d
        .call(
            Method::POST,
            "/v1/push/apps",
            Some(json!({"name": "built"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let remote = support::push_remote(&created);
    let work = support::tempdir();
    let dir = work.path();
    assert!(git(dir, &["init", "-q"]).0);
    let vendor = dir.join("vendor/greeter");
    std::fs::create_dir_all(&vendor).expect("vendor dir");
    std::fs::write(
        vendor.join("package.json"),
        json!({"name": "greeter", "version": "1.0.0", "main": "index.js"}).to_string(),
    )
    .expect("dep package.json");
    std::fs::write(
        vendor.join("index.js"),
        "module.exports = (w) => `greeted ${w}`;\n",
    )
    .expect("dep index.js");
    let server = |word: &str| {
        format!(
            "const greet = require('greeter');\n\
             require('http').createServer((q, r) => r.end(q.url === '/health' ? 'ok' : \
             greet('{word}') + '\\n')).listen(process.env.PORT0);\n"
        )
    };
    std::fs::write(dir.join("server.js"), server("once")).expect("server.js");
    let mut pkg = package(json!({"dependencies": {"greeter": "file:vendor/greeter"}}));
    std::fs::write(dir.join("package.json"), pkg.to_string()).expect("package.json");
    support::npm_lockfile(dir);
    commit(dir, &pkg, "with a dependency");
    let (ok, out) = git(dir, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    assert!(out.contains("installing dependencies: npm ci"), "{out}");
    assert!(out.contains("released v1"), "{out}");
    let (status, body) = d
        .through_router("built.localhost", "/")
        .await
        .expect("through the router");
    assert_eq!((status, body.trim()), (200, "greeted once"));

    // Code only: the lockfile is unchanged, so nothing is installed.
    std::fs::write(dir.join("server.js"), server("twice")).expect("server.js");
    commit(dir, &pkg, "code only");
    let (ok, out) = git(dir, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    assert!(out.contains("from the cache"), "{out}");
    assert!(!out.contains("npm ci"), "{out}");
    let (_, body) = d
        .through_router("built.localhost", "/")
        .await
        .expect("through the router");
    assert_eq!(body.trim(), "greeted twice");

    // A failing build: rejected with its step and output; v2 keeps serving.
    pkg["scripts"]["build"] = json!("echo compiling; echo the compiler broke >&2; exit 3");
    commit(dir, &pkg, "broken build");
    let (ok, out) = git(dir, &["push", &remote, "main"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("the build failed at \"building: npm run build\""),
        "{out}"
    );
    assert!(out.contains("the compiler broke"), "{out}");
    let (_, body) = d
        .through_router("built.localhost", "/")
        .await
        .expect("through the router");
    assert_eq!(body.trim(), "greeted twice");

    // A push under steady load (a request every 10 ms): not one fails while it rolls out.
    pkg["scripts"]
        .as_object_mut()
        .expect("scripts")
        .remove("build");
    std::fs::write(dir.join("server.js"), server("thrice")).expect("server.js");
    commit(dir, &pkg, "under load");
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (stop, url) = (stop.clone(), format!("http://{}/", d.router_addr()));
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            let (mut ok, mut failed) = (0u32, Vec::new());
            // Bounded: at most 60 s of load.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.is_cancelled() && std::time::Instant::now() < deadline {
                match client
                    .get(&url)
                    .header("Host", "built.localhost")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out) = git(dir, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let (served, failed) = load.await.expect("load task");
    assert!(
        failed.is_empty(),
        "{} failed during the push: {failed:?}",
        failed.len()
    );
    assert!(served > 20, "only {served} requests went through");
    let (_, body) = d
        .through_router("built.localhost", "/")
        .await
        .expect("through the router");
    assert_eq!(body.trim(), "greeted thrice");

    // A pusher that leaves mid-build leaves no half-made release: the deploy runs to an end
    // (here, the release completes), no release stays "deploying", no deployment is left,
    // and the app serves its latest succeeded release.
    pkg["scripts"]["build"] = json!("echo slow build; sleep 5; echo built");
    std::fs::write(dir.join("server.js"), server("never")).expect("server.js");
    commit(dir, &pkg, "left mid-build");
    let never = git(dir, &["rev-parse", "HEAD"]).1.trim().to_string();
    let mut push = std::process::Command::new("git")
        .args(["-c", "credential.helper=", "push", &remote, "main"])
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git push");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = push.kill();
    let _ = push.wait();
    let releases = until_ok(
        "the deploy the pusher left to run to an end",
        Duration::from_secs(40),
        || async {
            let (_, v) = d
                .call(Method::GET, "/v1/push/apps/built/releases", None)
                .await;
            let settled = v["releases"]
                .as_array()
                .is_some_and(|r| r.iter().all(|x| x["status"] != "deploying"));
            let app = d.app("/built").await;
            let idle = app["deployments"].as_array().is_some_and(|x| x.is_empty());
            if settled && idle {
                Ok(v)
            } else {
                Err(format!("{v} {app}"))
            }
        },
    )
    .await;
    let latest = releases["releases"]
        .as_array()
        .and_then(|r| r.iter().rev().find(|x| x["status"] == "succeeded"))
        .cloned()
        .expect("a succeeded release");
    let app = d.app("/built").await;
    assert_eq!(app["labels"]["DROVE_RELEASE"], latest["version"], "{app}");
    let (_, body) = d
        .through_router("built.localhost", "/")
        .await
        .expect("through the router");
    let expected = if latest["commit"] == app["labels"]["DROVE_COMMIT"]
        && latest["commit"] == never.as_str()
    {
        "greeted never"
    } else {
        "greeted thrice"
    };
    assert_eq!(
        body.trim(),
        expected,
        "it serves its latest succeeded release"
    );
}
