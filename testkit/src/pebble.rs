//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble`), with `pebble-challtestsrv` as
//! its DNS (every name resolves to 127.0.0.1), both on loopback ports of the test's own: a real
//! ACME CA for drove to get certificates from, validating HTTP-01 on the router's HTTP port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::tls::{client_trusting, TestCa};
use crate::{free_port, wait, Proc};

/// What a test asks of its Pebble.
#[derive(Default)]
pub struct PebbleOptions {
    /// The certificates' lifetime, in seconds (Pebble's default is five years).
    pub validity_seconds: Option<u64>,
    /// Names Pebble refuses to issue for (`rejectedIdentifier`).
    pub blocklist: Vec<String>,
}

pub struct Pebble {
    // The processes stop (dropped first) before their directory goes.
    _pebble: Proc,
    _dns: Proc,
    dir: tempfile::TempDir,
    port: u16,
    management: u16,
    dns_management: u16,
    /// The CA of Pebble's own HTTPS (what `--acme-ca-file` trusts).
    pub tls_root: PathBuf,
    tls_root_pem: String,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` (the router's), and waits for its
    /// directory.
    pub async fn start(http_port: u16, opts: PebbleOptions) -> Pebble {
        let dir = crate::tempdir();
        let ca = TestCa::new("pebble's HTTPS test CA");
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pebble file");
            p
        };
        let tls_root = write("tls-root.pem", &ca.pem());
        let cert = write("cert.pem", &cert);
        let key = write("key.pem", &key);
        let (port, management) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let (dns, dns_management) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let mut config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": free_port("127.0.0.1"),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": opts.blocklist,
        }});
        if let Some(v) = opts.validity_seconds {
            config["pebble"]["certificateValidityPeriod"] = json!(v);
        }
        let config = write("pebble.json", &config.to_string());
        let dns_proc = Proc::spawn_command(
            "pebble-challtestsrv",
            {
                let mut c = std::process::Command::new("pebble-challtestsrv");
                c.args([
                    "-dns01",
                    &format!("127.0.0.1:{dns}"),
                    "-management",
                    &format!("127.0.0.1:{dns_management}"),
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    // IPv4 only: the router listens on 127.0.0.1.
                    "-defaultIPv6",
                    "",
                ]);
                c
            },
            &dir.path().join("challtestsrv.log"),
        );
        let pebble = Proc::spawn_command(
            "pebble",
            {
                let mut c = std::process::Command::new("pebble");
                c.args(["-config"])
                    .arg(&config)
                    .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                    // No random 0-15 s sleep before each validation; no bad-nonce drills.
                    .env("PEBBLE_VA_NOSLEEP", "1")
                    .env("PEBBLE_WFE_NONCEREJECT", "0")
                    .env("PEBBLE_AUTHZREUSE", "0");
                c
            },
            &dir.path().join("pebble.log"),
        );
        let p = Pebble {
            tls_root_pem: ca.pem(),
            dir,
            _pebble: pebble,
            _dns: dns_proc,
            port,
            management,
            dns_management,
            tls_root,
        };
        let client = p.client();
        let url = p.directory();
        wait::until_ok_with(
            "Pebble's ACME directory",
            Duration::from_secs(20),
            || async {
                let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
                r.status()
                    .is_success()
                    .then_some(())
                    .ok_or(r.status().to_string())
            },
            || p.logs(),
        )
        .await;
        wait::until_ok_with(
            "challtestsrv's management API",
            Duration::from_secs(20),
            || async {
                reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{}/clear-a", p.dns_management))
                    .json(&json!({"host": "probe.test"}))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
            || p.logs(),
        )
        .await;
        p
    }

    /// The ACME directory's URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The flags that point drove's PaaS at this CA.
    pub fn paas_args(&self) -> Vec<String> {
        vec![
            format!("--acme-directory={}", self.directory()),
            format!("--acme-ca-file={}", self.tls_root.display()),
        ]
    }

    /// A client for Pebble's own HTTPS.
    fn client(&self) -> reqwest::Client {
        client_trusting(&self.tls_root_pem, &[])
    }

    /// The root Pebble issues under (random per start), PEM.
    pub async fn issuing_root(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let r = self
            .client()
            .get(&url)
            .send()
            .await
            .expect("GET pebble root");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.text().await.expect("pebble root")
    }

    /// Makes `host` resolve to `ip` for Pebble's validations (every name resolves to
    /// 127.0.0.1 otherwise).
    pub async fn resolve(&self, host: &str, ip: &str) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/add-a", self.dns_management))
            .json(&json!({"host": host, "addresses": [ip]}))
            .send()
            .await
            .expect("challtestsrv add-a");
        assert!(r.status().is_success(), "add-a: {}", r.status());
    }

    /// Lets `host` resolve to 127.0.0.1 again.
    pub async fn unresolve(&self, host: &str) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/clear-a", self.dns_management))
            .json(&json!({"host": host}))
            .send()
            .await
            .expect("challtestsrv clear-a");
        assert!(r.status().is_success(), "clear-a: {}", r.status());
    }

    /// Pebble's and its DNS's logs.
    pub fn logs(&self) -> String {
        ["pebble.log", "challtestsrv.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                format!("--- {f}\n{text}")
            })
            .collect()
    }
}

/// `addr`'s HTTPS client for `names`, trusting only `root_pem` (Pebble's issuing root).
pub fn https_client(root_pem: &str, names: &[&str], addr: SocketAddr) -> reqwest::Client {
    let resolve: Vec<(&str, SocketAddr)> = names.iter().map(|n| (*n, addr)).collect();
    client_trusting(root_pem, &resolve)
}
