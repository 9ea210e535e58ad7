//! Releases of pushed apps: `v1`, `v2`, … each with its commit, descriptor, artifact, config,
//! status, log and what made it (a push, a webhook, a rollback, a config change), kept in
//! SQLite (`releases`). A release becomes the app's definition and rolls out through the PaaS
//! core's health-gated deploy; one that never becomes healthy is rolled back.
//!
//! Config vars are the app's environment: changing them makes a new release from the current
//! one's artifact (Heroku's semantics), as a rollback makes one from an older release's artifact
//! and config. Values are never logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::push::{ConfigVars, ReleaseSummary, Released, Releases};
use serde::{Deserialize, Serialize};

use super::descriptor::Descriptor;
use super::relay::Relay;
use super::{locked, Deploying};
use crate::http_error::{error, ApiError};
use crate::model::app::{
    AppDefinition, FetchUri, HealthCheckDef, InvalidApp, Limit, PortDefinition, ResourceLimits,
};
use crate::model::scaling::Scaling;
use crate::ops::OpsError;
use crate::store::{Op, StoreError};
use crate::Paas;

/// The longest a release's instances may take to become healthy.
pub const ROLLOUT_LIMIT: Duration = Duration::from_secs(300);

/// One release, as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    pub number: u32,
    pub commit: String,
    /// The `package.json` it was made from.
    pub descriptor: String,
    pub artifact: String,
    /// Its `node_modules`, packed apart (a layer of its own, shared by the releases built from
    /// the same lockfile, so a code-only push packs and unpacks only its code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
    /// Config var names → values (shown only to the admin API; never logged).
    pub config: BTreeMap<String, String>,
    /// "push", "webhook", "rollback to v2", "config".
    pub by: String,
    /// "succeeded", "failed", "deploying".
    pub status: String,
    pub created: String,
    pub log: Vec<String>,
}

/// What a new release is made from.
pub struct Input {
    pub commit: String,
    pub descriptor: String,
    pub artifact: String,
    pub modules: Option<String>,
    pub config: BTreeMap<String, String>,
    pub by: String,
    /// Its build's output, when it was built (the release's log starts with it).
    pub build_log: Vec<String>,
}

/// The app definition of a release.
fn definition(
    paas: &Paas,
    name: &str,
    d: &Descriptor,
    r: &Input,
    number: u32,
) -> Result<AppDefinition, String> {
    let url = |a: &str| format!("http://{}/v1/artifacts/{a}", paas.args.listen);
    let invalid = |e: InvalidApp| format!("the release's definition: {e}");
    let mut def = AppDefinition::named(&format!("/{name}")).map_err(invalid)?;
    // Its node_modules below its code: two layers on an agent, the first shared by releases.
    def.fetch = r
        .modules
        .iter()
        .chain([&r.artifact])
        .map(|a| FetchUri::archive(url(a), true))
        .collect();
    let check = |path: Option<String>| HealthCheckDef {
        grace_period_seconds: d.drove.check_grace_seconds,
        interval_seconds: 2,
        timeout_seconds: d.drove.check_timeout_seconds,
        ..HealthCheckDef::first_port(path)
    };
    def.health_checks = if d.checks.is_empty() {
        vec![check(None)]
    } else {
        d.checks
            .iter()
            .map(|c| HealthCheckDef {
                interval_seconds: c.interval_seconds,
                max_consecutive_failures: c.max_consecutive_failures,
                ..check(Some(c.path.clone()))
            })
            .collect()
    };
    def.port_definitions = Some((0..d.ports).map(|_| PortDefinition::any()).collect());
    let max = d.max_instances(&paas.args.ceilings());
    // Production unless the app's config says otherwise (Express and friends read it).
    def.env = r.config.clone();
    def.env
        .entry("NODE_ENV".into())
        .or_insert_with(|| "production".into());
    def.user = paas.push.app(name).map(|a| a.task_user());
    def.cmd = Some(d.command());
    def.instances = d.instances.clamp(d.drove.min_instances, max);
    def.cpus = d.cpus;
    def.mem = d.mem;
    // Guaranteed its cpus; bursting into idle CPU up to its limit.
    let limit = d
        .drove
        .cpus_limit
        .unwrap_or(paas.args.app_cpus_limit)
        .max(d.cpus);
    def.resource_limits = Some(ResourceLimits {
        cpus: Some(Limit::Value(limit)),
    });
    def.labels = BTreeMap::from([
        ("DROVE_RELEASE".into(), format!("v{number}")),
        ("DROVE_COMMIT".into(), r.commit.clone()),
        ("DROVE_ARTIFACT".into(), r.artifact.clone()),
        ("DROVE_PACKAGE".into(), d.name.clone()),
    ]);
    def.scaling = Some(Scaling {
        min_instances: d.drove.min_instances,
        max_instances: max,
        idle_seconds: f64::from(d.drove.idle_seconds),
        target_concurrency: d.drove.target_concurrency,
        ..Scaling::default()
    });
    def.https = (!d.drove.https.is_off()).then_some(d.drove.https);
    def.validated().map_err(invalid)
}

fn store_release(paas: &Paas, name: &str, r: &Release) {
    paas.store.enqueue(Op::PutRelease {
        app: name.to_string(),
        number: r.number,
        data: serde_json::to_string(r).unwrap_or_default(),
    });
}

/// A suspended app takes no release (a push, a webhook, a rollback, a config change): it
/// stays offline until an operator resumes it.
pub(crate) fn not_suspended(paas: &Paas, name: &str) -> Result<(), String> {
    let suspended = paas
        .lock()
        .apps
        .get(&format!("/{name}"))
        .is_some_and(|a| !a.deleting && a.def.suspended());
    if suspended {
        return Err(format!(
            "{name} is suspended by an operator; nothing is released until it is resumed \
             (drove resume {name})"
        ));
    }
    Ok(())
}

/// Takes the app's next release number: a failed release keeps its place in the history.
fn next_number(paas: &Paas, name: &str) -> u32 {
    let mut apps = locked(&paas.push.apps);
    let Some(a) = apps.get_mut(name) else {
        return 1;
    };
    a.releases += 1;
    paas.store.enqueue(Op::PutPushApp(
        serde_json::to_string(&*a).unwrap_or_default(),
        name.to_string(),
    ));
    a.releases
}

/// A new record of release `number` made from `input`; its log starts with the build's.
fn record_of(number: u32, input: &Input, status: &str) -> Release {
    Release {
        number,
        commit: input.commit.clone(),
        descriptor: input.descriptor.clone(),
        artifact: input.artifact.clone(),
        modules: input.modules.clone(),
        config: input.config.clone(),
        by: input.by.clone(),
        status: status.into(),
        created: crate::model::timestamp(),
        log: input.build_log.clone(),
    }
}

/// Records a release whose build failed, with the build's log and why; returns why, naming
/// the release.
pub(crate) async fn build_failed(paas: &Paas, name: &str, input: Input, why: String) -> String {
    let number = next_number(paas, name);
    let mut record = record_of(number, &input, "failed");
    record.log.push(format!("-----> v{number}: {why}"));
    store_release(paas, name, &record);
    format!("v{number}: {why}")
}

/// Says `line` to the pusher and keeps it in the release's log.
async fn note(out: &Relay, record: &mut Release, line: String) {
    record.log.push(line.clone());
    out.say(line).await;
}

/// Makes the next release from `input` and rolls it out; on failure rolls it back. Every
/// step is said on `out` and kept in the release's log.
pub async fn release(
    paas: &Arc<Paas>,
    name: &str,
    input: Input,
    out: &Relay,
) -> Result<u32, String> {
    let d =
        Descriptor::parse(input.descriptor.as_bytes()).map_err(|e| format!("package.json: {e}"))?;
    // Checked again here: a rollback or a config change releases an older descriptor, which
    // the ceilings in force now also bind.
    d.within(&paas.args.ceilings())
        .map_err(|e| format!("package.json: {e}"))?;
    let id = format!("/{name}");
    not_suspended(paas, name)?;
    let number = next_number(paas, name);
    let def = definition(paas, name, &d, &input, number)?;
    let mut record = record_of(number, &input, "deploying");
    let want = def.instances;
    let deployment = {
        let tx = paas.begin().await;
        // package.json's hostnames are claimed with the release: one another app holds refuses
        // it before anything changes. Dropping one later does not let it go (domains:remove).
        for h in &d.drove.hostnames {
            crate::ops::domains::claimable(paas, &id, h)
                .map_err(|e| format!("package.json: drove.hostnames: {e}"))?;
        }
        let deployed = crate::ops::apps::release(&tx, def)
            .await
            .map_err(|e| e.to_string())?;
        for h in &d.drove.hostnames {
            crate::ops::domains::add(&tx, &id, h)
                .await
                .map_err(|e| format!("package.json: drove.hostnames: {e}"))?;
        }
        deployed.deployment_id
    };
    note(
        out,
        &mut record,
        format!(
            "-----> v{number} ({}): rolling out {want} instance(s)",
            input.by
        ),
    )
    .await;
    store_release(paas, name, &record);
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (pending, failure) = {
            let s = paas.lock();
            let Some(a) = s.apps.get(&id) else {
                return Err("the app was removed during the deploy".into());
            };
            let pending = a.deployment.as_ref().is_some_and(|x| x.id == deployment);
            let failure = a
                .last_task_failure
                .as_ref()
                .filter(|f| f.version == a.version)
                .map(|f| f.message.clone());
            (pending, failure)
        };
        if !pending {
            break;
        }
        let too_long = started.elapsed() > ROLLOUT_LIMIT;
        // A pusher that leaves never sees its ref move: the release goes back too, so the app
        // never runs what its repository does not have.
        let left = out.left().then(|| "the pusher left".to_string());
        let failed = failure
            .filter(|_| started.elapsed() > Duration::from_secs(1))
            .or(too_long.then(|| format!("not healthy within {} s", ROLLOUT_LIMIT.as_secs())))
            .or(left);
        if let Some(why) = failed {
            note(
                out,
                &mut record,
                format!("-----> v{number} failed, rolling back: {why}"),
            )
            .await;
            let rolled_back = {
                let tx = paas.begin().await;
                crate::ops::deployments::rollback(&tx, &deployment).await
            };
            if let Err(e) = rolled_back {
                // The deployment is still there (or already replaced): say so rather than
                // claim the previous release is back.
                tracing::warn!(app = %name, %deployment, error = %e, "rolling back failed");
                note(out, &mut record, format!("-----> rolling back failed: {e}")).await;
            }
            record.status = "failed".into();
            store_release(paas, name, &record);
            return Err(format!("v{number} did not become healthy: {why}"));
        }
    }
    note(
        out,
        &mut record,
        format!(
            "-----> released v{number}: {}{} (rolled out in {:.1} s)",
            paas.app_url(name),
            paas.app_https_url(name)
                .map(|u| format!(" and {u}"))
                .unwrap_or_default(),
            started.elapsed().as_secs_f64()
        ),
    )
    .await;
    record.status = "succeeded".into();
    store_release(paas, name, &record);
    // What no release keeps any more goes (after this release is on disk).
    let paas2 = paas.clone();
    tokio::spawn(async move {
        let _ = paas2.store.flush().await;
        let (n, bytes) = super::artifacts::collect(&paas2).await;
        if n > 0 {
            tracing::info!(
                artifacts = n,
                mib = bytes >> 20,
                "collected artifacts no release keeps"
            );
        }
    });
    Ok(number)
}

/// The app's releases, oldest first.
async fn all(paas: &Paas, name: &str) -> Result<Vec<Release>, Response> {
    of(paas, name)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// App `name`'s releases, oldest first.
pub(crate) async fn of(paas: &Paas, name: &str) -> Result<Vec<Release>, StoreError> {
    let rows = paas.store.releases(name).await?;
    Ok(rows
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect())
}

fn no_app(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no pushed app {name:?}"))
}

/// `GET /v1/push/apps/{app}/releases`: every release, without logs and config values.
pub async fn list(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    if paas.push.app(&name).is_none() {
        return no_app(&name);
    }
    match all(&paas, &name).await {
        Ok(rs) => Json(Releases {
            releases: rs
                .iter()
                .map(|r| ReleaseSummary {
                    version: format!("v{}", r.number),
                    commit: r.commit.clone(),
                    artifact: r.artifact.clone(),
                    by: r.by.clone(),
                    status: r.status.clone(),
                    created: r.created.clone(),
                    config: r.config.keys().cloned().collect(),
                })
                .collect(),
        })
        .into_response(),
        Err(r) => r,
    }
}

fn parse_version(v: &str) -> Option<u32> {
    v.trim_start_matches('v').parse().ok()
}

/// `GET /v1/push/apps/{app}/releases/{vN}`: one release, whole.
pub async fn info(
    State(paas): State<Arc<Paas>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    if paas.push.app(&name).is_none() {
        return no_app(&name);
    }
    let Some(n) = parse_version(&version) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("release: expected vN, found {version:?}"),
        );
    };
    match all(&paas, &name).await {
        Ok(rs) => match rs.into_iter().find(|r| r.number == n) {
            Some(r) => Json(r).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("{name} has no release v{n}")),
        },
        Err(r) => r,
    }
}

/// Runs one release made outside a push (rollback, config); its number once it serves.
async fn run(paas: &Arc<Paas>, name: &str, input: Input) -> Result<u32, OpsError> {
    if !locked(&paas.push.deploying).insert(name.to_string()) {
        return Err(OpsError::Conflict(format!(
            "another deploy of {name} is in progress; try again when it is done"
        )));
    }
    let paas2 = paas.clone();
    let name2 = name.to_string();
    // In its own task: a client that leaves does not stop the rollout half-way.
    let task = tokio::spawn(async move {
        let _deploying = Deploying(&paas2.push, name2.clone());
        release(&paas2, &name2, input, &super::relay::Relay::discard()).await
    });
    match task.await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(why)) => Err(OpsError::Failed(why)),
        Err(e) => Err(OpsError::Failed(format!("the release stopped: {e}"))),
    }
}

/// A release's outcome as the API answers it.
fn released(name: &str, outcome: Result<u32, OpsError>) -> Response {
    match outcome {
        Ok(n) => Json(Released {
            app: name.to_string(),
            version: format!("v{n}"),
            status: "succeeded".into(),
        })
        .into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// The release now serving: the latest that succeeded, if any.
pub(crate) async fn serving(paas: &Paas, name: &str) -> Result<Option<Release>, String> {
    let rows = paas.store.releases(name).await.map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .rev()
        .filter_map(|r| serde_json::from_str::<Release>(r).ok())
        .find(|r| r.status == "succeeded"))
}

/// [`serving`], or the API's answer when there is none.
async fn current(paas: &Paas, name: &str) -> Result<Release, Response> {
    serving(paas, name)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e))?
        .ok_or_else(|| {
            error(
                StatusCode::CONFLICT,
                format!("{name} has no release yet: push first"),
            )
        })
}

#[derive(Deserialize)]
struct RollbackRequest {
    #[serde(default)]
    to: Option<String>,
}

/// `POST /v1/push/apps/{app}/rollback {"to": "vN"?}`: a new release from an older one's artifact
/// and config (default: the succeeded release before the current one).
pub async fn rollback(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if paas.push.app(&name).is_none() {
        return no_app(&name);
    }
    let req: RollbackRequest = if body.is_empty() {
        RollbackRequest { to: None }
    } else {
        match drove_proto::decode(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    };
    let to = match req.to.as_deref() {
        None => None,
        Some(v) => match parse_version(v) {
            Some(n) => Some(n),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("to: expected vN, found {v:?}"),
                )
            }
        },
    };
    released(&name, roll_back(&paas, &name, to).await)
}

/// Rolls app `name` back to release `to` (default: the succeeded release before the current
/// one): a new release from its artifact and config, rolled out; its number once it serves.
pub(crate) async fn roll_back(
    paas: &Arc<Paas>,
    name: &str,
    to: Option<u32>,
) -> Result<u32, OpsError> {
    if paas.push.app(name).is_none() {
        return Err(OpsError::NotFound(format!("no pushed app {name:?}")));
    }
    let releases = of(paas, name).await?;
    let target = match to {
        Some(n) => match releases.iter().find(|r| r.number == n) {
            Some(r) if r.status == "succeeded" => r.clone(),
            Some(_) => {
                return Err(OpsError::Conflict(format!("to: v{n} never succeeded")));
            }
            None => {
                return Err(OpsError::NotFound(format!(
                    "to: {name} has no release v{n}"
                )))
            }
        },
        None => {
            let mut ok = releases.iter().rev().filter(|r| r.status == "succeeded");
            let _current = ok.next();
            match ok.next() {
                Some(r) => r.clone(),
                None => {
                    return Err(OpsError::Conflict(format!(
                        "{name} has no earlier release to roll back to"
                    )))
                }
            }
        }
    };
    let dir = paas.push.artifacts_dir();
    let kept = std::iter::once(&target.artifact)
        .chain(target.modules.iter())
        .all(|a| dir.join(a).is_file());
    if !kept {
        return Err(OpsError::Conflict(format!(
            "v{}'s artifacts are no longer kept (those of the last {} releases are)",
            target.number,
            super::artifacts::RELEASES_KEPT
        )));
    }
    let input = Input {
        commit: target.commit.clone(),
        descriptor: target.descriptor.clone(),
        artifact: target.artifact.clone(),
        modules: target.modules.clone(),
        config: target.config.clone(),
        by: format!("rollback to v{}", target.number),
        build_log: Vec::new(),
    };
    run(paas, name, input).await
}

/// `GET /v1/push/apps/{app}/config`: the app's config vars.
pub async fn config(State(paas): State<Arc<Paas>>, Path(name): Path<String>) -> Response {
    if paas.push.app(&name).is_none() {
        return no_app(&name);
    }
    match config_of(&paas, &name).await {
        Ok(config) => Json(ConfigVars { config }).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// App `name`'s config vars (those of the release serving; none before the first).
pub(crate) async fn config_of(
    paas: &Paas,
    name: &str,
) -> Result<BTreeMap<String, String>, OpsError> {
    if paas.push.app(name).is_none() {
        return Err(OpsError::NotFound(format!("no pushed app {name:?}")));
    }
    Ok(current(paas, name)
        .await
        .map(|r| r.config)
        .unwrap_or_default())
}

#[derive(Deserialize)]
struct ConfigChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
}

/// Why a config var may not be named `k`: drove sets it for each instance (`PORT`, `HOST`,
/// Mesos's and Marathon's) or for itself (`DROVE_*`).
pub(crate) fn reserved(k: &str) -> Option<&'static str> {
    if k == "HOST" || k.starts_with("PORT") {
        Some("drove sets it for each instance (its host and ports)")
    } else if k.starts_with("MESOS_") || k.starts_with("MARATHON_") {
        Some("drove sets it for each instance, as Mesos and Marathon do")
    } else if k.starts_with("DROVE_") {
        Some("drove's own")
    } else {
        None
    }
}

fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `PATCH /v1/push/apps/{app}/config {"set": {...}, "unset": [...]}`: a new release with the
/// changed config, rolled out.
pub async fn set_config(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if paas.push.app(&name).is_none() {
        return no_app(&name);
    }
    let change: ConfigChange = match drove_proto::decode(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    for k in change.set.keys().chain(change.unset.iter()) {
        if !valid_name(k) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{k:?}: expected a config var name (letters, digits and _, not starting with a digit)"),
            );
        }
    }
    for k in change.set.keys() {
        if let Some(why) = reserved(k) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{k}: not a config var an app sets: {why}"),
            );
        }
    }
    let base = match current(&paas, &name).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut config = base.config.clone();
    for k in &change.unset {
        config.remove(k);
    }
    config.extend(change.set);
    let input = Input {
        commit: base.commit,
        descriptor: base.descriptor,
        artifact: base.artifact,
        modules: base.modules,
        config,
        by: "config".into(),
        build_log: Vec::new(),
    };
    released(&name, run(&paas, &name, input).await)
}
