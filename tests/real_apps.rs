//! What a new user meets with real apps: why an app failed shows where they look, builds can be
//! followed, the disk stays bounded and wakes do not redo work. Real binaries throughout.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::paas::{agent, Drove};
use support::{eventually, git};

/// The CLI's flags for `d`'s PaaS, the admin token given by a file in `dir`.
fn cli_target(d: &Drove, dir: &Path) -> Vec<String> {
    let token = dir.join("admin-token");
    std::fs::write(&token, support::paas::ADMIN_TOKEN).expect("token file");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    vec![
        format!("--paas={}", d.paas_url()),
        format!("--token-file={}", token.display()),
    ]
}

async fn cli(target: &[String], args: &[&str]) -> (bool, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(target.iter().map(String::as_str));
    support::drove_cli(&all).await
}

/// A crash at start explains itself: the line the app wrote (its error, not a status number)
/// is in the rejected push, in `releases:info`, in `drove apps` (failing, and why), in
/// `drove logs --stderr` of an app with no instance left running, and on the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_start_shows_what_the_app_said() {
    let d = Drove::start(&[&agent(28)]).await;
    let work = support::tempdir();
    let dir = work.path();
    let target = cli_target(&d, dir);
    let crash = "console.log('starting');\n\
                 if (!process.env.DATABASE_URL) {\n\
                   throw new Error('boom: DATABASE_URL is not set');\n\
                 }\n";
    let said = "Error: boom: DATABASE_URL is not set";

    // Pushed: the push is rejected with the app's own words.
    let (status, created) = d
        .call(
            reqwest::Method::POST,
            "/v1/push/apps",
            Some(json!({"name": "crashy"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    assert!(git(&repo, &["init", "-q"]).0);
    std::fs::write(repo.join("server.js"), crash).expect("server.js");
    let package = json!({"name": "crashy", "scripts": {"start": "node server.js"},
                         "drove": {"minInstances": 1, "checkGraceSeconds": 2}});
    std::fs::write(repo.join("package.json"), package.to_string()).expect("package.json");
    assert!(git(&repo, &["add", "-A"]).0);
    assert!(git(&repo, &["commit", "-qm", "v1"]).0);
    let (ok, out) = git(&repo, &["push", &support::push_remote(&created), "main"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(said),
        "the push says what the app said:\n{out}"
    );
    let (ok, out) = cli(&target, &["releases:info", "crashy", "v1"]).await;
    assert!(
        ok && out.contains("v1  failed") && out.contains(said),
        "{out}"
    );

    // A Marathon app crash-looping: `drove apps`, `drove logs`, the dashboard.
    let app = json!({"id": "/looping", "cmd": format!("node -e \"{}\"", crash.replace('\n', " ")),
                     "instances": 1, "cpus": 0.1, "mem": 64,
                     "backoffSeconds": 0.5, "backoffFactor": 1.0});
    d.create(app).await;
    let line = eventually(
        "looping failing in drove apps",
        Duration::from_secs(30),
        || {
            let target = target.clone();
            async move {
                let (ok, out) = cli(&target, &["apps"]).await;
                out.lines()
                    .find(|l| ok && l.starts_with("/looping") && l.contains("failing"))
                    .map(str::to_string)
            }
        },
    )
    .await;
    assert!(line.contains(said), "why it fails: {line}");
    let (ok, out) = cli(&target, &["logs", "looping", "--stderr", "--tail", "20"]).await;
    assert!(ok && out.contains(said), "{out}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let session = support::dashboard::login(&http, &d.paas_url(), support::paas::ADMIN_TOKEN).await;
    for page in ["/admin/apps", "/admin/apps/looping"] {
        let html = http
            .get(format!("{}{page}", d.paas_url()))
            .header("Cookie", &session)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(html.contains(said), "{page} says what the app said");
    }
    let v: Value = d.app("/looping").await;
    assert!(
        v["lastTaskFailure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(said)),
        "{v}"
    );
}
