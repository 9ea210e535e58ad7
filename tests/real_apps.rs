//! What a new user meets with real apps: why an app failed shows where they look, builds can be
//! followed, the disk stays bounded and wakes do not redo work. Real binaries throughout.

use drove_testkit as support;

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
    let remote = d.create_pushed("crashy").await;
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    assert!(git(&repo, &["init", "-q"]).0);
    std::fs::write(repo.join("server.js"), crash).expect("server.js");
    let package = json!({"name": "crashy", "scripts": {"start": "node server.js"},
                         "drove": {"minInstances": 1, "checkGraceSeconds": 2}});
    std::fs::write(repo.join("package.json"), package.to_string()).expect("package.json");
    assert!(git(&repo, &["add", "-A"]).0);
    assert!(git(&repo, &["commit", "-qm", "v1"]).0);
    let (ok, out) = git(&repo, &["push", &remote, "main"]);
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
    // Its row says it is failing and why (the first failures may be recorded before the
    // instance's stderr is read: wait for the line that has both).
    let line = eventually(
        "looping failing in drove apps, with what it said",
        Duration::from_secs(30),
        || {
            let target = target.clone();
            async move {
                let (ok, out) = cli(&target, &["apps"]).await;
                out.lines()
                    .find(|l| ok && l.starts_with("/looping") && l.contains("failing"))
                    .filter(|l| l.contains(said))
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

/// A repository for a pushed app: `server.js` (serving `dist/greeting.txt` when the build made
/// one, else "hello"), `package.json` from `pkg`, any `files`; committed.
fn app_repo(dir: &Path, pkg: &Value, files: &[(&str, &str)]) {
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(dir).expect("repo dir");
        assert!(git(dir, &["init", "-q"]).0);
    }
    std::fs::write(
        dir.join("server.js"),
        "const fs = require('fs');\n\
         require('http').createServer((q, r) => r.end(q.url === '/health' ? 'ok' :\n\
           (fs.existsSync('dist/greeting.txt') ? fs.readFileSync('dist/greeting.txt', 'utf8') : 'hello')\n\
         )).listen(process.env.PORT);\n",
    )
    .expect("server.js");
    std::fs::write(dir.join("package.json"), pkg.to_string()).expect("package.json");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("a file");
    }
    assert!(git(dir, &["add", "-A"]).0);
    assert!(git(dir, &["commit", "-qm", "next", "--allow-empty"]).0);
}

/// Builds can be followed: what a build writes on stderr reaches the pusher while it runs;
/// config vars reach the build (`VITE_*` are read then); a failed build is a failed release
/// whose log holds the build's output and whose rejection quotes the error line, not a
/// status; `config:set PORT=…` is refused naming why; a start script that runs a pruned
/// devDependency is named at push time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_can_be_followed_and_explain_their_failures() {
    let d = Drove::start(&[&agent(29)]).await;
    let work = support::tempdir();
    let target = cli_target(&d, work.path());
    let repo = work.path().join("repo");
    let remote = d.create_pushed("follow").await;
    let build = "console.error('compiling on stderr');\n\
                 setTimeout(() => {\n\
                   fs.mkdirSync('dist', {recursive: true});\n\
                   fs.writeFileSync('dist/greeting.txt', 'greeting=' + (process.env.VITE_GREETING || 'unset') + ' env=' + process.env.NODE_ENV);\n\
                   console.log('built');\n\
                 }, 3000);\n";
    let build = format!("const fs = require('fs');\n{build}");
    let pkg = json!({"name": "follow", "scripts": {"start": "node server.js", "build": "node build.js"},
                     "drove": {"minInstances": 1}});
    app_repo(&repo, &pkg, &[("build.js", &build)]);

    // Live: the stderr line is at the pusher while the build still runs.
    let log = work.path().join("push.log");
    let out = std::fs::File::create(&log).expect("push log");
    let mut push = std::process::Command::new("git")
        .args(["-c", "credential.helper=", "push", &remote, "main"])
        .current_dir(&repo)
        .env("HOME", &repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("git push");
    eventually(
        "the build's stderr line at the pusher",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            std::future::ready(text.contains("compiling on stderr").then_some(()))
        },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("built"),
        "the build is still running:\n{text}"
    );
    let done = tokio::task::spawn_blocking(move || push.wait())
        .await
        .expect("join");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(done.is_ok_and(|s| s.success()), "{text}");
    assert!(
        text.contains("released v1: http://follow.localhost:"),
        "the URL has the port: {text}"
    );
    let served = |want: &'static str| {
        let d = &d;
        async move {
            eventually(want, Duration::from_secs(20), || async {
                let (status, body) = d.through_router("follow.localhost", "/").await.ok()?;
                (status == 200 && body.contains(want)).then_some(body)
            })
            .await
        }
    };
    served("greeting=unset env=production").await;

    // Config reaches the next build.
    let (ok, out) = cli(&target, &["config:set", "follow", "VITE_GREETING=bonjour"]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(&target, &["config:set", "follow", "PORT=1"]).await;
    assert!(
        !ok && out.contains("PORT: not a config var an app sets"),
        "{out}"
    );
    app_repo(&repo, &pkg, &[]);
    let (ok, out) = git(&repo, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    served("greeting=bonjour").await;

    // A failing build: its error line, not a status, and a failed release with the log.
    let failing = "console.log('compiling');\n\
                   console.error('./app/page.js');\n\
                   console.error('\\x1b[31mSyntaxError: Unexpected token (3:5)\\x1b[0m');\n\
                   for (let i = 0; i < 40; i++) console.error('  noise ' + i);\n\
                   process.exit(1);\n";
    app_repo(&repo, &pkg, &[("build.js", failing)]);
    let (ok, out) = git(&repo, &["push", &remote, "main"]);
    assert!(!ok, "{out}");
    assert!(out.contains("SyntaxError: Unexpected token (3:5)"), "{out}");
    assert!(
        !out.contains("\u{1b}[31m"),
        "no escapes in the verdict: {out}"
    );
    let (ok, out) = cli(&target, &["releases", "follow"]).await;
    assert!(ok && out.contains("v4    failed     push"), "{out}");
    let (ok, out) = cli(&target, &["releases:info", "follow", "v4"]).await;
    assert!(
        ok && out.contains("noise 39") && out.contains("SyntaxError"),
        "{out}"
    );
    served("greeting=bonjour").await;

    // A start script that needs a devDependency pruned before start.
    let mut dev = pkg.clone();
    dev["scripts"]["start"] = json!("serve-it --port $PORT");
    dev["devDependencies"] = json!({"serve-it": "file:vendor/serve-it"});
    app_repo(
        &repo,
        &dev,
        &[("build.js", "console.log('nothing to build')")],
    );
    let (_, out) = git(&repo, &["push", &remote, "main"]);
    assert!(
        out.contains("scripts.start runs serve-it, a devDependency"),
        "{out}"
    );
}

/// A build the agents have no room for says what it waits for, at the pusher within seconds,
/// in `/v2/queue` and on the dashboard's cluster page; once room is made it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_waiting_for_resources_says_so() {
    let small = "cpus:2;mem:4096;ports:[26000-26199]".to_string();
    let d = Drove::start(&[&small]).await;
    let work = support::tempdir();
    let repo = work.path().join("repo");
    // Most of the CPU taken.
    d.create(json!({"id": "/hog", "cmd": "sleep 600", "instances": 1, "cpus": 1.5, "mem": 32}))
        .await;
    d.wait_app("/hog", Duration::from_secs(30), "running", |a| {
        a["tasksRunning"] == 1
    })
    .await;
    let remote = d.create_pushed("patient").await;
    let pkg = json!({"name": "patient", "scripts": {"start": "node server.js", "build": "node -e 0"},
                     "drove": {"minInstances": 1}});
    app_repo(&repo, &pkg, &[]);
    let log = work.path().join("push.log");
    let out = std::fs::File::create(&log).expect("push log");
    let mut push = std::process::Command::new("git")
        .args(["-c", "credential.helper=", "push", &remote, "main"])
        .current_dir(&repo)
        .env("HOME", &repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("git push");
    let said = eventually("the push to say it waits", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::future::ready(text.contains("waiting for resources").then_some(text))
    })
    .await;
    assert!(
        said.contains("it needs 1 cpus and 1024 MiB") && said.contains("InsufficientCpus"),
        "{said}"
    );
    let queue = d.get("/v2/queue").await;
    assert!(
        queue["queue"]
            .as_array()
            .is_some_and(|q| q.iter().any(|e| e["app"]["id"] == "/patient-build")),
        "{queue}"
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let session = support::dashboard::login(&http, &d.paas_url(), support::paas::ADMIN_TOKEN).await;
    let html = http
        .get(format!("{}/admin/cluster", d.paas_url()))
        .header("Cookie", &session)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        html.contains("/patient-build"),
        "the dashboard lists the waiting build"
    );
    // Room made: the build runs and the push goes through.
    d.put("hog", json!({"instances": 0})).await;
    let done = tokio::task::spawn_blocking(move || push.wait())
        .await
        .expect("join");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        done.is_ok_and(|s| s.success()) && text.contains("released v1"),
        "{text}"
    );
}

/// The overlay mounts under `dir`: (mount point, its lower dirs).
fn overlays_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<String>)> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let under = f
                .get(1)
                .is_some_and(|p| std::path::Path::new(p).starts_with(dir));
            (f.get(2) == Some(&"overlay") && under).then(|| {
                let lowers = f[3]
                    .split(',')
                    .find_map(|o| o.strip_prefix("lowerdir="))
                    .map(|l| l.split(':').map(str::to_string).collect())
                    .unwrap_or_default();
                (std::path::PathBuf::from(f[1]), lowers)
            })
        })
        .collect()
}

/// Wakes do not redo work and leave no disk behind: every instance of an app mounts the
/// same unpacked artifact (one layer, made once: its inode never changes across 20 wakes)
/// instead of extracting it again, and after 20 wakes the agent keeps the live sandbox and
/// the last two ended ones, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_reuse_the_unpacked_artifact_and_leave_no_disk_behind() {
    use std::os::unix::fs::MetadataExt;
    let d = Drove::start(&[&agent(31)]).await;
    let work = support::tempdir();
    let repo = work.path().join("repo");
    let remote = d.create_pushed("sleeper").await;
    let pkg = json!({"name": "sleeper", "scripts": {"start": "node server.js"},
                     "drove": {"minInstances": 0, "idleSeconds": 3600}});
    app_repo(&repo, &pkg, &[]);
    let (ok, out) = git(&repo, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    let agent_dir = d.cluster.specs[0].work_dir.clone();
    // Every sandbox of the app (live, and ended ones kept for their logs) is mounted over
    // one and the same layer.
    let layer_of_instance = || {
        let mounts = overlays_under(&agent_dir.join("sandboxes"));
        assert!(!mounts.is_empty(), "sandboxes are mounted over layers");
        let lowers: std::collections::BTreeSet<&Vec<String>> =
            mounts.iter().map(|(_, l)| l).collect();
        assert_eq!(lowers.len(), 1, "one layer for all: {mounts:?}");
        let lowers = &mounts[0].1;
        assert_eq!(lowers.len(), 1, "{lowers:?}");
        let layer = std::path::PathBuf::from(&lowers[0]);
        assert!(layer.starts_with(agent_dir.join("layers")), "{layer:?}");
        layer
    };
    let served = || {
        let d = &d;
        async move {
            eventually("sleeper served", Duration::from_secs(30), || async {
                let (status, _) = d.through_router("sleeper.localhost", "/").await.ok()?;
                (status == 200).then_some(())
            })
            .await
        }
    };
    served().await;
    let layer = layer_of_instance();
    let inode = std::fs::metadata(&layer).expect("the layer").ino();
    let sandboxes = |d: &std::path::Path| -> usize {
        let mut n = 0;
        for fw in std::fs::read_dir(d).into_iter().flatten().flatten() {
            for task in std::fs::read_dir(fw.path()).into_iter().flatten().flatten() {
                n += std::fs::read_dir(task.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|r| !r.file_name().to_string_lossy().contains('.'))
                    .count();
            }
        }
        n
    };
    for round in 0..20 {
        d.put("sleeper", json!({"instances": 0})).await;
        eventually(
            &format!("round {round}: at zero"),
            Duration::from_secs(30),
            || async { d.tasks("sleeper").await.is_empty().then_some(()) },
        )
        .await;
        served().await;
        assert_eq!(layer_of_instance(), layer, "the same layer");
    }
    assert_eq!(
        std::fs::metadata(&layer).expect("the layer").ino(),
        inode,
        "made once, never extracted again"
    );
    // Collected: the live sandbox and the last two ended ones.
    let base = agent_dir.join("sandboxes");
    let left = eventually("ended sandboxes collected", Duration::from_secs(90), || {
        let n = sandboxes(&base);
        std::future::ready((n <= 3).then_some(n))
    })
    .await;
    assert!(
        left >= 2,
        "the live one and at least one ended one are kept: {left}"
    );
}

/// CPU that fits low-traffic apps: a pushed app's instance is guaranteed its `flock.cpus`
/// (its CPU shares) and may burst into idle CPU up to its limit (its CFS quota): one core by
/// default (`--app-cpus-limit`), `drove.cpusLimit` when it says; a Marathon app's
/// `resourceLimits.cpus` likewise.
/// One without a limit starts boosted to a core, until a few seconds after it is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_guaranteed_its_cpus_and_bursts_to_its_limit() {
    let d = Drove::start(&[&agent(32)]).await;
    let work = support::tempdir();
    let repo = work.path().join("repo");
    let remote = d.create_pushed("bursty").await;
    let pkg = json!({"name": "bursty", "scripts": {"start": "node server.js"},
                     "flock": {"cpus": 0.1}, "drove": {"minInstances": 1}});
    app_repo(&repo, &pkg, &[]);
    let (ok, out) = git(&repo, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    let cpu = |task: &str| -> Option<(u64, i64)> {
        // The task's cgroup under this test's cgroup root (v1: cpu.shares, cpu.cfs_quota_us).
        let root = std::path::Path::new("/sys/fs/cgroup/cpu").join(&d.cluster.cgroup_root);
        for c in std::fs::read_dir(&root).ok()?.flatten() {
            let procs = std::fs::read_to_string(c.path().join("cgroup.procs")).unwrap_or_default();
            let mine = procs.lines().any(|p| {
                std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|e| {
                    e.split(|b| *b == 0)
                        .any(|kv| kv == format!("MESOS_TASK_ID={task}").as_bytes())
                })
            });
            if mine {
                let read = |f: &str| std::fs::read_to_string(c.path().join(f)).unwrap_or_default();
                return Some((
                    read("cpu.shares").trim().parse().ok()?,
                    read("cpu.cfs_quota_us").trim().parse().ok()?,
                ));
            }
        }
        None
    };
    if !std::path::Path::new("/sys/fs/cgroup/cpu").is_dir() {
        return; // cgroup v2 hosts are covered by the agent's VM test
    }
    let task = d.tasks("bursty").await[0]["id"]
        .as_str()
        .expect("a task")
        .to_string();
    let (shares, quota) = eventually(
        "the boost over, the limit in force",
        Duration::from_secs(30),
        || std::future::ready(cpu(&task).filter(|(_, q)| *q == 100_000)),
    )
    .await;
    assert_eq!(
        (shares, quota),
        (102, 100_000),
        "0.1 cpus guaranteed, 1 core of quota"
    );
    // A Marathon app's own limit.
    d.create(
        json!({"id": "/limited", "cmd": "sleep 600", "instances": 1, "cpus": 0.2, "mem": 32,
                    "resourceLimits": {"cpus": 0.5}}),
    )
    .await;
    let app = d
        .wait_app("/limited", Duration::from_secs(30), "running", |a| {
            a["tasksRunning"] == 1
        })
        .await;
    let task = app["tasks"][0]["id"].as_str().expect("a task").to_string();
    let got = eventually("its quota", Duration::from_secs(30), || {
        std::future::ready(cpu(&task).filter(|(_, q)| *q == 50_000))
    })
    .await;
    assert_eq!(got, (205, 50_000));
    // Without a limit, the startup boost (one core) outlasts the first passed health check,
    // so a wake's first requests are served boosted; then the task has its own 0.1 cpus.
    d.create(support::paas::node_app("/booted", 1, "hi")).await;
    let app = d.wait_healthy("/booted", 1, Duration::from_secs(30)).await;
    let task = app["tasks"][0]["id"].as_str().expect("a task").to_string();
    assert_eq!(
        cpu(&task).map(|(_, q)| q),
        Some(100_000),
        "still boosted once healthy"
    );
    eventually("the boost over", Duration::from_secs(20), || {
        std::future::ready(cpu(&task).filter(|(_, q)| *q == 10_000))
    })
    .await;
    let (status, body) = d
        .call(
            reqwest::Method::POST,
            "/v2/apps",
            Some(json!({"id": "/bad-limit", "cmd": "sleep 1",
            "cpus": 0.5, "resourceLimits": {"cpus": 0.1}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("/resourceLimits/cpus"), "{body}");
}

/// The CLI says what is wrong: an unknown app is "no app" (not a validation error from
/// Marathon's create-on-PUT), a PaaS that is not there is named with what to check, and any
/// app can be deleted from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_what_is_wrong() {
    let d = Drove::start(&[&agent(33)]).await;
    let work = support::tempdir();
    let target = cli_target(&d, work.path());
    let (ok, out) = cli(&target, &["scale", "nope", "0"]).await;
    assert!(!ok && out.contains("no app \"nope\""), "{out}");
    let (ok, out) = cli(&target, &["logs", "nope"]).await;
    assert!(!ok && out.contains("no app \"nope\""), "{out}");
    d.create(json!({"id": "/doomed", "cmd": "sleep 600", "instances": 1, "cpus": 0.1, "mem": 32}))
        .await;
    let (ok, out) = cli(&target, &["delete", "doomed", "--confirm", "other"]).await;
    assert!(!ok && out.contains("nothing deleted"), "{out}");
    let (ok, out) = cli(&target, &["delete", "doomed", "--confirm", "doomed"]).await;
    assert!(ok, "{out}");
    eventually("doomed gone", Duration::from_secs(30), || async {
        let (status, _) = d.call(reqwest::Method::GET, "/v2/apps/doomed", None).await;
        (status == 404).then_some(())
    })
    .await;
    let port = support::free_port("127.0.0.1");
    let nowhere = [format!("--paas=http://127.0.0.1:{port}"), target[1].clone()];
    let (ok, out) = cli(&nowhere, &["apps"]).await;
    assert!(
        !ok && out.contains(&format!("cannot reach the PaaS at http://127.0.0.1:{port}"))
            && out.contains("is drove up running?"),
        "{out}"
    );
}

/// The PaaS's artifacts are collected when nothing keeps them: after a release, an artifact no
/// release or cache refers to goes (once past its grace period), while an old one a release
/// refers to stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_artifacts_are_collected() {
    let d = Drove::start(&[&agent(34)]).await;
    let work = support::tempdir();
    let repo = work.path().join("repo");
    let remote = d.create_pushed("tidy").await;
    let pkg = json!({"name": "tidy", "scripts": {"start": "node server.js"},
                     "drove": {"minInstances": 1}});
    app_repo(&repo, &pkg, &[]);
    let (ok, out) = git(&repo, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    let (_, releases) = d
        .call(reqwest::Method::GET, "/v1/push/apps/tidy/releases", None)
        .await;
    let v1 = releases["releases"][0]["artifact"]
        .as_str()
        .expect("v1's artifact")
        .to_string();
    let dir = d.cluster.dir.path().join("paas/artifacts");
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    let age = |p: &Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(old))
            .expect("set its time");
    };
    age(&dir.join(&v1));
    let orphan = dir.join(format!("{}.tar.zst", "0".repeat(64)));
    std::fs::write(&orphan, b"nothing refers to this").expect("orphan");
    age(&orphan);
    app_repo(&repo, &pkg, &[("README", "v2")]);
    let (ok, out) = git(&repo, &["push", &remote, "main"]);
    assert!(ok, "{out}");
    eventually("the orphan collected", Duration::from_secs(20), || {
        std::future::ready((!orphan.exists()).then_some(()))
    })
    .await;
    assert!(
        dir.join(&v1).is_file(),
        "v1's artifact is kept: a release refers to it"
    );
}

/// What the dashboard shows of an app's past outlives a restart of `drove up`: its scaling
/// decisions, its wakes' timelines and its last hour of samples (`/v1/apps/<app>/scaling`,
/// which the dashboard's app page reads) are the same after it as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_past_outlives_a_restart() {
    let mut up = support::up::Up::start((28800, 28999), &[]).await;
    let http = reqwest::Client::new();
    let mut app = support::paas::node_app("/napper", 0, "zzz");
    app["scaling"] = json!({"minInstances": 0, "idleSeconds": 3600});
    let (status, body) = up.call(reqwest::Method::POST, "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{body}");
    let (url, host) = up.app_request("napper");
    // The route reaches the router a moment after the 201 (it streams from the PaaS): until
    // then the host is unknown (404). Once known, one request wakes the app.
    let status = eventually("the router knows the app", Duration::from_secs(10), || {
        let (http, url, host) = (&http, &url, &host);
        async move {
            let r = http.get(url).header("Host", host).send().await.ok()?;
            (r.status() != 404).then_some(r.status())
        }
    })
    .await;
    assert_eq!(status, 200, "a request wakes it");
    let (url, token) = (
        format!("{}/v1/apps/napper/scaling", up.paas_url),
        up.token.clone(),
    );
    let scaling = || {
        let (http, url, token) = (&http, &url, &token);
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some(v)
        }
    };
    // A wake, its decision, and two samples with the instance up.
    let before = eventually(
        "a wake and two samples",
        Duration::from_secs(40),
        || async {
            let v = scaling().await?;
            let up_samples = v["history"]
                .as_array()?
                .iter()
                .filter(|s| s["ready"] == 1)
                .count();
            let woke = v["wakes"].as_array().is_some_and(|w| !w.is_empty());
            (woke && up_samples >= 2).then_some(v)
        },
    )
    .await;
    assert!(
        before["decisions"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["reason"].as_str().is_some_and(|r| r.starts_with("wake")))),
        "the wake's decision: {before}"
    );
    up.restart().await;
    let after = scaling().await.expect("the scaling view after the restart");
    assert_eq!(after["wakes"], before["wakes"], "the wakes kept");
    assert_eq!(
        after["decisions"], before["decisions"],
        "the decisions kept"
    );
    let samples = |v: &Value| v["history"].as_array().cloned().unwrap_or_default();
    let kept = samples(&before);
    assert!(
        samples(&after).starts_with(&kept),
        "the samples kept, in order:\nbefore {kept:?}\nafter {:?}",
        samples(&after)
    );
}
