//! Builds of pushed apps with dependencies or a build script: untrusted code (npm lifecycle
//! scripts), so they run as a task on the cluster, as Heroku runs builds on dynos: in an agent
//! sandbox and cgroup, under the app's own uid, bounded in time, their output streamed to the
//! pusher.
//!
//! The task gets the commit's tree (the source artifact) and, when this app's last fresh
//! install had the same lockfile, that install's `node_modules` (the app's dependency cache),
//! then: `npm ci` with a lockfile, `npm install --omit=dev` without one (nothing when cached),
//! `npm run build` when there is one, `npm prune --omit=dev`, and packs the result. It uploads
//! the packed app (and, after a fresh install with a lockfile, `node_modules` for the cache)
//! to the PaaS with a token only this build holds, once each; the PaaS stores each under its
//! SHA-256 and keys the cache by the lockfile hash it computed itself. The cache is the app's
//! own: the tree is taken after the app's install scripts ran, which its lockfile does not
//! cover, so no other app's build may ever be fed from it.

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

use super::descriptor::Descriptor;
use super::locked;
use crate::app::AppDefinition;
use crate::Paas;

/// Default bound on a build.
pub const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// Largest upload accepted from a build (each of its two).
pub const MAX_UPLOAD: u64 = 1 << 30;
/// An upload that sends nothing for this long is dropped.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(60);

/// The builds in progress, by their upload token: what each may still upload.
#[derive(Default)]
pub struct Uploads(Mutex<HashMap<String, Build>>);

/// One build's uploads: its result (`app`) and, after a fresh `npm ci` with a lockfile, its
/// dependency cache (`deps`), each at most once. Both are stored under their content's hash;
/// the cache entry is keyed by the lockfile hash the PaaS computed, never by the build.
#[derive(Default)]
struct Build {
    /// The lockfile's hash when this build installs fresh and may upload the cache.
    deps_key: Option<String>,
    /// Whether this build packs its `node_modules` apart (none of the app's fits it).
    packs_modules: bool,
    app: Slot,
    deps: Slot,
    modules: Slot,
}

#[derive(Default, Clone, PartialEq, Eq)]
enum Slot {
    #[default]
    Open,
    /// An upload started (whatever came of it): no second one.
    Taken,
    Done(String),
}

impl Build {
    fn slot(&mut self, kind: &str) -> Option<&mut Slot> {
        match kind {
            "app" => Some(&mut self.app),
            "deps" => Some(&mut self.deps),
            "modules" => Some(&mut self.modules),
            _ => None,
        }
    }
}

/// The build task's script (run by `sh -c`). Its stderr joins its stdout, so the pusher sees
/// both live and in order. devDependencies are installed (build tools are), then pruned unless
/// the app says otherwise (`DROVE_PRUNE`). Everything is packed with zstd.
const SCRIPT: &str = r#"set -eu
exec 2>&1
step() { echo "-----> $*"; }
upload() {
  # The upload URL (its token) stays in the environment: a command line is every user's to read.
  node -e '
    const fs = require("fs"), http = require("http");
    const [kind, file] = process.argv.slice(1);
    const url = process.env.DROVE_UPLOAD + "/" + kind;
    const req = http.request(url, {method: "PUT", headers: {"content-length": fs.statSync(file).size}},
      res => { res.resume(); res.on("end", () => process.exit(res.statusCode === 200 ? 0 : 1)); });
    req.on("error", e => { console.error(e.message); process.exit(1); });
    fs.createReadStream(file).pipe(req);' "$1" "$2"
}
export HOME="$PWD" npm_config_cache="$PWD/.drove-npm" npm_config_update_notifier=false \
  npm_config_fund=false npm_config_audit=false npm_config_color=false
if [ "$DROVE_DEPS" = cached ]; then
  step "dependencies: from the cache (lockfile unchanged), nothing to install"
elif [ -f package-lock.json ]; then
  step "installing dependencies: npm ci"
  npm ci --include=dev
  step "caching node_modules for this lockfile"
  tar --zstd -cf .drove-deps.tar.zst node_modules
  upload deps .drove-deps.tar.zst
  rm -f .drove-deps.tar.zst
elif [ "$DROVE_HAS_DEPS" = 1 ]; then
  step "installing dependencies: npm install"
  npm install --include=dev
fi
if [ "$DROVE_HAS_BUILD" = 1 ]; then
  step "building: npm run build"
  npm run build
fi
if [ -d node_modules ] && [ "$DROVE_PRUNE" = 1 ]; then
  step "pruning dev dependencies"
  npm prune --omit=dev
fi
# Into a directory made first, so the sandbox itself does not change while tar reads it.
mkdir -p .drove-out
# node_modules is a layer of its own, packed only when none of the app's fits this build.
if [ -d node_modules ] && [ "$DROVE_MODULES" = pack ]; then
  step "packing node_modules"
  tar --zstd --exclude=./node_modules/.cache -cf .drove-out/modules.tar.zst ./node_modules
  upload modules .drove-out/modules.tar.zst
elif [ -d node_modules ]; then
  step "node_modules: as released before (lockfile unchanged)"
fi
step "packing"
tar --zstd --exclude=./.drove-npm --exclude=./.drove-out --exclude=./stdout --exclude=./stderr \
  --exclude=./stdout.1 --exclude=./stderr.1 --exclude=./node_modules -cf .drove-out/app.tar.zst .
upload app .drove-out/app.tar.zst
step "built"
"#;

/// The most of a build's log a release keeps (its last lines).
pub const LOG_MAX_BYTES: usize = 256 << 10;

/// A build's output as a release keeps it: its last [`LOG_MAX_BYTES`], escapes stripped.
#[derive(Debug, Default, Clone)]
pub struct BuildLog {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
    dropped: usize,
}

impl BuildLog {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.bytes > LOG_MAX_BYTES {
            match self.lines.pop_front() {
                Some(l) => {
                    self.bytes -= l.len();
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }

    /// The kept lines, saying first how many earlier ones were not.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        if self.dropped > 0 {
            out.push(format!(
                "[{} earlier lines of the build not kept]",
                self.dropped
            ));
        }
        out.extend(self.lines.iter().cloned());
        out
    }

    /// The lines that explain a failure: from the first error-looking line of the last step
    /// (`Error: …`, `error …`, `Failed to compile`, `not found`, `ERR!`) on, at most 25; else
    /// the step's last 15.
    fn failure_excerpt(&self) -> Vec<String> {
        let step_start = self
            .lines
            .iter()
            .rposition(|l| l.starts_with("-----> "))
            .map_or(0, |i| i + 1);
        let step: Vec<&String> = self.lines.iter().skip(step_start).collect();
        let looks_wrong = |l: &str| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error")
                || lower.contains("failed")
                || lower.contains("not found")
                || lower.contains("cannot find")
                || l.contains("ERR!")
        };
        match step.iter().position(|l| looks_wrong(l)) {
            Some(i) => step
                .iter()
                .skip(i)
                .take(25)
                .map(|l| l.to_string())
                .collect(),
            None => {
                let skip = step.len().saturating_sub(15);
                step.iter().skip(skip).map(|l| l.to_string()).collect()
            }
        }
    }
}

/// How a build ended: what it made, or why not; its log either way.
pub struct Built {
    pub result: Result<Artifacts, String>,
    pub log: BuildLog,
}

/// What a build made: the app (its code and what its build wrote) and, apart, the
/// `node_modules` it runs with (a new one, or the app's own from an earlier build).
pub struct Artifacts {
    pub app: String,
    pub modules: Option<String>,
}

impl Uploads {
    fn open(&self, deps_key: Option<String>, packs_modules: bool) -> String {
        let token = crate::tokens::generate();
        let build = Build {
            deps_key,
            packs_modules,
            ..Build::default()
        };
        locked(&self.0).insert(token.clone(), build);
        token
    }

    fn close(&self, token: &str) -> Option<Build> {
        locked(&self.0).remove(token)
    }

    /// Takes the build's slot for `kind`, or says why not.
    fn take(&self, token: &str, kind: &str) -> Result<(), (StatusCode, String)> {
        let mut builds = locked(&self.0);
        let Some(build) = builds.get_mut(token) else {
            return Err((StatusCode::UNAUTHORIZED, "not a build in progress".into()));
        };
        if kind == "deps" && build.deps_key.is_none() {
            return Err((
                StatusCode::CONFLICT,
                "this build has no dependency cache to upload".into(),
            ));
        }
        if kind == "modules" && !build.packs_modules {
            return Err((
                StatusCode::CONFLICT,
                "this build reuses its app's node_modules".into(),
            ));
        }
        let Some(slot) = build.slot(kind) else {
            return Err((
                StatusCode::NOT_FOUND,
                "expected app, deps or modules".into(),
            ));
        };
        if *slot != Slot::Open {
            return Err((
                StatusCode::CONFLICT,
                format!("this build uploaded its {kind} already"),
            ));
        }
        *slot = Slot::Taken;
        Ok(())
    }

    fn done(&self, token: &str, kind: &str, name: String) {
        if let Some(slot) = locked(&self.0).get_mut(token).and_then(|b| b.slot(kind)) {
            *slot = Slot::Done(name);
        }
    }
}

/// `PUT /v1/push/builds/{token}/{kind}`: a build's result (`app`) or its dependency cache
/// (`deps`), once each, at most [`MAX_UPLOAD`] bytes, never idle for [`UPLOAD_IDLE`]; stored
/// under the SHA-256 of what arrived.
pub async fn upload(
    State(paas): State<Arc<Paas>>,
    Path((token, kind)): Path<(String, String)>,
    body: Body,
) -> Response {
    if let Err((status, why)) = paas.push.uploads.take(&token, &kind) {
        return (status, format!("{why}\n")).into_response();
    }
    let dir = paas.push.artifacts_dir();
    // It ends with its build, whatever it still sends.
    let open = || locked(&paas.push.uploads.0).contains_key(&token);
    match receive(&dir, body, open).await {
        Ok(name) => {
            paas.push.uploads.done(&token, &kind, name.clone());
            (StatusCode::OK, format!("{name}\n")).into_response()
        }
        Err((status, why)) => (status, format!("{why}\n")).into_response(),
    }
}

/// Writes `body` into `dir` as `<sha256>.tar.zst` (or `.tar.gz`, by its first bytes) while
/// `open()` and within [`BUILD_LIMIT`]; the name, or why it was refused.
async fn receive(
    dir: &std::path::Path,
    body: Body,
    open: impl Fn() -> bool,
) -> Result<String, (StatusCode, String)> {
    let until = tokio::time::Instant::now() + BUILD_LIMIT;
    let internal = |what: &std::path::Path, e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", what.display()),
        )
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| internal(dir, e))?;
    let tmp = dir.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| internal(&tmp, e))?;
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    let mut first: Vec<u8> = Vec::with_capacity(4);
    let mut stream = body.into_data_stream();
    let failed = loop {
        let next = tokio::time::timeout_at(until, stream.next());
        let chunk = match tokio::time::timeout(UPLOAD_IDLE, next).await {
            Err(_) => {
                break Some((
                    StatusCode::REQUEST_TIMEOUT,
                    format!("nothing arrived for {} s", UPLOAD_IDLE.as_secs()),
                ))
            }
            Ok(Err(_)) => {
                break Some((
                    StatusCode::REQUEST_TIMEOUT,
                    format!("longer than a build ({} s)", BUILD_LIMIT.as_secs()),
                ))
            }
            Ok(Ok(None)) => break None,
            Ok(Ok(Some(Err(e)))) => {
                break Some((StatusCode::BAD_REQUEST, format!("broken upload: {e}")))
            }
            Ok(Ok(Some(Ok(c)))) => c,
        };
        if !open() {
            break Some((StatusCode::GONE, "its build has ended".to_string()));
        }
        size += chunk.len() as u64;
        if size > MAX_UPLOAD {
            break Some((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("over {MAX_UPLOAD} bytes"),
            ));
        }
        hash.update(&chunk);
        if first.len() < 4 {
            first.extend(chunk.iter().take(4 - first.len()));
        }
        if let Err(e) = file.write_all(&chunk).await {
            break Some(internal(&tmp, e));
        }
    };
    let flushed = file.flush().await;
    let result = match (failed, flushed) {
        (Some(f), _) => Err(f),
        (None, Err(e)) => Err(internal(&tmp, e)),
        (None, Ok(())) => {
            // Named by what it is: zstd (what builds send) or gzip.
            let kind = match first.get(..4) {
                Some([0x28, 0xb5, 0x2f, 0xfd]) => Some("tar.zst"),
                Some([0x1f, 0x8b, ..]) => Some("tar.gz"),
                _ => None,
            };
            let Some(kind) = kind else {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected a .tar.zst (or .tar.gz) archive".to_string(),
                ));
            };
            let name = format!("{}.{kind}", hex::encode(hash.finalize()));
            tokio::fs::rename(&tmp, dir.join(&name))
                .await
                .map(|()| name.clone())
                .map_err(|e| internal(&dir.join(&name), e))
        }
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Runs the build of `source` (an artifact of the commit's tree) for `name` with the app's
/// `config`; returns the built artifact's name, or why it failed (the step, and the lines of
/// its output that say why), with the build's log either way.
pub async fn run(
    paas: &Arc<Paas>,
    name: &str,
    d: &Descriptor,
    source: &str,
    lock_hash: Option<String>,
    config: &std::collections::BTreeMap<String, String>,
    out: &super::relay::Relay,
) -> Built {
    let mut log = BuildLog::default();
    let result = build(paas, name, d, source, lock_hash, config, out, &mut log).await;
    Built { result, log }
}

#[allow(clippy::too_many_arguments)]
async fn build(
    paas: &Arc<Paas>,
    name: &str,
    d: &Descriptor,
    source: &str,
    lock_hash: Option<String>,
    config: &std::collections::BTreeMap<String, String>,
    out: &super::relay::Relay,
    log: &mut BuildLog,
) -> Result<Artifacts, String> {
    let base = format!("http://{}", paas.args.listen);
    // This app's own cache only: another app's build (and its install scripts) never feeds
    // this one, whatever its lockfile.
    let cached = lock_hash.as_ref().and_then(|h| {
        paas.push
            .app(name)
            .and_then(|a| a.deps_cache)
            .filter(|c| &c.lock_hash == h)
            .map(|c| c.artifact)
            .filter(|f| paas.push.artifacts_dir().join(f).is_file())
    });
    // The released node_modules of an earlier build with the same lockfile (and pruning) is
    // this build's too: it is neither packed nor unpacked again.
    let modules_key = lock_hash.as_ref().map(|h| {
        format!(
            "{h}-{}",
            if d.drove.prune_dev_dependencies {
                "pruned"
            } else {
                "full"
            }
        )
    });
    let reused = modules_key.as_ref().and_then(|k| {
        paas.push
            .app(name)
            .and_then(|a| a.modules_cache)
            .filter(|c| &c.lock_hash == k)
            .map(|c| c.artifact)
            .filter(|f| paas.push.artifacts_dir().join(f).is_file())
    });
    let deps_key = lock_hash.filter(|_| cached.is_none());
    let token = paas.push.uploads.open(deps_key.clone(), reused.is_none());
    let mut fetch = vec![
        json!({"uri": format!("{base}/v1/artifacts/{source}"), "extract": true, "cache": false}),
    ];
    if let Some(c) = &cached {
        fetch.push(
            json!({"uri": format!("{base}/v1/artifacts/{c}"), "extract": true, "cache": true}),
        );
    }
    // The app's config vars (VITE_*, NEXT_PUBLIC_* are read at build time), NODE_ENV
    // production unless the config says otherwise, then the build's own.
    let mut env: serde_json::Map<String, serde_json::Value> = config
        .iter()
        .filter(|(k, _)| super::releases::reserved(k).is_none())
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    env.entry("NODE_ENV").or_insert(json!("production"));
    for (k, v) in [
        ("DROVE_UPLOAD", format!("{base}/v1/push/builds/{token}")),
        (
            "DROVE_DEPS",
            (if cached.is_some() { "cached" } else { "none" }).into(),
        ),
        (
            "DROVE_HAS_DEPS",
            (if d.has_dependencies { "1" } else { "0" }).into(),
        ),
        (
            "DROVE_HAS_BUILD",
            (if d.build.is_some() { "1" } else { "0" }).into(),
        ),
        (
            "DROVE_PRUNE",
            (if d.drove.prune_dev_dependencies {
                "1"
            } else {
                "0"
            })
            .into(),
        ),
        (
            "DROVE_MODULES",
            (if reused.is_some() { "reuse" } else { "pack" }).into(),
        ),
    ] {
        env.insert(k.to_string(), json!(v));
    }
    let (cpus, mem) = (
        d.drove.build_cpus.unwrap_or(paas.args.build_cpus),
        d.drove.build_mem.unwrap_or(paas.args.build_mem),
    );
    let def = AppDefinition::from_value(json!({
        "id": format!("/{name}-build"),
        "cmd": SCRIPT,
        "instances": 1,
        "cpus": cpus,
        "mem": mem,
        // Guaranteed its cpus, and bursting into whatever the machine has idle.
        "resourceLimits": {"cpus": "unlimited"},
        "user": paas.push.app(name).map(|a| a.task_user()),
        "portDefinitions": [],
        "fetch": fetch,
        "env": env,
        // Its sandbox goes as soon as it ends: its output is read while it runs.
        "labels": {"DROVE_BUILD": name, "DROVE_SANDBOX": "discard"},
    }))
    .map_err(|e| format!("the build task: {}", e.body()))?;
    let (job, mut ended) = paas.lock().submit_job(def);
    paas.kick.notify_one();
    out.say(format!(
        "-----> building {name} on the cluster ({cpus} cpus, {mem} MiB)"
    ))
    .await;
    let started = Instant::now();
    let mut offset = 0usize;
    let mut step = String::from("starting");
    // Kept once known: the job is forgotten as soon as it ends, its logs are not.
    let mut task: Option<String> = None;
    // What the pusher was last told about a wait for resources.
    let mut told: Option<String> = None;
    // Polled every 250 ms, at once while there is more to read.
    let mut pause = Duration::from_millis(250);
    let end = loop {
        let finished = tokio::select! {
            e = &mut ended => Some(e),
            _ = tokio::time::sleep(pause) => None,
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
        // Still no place for it after a second: say what it waits for (again when that
        // changes).
        if task.is_none() && started.elapsed() > Duration::from_secs(1) {
            let waiting = paas.lock().job_waiting(&job).map(|w| w.describe());
            if let Some(w) = waiting.filter(|w| told.as_ref() != Some(w)) {
                let line = format!("-----> waiting for resources: {w}");
                log.push(line.clone());
                out.say(line).await;
                told = Some(w);
            }
        }
        // Output so far, forwarded line by line.
        let text = match &task {
            Some(t) => job_output(paas, t, "stdout", offset).await,
            None => None,
        };
        pause = if text.as_ref().is_some_and(|t| t.len() >= OUTPUT_CHUNK) {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        };
        if let Some(text) = text {
            offset += text.len();
            let plain = drove_proto::output::strip_escapes(&String::from_utf8_lossy(&text));
            for line in plain.lines() {
                if let Some(s) = line.strip_prefix("-----> ") {
                    step = s.to_string();
                }
                log.push(line.chars().take(super::relay::MAX_LINE).collect());
                out.say(format!("       {line}")).await;
                // A slow pusher slows the relay, never the bound on the build.
                if started.elapsed() > BUILD_LIMIT || out.left() {
                    break;
                }
            }
        }
        if let Some(e) = finished {
            break e;
        }
        // The pusher left (the push cannot succeed), or the time bound passed: it stops.
        let abort = if out.left() {
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
        let how = end.message.lines().next().unwrap_or("").to_string();
        let mut why = vec![format!("the build failed at \"{step}\" ({how})")];
        why.extend(log.failure_excerpt());
        return Err(why.join("\n"));
    }
    if let (Some(key), Slot::Done(artifact)) = (deps_key, uploaded.deps) {
        super::remember(paas, name, super::Cache::Deps, key, artifact);
    }
    let modules = match (uploaded.modules, reused) {
        (Slot::Done(artifact), _) => {
            if let Some(key) = modules_key {
                super::remember(paas, name, super::Cache::Modules, key, artifact.clone());
            }
            Some(artifact)
        }
        (_, reused) => reused,
    };
    match uploaded.app {
        Slot::Done(app) => Ok(Artifacts { app, modules }),
        _ => Err("the build finished without uploading the app".to_string()),
    }
}

/// The most of a build's output read at once.
const OUTPUT_CHUNK: usize = 1 << 20;

/// Up to [`OUTPUT_CHUNK`] bytes of a build task's stdout or stderr from `offset`, through the
/// master.
async fn job_output(paas: &Paas, task: &str, stream: &str, offset: usize) -> Option<Vec<u8>> {
    let framework = paas.lock().framework_id.clone()?;
    let r = paas
        .master_get(&format!(
            "/master/frameworks/{framework}/tasks/{task}/logs/{stream}?offset={offset}&length={OUTPUT_CHUNK}"
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
