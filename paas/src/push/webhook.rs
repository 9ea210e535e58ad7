//! GitHub's push webhook: `POST /hooks/github/{app}`.
//!
//! The body's HMAC-SHA256 with the app's webhook secret must match `X-Hub-Signature-256`
//! (compared in constant time), else 401. A `ping` is answered. A `push` to the app's deploy
//! branch fetches `repository.clone_url` into the app's repository with git and deploys
//! `after` in the background: the answer (202) comes at once, well within GitHub's 10 s, and
//! the outcome shows in the app's releases (`by: webhook`) and events. Tags and branch
//! deletions are ignored; a delivery seen before is not deployed again, by its id or by what
//! it signs (app, ref and `after`: a captured delivery replayed under a new id); bodies over
//! 25 MB are refused.
//!
//! The fetch runs git with nothing of the PaaS's environment or of root's git configuration,
//! over http(s) only, following no redirect, within [`FETCH_LIMIT`] and [`FETCH_MAX_BYTES`]
//! (into one pack file, no larger), one per app and at most [`FETCHES`] at a time (more are
//! 503, and their redelivery is taken).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::push::HookOutcome;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Receive, ZERO};
use crate::http_error::error;
use crate::Paas;

/// GitHub's own limit on a payload.
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// Deliveries remembered, to ignore redeliveries.
const REMEMBERED: usize = 1000;
/// The longest a webhook's fetch may take.
pub const FETCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);
/// The largest file a webhook's fetch may write (its pack).
pub const FETCH_MAX_BYTES: u64 = 512 << 20;
/// Webhook fetches at once (one per app).
pub const FETCHES: usize = 4;

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Each app's recent deliveries (their ids, and what they signed), and the fetches in
/// progress: one per app, [`FETCHES`] in all.
pub struct Deliveries {
    seen: Mutex<HashMap<String, VecDeque<String>>>,
    fetching: Mutex<HashSet<String>>,
    fetches: Arc<tokio::sync::Semaphore>,
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            seen: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashSet::new()),
            fetches: Arc::new(tokio::sync::Semaphore::new(FETCHES)),
        }
    }
}

/// An app's fetch in progress: its turn and its share of [`FETCHES`], given back when dropped.
struct Fetching {
    paas: Arc<Paas>,
    app: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        super::locked(&self.paas.push.deliveries.fetching).remove(&self.app);
    }
}

/// `app`'s turn to fetch, if it has none in progress and a fetch is free.
fn turn(paas: &Arc<Paas>, app: &str) -> Option<Fetching> {
    let d = &paas.push.deliveries;
    let permit = d.fetches.clone().try_acquire_owned().ok()?;
    if !super::locked(&d.fetching).insert(app.to_string()) {
        return None;
    }
    Some(Fetching {
        paas: paas.clone(),
        app: app.to_string(),
        _permit: permit,
    })
}

impl Deliveries {
    /// Whether `app` has seen any of `keys`.
    fn seen(&self, app: &str, keys: &[String]) -> bool {
        let seen = super::locked(&self.seen);
        seen.get(app)
            .is_some_and(|s| s.iter().any(|k| keys.contains(k)))
    }

    /// Records `keys` for `app` (its [`REMEMBERED`] most recent kept).
    fn record(&self, app: &str, keys: &[String]) {
        let mut seen = super::locked(&self.seen);
        let mine = seen.entry(app.to_string()).or_default();
        for k in keys {
            if mine.len() >= REMEMBERED {
                mine.pop_front();
            }
            mine.push_back(k.clone());
        }
    }

    /// Forgets `keys` (a delivery that was not handled, so its redelivery is).
    fn forget(&self, app: &str, keys: &[String]) {
        if let Some(mine) = super::locked(&self.seen).get_mut(app) {
            mine.retain(|k| !keys.contains(k));
        }
    }
}

/// A branch name as a refspec may carry it: no pattern, no second side, nothing git refuses.
fn plain_branch(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 200
        && !b.starts_with(['-', '/', '.'])
        && !b.ends_with(['/', '.'])
        && !b.contains("..")
        && !b.contains("//")
        && !b.ends_with(".lock")
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The parts of GitHub's `push` event drove reads (any may be missing or `null`).
#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref", default)]
    refname: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    #[serde(default)]
    clone_url: Option<String>,
}

fn ignored(why: String) -> Json<HookOutcome> {
    Json(HookOutcome::Ignored { ignored: why })
}

/// `POST /hooks/github/{app}`.
pub async fn github(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(app) = paas.push.app(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no pushed app {name:?}"));
    };
    if !verify(
        &app.webhook_secret,
        &body,
        header(&headers, "x-hub-signature-256"),
    ) {
        return error(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256: missing or not the HMAC-SHA256 of the body with the app's webhook secret",
        );
    }
    let event = header(&headers, "x-github-event");
    if event == "ping" {
        return Json(HookOutcome::Pong {
            ok: true,
            app: name,
        })
        .into_response();
    }
    if event != "push" {
        return (StatusCode::ACCEPTED, ignored(format!("event {event:?}"))).into_response();
    }
    let delivery = header(&headers, "x-github-delivery").to_string();
    let payload: PushEvent = match drove_proto::decode(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the push payload: {e}")),
    };
    let refname = payload.refname.unwrap_or_default();
    let after = payload.after.unwrap_or_default();
    let before = payload.before.unwrap_or_else(|| ZERO.into());
    let deleted = payload.deleted == Some(true);
    let Some(branch) = refname.strip_prefix("refs/heads/").map(str::to_string) else {
        return (
            StatusCode::ACCEPTED,
            ignored(format!("{refname:?} is not a branch")),
        )
            .into_response();
    };
    if after.is_empty() || after == ZERO || deleted {
        return (
            StatusCode::ACCEPTED,
            ignored(format!("{branch} was deleted")),
        )
            .into_response();
    }
    if after.len() != 40 || !after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("after: expected a commit id, found {after:?}"),
        );
    }
    let Some(url) = payload
        .repository
        .and_then(|r| r.clone_url)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "repository.clone_url: expected an http(s) URL",
        );
    };
    if !plain_branch(&branch) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("ref: {refname:?} is not a branch drove deploys"),
        );
    }
    // Its id, and what the signature covers (the same push replayed under another id).
    let mut keys = vec![format!("push {refname} {after}")];
    if !delivery.is_empty() {
        keys.push(format!("id {delivery}"));
    }
    if paas.push.deliveries.seen(&name, &keys) {
        return (
            StatusCode::ACCEPTED,
            ignored(format!("{after} of {refname} was handled already")),
        )
            .into_response();
    }
    let Some(fetching) = turn(&paas, &name) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("a fetch for {name} (or {FETCHES} in all) is in progress; redeliver later"),
        );
    };
    paas.push.deliveries.record(&name, &keys);
    let paas2 = paas.clone();
    let (name2, after2) = (name.clone(), after.clone());
    tokio::spawn(async move {
        let repo = paas2.push.repo(&name2);
        let fetched = fetch(&repo, &url, &branch).await;
        drop(fetching);
        if let Err(why) = fetched {
            // Not handled: its redelivery is.
            paas2.push.deliveries.forget(&name2, &keys);
            tracing::warn!(app = %name2, "webhook fetch failed: {why}");
            return;
        }
        let req = Receive {
            updates: vec![(before, after2.clone(), format!("refs/heads/{branch}"))],
            git_dir: repo.display().to_string(),
            env: Vec::new(),
        };
        let out = super::relay::Relay::discard();
        match super::deploy(&paas2, &name2, req, "webhook", &out).await {
            Ok(()) => {
                // The repository's branch follows what was deployed.
                let _ = tokio::process::Command::new("git")
                    .arg("--git-dir")
                    .arg(&repo)
                    .args(["update-ref", &format!("refs/heads/{branch}"), &after2])
                    .output()
                    .await;
                tracing::info!(app = %name2, commit = %after2, "webhook deploy done");
            }
            Err(why) => {
                tracing::warn!(app = %name2, commit = %after2, %why, "webhook deploy rejected")
            }
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(HookOutcome::Deploying {
            app: name,
            deploying: after,
        }),
    )
        .into_response()
}

/// Fetches `branch` of `url` into `repo` (as `refs/drove/webhook/<branch>`); see the module
/// docs for its bounds.
async fn fetch(repo: &std::path::Path, url: &str, branch: &str) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("prlimit");
    cmd.arg(format!("--fsize={FETCH_MAX_BYTES}"))
        .arg("git")
        .args(["-c", "http.followRedirects=false"])
        // One pack file, whatever the object count, so the size bound bounds the fetch.
        .args(["-c", "fetch.unpackLimit=1"])
        .args(["-c", "protocol.allow=never"])
        .args(["-c", "protocol.http.allow=always"])
        .args(["-c", "protocol.https.allow=always"])
        .arg("--git-dir")
        .arg(repo)
        .args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            url,
        ])
        .arg(format!("+refs/heads/{branch}:refs/drove/webhook/{branch}"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(FETCH_LIMIT, cmd.output()).await {
        Err(_) => Err(format!("took longer than {} s", FETCH_LIMIT.as_secs())),
        Ok(Err(e)) => Err(format!("running git: {e}")),
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let tail: String = stderr.trim().chars().rev().take(2000).collect();
            Err(tail.chars().rev().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published test vector.
    #[test]
    fn githubs_test_vector() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify("It's a Secret to Everybody", b"Hello, World!", sig));
        assert!(!verify("It's a Secret to Everybody", b"Hello, World?", sig));
        assert!(!verify("another secret", b"Hello, World!", sig));
        assert!(!verify(
            "It's a Secret to Everybody",
            b"Hello, World!",
            "sha1=00"
        ));
        let d = Deliveries::default();
        let keys = ["id a".to_string()];
        assert!(!d.seen("app", &keys));
        d.record("app", &keys);
        assert!(d.seen("app", &keys) && !d.seen("other", &keys));
        d.forget("app", &keys);
        assert!(!d.seen("app", &keys));
        assert!(plain_branch("main") && plain_branch("feature/x-1"));
        for bad in ["*", "a:b", "-x", "a..b", "", "x.lock", "a b"] {
            assert!(!plain_branch(bad), "{bad}");
        }
    }
}
