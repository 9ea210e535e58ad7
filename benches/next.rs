//! A real framework on drove: a Next.js app (next, react and react-dom from the npm registry,
//! so this benchmark needs it; nothing else does) pushed with real git to `drove up`, built on
//! the cluster, then measured against `next start` of the same build run directly, in the same
//! run. Run: `cargo bench --bench next` (as root).
//!
//! 1. **Wake → first 200**: the app at zero, one request through the router, until its answer;
//!    interleaved with the floor: `next start` spawned directly until its first 200.
//! 2. **Warm requests**: sequential requests through the router and directly, p50 and p99.
//! 3. **A code-only push** (the lockfile unchanged): until the push returns (released, healthy),
//!    with each step's time from its `remote:` line.
//! 4. **Disk**: the agent's work dir (not counting what sandboxes mount), once collection has
//!    run, before and after ten wakes, against one sandbox's worth (the unpacked app).
//!
//! `ROUNDS` (default 10) sets how many wakes, pushes and floors.

use drove_testkit as test_support;
use drove_testkit::bench as support;
use drove_testkit::bench::up;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use up::{rounds, stats, timed_push, until_200, BenchUp, Killed, TOKEN};

const PACKAGE: &str = r#"{
  "name": "nextbench", "version": "1.0.0", "private": true,
  "scripts": {"build": "next build", "start": "next start"},
  "dependencies": {"next": "16.0.10", "react": "19.2.0", "react-dom": "19.2.0"},
  "flock": {"mem": 512},
  "drove": {"minInstances": 0, "idleSeconds": 3600, "checkGraceSeconds": 60}
}"#;

const LAYOUT: &str = "export default function RootLayout({ children }) {\n  \
    return (<html lang=\"en\"><body>{children}</body></html>);\n}\n";

fn page(n: usize) -> String {
    format!(
        "export const dynamic = 'force-dynamic';\nexport default function Page() {{\n  \
         return (<main><h1>Next on drove, round {n}</h1><p>{{new Date().toISOString()}}</p></main>);\n}}\n"
    )
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git(dir: &Path, args: &[&str]) {
    let mut all = vec![
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@drove.invalid",
    ];
    all.extend(args);
    run(dir, "git", &all);
}

/// The bytes of `path` on its own filesystem (`du -sxb`: what sandboxes mount is not counted).
fn disk(path: &Path) -> u64 {
    run(Path::new("/"), "du", &["-sxb", &path.display().to_string()])
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let up = BenchUp::start(&[]).await;
    let http = &up.http;
    let src = up.dir.path().join("src");
    std::fs::create_dir_all(src.join("app")).expect("src");
    std::fs::write(src.join("package.json"), PACKAGE).expect("package.json");
    std::fs::write(src.join("app/layout.js"), LAYOUT).expect("layout");
    std::fs::write(src.join("app/page.js"), page(0)).expect("page");
    println!("resolving next's lockfile from the npm registry");
    run(
        &src,
        "npm",
        &["install", "--package-lock-only", "--no-audit", "--no-fund"],
    );
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "next"]);
    let created: Value = http
        .post(format!("{}/v1/push/apps", up.paas))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "nextbench"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("created");
    let remote = test_support::push_remote(&created);
    let (took, _) = timed_push(&src, &remote).await;
    println!(
        "first push (npm ci from the registry, next build, pack, release): {:.1} s",
        took.as_secs_f64()
    );
    let agent = up.dir.path().join("agent");
    // The floor's tree: the released layers, node_modules under the app, as instances see it.
    let direct = up.dir.path().join("direct");
    let mut layers: Vec<PathBuf> = std::fs::read_dir(agent.join("layers"))
        .expect("layers")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    layers.sort_by_key(|l| std::fs::metadata(l).and_then(|m| m.modified()).ok());
    std::fs::create_dir_all(&direct).expect("direct");
    for l in &layers {
        run(
            Path::new("/"),
            "cp",
            &[
                "-a",
                &format!("{}/.", l.display()),
                &direct.display().to_string(),
            ],
        );
    }
    let rounds = rounds();

    // 1. Wakes, interleaved with the floor.
    println!("wake → first 200 through the router ({rounds} rounds, floor interleaved)");
    let host = "nextbench.localhost";
    let (mut floor, mut woke) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        floor.push(next_alone(http, &direct).await);
        to_zero(&up).await;
        let started = Instant::now();
        woke.push(until_200(http, &up.router, host, started).await);
    }
    stats("next start alone: spawn → 200", floor.clone());
    stats("drove: request at zero → 200", woke.clone());
    ratio("wake / next start (medians)", &woke, &floor);

    // 2. Warm requests.
    let port = support::free_addr().port();
    let child = Command::new(direct.join("node_modules/.bin/next"))
        .arg("start")
        .current_dir(&direct)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("next start");
    let _direct = Killed(child);
    let direct_url = format!("http://127.0.0.1:{port}/");
    until_200(http, &direct_url, "localhost", Instant::now()).await;
    let (mut through, mut alone) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        through.push(timed_get(http, &up.router, host).await);
        alone.push(timed_get(http, &direct_url, "localhost").await);
    }
    println!("warm requests, one at a time (200 each, interleaved)");
    stats("next start alone", alone.clone());
    stats("through drove's router", through.clone());
    ratio("through drove / alone (medians)", &through, &alone);
    drop(_direct);

    // 3. Code-only pushes.
    println!("a code-only push → released ({rounds} rounds)");
    let mut pushes = Vec::new();
    let mut steps: Vec<Vec<(String, Duration)>> = Vec::new();
    for n in 1..=rounds {
        std::fs::write(src.join("app/page.js"), page(n)).expect("page");
        git(&src, &["commit", "-qam", &format!("round {n}")]);
        let (took, s) = timed_push(&src, &remote).await;
        pushes.push(took);
        steps.push(s);
    }
    stats("git push returns (released)", pushes);
    let median_step = |name: &str| -> Option<f64> {
        let mut at: Vec<f64> = steps
            .iter()
            .filter_map(|s| {
                s.iter()
                    .find(|(k, _)| k.starts_with(name))
                    .map(|(_, d)| d.as_secs_f64())
            })
            .collect();
        at.sort_by(f64::total_cmp);
        at.get(at.len() / 2).copied()
    };
    for step in [
        "building",
        "dependencies",
        "building: npm run build",
        "node_modules",
        "packing",
        "built",
        "released",
    ] {
        if let Some(t) = median_step(step) {
            println!("  {step:<34} at {t:>6.2} s (median)");
        }
    }

    // 4. Disk after ten wakes. Collection runs every minute, and after each task ends: the
    // pushes' build sandboxes are gone after one pass.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let before = disk(&agent);
    for _ in 0..10 {
        to_zero(&up).await;
        until_200(http, &up.router, host, Instant::now()).await;
    }
    tokio::time::sleep(Duration::from_secs(70)).await;
    let after = disk(&agent);
    let one = disk(&direct);
    println!(
        "disk: the agent's work dir {} before ten wakes, {} after (grew {}); one unpacked app: {}",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        mib(one)
    );
}

/// `next start` of the build, spawned directly, until its first 200.
async fn next_alone(http: &reqwest::Client, dir: &Path) -> Duration {
    let port = support::free_addr().port();
    let started = Instant::now();
    let child = Command::new(dir.join("node_modules/.bin/next"))
        .arg("start")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("next start");
    let _child = Killed(child);
    until_200(
        http,
        &format!("http://127.0.0.1:{port}/"),
        "localhost",
        started,
    )
    .await
}

/// Scales the app to zero and waits until its instance is gone.
async fn to_zero(up: &BenchUp) {
    let app = format!("{}/v2/apps/nextbench", up.paas);
    let r = up
        .http
        .put(format!("{app}?force=true"))
        .bearer_auth(TOKEN)
        .json(&json!({"instances": 0}))
        .send()
        .await
        .expect("scale");
    assert!(r.status().is_success(), "scale to zero: {}", r.status());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = up
            .http
            .get(&app)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("app")
            .json()
            .await
            .expect("json");
        if v["app"]["tasks"].as_array().is_some_and(|t| t.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "never at zero: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its process gone too (the instance list empties as the kill is sent).
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn timed_get(http: &reqwest::Client, url: &str, host: &str) -> Duration {
    let started = Instant::now();
    let r = http
        .get(url)
        .header("Host", host)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    started.elapsed()
}

fn ratio(label: &str, a: &[Duration], b: &[Duration]) {
    let median = |xs: &[Duration]| {
        let mut v = xs.to_vec();
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    println!("  {label:<34} {:.2}×", median(a) / median(b));
}
