//! Deploys by `git push`: each pushed app has a bare repository served over git's smart HTTP
//! (`http_backend`), and the deploy happens inside the push, in a pre-receive step (as Dokku
//! does), before the ref moves.
//!
//! - `POST /v1/push/apps {"name"}` (admin) creates the repository, a deploy token and a webhook
//!   secret. `/git/<app>.git` takes HTTP basic auth with the deploy token (or the admin token)
//!   as the password; anything else gets 401 with `WWW-Authenticate: Basic`, so git asks.
//! - A push runs `git receive-pack` under `git http-backend`, whose pre-receive hook is the
//!   `drove hook pre-receive` command: it sends the ref updates and git's quarantine paths to
//!   `POST /v1/push/apps/<app>/receive` with a single-use push token, and prints what comes
//!   back (git shows it as `remote:` lines). The last line says whether the push is accepted.
//! - The deploy runs in its own task, so a client that leaves mid-deploy leaves no half-made
//!   release: it finishes, or it is rolled back. One deploy at a time per app; a second push
//!   is refused with a clear message.
//! - A release: the descriptor (`descriptor`), the commit packed as a content-addressed
//!   artifact (`artifacts`), and the app definition made from them, rolled out by the PaaS
//!   core's health-gated deploy. A release whose instances never become healthy is rolled back
//!   and the push rejected; the previous release keeps serving throughout.
//!
//! Not yet: builds (npm) as cluster tasks, GitHub webhooks, config vars, `drove releases` and
//! rollback by release number.

pub mod artifacts;
pub mod build;
pub mod descriptor;
pub mod http_backend;
pub mod relay;
pub mod releases;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use drove_proto::auth::{same_secret, Credential};
use drove_proto::push::{Destroyed, NewApp, Webhook};

use crate::http_error::{error, ApiError};
use crate::model::app::{normalize_id, route_name};
use crate::store::Op;
use crate::Paas;
use descriptor::Descriptor;

/// A pushed app's own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushApp {
    pub name: String,
    pub deploy_token: String,
    pub webhook_secret: String,
    /// Releases made so far (the next is `releases + 1`).
    #[serde(default)]
    pub releases: u32,
    /// This app's dependency cache: the `node_modules` of its last fresh install.
    #[serde(default)]
    pub deps_cache: Option<DepsCache>,
    /// Its last build's `node_modules` as released (pruned), keyed by lockfile hash and
    /// whether it was pruned: a build with the same key reuses it instead of packing its own.
    #[serde(default)]
    pub modules_cache: Option<DepsCache>,
    /// Random, chosen when the app is created: its tasks' user is named after it, so an app
    /// destroyed and created again under the same name gets a new uid on every agent and
    /// cannot read what the old one left behind.
    #[serde(default)]
    pub incarnation: String,
}

impl PushApp {
    /// The user its builds and instances run as (each agent gives it a uid of its own).
    pub fn task_user(&self) -> String {
        if self.incarnation.is_empty() {
            format!("app-{}", self.name)
        } else {
            format!("app-{}-{}", self.name, self.incarnation)
        }
    }
}

/// A dependency cache entry: the artifact a build uploaded after `npm ci` of a lockfile whose
/// SHA-256 (computed by the PaaS) is `lock_hash`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DepsCache {
    pub lock_hash: String,
    pub artifact: String,
}

/// Which of an app's caches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cache {
    /// What `npm ci` installed (builds start from it).
    Deps,
    /// What a build released (instances mount it).
    Modules,
}

/// Records `name`'s `which` cache for `key`, unless it has one for it already (an entry is
/// never replaced by another build's upload for the same key).
pub(crate) fn remember(paas: &Paas, name: &str, which: Cache, key: String, artifact: String) {
    let mut apps = locked(&paas.push.apps);
    let Some(a) = apps.get_mut(name) else { return };
    let slot = match which {
        Cache::Deps => &mut a.deps_cache,
        Cache::Modules => &mut a.modules_cache,
    };
    if slot.as_ref().is_some_and(|c| c.lock_hash == key) {
        return;
    }
    *slot = Some(DepsCache {
        lock_hash: key,
        artifact,
    });
    paas.store.enqueue(Op::PutPushApp(
        serde_json::to_string(&*a).unwrap_or_default(),
        name.to_string(),
    ));
}

/// The pushed apps, their repositories and the pushes in progress.
pub struct Pushes {
    data_dir: PathBuf,
    pub(crate) apps: Mutex<HashMap<String, PushApp>>,
    /// Apps with a deploy in progress.
    pub(crate) deploying: Mutex<HashSet<String>>,
    /// Apps whose repository is receiving a push (one at a time).
    receiving: Mutex<HashSet<String>>,
    /// Uploads of builds in progress.
    /// GitHub deliveries seen.
    pub(crate) deliveries: webhook::Deliveries,
    /// Single-use push tokens → (app, issued).
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a push token stays usable: the whole receive of one push.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The most a pushed app's repository may hold (its objects, side branches included); a push
/// to a repository past it is refused until branches are deleted.
pub const REPO_QUOTA: u64 = 2 << 30;
/// The largest push (a git pack) accepted.
pub const MAX_PACK: usize = 512 * 1024 * 1024;

/// The most refs one push may update (each is looked at).
pub const MAX_UPDATES: usize = 100;

/// An app's repository receiving a push; the next push to it waits for this one to end.
struct Receiving(Arc<Paas>, String);

impl Drop for Receiving {
    fn drop(&mut self) {
        locked(&self.0.push.receiving).remove(&self.1);
    }
}

/// The bytes a repository holds (links not followed, a push's quarantine not counted),
/// counted up to just past `limit`.
fn repo_size_within(dir: &std::path::Path, limit: u64) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                if !e.file_name().to_string_lossy().starts_with("incoming-") {
                    todo.push(e.path());
                }
            } else {
                total = total.saturating_add(meta.len());
                if total > limit {
                    return total;
                }
            }
        }
    }
    total
}

impl Pushes {
    pub fn new(data_dir: PathBuf, apps: Vec<PushApp>) -> Pushes {
        Pushes {
            data_dir,
            apps: Mutex::new(apps.into_iter().map(|a| (a.name.clone(), a)).collect()),
            deploying: Mutex::new(HashSet::new()),
            receiving: Mutex::new(HashSet::new()),
            deliveries: webhook::Deliveries::default(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }

    fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("git")
    }

    pub(crate) fn repo(&self, name: &str) -> PathBuf {
        self.repos_dir().join(format!("{name}.git"))
    }

    pub(crate) fn app(&self, name: &str) -> Option<PushApp> {
        locked(&self.apps).get(name).cloned()
    }

    fn issue_token(&self, app: &str) -> String {
        let token = crate::tokens::generate();
        let mut tokens = locked(&self.tokens);
        tokens.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        tokens.insert(token.clone(), (app.to_string(), Instant::now()));
        token
    }

    /// Takes a push token (once): the app it was issued for.
    fn redeem(&self, token: &str) -> Option<String> {
        let (app, at) = locked(&self.tokens).remove(token)?;
        (at.elapsed() < TOKEN_TTL).then_some(app)
    }
}

/// The pre-receive hook, installed in every repository: the `drove` binary the PaaS runs as
/// (`DROVE_BIN`, set on each `http-backend` it starts) does the work.
const HOOK: &str = "#!/bin/sh\nexec \"${DROVE_BIN:?drove binary}\" hook pre-receive\n";

#[derive(Deserialize)]
pub struct CreateRequest {
    name: String,
}

/// `POST /v1/push/apps`: a new pushed app and its repository.
pub async fn create(State(paas): State<Arc<Paas>>, body: Bytes) -> Response {
    let req: CreateRequest = match drove_proto::decode(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e}")),
    };
    let id = match normalize_id(&req.name) {
        Ok(id) if !id[1..].contains('/') => id,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "name: a pushed app's name is one path segment",
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("name: {e}")),
    };
    let Some(name) = route_name(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "name: longer than a DNS label (63)",
        );
    };
    let _tx = paas.begin().await;
    if paas.push.app(&name).is_some() || paas.lock().apps.contains_key(&id) {
        return error(
            StatusCode::CONFLICT,
            format!("an app named {name:?} exists already"),
        );
    }
    let repo = paas.push.repo(&name);
    let init = tokio::process::Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(&repo)
        .output()
        .await;
    match init {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "git init {}: {}",
                    repo.display(),
                    String::from_utf8_lossy(&o.stderr)
                ),
            )
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("running git: {e}"),
            )
        }
    }
    let hook = repo.join("hooks").join("pre-receive");
    let wrote = std::fs::write(&hook, HOOK).and_then(|_| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
    });
    if let Err(e) = wrote {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", hook.display()),
        );
    }
    let app = PushApp {
        name: name.clone(),
        deploy_token: crate::tokens::generate(),
        webhook_secret: crate::tokens::generate(),
        releases: 0,
        deps_cache: None,
        modules_cache: None,
        incarnation: format!("{:08x}", rand::random::<u32>()),
    };
    if let Err(e) = paas
        .store
        .write(Op::PutPushApp(
            serde_json::to_string(&app).unwrap_or_default(),
            name.clone(),
        ))
        .await
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    locked(&paas.push.apps).insert(name.clone(), app.clone());
    let base = format!("http://{}", paas.args.listen);
    (
        StatusCode::CREATED,
        Json(NewApp {
            remote: format!("{base}/git/{name}.git"),
            deploy_token: app.deploy_token.clone(),
            webhook_url: format!("{base}/hooks/github/{name}"),
            webhook_secret: app.webhook_secret.clone(),
            url: paas.app_url(&name),
            app: name,
        }),
    )
        .into_response()
}

/// `DELETE /v1/push/apps/{app}`: the app (its instances stopped), its repository, its
/// releases and settings.
pub async fn destroy(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    if paas.push.app(&name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no pushed app {name:?}"));
    }
    if locked(&paas.push.deploying).contains(&name) {
        return error(
            StatusCode::CONFLICT,
            format!("{name} is deploying; try again when it is done"),
        );
    }
    let id = format!("/{name}");
    let exists = paas.lock().apps.get(&id).is_some_and(|a| !a.deleting);
    if exists {
        let tx = paas.begin().await;
        if let Err(e) = crate::ops::apps::delete(&tx, &id, true).await {
            return ApiError(e).into_response();
        }
    }
    if let Err(e) = paas.store.write(Op::DeletePushApp(name.clone())).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    locked(&paas.push.apps).remove(&name);
    let repo = paas.push.repo(&name);
    if let Err(e) = tokio::fs::remove_dir_all(&repo).await {
        tracing::warn!(repo = %repo.display(), error = %e, "removing the repository failed");
    }
    // Its artifacts, now nothing keeps them.
    let (n, bytes) = artifacts::collect(&paas).await;
    if n > 0 {
        tracing::info!(app = %name, artifacts = n, mib = bytes >> 20, "collected its artifacts");
    }
    Json(Destroyed {
        app: name,
        destroyed: true,
    })
    .into_response()
}

/// `GET /v1/push/apps/{app}/webhook` (the URL and secret); `POST` replaces the secret.
pub async fn webhook_show(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    match paas.push.app(&name) {
        Some(a) => Json(Webhook {
            webhook_url: format!("http://{}/hooks/github/{name}", paas.args.listen),
            webhook_secret: a.webhook_secret,
        })
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no pushed app {name:?}")),
    }
}

pub async fn webhook_rotate(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    // Written first, then used: a secret the store refused is never the one in force.
    let _tx = paas.begin().await;
    let Some(mut app) = paas.push.app(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no pushed app {name:?}"));
    };
    app.webhook_secret = crate::tokens::generate();
    let stored = serde_json::to_string(&app).unwrap_or_default();
    if let Err(e) = paas.store.write(Op::PutPushApp(stored, name.clone())).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    if let Some(a) = locked(&paas.push.apps).get_mut(&name) {
        a.webhook_secret = app.webhook_secret;
    }
    drop(_tx);
    webhook_show(State(paas), Path(name)).await
}

/// The password of an HTTP basic `Authorization` (git asks for it; the user name is free).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    match Credential::parse(v)? {
        Credential::Basic { password, .. } => Some(password),
        Credential::Bearer(_) => None,
    }
}

/// `/git/{repo}/{*rest}`: git's smart HTTP, for the app's deploy token or the admin token.
pub async fn git(
    State(paas): State<Arc<Paas>>,
    Path((repo, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let Some(name) = repo.strip_suffix(".git") else {
        return (StatusCode::NOT_FOUND, "no such repository\n").into_response();
    };
    let Some(app) = paas.push.app(name) else {
        return (StatusCode::NOT_FOUND, "no such repository\n").into_response();
    };
    let authorized = basic_password(req.headers())
        .is_some_and(|p| same_secret(&p, &app.deploy_token) || same_secret(&p, &paas.tokens.admin));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"drove git\"")],
            "give the app's deploy token (or the admin token) as the password\n",
        )
            .into_response();
    }
    let mut env = Vec::new();
    let mut hold: Option<Box<dyn Send + Sync>> = None;
    if rest == "git-receive-pack" {
        // git sends a push's body plain; a compressed one would hide its real size from the
        // bounds (git would inflate it past them).
        if req.headers().contains_key(header::CONTENT_ENCODING) {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a push's body is taken uncompressed\n",
            )
                .into_response();
        }
        if !locked(&paas.push.receiving).insert(name.to_string()) {
            return (
                StatusCode::CONFLICT,
                format!("another push to {name} is being received; push again when it is done\n"),
            )
                .into_response();
        }
        hold = Some(Box::new(Receiving(paas.clone(), name.to_string())));
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("drove"));
        env.push(("DROVE_BIN".to_string(), exe.display().to_string()));
        env.push((
            "DROVE_PUSH_URL".to_string(),
            format!("http://{}/v1/push/apps/{name}/receive", paas.args.listen),
        ));
        env.push(("DROVE_PUSH_TOKEN".to_string(), paas.push.issue_token(name)));
    }
    let (parts, body) = req.into_parts();
    let path_info = format!("/{repo}/{rest}");
    http_backend::serve(
        &paas.push.repos_dir(),
        http_backend::CgiRequest {
            method: &parts.method,
            path_info: &path_info,
            query: query.as_deref().unwrap_or(""),
            headers: &parts.headers,
            remote_user: name,
            env,
            max_pack: MAX_PACK as u64,
            hold,
        },
        body,
    )
    .await
}

/// What the hook sends.
#[derive(Debug, Serialize, Deserialize)]
pub struct Receive {
    /// `(old, new, ref)` of each update.
    pub updates: Vec<(String, String, String)>,
    /// The repository (the hook's working directory).
    pub git_dir: String,
    /// git's quarantine variables (`GIT_OBJECT_DIRECTORY`, ...).
    pub env: Vec<(String, String)>,
}

/// The variables git sets for a pre-receive hook's view of the pushed objects.
pub const QUARANTINE: [&str; 3] = [
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
];

/// `env` reduced to git's quarantine variables, each naming paths inside `repo` only.
fn quarantine_env(
    repo: &std::path::Path,
    env: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let inside = |p: &str| {
        let p = std::path::Path::new(p);
        p.is_absolute()
            && p.starts_with(repo)
            && !p
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    };
    let mut kept = Vec::new();
    for (k, v) in env {
        if !QUARANTINE.contains(&k.as_str()) {
            continue;
        }
        if !v.split(':').all(inside) {
            return Err(format!("{k}: {v:?} is not inside the app's repository"));
        }
        kept.push((k, v));
    }
    Ok(kept)
}

/// `POST /v1/push/apps/{app}/receive`: the deploy inside a push, its output streamed back.
pub async fn receive(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(Credential::parse)
    {
        Some(Credential::Bearer(t)) => t,
        _ => String::new(),
    };
    if paas.push.redeem(&token).as_deref() != Some(name.as_str()) {
        return (StatusCode::UNAUTHORIZED, "not a push token for this app\n").into_response();
    }
    let mut req: Receive = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    // The repository is the app's, whatever the hook says; of its environment only git's
    // quarantine variables pass, and only when they point inside that repository.
    let repo = paas.push.repo(&name);
    req.env = match quarantine_env(&repo, std::mem::take(&mut req.env)) {
        Ok(env) => env,
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    req.git_dir = repo.display().to_string();
    let (relay, rx) = relay::Relay::new();
    // Runs to its end whether or not the pusher is still there.
    tokio::spawn(async move {
        let verdict = deploy(&paas, &name, req, "push", &relay).await;
        let last = match verdict {
            Ok(()) => "ok".to_string(),
            // The verdict is one line; the reason's other lines (what a failed instance
            // wrote last) go before it.
            Err(why) => {
                let mut lines = why.lines();
                let first = lines.next().unwrap_or("").to_string();
                for l in lines {
                    relay.say(format!("       {l}")).await;
                }
                format!("rejected: {first}")
            }
        };
        relay.finish(last).await;
    });
    let lines = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|l| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{l}\n"))));
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(lines),
    )
        .into_response()
}

use futures::StreamExt;

/// The node on this machine (the agents of `drove up` share it), e.g. `v20.19.2`.
async fn node_version() -> Option<String> {
    let out = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Frees the app for the next push however the deploy ends.
pub(crate) struct Deploying<'a>(pub(crate) &'a Pushes, pub(crate) String);

impl Drop for Deploying<'_> {
    fn drop(&mut self) {
        locked(&self.0.deploying).remove(&self.1);
    }
}

pub(crate) const ZERO: &str = "0000000000000000000000000000000000000000";

/// Collects what a repository no longer references, once the push that deleted it is in.
fn collect_garbage_later(repo: PathBuf) {
    tokio::spawn(async move {
        // After the hook: the ref moves once it has answered.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let gc = tokio::process::Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["gc", "--quiet", "--prune=now"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(600), gc).await {
            Ok(Ok(o)) if o.status.success() => {}
            _ => tracing::warn!(repo = %repo.display(), "collecting the repository failed"),
        }
    });
}

/// The deploy: `Ok` accepts the push, `Err(reason)` rejects it.
pub(crate) async fn deploy(
    paas: &Arc<Paas>,
    name: &str,
    req: Receive,
    by: &str,
    out: &relay::Relay,
) -> Result<(), String> {
    if !locked(&paas.push.deploying).insert(name.to_string()) {
        return Err(format!(
            "another push is deploying {name}; push again when it is done"
        ));
    }
    let _deploying = Deploying(&paas.push, name.to_string());
    releases::not_suspended(paas, name)?;
    if req.updates.len() > MAX_UPDATES {
        return Err(format!(
            "a push may update at most {MAX_UPDATES} refs; this one updates {}",
            req.updates.len()
        ));
    }
    // A repository past its quota takes deletions only (the pushed objects wait in quarantine
    // and go with a refused push); a deletion is then collected.
    let repo = paas.push.repo(name);
    let deletes_only = req.updates.iter().all(|(_, new, _)| new == ZERO);
    let counted = repo.clone();
    let used = tokio::task::spawn_blocking(move || repo_size_within(&counted, REPO_QUOTA))
        .await
        .unwrap_or(0);
    if used > REPO_QUOTA && !deletes_only {
        return Err(format!(
            "{name}'s repository holds over {REPO_QUOTA} bytes, its quota; delete branches it \
             no longer needs (git push <remote> --delete <branch>) and push again"
        ));
    }
    if deletes_only {
        collect_garbage_later(repo);
    }
    let objects = artifacts::Objects {
        git_dir: PathBuf::from(&req.git_dir),
        env: req.env.clone(),
    };
    let mut deployed = false;
    for (_old, new, refname) in &req.updates {
        let Some(branch) = refname.strip_prefix("refs/heads/") else {
            out.say(format!(
                "{refname}: stored (not a branch: nothing to deploy)"
            ))
            .await;
            continue;
        };
        if new == ZERO {
            out.say(format!("{branch}: deleted")).await;
            continue;
        }
        if deployed {
            out.say(format!("{branch}: stored (one deploy per push)"))
                .await;
            continue;
        }
        let Some(pkg) = objects
            .file(new, "package.json", artifacts::MAX_DESCRIPTOR)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!(
                "no package.json at the top of {}",
                &new[..new.len().min(12)]
            ));
        };
        let descriptor = Descriptor::parse(&pkg).map_err(|e| format!("package.json: {e}"))?;
        if branch != descriptor.drove.branch {
            out.say(format!(
                "{branch}: stored; only {} deploys (drove.branch)",
                descriptor.drove.branch
            ))
            .await;
            continue;
        }
        descriptor
            .within(&paas.args.ceilings())
            .map_err(|e| format!("package.json: {e}"))?;
        if let Some(range) = &descriptor.engines_node {
            let have = node_version().await;
            match have
                .as_deref()
                .and_then(|h| descriptor::node_satisfies(range, h))
            {
                Some(false) => {
                    return Err(format!(
                        "engines.node: expected a node the agents have ({}), found {range:?}",
                        have.as_deref().unwrap_or("?")
                    ))
                }
                Some(true) => {}
                None => {
                    out.say(format!(
                        "engines.node {range:?}: not checked (only simple ranges are)"
                    ))
                    .await
                }
            }
        }
        out.say(format!(
            "-----> {name}: {} {}",
            descriptor.name,
            descriptor.version.as_deref().unwrap_or("")
        ))
        .await;
        let artifact = objects
            .pack(new, &paas.push.artifacts_dir(), artifacts::MAX_TREE)
            .await
            .map_err(|e| format!("packing {new}: {e}"))?;
        out.say(format!(
            "-----> packed {} as {artifact}",
            &new[..new.len().min(12)]
        ))
        .await;
        if let Some(dev) = descriptor.start_needs_pruned() {
            out.say(format!(
                "-----> warning: scripts.start runs {dev}, a devDependency, which is removed \
                 before the app starts: move it to dependencies, or set \
                 \"drove\": {{\"pruneDevDependencies\": false}}"
            ))
            .await;
        }
        // The config carries over from the release serving now (the build sees it too).
        let config = releases::serving(paas, name)
            .await
            .map_err(|e| format!("reading the releases: {e}"))?
            .map(|r| r.config)
            .unwrap_or_default();
        let mut input = releases::Input {
            commit: new.clone(),
            descriptor: String::from_utf8_lossy(&pkg).into_owned(),
            artifact: artifact.clone(),
            modules: None,
            config,
            by: by.to_string(),
            build_log: Vec::new(),
        };
        // Dependencies or a build script: built on the cluster into the artifact released.
        if descriptor.has_dependencies || descriptor.build.is_some() {
            let lock_hash = objects
                .file_hash(new, "package-lock.json", artifacts::MAX_LOCKFILE)
                .await
                .map_err(|e| e.to_string())?;
            let built = build::run(
                paas,
                name,
                &descriptor,
                &artifact,
                lock_hash,
                &input.config,
                out,
            )
            .await;
            input.build_log = built.log.lines();
            match built.result {
                Ok(b) => {
                    input.artifact = b.app;
                    input.modules = b.modules;
                }
                // A failed build is a failed release too, with its log.
                Err(why) => return Err(releases::build_failed(paas, name, input, why).await),
            }
        }
        releases::release(paas, name, input, out).await?;
        deployed = true;
    }
    Ok(())
}
