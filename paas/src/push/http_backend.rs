//! Git's smart HTTP protocol, served by git itself: each request runs `git http-backend` (a
//! CGI program) with the request's method, path and body, and its CGI answer (`Status:` and
//! other header lines, a blank line, the body) becomes the response. git2 has no server side.
//!
//! `REMOTE_USER` is set for authenticated callers only, which is what lets `http-backend`
//! accept pushes (`http.receivepack` defaults to "when authenticated").

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Kills a process group when dropped.
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // ESRCH (all gone already) is the normal case.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A request's git: the child, its process group, and the request's hold; dropped to end them.
type Git = (
    tokio::process::Child,
    GroupKill,
    Option<Box<dyn Send + Sync>>,
);

/// One request's git, while its answer is being sent.
struct Running {
    git: Mutex<Option<Git>>,
    /// When the last chunk was handed to the client, while it has not asked for the next.
    handed: Mutex<Option<tokio::time::Instant>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends a request's git once its client has taken nothing for [`RESPONSE_IDLE`]; returns when
/// the response is gone.
async fn give_up_on_a_stalled_client(running: Weak<Running>) {
    loop {
        tokio::time::sleep(RESPONSE_IDLE / 4).await;
        let Some(r) = running.upgrade() else { return };
        let stalled = locked(&r.handed).is_some_and(|at| at.elapsed() >= RESPONSE_IDLE);
        if stalled {
            if locked(&r.git).take().is_some() {
                tracing::warn!(
                    "a git client took nothing of its answer for {} s: its request is ended",
                    RESPONSE_IDLE.as_secs()
                );
            }
            return;
        }
    }
}

/// The largest CGI header block accepted from `http-backend`.
const MAX_HEADER_LINES: usize = 64;

/// What the CGI program needs to know of one request.
pub struct CgiRequest<'a> {
    pub method: &'a Method,
    /// `/<app>.git/info/refs`, `/<app>.git/git-receive-pack`, ...
    pub path_info: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub remote_user: &'a str,
    /// Extra environment (the hook's callback URL and token).
    pub env: Vec<(String, String)>,
    /// The largest pack a push may send (`receive.maxInputSize`, so git itself says so); the
    /// request body is cut a little past it whatever git does.
    pub max_pack: u64,
    /// Kept until git is done with the request (a push's hold on its app).
    pub hold: Option<Box<dyn Send + Sync>>,
}

/// The most a push's commands (the pkt-lines before its pack: one per ref updated) may take:
/// `receive-pack` keeps each in memory.
pub const MAX_COMMANDS: usize = 1 << 20;
/// A request body that sends nothing for this long is cut.
pub const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest a request body may take to arrive.
pub const BODY_LIMIT: std::time::Duration = std::time::Duration::from_secs(1800);
/// A client that takes nothing of the answer for this long is given up: git's processes are
/// killed and the push's hold on its app released, whether or not its connection closes. (A
/// push in progress writes a keepalive every second, so a reading client is never idle.)
pub const RESPONSE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a push's body is: still in its commands (kept back until they end, so none reaches
/// git past [`MAX_COMMANDS`]), or past them.
enum Commands {
    Reading(Vec<u8>),
    Done,
}

impl Commands {
    /// Takes `chunk`; the bytes to pass on now, or `Err` when the commands run over the bound.
    fn take(&mut self, chunk: &[u8]) -> Result<Vec<u8>, ()> {
        let Commands::Reading(buf) = self else {
            return Ok(chunk.to_vec());
        };
        buf.extend_from_slice(chunk);
        let mut at = 0;
        while let Some(len) = buf
            .get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        {
            if len == 0 {
                let all = std::mem::take(buf);
                *self = Commands::Done;
                return Ok(all);
            }
            if len < 4 {
                return Err(());
            }
            at += len;
        }
        if buf.len() > MAX_COMMANDS {
            return Err(());
        }
        Ok(Vec::new())
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Runs `git http-backend` for `req` over the repositories under `root`, streaming `body` in
/// and the answer out. The child is killed if the response is dropped (the client left) or
/// its client takes nothing of it for [`RESPONSE_IDLE`].
pub async fn serve(root: &Path, req: CgiRequest<'_>, body: Body) -> Response {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", req.method.as_str())
        .env("PATH_INFO", req.path_info)
        .env("QUERY_STRING", req.query)
        .env("CONTENT_TYPE", header(req.headers, "content-type"))
        .env(
            "HTTP_CONTENT_ENCODING",
            header(req.headers, "content-encoding"),
        )
        .env("GIT_PROTOCOL", header(req.headers, "git-protocol"))
        .env("REMOTE_USER", req.remote_user)
        .env("REMOTE_ADDR", "127.0.0.1")
        // A keepalive every second while the hook is silent (a build): writing it is how a
        // client that left is noticed, and the push stopped.
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "receive.keepAlive")
        .env("GIT_CONFIG_VALUE_0", "1")
        .env("GIT_CONFIG_KEY_1", "receive.maxInputSize")
        .env("GIT_CONFIG_VALUE_1", req.max_pack.to_string())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", root)
        .envs(req.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("running git http-backend: {e}\n"),
            )
                .into_response()
        }
    };
    // Its whole process group (receive-pack, the hook) goes when the response does: a client
    // that leaves mid-push stops the push at once.
    let group = GroupKill(child.id());
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "git http-backend pipes\n",
        )
            .into_response();
    };
    // The request body goes in while the answer comes out (a push's pack can be large),
    // within its bounds: a push's commands at most MAX_COMMANDS, the whole body a little past
    // the largest pack (git has said no by then), no pause over BODY_IDLE, all of it within
    // BODY_LIMIT. Past a bound the rest is not read, and git fails on what it got.
    let max_body = req.max_pack.saturating_add(MAX_COMMANDS as u64);
    let receive = req.path_info.ends_with("/git-receive-pack");
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut sent: u64 = 0;
        let mut commands = if receive {
            Commands::Reading(Vec::new())
        } else {
            Commands::Done
        };
        let until = tokio::time::Instant::now() + BODY_LIMIT;
        loop {
            let next = tokio::time::timeout(BODY_IDLE, stream.next());
            let chunk = match tokio::time::timeout_at(until, next).await {
                Ok(Ok(Some(Ok(chunk)))) => chunk,
                Ok(Ok(None)) => break,
                _ => return,
            };
            sent = sent.saturating_add(chunk.len() as u64);
            let Ok(pass) = commands.take(&chunk) else {
                tracing::warn!("a push's commands ran over {MAX_COMMANDS} bytes: cut");
                return;
            };
            if sent > max_body || stdin.write_all(&pass).await.is_err() {
                return;
            }
        }
        let _ = stdin.shutdown().await;
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "drove_paas::push::git", "{line}");
        }
    });
    let mut out = BufReader::new(stdout);
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for _ in 0..MAX_HEADER_LINES {
        let mut line = String::new();
        match out.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            if let Some(code) = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                status = code;
            }
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    // The child (and the request's hold) lives as long as its output is read: until the
    // response is dropped (the client left), or its client has taken nothing for
    // RESPONSE_IDLE.
    let running = Arc::new(Running {
        git: Mutex::new(Some((child, group, req.hold))),
        handed: Mutex::new(None),
    });
    tokio::spawn(give_up_on_a_stalled_client(Arc::downgrade(&running)));
    let body = futures::stream::unfold((out, running), |(mut out, running)| async move {
        // Asked for more: the client is taking what it was given.
        *locked(&running.handed) = None;
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::io::AsyncReadExt::read(&mut out, &mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                *locked(&running.handed) = Some(tokio::time::Instant::now());
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                    (out, running),
                ))
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_s_commands_are_bounded_and_passed_on_whole() {
        let line = |s: &str| format!("{:04x}{s}", s.len() + 4);
        let cmd = line("0000 1111 refs/heads/main\n");
        let mut c = Commands::Reading(Vec::new());
        // Split anywhere: nothing passes until the flush, then all of it, then everything.
        let (a, b) = cmd.as_bytes().split_at(7);
        assert_eq!(c.take(a), Ok(vec![]));
        assert_eq!(c.take(b), Ok(vec![]));
        let mut all = cmd.clone().into_bytes();
        all.extend_from_slice(b"0000PACK");
        assert_eq!(c.take(b"0000PACK"), Ok(all));
        assert_eq!(c.take(b"more"), Ok(b"more".to_vec()));
        // Commands without end: cut once over the bound.
        let mut c = Commands::Reading(Vec::new());
        let many = line(&"x".repeat(60_000)).repeat(MAX_COMMANDS / 60_000 + 1);
        assert_eq!(c.take(many.as_bytes()), Err(()));
        assert_eq!(
            Commands::Reading(Vec::new()).take(b"0002"),
            Err(()),
            "no such length"
        );
    }
}
