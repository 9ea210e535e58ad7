//! What the benchmarks that run `drove up` share: starting it (a data dir, loopback ports, a
//! cgroup root of its own whose tasks end with the benchmark), timing pushes by their
//! `remote:` steps, polling for a first 200, and printing min/median/max.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "bench-admin-token";

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn stats(label: &str, mut xs: Vec<Duration>) {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {label:<34} min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  (n={})",
        ms(xs[0]),
        ms(xs[xs.len() / 2]),
        ms(xs[xs.len() - 1]),
        xs.len()
    );
}

/// Polls `url` (with `host`) every 2 ms until it answers 200 and its body is read; the time
/// it took.
pub async fn until_200(http: &reqwest::Client, url: &str, host: &str, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).header("Host", host).send().await {
            // The whole answer, as a browser reads it (a dropped body is a cut connection).
            if r.status() == 200 && r.bytes().await.is_ok() {
                return since.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} ({host}) never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The Node app the benchmarks run (`tests/apps/server.js`).
pub fn server_js() -> String {
    crate::test_apps().join("server.js").display().to_string()
}

/// The floor the benchmarks compare against: `node server.js` spawned directly, until its
/// first 200.
pub async fn node_alone(http: &reqwest::Client) -> Duration {
    let port = crate::bench::free_addr().port();
    let started = Instant::now();
    let child = Command::new("node")
        .arg(server_js())
        .env("PORT0", port.to_string())
        .env("HOST", "127.0.0.1")
        .stdout(Stdio::null())
        .spawn()
        .expect("node");
    let _child = Killed(child);
    until_200(http, &format!("http://127.0.0.1:{port}/"), "floor", started).await
}

/// `ROUNDS`: how many times each part times its thing (default 10).
pub fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10)
}

pub struct EndTasks(pub String);

impl Drop for EndTasks {
    fn drop(&mut self) {
        crate::kill_cgroup_tree(&self.0);
    }
}

/// Pushes `main` to `remote`, timing each `remote: -----> ` line from the push's start.
pub async fn timed_push(
    dir: &std::path::Path,
    remote: &str,
) -> (Duration, Vec<(String, Duration)>) {
    use tokio::io::AsyncBufReadExt;
    let started = Instant::now();
    let mut child = tokio::process::Command::new("git")
        .args(["-c", "credential.helper=", "push", remote, "main"])
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git push");
    let mut steps = Vec::new();
    let mut all = String::new();
    if let Some(err) = child.stderr.take() {
        let mut lines = tokio::io::BufReader::new(err).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(step) = line
                .trim_start_matches("remote:")
                .trim()
                .strip_prefix("-----> ")
            {
                steps.push((step.to_string(), started.elapsed()));
            }
            all.push_str(&line);
            all.push('\n');
        }
    }
    let status = child.wait().await.expect("git push");
    assert!(status.success(), "push: {all}");
    (started.elapsed(), steps)
}

/// `drove up` under a benchmark: its API and router, stopped (its tasks ended) when dropped.
pub struct BenchUp {
    pub paas: String,
    pub router: String,
    pub http: reqwest::Client,
    // Dropped in this order: drove up, its tasks, the sandboxes it mounted, then its files.
    _up: Killed,
    _end_tasks: EndTasks,
    _mounts: Unmount,
    pub dir: tempfile::TempDir,
}

/// Unmounts what the agent mounted under its work dir (drove up killed leaves its sandboxes).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        drove_agent::container::network::release_all(&self.0.join("agent"));
        crate::unmount_under(&self.0);
    }
}

impl BenchUp {
    /// Starts `drove up` with an agent of 2 cpus and 4 GiB and `extra` flags; returns once its
    /// API answers and its agent has registered.
    pub async fn start(extra: &[&str]) -> BenchUp {
        let dir = crate::bench::tempdir();
        let addr = || crate::bench::free_addr().to_string();
        let (master, agent, paas, router, admin) = (addr(), addr(), addr(), addr(), addr());
        let cgroup_root = format!("drove-bench-{}", std::process::id());
        let end_tasks = EndTasks(cgroup_root.clone());
        let up = Command::new(crate::drove())
            .args([
                "up".to_string(),
                format!("--data-dir={}", dir.path().join("data").display()),
                format!("--agent-work-dir={}", dir.path().join("agent").display()),
                format!("--master-listen={master}"),
                format!("--agent-listen={agent}"),
                format!("--paas-listen={paas}"),
                format!("--router-listen={router}"),
                format!("--router-admin={admin}"),
                format!("--router-https-listen={}", addr()),
                "--resources=cpus:2;mem:4096;ports:[24000-24999]".into(),
                format!("--cgroup-root={cgroup_root}"),
                format!("--fetch-allow-dir={}", crate::test_apps().display()),
            ])
            .args(extra)
            .env("DROVE_ADMIN_TOKEN", TOKEN)
            .env("DROVE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("drove up");
        let up = Killed(up);
        let paas = format!("http://{paas}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        crate::wait::eventually("drove up to start", Duration::from_secs(30), || async {
            http.get(format!("{paas}/ping"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(())
        })
        .await;
        // Let the agent register and the PaaS subscribe.
        tokio::time::sleep(Duration::from_secs(1)).await;
        BenchUp {
            paas,
            router: format!("http://{router}/"),
            http,
            _up: up,
            _end_tasks: end_tasks,
            _mounts: Unmount(dir.path().to_path_buf()),
            dir,
        }
    }
}
