//! PaaS benchmarks. Run: `cargo bench --bench paas` (as root: `drove up` runs real tasks in
//! cgroups). Three measurements, each printed with what it is compared against in the same run:
//!
//! 1. **Deploy → first 200**: `POST /v2/apps` of the Node app (`tests/apps/server.js`, one
//!    instance, HTTP health check) until its first 200 through the router, against the floor:
//!    spawning `node server.js` directly until its first 200.
//! 2. **Rolling deploy under load**: a new version of a 3-instance app while ~200 requests/s go
//!    through the router: failed requests and the deploy's duration.
//! 3. **Scheduling throughput**: 1,000 apps × 1 instance on 100 simulated agents (a real master
//!    and the real PaaS in-process; the agents report RUNNING at once): time until all run.
//!
//! 4. **Wake → first 200**: one request through the router to an app at zero, until its answer,
//!    against the same floor (node alone), and with the agent's startup CPU boost off and on
//!    (two `drove up`s); the PaaS's wake timelines show where the time went.
//!
//! 5. **`git push` → first 200 of the new release**: a dependency-free app pushed over HTTP
//!    (real git), the push returning once the release is healthy, then the new release's first
//!    answer through the router; against node alone.
//! 6. **The same with a dependency** (a `file:` package, a lockfile), built on the cluster: the
//!    first push installs it, every later one takes `node_modules` from the cache. Each step's
//!    share comes from the time its `remote:` line arrived.
//!
//! 7. **Dashboard pages** with part 3's 1,000 apps: the apps and cluster pages, each a full
//!    render (what a live viewer's stream makes every 2 s), against `GET /v2/apps`.
//!
//! `ROUNDS` (default 10) sets how many deploys parts 1, 5 and 6 (wakes part 4, renders part 7)
//! time; `PARTS` (default `1,2,3,4,5,6,7`) selects.

use drove_testkit as test_support;
use drove_testkit::bench as support;
use drove_testkit::bench::up;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use up::{node_alone, rounds, server_js, stats, timed_push, until_200, BenchUp, TOKEN};

fn node_app(id: &str, instances: u32, message: &str) -> Value {
    json!({
        "id": id, "cmd": "exec node server.js", "instances": instances, "cpus": 0.1, "mem": 64,
        "env": {"MESSAGE": message},
        "fetch": [{"uri": server_js(), "extract": false}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 10,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}],
    })
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "1,2,3,4,5,6,7".into());
    rt.block_on(async {
        if parts.contains('1') || parts.contains('2') || parts.contains('5') || parts.contains('6')
        {
            with_drove_up(&parts, &[]).await;
        }
        if parts.contains('3') || parts.contains('7') {
            scheduling_throughput().await;
        }
        if parts.contains('4') {
            println!("(startup CPU boost off)");
            with_drove_up("4", &["--startup-cpu-boost=0s"]).await;
            println!("(startup CPU boost on: the default)");
            with_drove_up("4", &[]).await;
        }
    });
}

async fn with_drove_up(parts: &str, extra: &[&str]) {
    let up = BenchUp::start(extra).await;
    let (http, paas, router_url) = (&up.http, up.paas.as_str(), up.router.as_str());
    if parts.contains('1') {
        deploy_to_first_200(http, paas, router_url).await;
    }
    if parts.contains('2') {
        rolling_deploy_under_load(http, paas, router_url).await;
    }
    if parts.contains('4') {
        wake_to_first_200(http, paas, router_url).await;
    }
    if parts.contains('5') {
        push_to_first_200(http, paas, router_url, false).await;
    }
    if parts.contains('6') {
        push_to_first_200(http, paas, router_url, true).await;
    }
}

/// Part 4: the app at zero; one request through the router; its answer. Between rounds the
/// app goes back to zero and its process is gone.
async fn wake_to_first_200(http: &reqwest::Client, paas: &str, router: &str) {
    let rounds = rounds();
    println!("wake → first 200 through the router ({rounds} rounds, floor interleaved)");
    let mut app = node_app("wake", 0, "bench");
    app["scaling"] = json!({"minInstances": 0, "maxInstances": 1, "idleSeconds": 3600});
    let r = http
        .post(format!("{paas}/v2/apps"))
        .bearer_auth(TOKEN)
        .json(&app)
        .send()
        .await
        .expect("POST /v2/apps");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    // The first launch fills the fetch cache, as a pushed app's build would.
    let _ = until_200(http, router, "wake.localhost", Instant::now()).await;
    let (mut floor, mut drove) = (Vec::new(), Vec::new());
    let mut steps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for i in 0..rounds {
        to_zero(http, paas).await;
        floor.push(node_alone(http).await);

        let started = Instant::now();
        let r = http
            .get(router)
            .header("Host", "wake.localhost")
            .send()
            .await
            .expect("the waking request");
        assert_eq!(r.status(), 200);
        drove.push(started.elapsed());
        let view: Value = http
            .get(format!("{paas}/v1/apps/wake/scaling"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("scaling view")
            .json()
            .await
            .expect("json");
        if let Some(last) = view["wakes"].as_array().and_then(|w| w.last()) {
            for s in last["steps"].as_array().into_iter().flatten() {
                if let (Some(name), Some(ms)) = (s["step"].as_str(), s["ms"].as_f64()) {
                    steps.entry(name.to_string()).or_default().push(ms);
                }
            }
        }
        if std::env::var_os("VERBOSE").is_some() {
            println!("  round {i}: node {:?}, drove {:?}", floor[i], drove[i]);
        }
    }
    stats("node alone: spawn → first 200", floor);
    stats("drove: request at zero → 200", drove);
    let mut order: Vec<(f64, String)> = steps
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], k.clone())
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line: Vec<String> = order.iter().map(|(ms, k)| format!("{k} {ms:.0}")).collect();
    println!(
        "  PaaS timeline, median ms since the wake: {}",
        line.join(" → ")
    );
    let _ = http
        .delete(format!("{paas}/v2/apps/wake?force=true"))
        .bearer_auth(TOKEN)
        .send()
        .await;
}

async fn push_to_first_200(http: &reqwest::Client, paas: &str, router: &str, dependency: bool) {
    let rounds = rounds();
    let name = if dependency { "pushdeps" } else { "pushbench" };
    println!(
        "git push → first 200 of the new release{} ({rounds} rounds, floor interleaved)",
        if dependency {
            ", with a cached dependency"
        } else {
            ""
        }
    );
    let created: Value = http
        .post(format!("{paas}/v1/push/apps"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let remote = test_support::push_remote(&created);
    let work = support::tempdir();
    let dir = work.path();
    assert!(test_support::git(dir, &["init", "-q"]).0);
    let mut package = json!({"name": "pushbench", "scripts": {"start": "node server.js"},
        "flock": {"instances": 1, "cpus": 0.1, "mem": 64},
        "checks": [{"path": "/health", "intervalSeconds": 1}],
        "drove": {"minInstances": 1}});
    if dependency {
        let vendor = dir.join("vendor/dep");
        std::fs::create_dir_all(&vendor).expect("vendor");
        std::fs::write(
            vendor.join("package.json"),
            json!({"name": "dep", "version": "1.0.0", "main": "index.js"}).to_string(),
        )
        .expect("dep");
        std::fs::write(vendor.join("index.js"), "module.exports = 1;\n").expect("dep");
        package["dependencies"] = json!({"dep": "file:vendor/dep"});
        std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
        let lock = Command::new("npm")
            .args([
                "install",
                "--package-lock-only",
                "--ignore-scripts",
                "--offline",
            ])
            .current_dir(dir)
            .env("HOME", dir)
            .output()
            .expect("npm");
        assert!(
            lock.status.success(),
            "npm: {}",
            String::from_utf8_lossy(&lock.stderr)
        );
    }
    std::fs::write(dir.join("package.json"), package.to_string()).expect("package.json");
    let source = std::fs::read_to_string(server_js()).expect("server.js");
    let (mut floor, mut pushed, mut served) = (Vec::new(), Vec::new(), Vec::new());
    let mut shares: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    // With a dependency, one push first fills the cache; the rounds then time cached pushes.
    let rounds_from = usize::from(dependency);
    for i in 0..rounds + rounds_from {
        floor.push(node_alone(http).await);

        let message = format!("round{i}");
        std::fs::write(
            dir.join("server.js"),
            source.replace("process.env.MESSAGE || 'hello'", &format!("'{message}'")),
        )
        .expect("server.js");
        assert!(test_support::git(dir, &["add", "-A"]).0);
        assert!(test_support::git(dir, &["commit", "-q", "-m", &message]).0);
        let started = Instant::now();
        let (took, steps) = timed_push(dir, &remote).await;
        if i < rounds_from {
            continue;
        }
        pushed.push(took);
        for (step, at) in steps {
            // Keyed by what the step is, without its ids and numbers.
            let key = [
                ("packed", "packed"),
                ("on the cluster", "build started"),
                ("from the cache", "deps from the cache"),
                ("npm ci", "npm ci"),
                ("pruning", "pruned"),
                ("packing", "packing"),
                ("built", "built"),
                ("rolling out", "rollout started"),
                ("released", "released"),
            ]
            .iter()
            .find(|(needle, _)| step.contains(needle))
            .map(|(_, k)| k.to_string())
            .unwrap_or_else(|| step.split_whitespace().next().unwrap_or("").to_string());
            shares
                .entry(key)
                .or_default()
                .push(at.as_secs_f64() * 1000.0);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = http
                .get(router)
                .header("Host", format!("{name}.localhost"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200);
            let text = match body {
                Some(r) => r.text().await.unwrap_or_default(),
                None => String::new(),
            };
            if text.starts_with(&message) {
                break;
            }
            assert!(Instant::now() < deadline, "round {i} never served");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        served.push(started.elapsed());
    }
    stats("node alone: spawn → first 200", floor);
    stats("drove: git push returns (healthy)", pushed);
    stats("drove: git push → new release's 200", served);
    let mut order: Vec<(f64, String)> = shares
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], k)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line: Vec<String> = order.iter().map(|(ms, k)| format!("{k} {ms:.0}")).collect();
    println!(
        "  steps, median ms since the push began: {}",
        line.join(" → ")
    );
}

/// Scales the bench app to zero and waits until its instance is gone.
async fn to_zero(http: &reqwest::Client, paas: &str) {
    let r = http
        .put(format!("{paas}/v2/apps/wake?force=true"))
        .bearer_auth(TOKEN)
        .json(&json!({"instances": 0}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = http
            .get(format!("{paas}/v2/apps/wake"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let a = &v["app"];
        if a["tasks"].as_array().is_some_and(|t| t.is_empty())
            && a["deployments"].as_array().is_some_and(|d| d.is_empty())
        {
            return;
        }
        assert!(Instant::now() < deadline, "wake never went to zero: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tasks outlive their agent by design: ends them when the benchmark ends (or panics), or the
/// next run would find their ports taken.
async fn deploy_to_first_200(http: &reqwest::Client, paas: &str, router: &str) {
    let rounds = rounds();
    println!("deploy → first 200 through the router ({rounds} rounds, floor interleaved)");
    let (mut floor, mut drove) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        floor.push(node_alone(http).await);

        let id = format!("bench{i}");
        let started = Instant::now();
        let r = http
            .post(format!("{paas}/v2/apps"))
            .bearer_auth(TOKEN)
            .json(&node_app(&id, 1, "bench"))
            .send()
            .await
            .expect("POST /v2/apps");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        drove.push(until_200(http, router, &format!("{id}.localhost"), started).await);
        if std::env::var_os("VERBOSE").is_some() {
            println!("  round {i}: node {:?}, drove {:?}", floor[i], drove[i]);
        }
        let _ = http
            .delete(format!("{paas}/v2/apps/{id}?force=true"))
            .bearer_auth(TOKEN)
            .send()
            .await;
    }
    stats("node alone: spawn → first 200", floor);
    stats("drove: POST /v2/apps → first 200", drove);
}

async fn rolling_deploy_under_load(http: &reqwest::Client, paas: &str, router: &str) {
    println!("rolling deploy of 3 instances under ~200 requests/s through the router");
    let r = http
        .post(format!("{paas}/v2/apps"))
        .bearer_auth(TOKEN)
        .json(&node_app("roll", 3, "v0"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    wait_settled(http, paas, "roll", "v0").await;
    for round in 1..=3 {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let load = {
            let (ok, failed, stop, http, router) = (
                ok.clone(),
                failed.clone(),
                stop.clone(),
                http.clone(),
                router.to_string(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                let mut inflight = futures::stream::FuturesUnordered::new();
                // Bounded: at most 60 s of load.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.is_cancelled() && Instant::now() < deadline {
                    tokio::select! {
                        _ = tick.tick() => {
                            let (http, router) = (http.clone(), router.clone());
                            inflight.push(async move {
                                http.get(&router).header("Host", "roll.localhost").send().await
                                    .map(|r| r.status().as_u16()).unwrap_or(0)
                            });
                        }
                        Some(code) = inflight.next(), if !inflight.is_empty() => {
                            if code == 200 { ok.fetch_add(1, Ordering::Relaxed); }
                            else { failed.fetch_add(1, Ordering::Relaxed); }
                        }
                    }
                }
                while let Some(code) = inflight.next().await {
                    if code == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let message = format!("v{round}");
        let started = Instant::now();
        let r = http
            .put(format!("{paas}/v2/apps/roll?force=true"))
            .bearer_auth(TOKEN)
            .json(&json!({"env": {"MESSAGE": message}}))
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 200);
        wait_settled(http, paas, "roll", &message).await;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
        let _ = load.await;
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        let secs = 4.0 + took.as_secs_f64();
        println!(
            "  round {round}: deploy took {:.2} s; {ok} requests ok, {failed} failed ({:.0} req/s)",
            took.as_secs_f64(),
            (ok + failed) as f64 / secs
        );
    }
}

/// Waits until the app runs 3 healthy instances of the version whose MESSAGE is `message`, with
/// no deployment left.
async fn wait_settled(http: &reqwest::Client, paas: &str, id: &str, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = http
            .get(format!("{paas}/v2/apps/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let a = &v["app"];
        if a["env"]["MESSAGE"] == message
            && a["deployments"].as_array().is_some_and(|d| d.is_empty())
            && a["tasksHealthy"] == a["instances"]
            && a["tasks"].as_array().map(|t| t.len()) == a["instances"].as_u64().map(|n| n as usize)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never settled at {message}: {a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scheduling_throughput() {
    const APPS: usize = 1000;
    const AGENTS: usize = 100;
    let dir = support::tempdir();
    let shutdown = CancellationToken::new();
    let master = support::sim_cluster(
        &dir.path().join("master"),
        AGENTS,
        "cpus:64;mem:262144;disk:100000;ports:[31000-32000]",
        shutdown.clone(),
    )
    .await;
    let listen = support::free_addr();
    let args = drove_paas::PaasArgs {
        master,
        listen,
        tls_listen: None,
        tls_cert: None,
        tls_key: None,
        data_dir: dir.path().join("paas"),
        domain: "localhost".into(),
        admin_token: Some(TOKEN.into()),
        admin_token_file: None,
        router_token: Some("bench-router".into()),
        router_token_file: None,
        failover_timeout: Duration::from_secs(3600),
        framework_name: "drove-bench".into(),
        task_user: "nobody".into(),
        master_principal: None,
        master_secret: None,
        master_secret_file: None,
        drain_timeout: Duration::from_secs(1),
        kill_grace: Duration::from_secs(1),
        app_max_cpus: 2.0,
        app_max_mem: 2048.0,
        app_max_instances: 10,
        build_cpus: 1.0,
        build_mem: 1024.0,
        app_cpus_limit: 1.0,
        admin_password: None,
        admin_password_file: None,
        admin_session: Duration::from_secs(3600),
        router_port: 8080,
        router_https_port: None,
        admin_secure_cookies: false,
        acme_directory: None,
        acme_ca_file: None,
        acme_email: None,
        acme_own_hostnames: false,
        local_ca: false,
        certificate_retry: Duration::from_secs(60),
    };
    let started = drove_paas::start(args, shutdown.clone())
        .await
        .expect("PaaS");
    let paas = format!("http://{}", started.addr);
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("scheduling throughput: {APPS} apps × 1 instance, {AGENTS} simulated agents, real master and PaaS in-process");
    let t0 = Instant::now();
    let posted: Vec<u16> = futures::stream::iter(0..APPS)
        .map(|i| {
            let http = http.clone();
            let paas = paas.clone();
            async move {
                http.post(format!("{paas}/v2/apps"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"id": format!("s{i}"), "cmd": "sleep 1000", "cpus": 0.01, "mem": 8}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let created = t0.elapsed();
    assert!(
        posted.iter().all(|s| *s == 201),
        "every POST created its app"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = http
            .get(format!("{paas}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        let ready = text
            .lines()
            .find(|l| l.starts_with("drove_paas_instances_ready "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if ready >= APPS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ready} of {APPS} running after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = t0.elapsed();
    println!(
        "  {APPS} POSTs answered in {:.2} s ({:.0}/s); all {APPS} RUNNING after {:.2} s ({:.0} apps/s)",
        created.as_secs_f64(),
        APPS as f64 / created.as_secs_f64(),
        all.as_secs_f64(),
        APPS as f64 / all.as_secs_f64()
    );
    if std::env::var("PARTS").map_or(true, |p| p.contains('7')) {
        dashboard_pages(&http, &paas, APPS).await;
    }
    shutdown.cancel();
}

/// Part 7: what a dashboard viewer costs the PaaS with `apps` apps: the apps and cluster
/// pages (each a full render, as the live stream does every 2 s), against the `/v2/apps` call
/// the apps page is built from.
async fn dashboard_pages(http: &reqwest::Client, paas: &str, apps: usize) {
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let session = test_support::dashboard::login(&no_redirect, paas, TOKEN).await;
    let rounds = rounds();
    let time = |path: &'static str, bearer: bool| {
        let (http, session) = (http.clone(), session.clone());
        let url = format!("{paas}{path}");
        async move {
            let mut xs = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                let req = if bearer {
                    http.get(&url).bearer_auth(TOKEN)
                } else {
                    http.get(&url).header("Cookie", &session)
                };
                let r = req.send().await.expect("page");
                assert!(r.status().is_success(), "{path}: {}", r.status());
                let body = r.bytes().await.expect("body");
                assert!(!body.is_empty());
                xs.push(t.elapsed());
            }
            xs
        }
    };
    println!(
        "dashboard pages with {apps} apps (full renders, as the live stream makes every 2 s):"
    );
    stats(
        "GET /v2/apps?embed=apps.tasks",
        time("/v2/apps?embed=apps.tasks", true).await,
    );
    stats("GET /admin/apps", time("/admin/apps", false).await);
    stats("GET /admin/cluster", time("/admin/cluster", false).await);
}
