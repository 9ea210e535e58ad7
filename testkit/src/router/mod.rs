//! The router's fixtures, for `router/tests/proxy.rs` (the router in-process) and the root
//! package's `tests/router.rs` (the `drove router` binary): real backend servers, a fake PaaS
//! serving the route stream / wake / stats endpoints, and a launcher for the router; the cases
//! both run live in [`cases`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_head(r: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Head {
        method,
        path,
        headers,
    })
}

async fn read_body(r: &mut BufReader<TcpStream>, head: &Head) -> Option<Vec<u8>> {
    if let Some(len) = head.header("content-length") {
        let len: usize = len.parse().ok()?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.ok()?;
        return Some(body);
    }
    if head
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await.ok()?;
            if n == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Vec::new())
}

fn response(status: u16, extra: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A real HTTP/1.1 backend (keep-alive) on a loopback port.
///
/// Paths: `/slow/<ms>` answers after a delay, `/status/<code>` answers that code, `/headers`
/// echoes the request head, `/stream` sends a chunked body in 5 parts, `/ws` (with
/// `Upgrade: websocket`) switches protocols and echoes WebSocket frames; anything else answers
/// the backend's name.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted (keep-alive reuse shows as fewer connections than hits).
    pub connections: Arc<AtomicUsize>,
    pub inflight: Arc<AtomicUsize>,
    pub max_inflight: Arc<AtomicUsize>,
    /// Extra delay before every answer, in milliseconds.
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    stop: watch::Sender<bool>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Self::serve(name, listener)
    }

    /// Serves on a given port (to bring an instance up at an address already announced).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend on port");
        Self::serve(name, listener)
    }

    fn serve(name: &str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().expect("backend addr");
        let (stop, stop_rx) = watch::channel(false);
        let b = Backend {
            name: name.to_string(),
            addr,
            hits: Arc::default(),
            connections: Arc::default(),
            inflight: Arc::default(),
            max_inflight: Arc::default(),
            delay_ms: Arc::default(),
            stop,
        };
        let (name, hits, inflight, max, delay) = (
            b.name.clone(),
            b.hits.clone(),
            b.inflight.clone(),
            b.max_inflight.clone(),
            b.delay_ms.clone(),
        );
        let connections = b.connections.clone();
        let mut stop_accept = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = stop_accept.changed() => return,
                };
                let Ok((sock, _)) = conn else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let (name, hits, inflight, max, delay) = (
                    name.clone(),
                    hits.clone(),
                    inflight.clone(),
                    max.clone(),
                    delay.clone(),
                );
                let mut stop_conn = stop_rx.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = Self::connection(sock, &name, &hits, &inflight, &max, &delay) => {}
                        _ = stop_conn.changed() => {}
                    }
                });
            }
        });
        b
    }

    async fn connection(
        sock: TcpStream,
        name: &str,
        hits: &AtomicUsize,
        inflight: &AtomicUsize,
        max: &AtomicUsize,
        delay: &std::sync::atomic::AtomicU64,
    ) {
        let mut r = BufReader::new(sock);
        while let Some(head) = read_head(&mut r).await {
            let Some(body) = read_body(&mut r, &head).await else {
                return;
            };
            hits.fetch_add(1, Ordering::SeqCst);
            let now = inflight.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            let d = delay.load(Ordering::SeqCst);
            if d > 0 {
                tokio::time::sleep(Duration::from_millis(d)).await;
            }
            let tag = [("x-backend", name.to_string())];
            let path = head.path.clone();
            let out = if let Some(ms) = path.strip_prefix("/slow/") {
                let ms: u64 = ms.parse().unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                response(200, &tag, name.as_bytes())
            } else if let Some(code) = path.strip_prefix("/status/") {
                response(code.parse().unwrap_or(500), &tag, name.as_bytes())
            } else if path == "/headers" {
                let text: String = head
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{}: {v}\n", k.to_ascii_lowercase()))
                    .collect();
                response(200, &tag, text.as_bytes())
            } else if path == "/echo" {
                response(200, &tag, &body)
            } else if path == "/stream" {
                inflight.fetch_sub(1, Ordering::SeqCst);
                let w = r.get_mut();
                let headt = format!(
                    "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                if w.write_all(headt.as_bytes()).await.is_err() {
                    return;
                }
                for i in 0..5 {
                    let part = format!("part{i};");
                    let chunk = format!("{:x}\r\n{part}\r\n", part.len());
                    if w.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if w.write_all(b"0\r\n\r\n").await.is_err() {
                    return;
                }
                continue;
            } else if head
                .header("upgrade")
                .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
            {
                inflight.fetch_sub(1, Ordering::SeqCst);
                let w = r.get_mut();
                let h = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: test\r\n\r\n";
                if w.write_all(h.as_bytes()).await.is_err() {
                    return;
                }
                ws_echo(r).await;
                return;
            } else {
                response(200, &tag, name.as_bytes())
            };
            inflight.fetch_sub(1, Ordering::SeqCst);
            let _ = head.method;
            if r.get_mut().write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// Closes the listener and every connection (later connects are refused).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Echoes WebSocket frames (client frames are masked; echoes are not).
async fn ws_echo(mut r: BufReader<TcpStream>) {
    loop {
        let mut hdr = [0u8; 2];
        if r.read_exact(&mut hdr).await.is_err() {
            return;
        }
        let opcode = hdr[0] & 0x0f;
        let len = (hdr[1] & 0x7f) as usize;
        if len >= 126 {
            return; // tests only send short frames
        }
        let mut mask = [0u8; 4];
        if hdr[1] & 0x80 != 0 && r.read_exact(&mut mask).await.is_err() {
            return;
        }
        let mut payload = vec![0; len];
        if r.read_exact(&mut payload).await.is_err() {
            return;
        }
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        if opcode == 8 {
            let _ = r.get_mut().write_all(&[0x88, 0]).await;
            return;
        }
        let mut out = vec![0x80 | opcode, len as u8];
        out.extend_from_slice(&payload);
        if r.get_mut().write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A masked client WebSocket frame.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// JSON for one app on the route stream.
pub fn app_json(name: &str, backends: &[(SocketAddr, bool, bool)]) -> Value {
    json!({
        "name": name,
        "state": if backends.is_empty() { "idle" } else { "running" },
        "backends": backends
            .iter()
            .map(|(a, healthy, backup)| json!({"addr": a.to_string(), "healthy": healthy, "backup": backup}))
            .collect::<Vec<_>>(),
    })
}

#[derive(Default)]
struct PaasState {
    apps: Mutex<BTreeMap<String, Value>>,
    wakes: Mutex<Vec<String>>,
    stats: Mutex<Vec<Value>>,
    streams: AtomicUsize,
    /// While set, stats pushes are read but never answered (a hung PaaS).
    stall_stats: AtomicBool,
}

/// A fake PaaS: `GET /v1/routes/stream`, `POST /v1/apps/{app}/wake`, `POST /v1/router/stats`.
pub struct Paas {
    pub url: String,
    state: Arc<PaasState>,
    tx: broadcast::Sender<String>,
    kick: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

impl Paas {
    pub async fn start() -> Paas {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind paas");
        let url = format!("http://{}", listener.local_addr().expect("paas addr"));
        let (tx, _) = broadcast::channel(1024);
        let (kick, _) = watch::channel(0);
        let (stop, stop_rx) = watch::channel(false);
        let paas = Paas {
            url,
            state: Arc::default(),
            tx,
            kick,
            stop,
        };
        let (state, tx, kick) = (paas.state.clone(), paas.tx.clone(), paas.kick.clone());
        let mut stop_accept = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = stop_accept.changed() => return,
                };
                let Ok((sock, _)) = conn else { continue };
                let (state, tx, kick) = (state.clone(), tx.clone(), kick.subscribe());
                let mut stop_conn = stop_rx.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = paas_connection(sock, state, tx, kick) => {}
                        _ = stop_conn.changed() => {}
                    }
                });
            }
        });
        paas
    }

    /// Adds or replaces an app and streams the change.
    pub fn upsert(&self, app: Value) {
        let name = app["name"].as_str().expect("app name").to_string();
        let mut apps = self.state.apps.lock().expect("apps lock");
        apps.insert(name, app.clone());
        let _ = self
            .tx
            .send(json!({"type": "upsert", "app": app}).to_string());
    }

    pub fn remove(&self, name: &str) {
        let mut apps = self.state.apps.lock().expect("apps lock");
        apps.remove(name);
        let _ = self
            .tx
            .send(json!({"type": "remove", "app": name}).to_string());
    }

    /// Streams a new certificate set (`[{"hostnames", "chain_pem", "key_pem"}]`) to the
    /// routers connected now.
    pub fn certificates(&self, certs: Value) {
        let _ = self
            .tx
            .send(json!({"type": "certificates", "certs": certs}).to_string());
    }

    /// Closes every open route stream (the router should reconnect).
    pub fn drop_streams(&self) {
        self.kick.send_modify(|k| *k += 1);
    }

    pub fn streams_opened(&self) -> usize {
        self.state.streams.load(Ordering::SeqCst)
    }

    pub fn wakes(&self) -> Vec<String> {
        self.state.wakes.lock().expect("wakes lock").clone()
    }

    /// Makes the stats endpoint hang (true) or answer again (false).
    pub fn stall_stats(&self, stall: bool) {
        self.state.stall_stats.store(stall, Ordering::SeqCst);
    }

    pub fn stats(&self) -> Vec<Value> {
        self.state.stats.lock().expect("stats lock").clone()
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Paas {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn paas_connection(
    sock: TcpStream,
    state: Arc<PaasState>,
    tx: broadcast::Sender<String>,
    mut kick: watch::Receiver<u64>,
) {
    let mut r = BufReader::new(sock);
    while let Some(head) = read_head(&mut r).await {
        let Some(body) = read_body(&mut r, &head).await else {
            return;
        };
        if head.method == "GET" && head.path == "/v1/routes/stream" {
            let (mut rx, snapshot) = {
                let apps = state.apps.lock().expect("apps lock");
                let rx = tx.subscribe();
                let list: Vec<Value> = apps.values().cloned().collect();
                (rx, json!({"type": "snapshot", "apps": list}).to_string())
            };
            state.streams.fetch_add(1, Ordering::SeqCst);
            let w = r.get_mut();
            let h = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n";
            if w.write_all(h.as_bytes()).await.is_err() {
                return;
            }
            let mut line = snapshot;
            kick.borrow_and_update();
            loop {
                line.push('\n');
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                if w.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                line = tokio::select! {
                    m = rx.recv() => match m { Ok(m) => m, Err(_) => return },
                    _ = kick.changed() => return,
                };
            }
        }
        let resp = if head.method == "POST" && head.path.starts_with("/v1/apps/") {
            let app = head
                .path
                .trim_start_matches("/v1/apps/")
                .trim_end_matches("/wake")
                .to_string();
            state.wakes.lock().expect("wakes lock").push(app);
            response(202, &[], b"{}")
        } else if head.method == "POST" && head.path == "/v1/router/stats" {
            if state.stall_stats.load(Ordering::SeqCst) {
                // Hang: never answer this push (the router must give up on its own).
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                state.stats.lock().expect("stats lock").push(v);
            }
            response(204, &[], b"")
        } else {
            response(404, &[], b"not found")
        };
        if r.get_mut().write_all(&resp).await.is_err() {
            return;
        }
    }
}

/// A router under test: in-process (`drove_router::start`) or the `drove router` binary.
pub struct RouterUnderTest {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    inproc: Option<drove_router::RouterHandle>,
    child: Option<std::process::Child>,
}

impl RouterUnderTest {
    /// Starts the router in this process with `drove router`-style arguments. A port picked by
    /// [`free_port`] can be taken by another test before the router binds it; then it tries
    /// again on another port (at most three times).
    pub fn in_process(paas: &str, extra: &[&str]) -> RouterUnderTest {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_in_process(paas, extra) {
                Ok(r) => return r,
                Err(e @ drove_router::RouterError::Bind { .. }) => last = Some(e),
                Err(e) => panic!("router starts: {e}"),
            }
        }
        panic!("router starts: {last:?}");
    }

    fn try_in_process(
        paas: &str,
        extra: &[&str],
    ) -> Result<RouterUnderTest, drove_router::RouterError> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: drove_router::RouterArgs,
        }
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut argv = vec![
            "router".to_string(),
            "--paas".into(),
            paas.into(),
            "--listen".into(),
            proxy.to_string(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--threads".into(),
            "2".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_from(argv).expect("router arguments parse");
        let handle = drove_router::start(cli.args)?;
        Ok(RouterUnderTest {
            proxy: handle.listen,
            admin: handle.admin,
            inproc: Some(handle),
            child: None,
        })
    }

    /// Runs `bin router ...` as a child process and waits for its admin `/health`; if the
    /// child exits while starting (a port taken meanwhile), tries again on other ports (at most
    /// three times).
    pub async fn binary(bin: &str, paas: &str, extra: &[&str]) -> RouterUnderTest {
        for _ in 0..2 {
            if let Some(r) = Self::try_binary(bin, paas, extra).await {
                return r;
            }
        }
        Self::try_binary(bin, paas, extra)
            .await
            .expect("drove router exited while starting, three times")
    }

    async fn try_binary(bin: &str, paas: &str, extra: &[&str]) -> Option<RouterUnderTest> {
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = std::process::Command::new(bin)
            .arg("router")
            .args(["--paas", paas, "--listen", &proxy.to_string()])
            .args(["--admin", &admin.to_string(), "--threads", "2"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn drove router");
        let mut rut = RouterUnderTest {
            proxy,
            admin,
            inproc: None,
            child: Some(child),
        };
        let c = client();
        let url = format!("http://{admin}/health");
        // Up (`Ok`), or exited while starting (`Err`: then the caller tries again).
        let started =
            crate::wait::eventually("drove router to come up", Duration::from_secs(20), || {
                let exited = rut.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                let (c, url) = (&c, &url);
                async move {
                    if let Ok(r) = c.get(url).send().await {
                        if r.status().is_success()
                            && tokio::net::TcpStream::connect(proxy).await.is_ok()
                        {
                            return Some(Ok(()));
                        }
                    }
                    exited.map(Err)
                }
            })
            .await;
        if let Err(status) = started {
            eprintln!("drove router exited while starting ({status}); retrying");
            rut.child = None;
            return None;
        }
        Some(rut)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Stops the router as its operator would (SIGTERM for the binary, `shutdown` in process)
    /// and waits, bounded by `limit`, until it has exited. Returns how long that took.
    pub async fn stop(mut self, limit: Duration) -> Duration {
        let began = tokio::time::Instant::now();
        let exited = if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            tokio::task::spawn_blocking(move || {
                let end = std::time::Instant::now() + limit;
                loop {
                    if let Ok(Some(_)) = child.try_wait() {
                        return true;
                    }
                    if std::time::Instant::now() > end {
                        let _ = child.kill();
                        let _ = child.wait();
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .await
            .expect("wait task")
        } else if let Some(h) = self.inproc.take() {
            h.shutdown();
            let joined = tokio::task::spawn_blocking(move || h.join());
            matches!(tokio::time::timeout(limit, joined).await, Ok(Ok(Ok(()))))
        } else {
            true
        };
        assert!(exited, "the router did not stop within {limit:?}");
        began.elapsed()
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body")
    }
}

impl Drop for RouterUnderTest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(h) = self.inproc.take() {
            h.shutdown();
            // Joining happens on drop; do it off the async worker.
            std::thread::spawn(move || drop(h));
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client")
}

/// `GET path` with `Host: host` through the router: (status, headers, body).
pub async fn get(
    c: &reqwest::Client,
    r: &RouterUnderTest,
    host: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = c
        .get(r.url(path))
        .header("host", host)
        .send()
        .await
        .expect("request through the router");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("body");
    (status, headers, body)
}

/// The value of a metric line `name{labels} value` in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// How a test case starts its router.
pub enum Launch {
    InProcess,
    /// Path of the `drove` binary.
    Binary(&'static str),
}

impl Launch {
    pub async fn router(&self, paas: &str, extra: &[&str]) -> RouterUnderTest {
        match self {
            Launch::InProcess => RouterUnderTest::in_process(paas, extra),
            Launch::Binary(bin) => RouterUnderTest::binary(bin, paas, extra).await,
        }
    }
}

pub mod cases;
