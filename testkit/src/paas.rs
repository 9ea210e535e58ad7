//! A whole drove for end-to-end tests: the master and agents of [`TestCluster`], plus `drove
//! paas` and `drove router` as separate processes of the real binary, and an API client that
//! speaks to the PaaS as Marathon tools do (admin token as a bearer token).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use super::{free_port, wait, Proc, TestCluster};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const ROUTER_TOKEN: &str = "test-router-token";

/// `tests/apps/server.js`: the dependency-free Node server every test app runs.
pub fn server_js() -> PathBuf {
    super::test_apps().join("server.js")
}

/// An app running `server.js` with an HTTP health check on `/health`.
pub fn node_app(id: &str, instances: u32, message: &str) -> Value {
    json!({
        "id": id,
        "cmd": "exec node server.js",
        "instances": instances,
        "cpus": 0.1,
        "mem": 64,
        "env": {"MESSAGE": message},
        "fetch": [{"uri": server_js().display().to_string(), "extract": false}],
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0,
                          "gracePeriodSeconds": 5, "intervalSeconds": 1, "timeoutSeconds": 1,
                          "maxConsecutiveFailures": 2}],
        "backoffSeconds": 0.5,
        "backoffFactor": 2.0,
        "maxLaunchDelaySeconds": 8,
    })
}

/// How a test's drove differs from [`Drove::start`]'s.
#[derive(Debug, Default)]
pub struct Options {
    /// More flags for every agent.
    pub agent_args: Vec<String>,
    /// More flags for the PaaS (kept across its restarts).
    pub paas_args: Vec<String>,
    /// The router's HTTP port (a free one when `None`).
    pub router_port: Option<u16>,
}

pub struct Drove {
    pub cluster: TestCluster,
    pub paas: Option<Proc>,
    pub paas_port: u16,
    /// The PaaS's flags beyond the defaults.
    pub paas_args: Vec<String>,
    pub router: Option<Proc>,
    pub router_port: u16,
    /// The router's HTTPS listener (certificates from the PaaS, by SNI).
    pub router_https: u16,
    pub router_admin: u16,
    pub api: reqwest::Client,
    /// A client with no token at all.
    pub anon: reqwest::Client,
    paas_starts: usize,
}

impl Drove {
    /// A master, one agent per resource spec, the PaaS and a router.
    pub async fn start(agents: &[&String]) -> Drove {
        Drove::start_with_agent_args(agents, &[]).await
    }

    /// [`Drove::start`] with more flags for every agent.
    pub async fn start_with_agent_args(agents: &[&String], extra: &[&str]) -> Drove {
        let options = Options {
            agent_args: extra.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        };
        Drove::start_with(agents, options).await
    }

    /// [`Drove::start`] as `options` say.
    pub async fn start_with(agents: &[&String], options: Options) -> Drove {
        let agents: Vec<&str> = agents.iter().map(|a| a.as_str()).collect();
        // The apps fetch `server.js` from the checkout: the agents allow that directory only.
        let apps = server_js();
        let allow = format!(
            "--fetch-allow-dir={}",
            apps.parent().unwrap_or(&apps).display()
        );
        let mut agent_args = vec![allow.as_str()];
        agent_args.extend(options.agent_args.iter().map(String::as_str));
        let cluster = TestCluster::start_with_agents(&agents, &[], &agent_args).await;
        let mut d = Drove {
            cluster,
            paas: None,
            paas_port: free_port("127.0.0.1"),
            paas_args: options.paas_args,
            router: None,
            router_port: options
                .router_port
                .unwrap_or_else(|| free_port("127.0.0.1")),
            router_https: free_port("127.0.0.1"),
            router_admin: free_port("127.0.0.1"),
            api: client(Some(ADMIN_TOKEN)),
            anon: client(None),
            paas_starts: 0,
        };
        d.start_paas();
        d.wait_paas().await;
        d.start_router();
        d.wait_router().await;
        d
    }

    pub fn paas_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.paas_port)
    }

    pub fn router_addr(&self) -> String {
        format!("127.0.0.1:{}", self.router_port)
    }

    pub fn start_paas(&mut self) {
        self.paas_starts += 1;
        let mut args = vec![
            "paas".to_string(),
            format!("--master={}", self.cluster.master_url()),
            format!("--listen=127.0.0.1:{}", self.paas_port),
            format!(
                "--data-dir={}",
                self.cluster.dir.path().join("paas").display()
            ),
            format!("--admin-token={ADMIN_TOKEN}"),
            format!("--router-token={ROUTER_TOKEN}"),
            "--drain-timeout=3s".into(),
            "--kill-grace=2s".into(),
        ];
        args.extend(self.paas_args.iter().cloned());
        let log = self
            .cluster
            .dir
            .path()
            .join(format!("paas{}.log", self.paas_starts));
        self.paas = Some(Proc::spawn("paas", &args, &log));
    }

    pub fn kill_paas(&mut self) {
        if let Some(mut p) = self.paas.take() {
            p.kill();
        }
    }

    pub async fn wait_paas(&self) {
        wait::until_ok_with(
            "the PaaS to come up",
            Duration::from_secs(20),
            || async {
                match self
                    .api
                    .get(format!("{}/ping", self.paas_url()))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            },
            || format!("logs:\n{}", self.cluster.logs()),
        )
        .await;
    }

    pub fn start_router(&mut self) {
        let args = vec![
            "router".to_string(),
            format!("--paas={}", self.paas_url()),
            format!("--listen=127.0.0.1:{}", self.router_port),
            format!("--https-listen=127.0.0.1:{}", self.router_https),
            format!("--admin=127.0.0.1:{}", self.router_admin),
            format!("--paas-token={ROUTER_TOKEN}"),
            "--threads=1".into(),
        ];
        let log = self.cluster.dir.path().join("router.log");
        self.router = Some(Proc::spawn("router", &args, &log));
    }

    pub async fn wait_router(&self) {
        let url = format!("http://127.0.0.1:{}/health", self.router_admin);
        // The admin listener answers before Pingora's proxy listener is bound: wait for both.
        wait::until_ok_with(
            "the router to come up",
            Duration::from_secs(20),
            || async {
                if let Ok(r) = self.anon.get(&url).send().await {
                    if r.status().is_success()
                        && tokio::net::TcpStream::connect(self.router_addr())
                            .await
                            .is_ok()
                    {
                        return Ok(());
                    }
                }
                Err("its admin or proxy listener does not answer".into())
            },
            || format!("logs:\n{}", self.cluster.logs()),
        )
        .await;
    }

    /// Calls the API with the admin token; returns the status and the JSON body (or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .api
            .request(method, format!("{}{path}", self.paas_url()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API call");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a pushed app (`POST /v1/push/apps`); its git remote, deploy token included.
    pub async fn create_pushed(&self, name: &str) -> String {
        let (status, created) = self
            .call(
                reqwest::Method::POST,
                "/v1/push/apps",
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        super::push_remote(&created)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn create(&self, app: Value) -> Value {
        let (status, body) = self
            .call(reqwest::Method::POST, "/v2/apps", Some(app))
            .await;
        assert_eq!(status, 201, "POST /v2/apps: {body}");
        body
    }

    /// PUT with `?force=true`; returns the deployment id.
    pub async fn put(&self, id: &str, body: Value) -> String {
        let path = format!("/v2/apps/{}?force=true", id.trim_start_matches('/'));
        let (status, v) = self.call(reqwest::Method::PUT, &path, Some(body)).await;
        assert_eq!(status, 200, "PUT {path}: {v}");
        v["deploymentId"]
            .as_str()
            .expect("deploymentId")
            .to_string()
    }

    pub async fn app(&self, id: &str) -> Value {
        self.get(&format!("/v2/apps/{}", id.trim_start_matches('/')))
            .await["app"]
            .clone()
    }

    pub async fn tasks(&self, id: &str) -> Vec<Value> {
        self.app(id).await["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `cond` holds for the app, within `limit`.
    pub async fn wait_app(
        &self,
        id: &str,
        limit: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/v2/apps/{}", id.trim_start_matches('/'));
        let cond = &cond;
        wait::until_ok_with(
            &format!("app {id} to reach: {what}"),
            limit,
            || {
                let path = &path;
                async move {
                    let (status, v) = self.call(reqwest::Method::GET, path, None).await;
                    let app = &v["app"];
                    if status == 200 && cond(app) {
                        return Ok(app.clone());
                    }
                    Err(format!(
                        "GET {path} answered {status}: {}",
                        if status == 200 { app } else { &v }
                    ))
                }
            },
            || format!("logs:\n{}", self.cluster.logs()),
        )
        .await
    }

    /// Waits until the app has exactly `n` tasks, all healthy, and no deployment.
    pub async fn wait_healthy(&self, id: &str, n: usize, limit: Duration) -> Value {
        self.wait_app(
            id,
            limit,
            &format!("{n} healthy instances, no deployment"),
            |a| {
                let tasks = a["tasks"].as_array().map(|t| t.len()).unwrap_or(99);
                tasks == n
                    && a["tasksHealthy"].as_u64() == Some(n as u64)
                    && a["deployments"].as_array().is_some_and(|d| d.is_empty())
            },
        )
        .await
    }

    /// GET `path` through the router with `Host: <host>`; the status and body.
    pub async fn through_router(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        let resp = self
            .anon
            .get(format!("http://{}{path}", self.router_addr()))
            .header("Host", host)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }
}

fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// The pid of the task's main process: the one whose environment names it.
pub fn task_pid(task_id: &str) -> Option<i32> {
    let needle = format!("MESOS_TASK_ID={task_id}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.starts_with("node") && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Each test's agents get port ranges of their own, below Linux's ephemeral range: tests run
/// in parallel, and an app's port must never be another test's.
pub fn agent(range: u32) -> String {
    let base = 20_000 + range * 200;
    format!("cpus:4;mem:4096;ports:[{base}-{}]", base + 199)
}

/// Collects the event types of `/v2/events` in the background.
pub fn watch_events(d: &Drove) -> (Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = format!("{}/v2/events", d.paas_url());
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let Ok(resp) = reqwest::Client::new()
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .header("Accept", "text/event-stream")
            .send()
            .await
        else {
            return;
        };
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        if let Ok(v) = serde_json::from_str::<Value>(data) {
                            out.lock().unwrap().push(v);
                        }
                    }
                }
            }
        }
    });
    (seen, task)
}

pub fn event_types(seen: &Arc<Mutex<Vec<Value>>>) -> HashSet<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| e["eventType"].as_str().map(str::to_string))
        .collect()
}
