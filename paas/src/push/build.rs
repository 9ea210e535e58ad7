//! Builds of pushed apps with dependencies or a build script: untrusted code (npm lifecycle
//! scripts), so they run as a task on the cluster, as Heroku runs builds on dynos: in an agent
//! sandbox and cgroup, under the app's own uid, bounded in time, their output streamed to the
//! pusher.
//!
//! The task gets the commit's tree (the source artifact) and, when this app's last fresh
//! install had the same lockfile, that install's `node_modules` (the app's dependency cache),
//! then: `npm ci` with a lockfile, `npm install --omit=dev` without one (nothing when cached),
//! `npm run build` when there is one, `npm prune --omit=dev`, and packs the result. It leaves
//! the packed app (its `node_modules` apart, and after a fresh install with a lockfile the
//! install for the cache) at the top of its sandbox; once it finished, the PaaS collects each
//! through the master from its agent (`outputs/{app,modules,deps}`), once, bounded, and
//! stores it under its SHA-256, keying the cache by the lockfile hash it computed itself. A
//! build needs no way back to the PaaS: in a container it reaches nothing of the host. The
//! cache is the app's own: the tree is taken after the app's install scripts ran, which its
//! lockfile does not cover, so no other app's build may ever be fed from it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::descriptor::Descriptor;
use crate::model::app::{AppDefinition, FetchUri, InvalidApp, Limit, ResourceLimits};
use crate::Paas;

/// Default bound on a build.
pub const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// Largest output collected from a build (each of its three).
pub const MAX_OUTPUT: u64 = 1 << 30;
/// A collection that receives nothing for this long is dropped.
pub const OUTPUT_IDLE: Duration = Duration::from_secs(60);

/// The build task's script (run by `sh -c`). Its stderr joins its stdout, so the pusher sees
/// both live and in order. devDependencies are installed (build tools are), then pruned unless
/// the app says otherwise (`DROVE_PRUNE`). Everything is packed with zstd.
const SCRIPT: &str = r#"set -eu
exec 2>&1
step() { echo "-----> $*"; }
export HOME="$PWD" npm_config_cache="$PWD/.drove-npm" npm_config_update_notifier=false \
  npm_config_fund=false npm_config_audit=false npm_config_color=false
# What the PaaS collects once this ends: .drove-{app,modules,deps}.tar.zst, here.
rm -f .drove-app.tar.zst .drove-modules.tar.zst .drove-deps.tar.zst
if [ "$DROVE_DEPS" = cached ]; then
  step "dependencies: from the cache (lockfile unchanged), nothing to install"
elif [ -f package-lock.json ]; then
  step "installing dependencies: npm ci"
  npm ci --include=dev
  step "caching node_modules for this lockfile"
  tar --zstd -cf .drove-deps.tar.zst node_modules
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
elif [ -d node_modules ]; then
  step "node_modules: as released before (lockfile unchanged)"
fi
step "packing"
tar --zstd --exclude=./.drove-npm --exclude=./.drove-out --exclude=./stdout --exclude=./stderr \
  --exclude=./stdout.1 --exclude=./stderr.1 --exclude=./node_modules \
  --exclude=./.drove-deps.tar.zst -cf .drove-out/app.tar.zst .
[ -f .drove-out/modules.tar.zst ] && mv .drove-out/modules.tar.zst .drove-modules.tar.zst
mv .drove-out/app.tar.zst .drove-app.tar.zst
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

/// Writes `body` into `dir` as `<sha256>.tar.zst` (or `.tar.gz`, by its first bytes) within
/// [`BUILD_LIMIT`]; the name, or why it was refused.
async fn receive(dir: &std::path::Path, body: Body) -> Result<String, (StatusCode, String)> {
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
    let tmp = dir.join(format!(".collect-{}", uuid::Uuid::new_v4().simple()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| internal(&tmp, e))?;
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    let mut first: Vec<u8> = Vec::with_capacity(4);
    let mut stream = body.into_data_stream();
    let failed = loop {
        let next = tokio::time::timeout_at(until, stream.next());
        let chunk = match tokio::time::timeout(OUTPUT_IDLE, next).await {
            Err(_) => {
                break Some((
                    StatusCode::REQUEST_TIMEOUT,
                    format!("nothing arrived for {} s", OUTPUT_IDLE.as_secs()),
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
        size += chunk.len() as u64;
        if size > MAX_OUTPUT {
            break Some((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("over {MAX_OUTPUT} bytes"),
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
    let mut fetch = vec![FetchUri::archive(
        format!("{base}/v1/artifacts/{source}"),
        false,
    )];
    if let Some(c) = &cached {
        fetch.push(FetchUri::archive(format!("{base}/v1/artifacts/{c}"), true));
    }
    // The app's config vars (VITE_*, NEXT_PUBLIC_* are read at build time), NODE_ENV
    // production unless the config says otherwise, then the build's own.
    let mut env: BTreeMap<String, String> = config
        .iter()
        .filter(|(k, _)| super::releases::reserved(k).is_none())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.entry("NODE_ENV".into())
        .or_insert_with(|| "production".into());
    for (k, v) in [
        (
            "DROVE_DEPS",
            String::from(if cached.is_some() { "cached" } else { "none" }),
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
        env.insert(k.to_string(), v);
    }
    let (cpus, mem) = (
        d.drove.build_cpus.unwrap_or(paas.args.build_cpus),
        d.drove.build_mem.unwrap_or(paas.args.build_mem),
    );
    let invalid = |e: InvalidApp| format!("the build task: {e}");
    let mut def = AppDefinition::named(&format!("/{name}-build")).map_err(invalid)?;
    def.cmd = Some(SCRIPT.into());
    def.instances = 1;
    def.cpus = cpus;
    def.mem = mem;
    // Guaranteed its cpus, and bursting into whatever the machine has idle.
    def.resource_limits = Some(ResourceLimits {
        cpus: Some(Limit::Named("unlimited".into())),
    });
    def.user = paas.push.app(name).map(|a| a.task_user());
    def.port_definitions = Some(Vec::new());
    def.fetch = fetch;
    def.env = env;
    // Its sandbox goes as soon as it ends: its output is read while it runs.
    def.labels = BTreeMap::from([
        ("DROVE_BUILD".into(), name.to_string()),
        ("DROVE_SANDBOX".into(), "discard".into()),
    ]);
    let def = def.validated().map_err(invalid)?;
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
            return Err(why);
        }
    };
    let end = end.map_err(|_| "the build was lost".to_string())?;
    if end.state != drove_proto::mesos::TaskState::TaskFinished {
        let how = end.message.lines().next().unwrap_or("").to_string();
        let mut why = vec![format!("the build failed at \"{step}\" ({how})")];
        why.extend(log.failure_excerpt());
        return Err(why.join("\n"));
    }
    let Some(task) = task.or(end.task_id.clone()) else {
        return Err("the build finished, but its task is not known".into());
    };
    // What it left behind, collected from its agent: the app (always), its node_modules when
    // the PaaS asked for them, the install cache after a fresh install with a lockfile.
    let app = collect(paas, &task, "app")
        .await?
        .ok_or("the build finished without leaving the app (.drove-app.tar.zst)")?;
    let modules = match reused {
        Some(r) => Some(r),
        None => {
            let made = collect(paas, &task, "modules").await?;
            if let (Some(artifact), Some(key)) = (&made, modules_key) {
                super::remember(paas, name, super::Cache::Modules, key, artifact.clone());
            }
            made
        }
    };
    if let Some(key) = deps_key {
        if let Some(artifact) = collect(paas, &task, "deps").await? {
            super::remember(paas, name, super::Cache::Deps, key, artifact);
        }
    }
    Ok(Artifacts { app, modules })
}

/// Collects the build task's output `kind` (`.drove-<kind>.tar.zst` in its sandbox) through
/// the master into the artifact store; None when it left none.
async fn collect(paas: &Paas, task: &str, kind: &str) -> Result<Option<String>, String> {
    let framework = paas
        .lock()
        .framework_id
        .clone()
        .ok_or("collecting the build's output: no framework id")?;
    let resp = paas
        .master_get(&format!(
            "/master/frameworks/{framework}/tasks/{task}/outputs/{kind}"
        ))
        .timeout(BUILD_LIMIT)
        .send()
        .await
        .map_err(|e| format!("collecting the build's {kind}: {e}"))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        let status = resp.status();
        let why = resp.text().await.unwrap_or_default();
        return Err(format!(
            "collecting the build's {kind}: {status}: {}",
            why.trim()
        ));
    }
    let dir = paas.push.artifacts_dir();
    receive(&dir, Body::from_stream(resp.bytes_stream()))
        .await
        .map(Some)
        .map_err(|(_, why)| format!("collecting the build's {kind}: {why}"))
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
