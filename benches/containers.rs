//! Containers (`--isolation container`, the default) against plain cgroup tasks
//! (`--isolation cgroups`), same run, same machine, each on its own `drove up`. Run as root:
//! `cargo bench --bench containers`.
//!
//! 1. **Wake from zero → first 200** through the router, interleaved with the floor (`node
//!    server.js` spawned directly); the container steps of each wake (network, bundle, runtime)
//!    from the PaaS's wake timelines.
//! 2. **Density**: `drove up`'s RSS before and after creating 200 apps at zero.
//! 3. **20 woken at once**: one request to each of 20 apps at zero, all sent together; each
//!    one's time to its 200.
//! 4. **Per-instance supervisor**: what watches each instance (`drove-monitor`; `drove
//!    executor` without containers): RSS, PSS and private memory, beside the node process.
//! 5. **Launch throughput** through the v1 API: a 40-instance app of `sleep`, created → all
//!    running, in tasks/s.
//!
//! `ROUNDS` (default 10) sets the wakes of part 1; `PARTS` (default `1,2,3,4,5`) selects. Part 3
//! runs three bursts.

use drove_testkit::bench::up;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use up::{node_alone, rounds, server_js, stats, until_200, BenchUp, TOKEN};

fn app(id: &str, instances: u32) -> Value {
    json!({
        "id": id, "cmd": "exec node server.js", "instances": instances, "cpus": 0.05, "mem": 64,
        "fetch": [{"uri": server_js(), "extract": false}],
        "scaling": {"minInstances": 0, "maxInstances": 1, "idleSeconds": 3600},
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": 10,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}],
    })
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let parts = std::env::var("PARTS").unwrap_or_else(|_| "1,2,3,4,5".into());
        for isolation in ["container", "cgroups"] {
            println!("== --isolation {isolation}");
            let up = BenchUp::start(&[&format!("--isolation={isolation}")]).await;
            if parts.contains('1') {
                wakes(&up).await;
            }
            if parts.contains('4') {
                supervisor(&up, isolation).await;
            }
            if parts.contains('5') {
                throughput(&up).await;
            }
            if parts.contains('2') || parts.contains('3') {
                density_and_burst(&up).await;
            }
        }
    });
}

async fn post(up: &BenchUp, def: &Value) {
    let r = up
        .http
        .post(format!("{}/v2/apps", up.paas))
        .bearer_auth(TOKEN)
        .json(def)
        .send()
        .await
        .expect("POST /v2/apps");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

async fn get(up: &BenchUp, path: &str) -> Value {
    up.http
        .get(format!("{}{path}", up.paas))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

async fn scale(up: &BenchUp, id: &str, n: u32) {
    let r = up
        .http
        .put(format!("{}/v2/apps/{id}?force=true", up.paas))
        .bearer_auth(TOKEN)
        .json(&json!({ "instances": n }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 200);
}

/// Waits until `id` has exactly `n` tasks running and no deployment.
async fn settled(up: &BenchUp, id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = get(up, &format!("/v2/apps/{id}")).await;
        let a = &v["app"];
        let running = a["tasks"]
            .as_array()
            .map(|t| t.iter().filter(|t| t["state"] == "TASK_RUNNING").count())
            .unwrap_or(0);
        let total = a["tasks"].as_array().map_or(0, |t| t.len());
        if running == n && total == n && a["deployments"].as_array().is_some_and(|d| d.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never settled at {n}: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Part 1.
async fn wakes(up: &BenchUp) {
    let rounds = rounds();
    post(up, &app("/wake", 0)).await;
    // The first launch fills the fetch cache.
    until_200(&up.http, &up.router, "wake.localhost", Instant::now()).await;
    let (mut floor, mut drove) = (Vec::new(), Vec::new());
    let mut steps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..rounds {
        scale(up, "wake", 0).await;
        settled(up, "wake", 0).await;
        floor.push(node_alone(&up.http).await);
        let started = Instant::now();
        let r = up
            .http
            .get(&up.router)
            .header("Host", "wake.localhost")
            .send()
            .await
            .expect("the waking request");
        assert_eq!(r.status(), 200);
        drove.push(started.elapsed());
        let view = get(up, "/v1/apps/wake/scaling").await;
        if let Some(last) = view["wakes"].as_array().and_then(|w| w.last()) {
            for s in last["steps"].as_array().into_iter().flatten() {
                if let (Some(name), Some(ms)) = (s["step"].as_str(), s["ms"].as_f64()) {
                    steps.entry(name.to_string()).or_default().push(ms);
                }
            }
            for (k, v) in last["container"].as_object().into_iter().flatten() {
                if let Some(ms) = v.as_f64() {
                    steps.entry(format!("container.{k}")).or_default().push(ms);
                }
            }
        }
    }
    let median = |v: &Vec<Duration>| {
        let mut v = v.clone();
        v.sort();
        v[v.len() / 2]
    };
    let ratio = median(&drove).as_secs_f64() / median(&floor).as_secs_f64();
    println!("wake → first 200 ({rounds} rounds, floor interleaved)");
    stats("node alone: spawn → first 200", floor);
    stats("drove: request at zero → 200", drove);
    println!("  median ratio to node alone: {ratio:.2}×");
    let line: Vec<String> = steps
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            format!("{k} {:.1}", v[v.len() / 2])
        })
        .collect();
    println!("  wake timeline medians (ms): {}", line.join(", "));
}

/// The memory of `pid` from its `smaps_rollup`: (RSS, PSS, private) in KiB.
fn memory(pid: u32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Some((
        field("Rss:"),
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    ))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The node processes of `app`'s instances (by their `MARATHON_APP_ID`).
fn node_pids(app: &str) -> Vec<u32> {
    let needle = format!("MARATHON_APP_ID={app}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if comm(pid) != "node" {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Part 4.
async fn supervisor(up: &BenchUp, isolation: &str) {
    post(up, &app("/mem", 3)).await;
    settled(up, "mem", 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("per-instance supervisor (3 instances), KiB: RSS / PSS / private");
    for node in node_pids("/mem") {
        // Up the tree to what supervises it: drove-monitor, or drove's executor.
        let mut p = parent_of(node);
        while let Some(pid) = p {
            let c = comm(pid);
            if c == "drove-monitor" || c == "drove" || pid <= 1 {
                break;
            }
            p = parent_of(pid);
        }
        let (Some(sup), Some(n)) = (p.and_then(memory), memory(node)) else {
            continue;
        };
        println!(
            "  {isolation}: supervisor {} {:>6} / {:>6} / {:>6}   node {:>6} / {:>6} / {:>6}",
            p.map(comm).unwrap_or_default(),
            sup.0,
            sup.1,
            sup.2,
            n.0,
            n.1,
            n.2
        );
    }
    let _ = up
        .http
        .delete(format!("{}/v2/apps/mem?force=true", up.paas))
        .bearer_auth(TOKEN)
        .send()
        .await;
}

/// Part 5.
async fn throughput(up: &BenchUp) {
    const N: usize = 40;
    let def = json!({"id": "/many", "cmd": "exec sleep 600", "instances": N, "cpus": 0.01,
                     "mem": 8, "portDefinitions": []});
    let started = Instant::now();
    post(up, &def).await;
    settled(up, "many", N).await;
    let took = started.elapsed();
    println!(
        "launch throughput: {N} tasks created → running in {:.2} s = {:.1} tasks/s",
        took.as_secs_f64(),
        N as f64 / took.as_secs_f64()
    );
    let _ = up
        .http
        .delete(format!("{}/v2/apps/many?force=true", up.paas))
        .bearer_auth(TOKEN)
        .send()
        .await;
    settled_gone(up, "many").await;
}

async fn settled_gone(up: &BenchUp, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while up
        .http
        .get(format!("{}/v2/apps/{id}", up.paas))
        .bearer_auth(TOKEN)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "{id} never went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `drove up`'s own RSS, KiB (it runs every component in one process: the one whose command
/// line names this benchmark's directory).
fn up_rss(up: &BenchUp) -> u64 {
    let mut best = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmd.starts_with(drove_testkit::drove())
            && cmd.contains("\0up\0")
            && cmd.contains(up.dir.path().to_str().unwrap_or("?"))
        {
            best = memory(pid).map(|m| m.0).unwrap_or(0);
        }
    }
    best
}

/// Parts 2 and 3.
async fn density_and_burst(up: &BenchUp) {
    let before = up_rss(up);
    for i in 0..200 {
        post(up, &app(&format!("/z{i}"), 0)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = up_rss(up);
    println!(
        "density: drove up RSS {:.1} MiB → {:.1} MiB with 200 apps at zero",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    // The first wake fills the fetch cache: then each wake is a launch.
    until_200(&up.http, &up.router, "z199.localhost", Instant::now()).await;
    for round in 0..3 {
        if round > 0 {
            for i in 0..20 {
                scale(up, &format!("z{i}"), 0).await;
            }
            for i in 0..20 {
                settled(up, &format!("z{i}"), 0).await;
            }
        }
        burst(up).await;
    }
}

/// Part 3, once: one request to each of z0..z19, all at once.
async fn burst(up: &BenchUp) {
    let started = Instant::now();
    let mut waking = Vec::new();
    for i in 0..20 {
        let http = up.http.clone();
        let router = up.router.clone();
        waking.push(tokio::spawn(async move {
            let r = http
                .get(&router)
                .header("Host", format!("z{i}.localhost"))
                .send()
                .await
                .expect("a waking request");
            let ok = r.status() == 200 && r.bytes().await.is_ok();
            (ok, started.elapsed())
        }));
    }
    let mut times = Vec::new();
    let mut failed = 0;
    for w in waking {
        let (ok, t) = w.await.expect("join");
        if !ok {
            failed += 1;
        }
        times.push(t);
    }
    println!("20 apps woken at once ({failed} failed):");
    stats("each request → its 200", times);
}
