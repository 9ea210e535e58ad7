//! Builds of pushed apps with dependencies or a build script: untrusted code (npm lifecycle
//! scripts), so they run as a task on the cluster, as Heroku runs builds on dynos: in an agent
//! sandbox and cgroup, under the app's own uid, bounded in time, their output streamed to the
//! pusher.
//!
//! The task gets the commit's tree (the source artifact) and, when the lockfile's hash has been
//! built before, that build's `node_modules` (the dependency cache), then: `npm ci` with a
//! lockfile, `npm install --omit=dev` without one (nothing when cached), `npm run build` when
//! there is one, `npm prune --omit=dev`, and packs the result. It uploads the packed app (and,
//! after a fresh install with a lockfile, `node_modules` for the cache) to the PaaS with a
//! token only this build holds; the PaaS names each by its SHA-256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::descriptor::Descriptor;
use super::locked;
use crate::app::AppDefinition;
use crate::Paas;

/// Default bound on a build.
pub const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// Largest upload accepted from a build.
pub const MAX_UPLOAD: u64 = 1 << 30;

/// What a build uploaded, by its token.
#[derive(Default)]
pub struct Uploads(Mutex<HashMap<String, Uploaded>>);

#[derive(Default, Clone)]
struct Uploaded {
    app: Option<String>,
}

/// The build task's script (run by `sh -c`).
const SCRIPT: &str = r#"set -eu
step() { echo "-----> $*"; }
upload() {
  node -e '
    const fs = require("fs"), http = require("http");
    const [url, file] = process.argv.slice(1);
    const req = http.request(url, {method: "PUT", headers: {"content-length": fs.statSync(file).size}},
      res => { res.resume(); res.on("end", () => process.exit(res.statusCode === 200 ? 0 : 1)); });
    req.on("error", e => { console.error(e.message); process.exit(1); });
    fs.createReadStream(file).pipe(req);' "$DROVE_UPLOAD/$1" "$2"
}
export HOME="$PWD" npm_config_cache="$PWD/.drove-npm" npm_config_update_notifier=false \
  npm_config_fund=false npm_config_audit=false
if [ "$DROVE_DEPS" = cached ]; then
  step "dependencies: from the cache (lockfile unchanged), nothing to install"
elif [ -f package-lock.json ]; then
  step "installing dependencies: npm ci"
  npm ci
  step "caching node_modules for this lockfile"
  tar -czf .drove-deps.tar.gz node_modules
  upload deps .drove-deps.tar.gz
  rm -f .drove-deps.tar.gz
elif [ "$DROVE_HAS_DEPS" = 1 ]; then
  step "installing dependencies: npm install --omit=dev"
  npm install --omit=dev
fi
if [ "$DROVE_HAS_BUILD" = 1 ]; then
  step "building: npm run build"
  npm run build
fi
if [ -d node_modules ]; then
  step "pruning dev dependencies"
  npm prune --omit=dev
fi
step "packing"
# Into a directory made first, so the sandbox itself does not change while tar reads it.
mkdir -p .drove-out
tar --exclude=./.drove-npm --exclude=./.drove-out --exclude=./stdout --exclude=./stderr \
  --exclude=./stdout.1 --exclude=./stderr.1 -czf .drove-out/app.tar.gz .
upload app .drove-out/app.tar.gz
step "built"
"#;

impl Uploads {
    fn open(&self) -> String {
        let token = crate::tokens::generate();
        locked(&self.0).insert(token.clone(), Uploaded::default());
        token
    }

    fn close(&self, token: &str) -> Option<Uploaded> {
        locked(&self.0).remove(token)
    }

    fn has(&self, token: &str) -> bool {
        locked(&self.0).contains_key(token)
    }
}

/// `PUT /v1/push/builds/{token}/{kind}`: a build's result (`app`) or dependency cache (`deps`,
/// named after the lockfile's hash the build was told).
pub async fn upload(
    State(paas): State<Arc<Paas>>,
    Path((token, kind)): Path<(String, String)>,
    body: Body,
) -> Response {
    if !paas.push.uploads.has(&token) {
        return (StatusCode::UNAUTHORIZED, "not a build in progress\n").into_response();
    }
    if kind != "app" && !kind.starts_with("deps-") {
        return (
            StatusCode::NOT_FOUND,
            "expected app or deps-<lockfile hash>\n",
        )
            .into_response();
    }
    let dir = paas.push.artifacts_dir();
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}\n", dir.display()),
        )
            .into_response();
    }
    let tmp = dir.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
    let mut file = match tokio::fs::File::create(&tmp).await {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {e}\n", tmp.display()),
            )
                .into_response()
        }
    };
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let ok = match chunk {
            Ok(c) => {
                size += c.len() as u64;
                hash.update(&c);
                size <= MAX_UPLOAD && file.write_all(&c).await.is_ok()
            }
            Err(_) => false,
        };
        if !ok {
            let _ = tokio::fs::remove_file(&tmp).await;
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("upload refused (over {MAX_UPLOAD} bytes, or broken)\n"),
            )
                .into_response();
        }
    }
    let _ = file.flush().await;
    let name = if kind == "app" {
        format!("{}.tar.gz", hex::encode(hash.finalize()))
    } else {
        let key = &kind["deps-".len()..];
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return (StatusCode::BAD_REQUEST, "deps-<64 hex digits>\n").into_response();
        }
        format!("deps-{key}.tar.gz")
    };
    if let Err(e) = tokio::fs::rename(&tmp, dir.join(&name)).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: {e}\n")).into_response();
    }
    if kind == "app" {
        if let Some(u) = locked(&paas.push.uploads.0).get_mut(&token) {
            u.app = Some(name.clone());
        }
    }
    (StatusCode::OK, format!("{name}\n")).into_response()
}

/// Runs the build of `source` (an artifact of the commit's tree) for `name`; returns the
/// built artifact's name, or why it failed (the step, and the output's last lines).
pub async fn run(
    paas: &Arc<Paas>,
    name: &str,
    d: &Descriptor,
    source: &str,
    lockfile: Option<&[u8]>,
    out: &mpsc::UnboundedSender<String>,
) -> Result<String, String> {
    let say = |s: String| {
        let _ = out.send(s);
    };
    let token = paas.push.uploads.open();
    let base = format!("http://{}", paas.args.listen);
    let lock_hash = lockfile.map(|l| hex::encode(Sha256::digest(l)));
    let cached = lock_hash
        .as_ref()
        .map(|h| format!("deps-{h}.tar.gz"))
        .filter(|f| paas.push.artifacts_dir().join(f).is_file());
    let mut fetch = vec![
        json!({"uri": format!("{base}/v1/artifacts/{source}"), "extract": true, "cache": false}),
    ];
    if let Some(c) = &cached {
        fetch.push(
            json!({"uri": format!("{base}/v1/artifacts/{c}"), "extract": true, "cache": true}),
        );
    }
    let deps_kind = lock_hash
        .as_ref()
        .map(|h| format!("deps-{h}"))
        .unwrap_or_default();
    // The script uploads `deps` to `$DROVE_UPLOAD/deps`: route that to the lockfile's name.
    let script = SCRIPT.replace("upload deps ", &format!("upload {deps_kind} "));
    let def = AppDefinition::from_value(json!({
        "id": format!("/{name}-build"),
        "cmd": script,
        "instances": 1,
        "cpus": 1.0,
        "mem": 1024,
        "user": format!("app-{name}"),
        "portDefinitions": [],
        "fetch": fetch,
        "env": {
            "DROVE_UPLOAD": format!("{base}/v1/push/builds/{token}"),
            "DROVE_DEPS": if cached.is_some() { "cached" } else { "none" },
            "DROVE_HAS_DEPS": if d.has_dependencies { "1" } else { "0" },
            "DROVE_HAS_BUILD": if d.build.is_some() { "1" } else { "0" },
        },
    }))
    .map_err(|e| format!("the build task: {}", e.body()))?;
    let (job, mut ended) = paas.lock().submit_job(def);
    paas.kick.notify_one();
    say(format!("-----> building {name} on the cluster"));
    let started = Instant::now();
    let mut offset = 0usize;
    let mut last_lines: Vec<String> = Vec::new();
    let mut step = String::from("starting");
    // Kept once known: the job is forgotten as soon as it ends, its logs are not.
    let mut task: Option<String> = None;
    let end = loop {
        let finished = tokio::select! {
            e = &mut ended => Some(e),
            _ = tokio::time::sleep(Duration::from_millis(250)) => None,
        };
        if task.is_none() {
            // A job ended before it was looked up is forgotten: its end names its task.
            task = paas.lock().job_task(&job).map(|(t, _)| t).or_else(|| {
                finished
                    .as_ref()
                    .and_then(|e| e.as_ref().ok())
                    .and_then(|e| e.task_id.clone())
            });
        }
        // Output so far, forwarded line by line.
        let text = match &task {
            Some(t) => job_output(paas, t, "stdout", offset).await,
            None => None,
        };
        if let Some(text) = text {
            offset += text.len();
            for line in String::from_utf8_lossy(&text).lines() {
                if let Some(s) = line.strip_prefix("-----> ") {
                    step = s.to_string();
                }
                last_lines.push(line.to_string());
                if last_lines.len() > 20 {
                    last_lines.remove(0);
                }
                say(format!("       {line}"));
            }
        }
        if let Some(e) = finished {
            break e;
        }
        // The pusher left (the push cannot succeed), or the time bound passed: it stops.
        let abort = if out.is_closed() {
            Some(format!(
                "the pusher left during the build (at: {step}); stopped"
            ))
        } else {
            (started.elapsed() > BUILD_LIMIT).then(|| {
                format!(
                    "the build took longer than {} s (at: {step})",
                    BUILD_LIMIT.as_secs()
                )
            })
        };
        if let Some(why) = abort {
            paas.lock().cancel_job(&job);
            paas.kick.notify_one();
            paas.push.uploads.close(&token);
            return Err(why);
        }
    };
    let uploaded = paas.push.uploads.close(&token).unwrap_or_default();
    let end = end.map_err(|_| "the build was lost".to_string())?;
    if end.state != drove_proto::mesos::TaskState::TaskFinished {
        let stderr = match &task {
            Some(t) => job_output(paas, t, "stderr", 0).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let stderr = String::from_utf8_lossy(&stderr);
        let mut tail: Vec<String> = stderr
            .lines()
            .rev()
            .take(15)
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if tail.is_empty() {
            tail = last_lines;
        }
        return Err(format!(
            "the build failed at \"{step}\" ({}): {}",
            end.message,
            tail.join(" | ")
        ));
    }
    uploaded
        .app
        .ok_or_else(|| "the build finished without uploading the app".to_string())
}

/// Bytes of a build task's stdout or stderr from `offset`, through the master.
async fn job_output(paas: &Paas, task: &str, stream: &str, offset: usize) -> Option<Vec<u8>> {
    let framework = paas.lock().framework_id.clone()?;
    let r = paas
        .master_get(&format!(
            "/master/frameworks/{framework}/tasks/{task}/logs/{stream}?offset={offset}"
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let b = r.bytes().await.ok()?;
    (!b.is_empty()).then(|| b.to_vec())
}
