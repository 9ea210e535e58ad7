//! `drove up` as a new user runs it: one process with the master, an agent, the PaaS and the
//! router on loopback ports, its state in a temporary data dir, its admin token read from the
//! file it saves.

use std::path::PathBuf;
use std::time::Duration;

use super::{free_port, wait, CgroupTree, Proc};

/// Dropped in order: the process, its tasks' cgroups, the agent's work dir, then the data dir.
pub struct Up {
    pub proc: Proc,
    _cgroups: CgroupTree,
    /// The agent's work dir (`drove up` puts it outside the data dir, under /var/lib/drove).
    pub agent_work: RemovedOnDrop,
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    /// `drove up`'s whole command line (to try it again, say).
    pub args: Vec<String>,
    pub paas_url: String,
    pub router_port: u16,
    /// The router's HTTPS port (certificates from drove up's local CA).
    pub router_https: u16,
    pub token: String,
    env: Vec<(String, String)>,
}

/// A directory removed when dropped.
pub struct RemovedOnDrop(pub PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            // Its containers were ended with its cgroups (dropped first): their networks go.
            drove_agent::container::network::release_all(&self.0);
            super::unmount_under(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Up {
    /// Starts `drove up` with an agent offering `ports` (a range no other test uses) and
    /// `env` set; returns once it printed that it is up and saved its admin token.
    pub async fn start(ports: (u16, u16), env: &[(&str, &str)]) -> Up {
        Up::start_with_args(ports, env, &[]).await
    }

    /// [`Up::start`] with more flags for `drove up`.
    pub async fn start_with_args(ports: (u16, u16), env: &[(&str, &str)], extra: &[&str]) -> Up {
        let dir = super::tempdir();
        let port = || free_port("127.0.0.1");
        let (master, agent, paas, router, admin) = (port(), port(), port(), port(), port());
        let https = port();
        let cgroup_root = format!("drove-test-{}", super::uuid_like());
        let data = dir.path().join("data");
        let args: Vec<String> = vec![
            "up".into(),
            format!("--data-dir={}", data.display()),
            format!("--master-listen=127.0.0.1:{master}"),
            format!("--agent-listen=127.0.0.1:{agent}"),
            format!("--paas-listen=127.0.0.1:{paas}"),
            format!("--router-listen=127.0.0.1:{router}"),
            format!("--router-admin=127.0.0.1:{admin}"),
            format!("--router-https-listen=127.0.0.1:{https}"),
            format!(
                "--resources=cpus:2;mem:2048;ports:[{}-{}]",
                ports.0, ports.1
            ),
            format!("--cgroup-root={cgroup_root}"),
            format!("--fetch-allow-dir={}", super::test_apps().display()),
        ];
        let mut args = args;
        args.extend(extra.iter().map(|a| a.to_string()));
        let proc = Proc::spawn_with_env("up", &args, &dir.path().join("up.log"), env);
        let mut up = Up {
            proc,
            data,
            args,
            paas_url: format!("http://127.0.0.1:{paas}"),
            router_port: router,
            router_https: https,
            token: String::new(),
            _cgroups: CgroupTree(cgroup_root),
            agent_work: RemovedOnDrop(PathBuf::new()),
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        up.wait_up().await;
        up
    }

    /// Waits until `drove up` says it is up; reads its admin token and agent work dir.
    async fn wait_up(&mut self) {
        let this = &*self;
        wait::until_ok(
            "drove up to start",
            Duration::from_secs(30),
            || async move {
                let log = this.log();
                if this.data.join("paas/admin-token").exists() && log.contains("drove is up") {
                    Ok(())
                } else {
                    Err(format!("its log:\n{log}"))
                }
            },
        )
        .await;
        self.token = std::fs::read_to_string(self.data.join("paas/admin-token"))
            .expect("the admin token file")
            .trim()
            .to_string();
        let log = self.log();
        let work = log
            .split_once("(work dir ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(dir, _)| PathBuf::from(dir))
            .expect("drove up names the agent's work dir");
        // Kept from the first start: a restart works in the same dir (replacing the guard
        // would remove it under the running agent).
        if self.agent_work.0 != work {
            assert!(
                self.agent_work.0.as_os_str().is_empty(),
                "drove up moved its agent from {} to {}",
                self.agent_work.0.display(),
                work.display()
            );
            self.agent_work = RemovedOnDrop(work);
        }
    }

    /// Stops `drove up` (SIGTERM, as Ctrl-C does) and starts it again with the same flags;
    /// returns once it is up. Its tasks keep running meanwhile.
    pub async fn restart(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        let pid = self.proc.pid();
        wait::until("drove up to stop", Duration::from_secs(20), || {
            !super::pid_alive(pid)
        })
        .await;
        let _ = self.proc.child.wait();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.proc = Proc::spawn_with_env("up", &self.args, &self.dir.path().join("up.log"), &env);
        self.wait_up().await;
    }

    /// What `drove up` printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    pub fn data_arg(&self) -> String {
        format!("--data-dir={}", self.data.display())
    }

    pub fn paas_arg(&self) -> String {
        format!("--paas={}", self.paas_url)
    }

    /// Calls the PaaS's API with the admin token; the status and the JSON body (or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.paas_url))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API call");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// The router's URL for `app`'s host, as a `(url, Host header)` pair.
    pub fn app_request(&self, app: &str) -> (String, String) {
        (
            format!("http://127.0.0.1:{}/", self.router_port),
            format!("{app}.localhost"),
        )
    }
}
