//! `drove up` as a new user runs it: one process with the master, an agent, the PaaS and the
//! router on loopback ports, its state in a temporary data dir, its admin token read from the
//! file it saves.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::{free_port, CgroupTree, Proc};

/// Dropped in order: the process, its tasks' cgroups, then the data dir.
pub struct Up {
    pub proc: Proc,
    _cgroups: CgroupTree,
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    /// `drove up`'s whole command line (to try it again, say).
    pub args: Vec<String>,
    pub paas_url: String,
    pub router_port: u16,
    pub token: String,
}

impl Up {
    /// Starts `drove up` with an agent offering `ports` (a range no other test uses) and
    /// `env` set; returns once it printed that it is up and saved its admin token.
    pub async fn start(ports: (u16, u16), env: &[(&str, &str)]) -> Up {
        let dir = super::tempdir();
        let port = || free_port("127.0.0.1");
        let (master, agent, paas, router, admin) = (port(), port(), port(), port(), port());
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
            format!(
                "--resources=cpus:2;mem:2048;ports:[{}-{}]",
                ports.0, ports.1
            ),
            format!("--cgroup-root={cgroup_root}"),
            format!(
                "--fetch-allow-dir={}",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps")
            ),
        ];
        let proc = Proc::spawn_with_env("up", &args, &dir.path().join("up.log"), env);
        let mut up = Up {
            proc,
            data,
            args,
            paas_url: format!("http://127.0.0.1:{paas}"),
            router_port: router,
            token: String::new(),
            _cgroups: CgroupTree(cgroup_root),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !up.data.join("paas/admin-token").exists() || !up.log().contains("drove is up") {
            assert!(
                Instant::now() < deadline,
                "drove up did not start:\n{}",
                up.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        up.token = std::fs::read_to_string(up.data.join("paas/admin-token"))
            .expect("the admin token file")
            .trim()
            .to_string();
        up
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

    /// The router's URL for `app`'s host, as a `(url, Host header)` pair.
    pub fn app_request(&self, app: &str) -> (String, String) {
        (
            format!("http://127.0.0.1:{}/", self.router_port),
            format!("{app}.localhost"),
        )
    }
}
