//! `/v2/apps` and `/v2/tasks`: Marathon's app and task resources.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{error, wants};
use crate::app::{merge, normalize_id, route_name, AppDefinition, InvalidApp};
use crate::events;
use crate::state::{new_rt, timestamp, AppRt, Instance, State as PaasState};
use crate::store::Op;
use crate::Paas;

/// The query parameters of a request, repeated keys kept.
pub(super) fn query(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

pub(super) fn flag(q: &[(String, String)], name: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == name && (v.is_empty() || v == "true" || v == "1"))
}

fn invalid(e: &InvalidApp) -> Response {
    let status = match e {
        InvalidApp::Json(_) => StatusCode::BAD_REQUEST,
        InvalidApp::Rules(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, Json(e.body())).into_response()
}

pub fn task_json(i: &Instance) -> Value {
    let mut t = json!({
        "id": i.task_id, "appId": i.app_id, "host": i.host, "ports": i.ports,
        "servicePorts": [], "slaveId": i.agent_id, "stagedAt": i.staged_at,
        "startedAt": i.started_at, "version": i.version, "state": i.state.as_str(),
        "ipAddresses": [{"ipAddress": i.ip.as_deref().unwrap_or(&i.host), "protocol": "IPv4"}],
    });
    if i.has_checks {
        if let Some(alive) = i.healthy {
            t["healthCheckResults"] = json!([{
                "alive": alive, "consecutiveFailures": if alive { 0 } else { 1 },
                "firstSuccess": null, "lastSuccess": null, "lastFailure": null,
                "taskId": i.task_id, "instanceId": i.task_id,
            }]);
        } else {
            t["healthCheckResults"] = json!([]);
        }
    }
    t
}

/// Marathon's app object: the definition plus its version, counts, deployments and tasks.
pub fn app_json(s: &PaasState, a: &AppRt, tasks: bool) -> Value {
    let mut v = a.def.to_json();
    let mine: Vec<&Instance> = s.instances_of(&a.def.id).collect();
    let running = mine
        .iter()
        .filter(|i| i.state == drove_proto::mesos::TaskState::TaskRunning)
        .count();
    let healthy = mine
        .iter()
        .filter(|i| i.has_checks && i.healthy == Some(true))
        .count();
    let unhealthy = mine
        .iter()
        .filter(|i| i.has_checks && i.healthy == Some(false))
        .count();
    v["version"] = json!(a.version);
    v["versionInfo"] =
        json!({"lastScalingAt": a.scaling_version, "lastConfigChangeAt": a.config_version});
    v["tasksRunning"] = json!(running);
    v["tasksStaged"] = json!(mine.len() - running);
    v["tasksHealthy"] = json!(healthy);
    v["tasksUnhealthy"] = json!(unhealthy);
    v["deployments"] = json!(a
        .deployment
        .iter()
        .map(|d| json!({"id": d.id}))
        .collect::<Vec<_>>());
    if let Some(f) = &a.last_task_failure {
        v["lastTaskFailure"] = f.clone();
    }
    if tasks {
        v["tasks"] = json!(mine.iter().map(|i| task_json(i)).collect::<Vec<_>>());
    }
    v
}

fn embeds_tasks(q: &[(String, String)]) -> bool {
    q.iter()
        .any(|(k, v)| k == "embed" && (v == "apps.tasks" || v == "app.tasks"))
}

pub async fn list(State(paas): State<Arc<Paas>>, RawQuery(raw): RawQuery) -> Json<Value> {
    let q = query(&raw);
    let id_filter = q.iter().find(|(k, _)| k == "id").map(|(_, v)| v.clone());
    let cmd_filter = q.iter().find(|(k, _)| k == "cmd").map(|(_, v)| v.clone());
    let label_filter = q.iter().find(|(k, _)| k == "label").map(|(_, v)| v.clone());
    let tasks = embeds_tasks(&q);
    let s = paas.lock();
    let apps: Vec<Value> = s
        .apps
        .values()
        .filter(|a| !a.deleting)
        .filter(|a| {
            id_filter
                .as_ref()
                .is_none_or(|f| a.def.id.contains(f.as_str()))
        })
        .filter(|a| {
            cmd_filter
                .as_ref()
                .is_none_or(|f| a.def.cmd.as_deref().is_some_and(|c| c.contains(f.as_str())))
        })
        .filter(|a| {
            label_filter
                .as_ref()
                .is_none_or(|f| match f.split_once("==") {
                    Some((k, v)) => a.def.labels.get(k).is_some_and(|x| x == v),
                    None => a.def.labels.contains_key(f.as_str()),
                })
        })
        .map(|a| app_json(&s, a, tasks))
        .collect();
    Json(json!({ "apps": apps }))
}

/// Refuses definitions no agent could ever run, from the largest agent the master reports
/// (read at most every few seconds; unknown when the master cannot be read).
async fn check_capacity(paas: &Paas, def: &AppDefinition) -> Result<(), Response> {
    let Some((cpus, mem)) = paas.capacity().await else {
        return Ok(());
    };
    let bad = |path: &str, msg: String| invalid(&InvalidApp::field(path, msg));
    if def.cpus > cpus {
        return Err(bad(
            "/cpus",
            format!(
                "{} cpus is more than the largest agent has ({cpus})",
                def.cpus
            ),
        ));
    }
    if def.mem > mem {
        return Err(bad(
            "/mem",
            format!(
                "{} MiB is more than the largest agent has ({mem} MiB)",
                def.mem
            ),
        ));
    }
    Ok(())
}

fn locked(app: &AppRt) -> Option<Response> {
    let d = app.deployment.as_ref()?;
    Some(
        (
            StatusCode::CONFLICT,
            Json(json!({
                "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.", d.id),
                "deployments": [{"id": d.id}],
            })),
        )
            .into_response(),
    )
}

pub async fn create(
    State(paas): State<Arc<Paas>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let def = match AppDefinition::parse(&body) {
        Ok(d) => d,
        Err(e) => return invalid(&e),
    };
    if let Err(r) = check_capacity(&paas, &def).await {
        return r;
    }
    let _gate = paas.writes.lock().await;
    if let Some(r) = route_taken(&paas, &def) {
        return r;
    }
    if paas.lock().apps.contains_key(&def.id) {
        return error(
            StatusCode::CONFLICT,
            format!("An app with id [{}] already exists.", def.id),
        );
    }
    let version = timestamp();
    let rt = new_rt(def.clone(), version.clone(), version.clone(), version);
    if let Err(e) = paas.store.write(Op::PutApp(rt.stored())).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let body = {
        let mut s = paas.lock();
        if s.apps.contains_key(&def.id) {
            return error(
                StatusCode::CONFLICT,
                format!("An app with id [{}] already exists.", def.id),
            );
        }
        s.install(rt, "StartApplication", None);
        s.events
            .publish(events::api_post(&peer.ip().to_string(), "/v2/apps", &def));
        let a = &s.apps[&def.id];
        app_json(&s, a, false)
    };
    paas.kick.notify_one();
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v2/apps{}", def.id))],
        Json(body),
    )
        .into_response()
}

/// What follows the app id in a `/v2/apps/{*rest}` path.
#[derive(Debug, PartialEq)]
enum Sub {
    App,
    Restart,
    Versions(Option<String>),
    Tasks(Option<String>),
}

fn split(rest: &str) -> (String, Sub) {
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let n = parts.len();
    let id = |k: usize| format!("/{}", parts[..k].join("/"));
    if n >= 2 && parts[n - 1] == "restart" {
        return (id(n - 1), Sub::Restart);
    }
    if n >= 2 && parts[n - 1] == "versions" {
        return (id(n - 1), Sub::Versions(None));
    }
    if n >= 3 && parts[n - 2] == "versions" {
        return (id(n - 2), Sub::Versions(Some(parts[n - 1].to_string())));
    }
    if n >= 2 && parts[n - 1] == "tasks" {
        return (id(n - 1), Sub::Tasks(None));
    }
    if n >= 3 && parts[n - 2] == "tasks" {
        return (id(n - 2), Sub::Tasks(Some(parts[n - 1].to_string())));
    }
    (id(n), Sub::App)
}

fn no_app(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"))
}

pub async fn get_sub(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (id, sub) = split(&rest);
    match sub {
        Sub::App => {
            let s = paas.lock();
            match s.apps.get(&id).filter(|a| !a.deleting) {
                Some(a) => Json(json!({"app": app_json(&s, a, true)})).into_response(),
                None => no_app(&id),
            }
        }
        Sub::Versions(v) => {
            if !paas.lock().apps.contains_key(&id) {
                return no_app(&id);
            }
            let versions = match paas.store.versions(&id).await {
                Ok(v) => v,
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            };
            match v {
                None => {
                    let mut list: Vec<String> = versions.into_iter().map(|(v, _)| v).collect();
                    list.reverse();
                    Json(json!({ "versions": list })).into_response()
                }
                Some(v) => match versions.into_iter().find(|(ver, _)| *ver == v) {
                    Some((ver, def)) => match serde_json::from_str::<AppDefinition>(&def) {
                        Ok(d) => {
                            let mut j = d.to_json();
                            j["version"] = json!(ver);
                            Json(j).into_response()
                        }
                        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    },
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("App '{id}' does not exist in version {v}"),
                    ),
                },
            }
        }
        Sub::Tasks(None) => {
            let s = paas.lock();
            if !s.apps.contains_key(&id) {
                return no_app(&id);
            }
            let tasks: Vec<&Instance> = s.instances_of(&id).collect();
            if wants(&headers, "text/plain") {
                let mut text = String::new();
                for t in &tasks {
                    text.push_str(&format!(
                        "{}\t{}\t{}:{}\n",
                        id,
                        0,
                        t.host,
                        t.ports.first().copied().unwrap_or(0)
                    ));
                }
                return ([(header::CONTENT_TYPE, "text/plain")], text).into_response();
            }
            let _ = query(&raw);
            Json(json!({"tasks": tasks.iter().map(|i| task_json(i)).collect::<Vec<_>>()}))
                .into_response()
        }
        Sub::Tasks(Some(t)) => {
            let s = paas.lock();
            match s.instances.get(&t).filter(|i| i.app_id == id) {
                Some(i) => Json(json!({"task": task_json(i)})).into_response(),
                None => error(StatusCode::NOT_FOUND, format!("Task '{t}' does not exist")),
            }
        }
        Sub::Restart => error(StatusCode::METHOD_NOT_ALLOWED, "use POST to restart"),
    }
}

/// Installs `def` as the app's new version. `scale_only` keeps the running instances.
/// Stores a definition and installs it as a deployment (the caller holds `paas.writes` and has
/// made its checks); returns the deployment id.
pub(crate) async fn install_definition(
    paas: &Arc<Paas>,
    def: AppDefinition,
    previous: Option<AppDefinition>,
    action: &'static str,
    version: String,
    config_version: String,
    scaling_version: String,
) -> Result<String, crate::store::StoreError> {
    let rt = new_rt(def, version, config_version, scaling_version);
    paas.store.write(Op::PutApp(rt.stored())).await?;
    let deployment = paas.lock().install(rt, action, previous);
    paas.kick.notify_one();
    Ok(deployment)
}

async fn change(
    paas: &Arc<Paas>,
    def: AppDefinition,
    previous: Option<AppDefinition>,
    action: &'static str,
    scale_only: bool,
    force: bool,
) -> Response {
    let version = timestamp();
    let (config_version, scaling_version) = {
        let s = paas.lock();
        match s.apps.get(&def.id) {
            Some(a) if !a.deleting => {
                if !force {
                    if let Some(r) = locked(a) {
                        return r;
                    }
                }
                if scale_only {
                    (a.config_version.clone(), version.clone())
                } else {
                    (version.clone(), version.clone())
                }
            }
            _ => (version.clone(), version.clone()),
        }
    };
    let created = previous.is_none();
    let deployment = match install_definition(
        paas,
        def,
        previous,
        action,
        version.clone(),
        config_version,
        scaling_version,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"deploymentId": deployment, "version": version})),
    )
        .into_response()
}

/// Refuses an app whose host name another app is served under (`/a/b` and `/a-b` are both
/// `a-b`).
fn route_taken(paas: &Paas, def: &AppDefinition) -> Option<Response> {
    let name = route_name(&def.id)?;
    let s = paas.lock();
    let other = s.apps.values().find(|a| {
        !a.deleting && a.def.id != def.id && route_name(&a.def.id).as_deref() == Some(name.as_str())
    })?;
    Some(invalid(&InvalidApp::field(
        "/id",
        format!(
            "'{}' would be served as {name}, which app '{}' already uses",
            def.id, other.def.id
        ),
    )))
}

async fn update(
    paas: Arc<Paas>,
    rest: String,
    raw: Option<String>,
    body: Bytes,
    create_missing: bool,
) -> Response {
    let (id, sub) = split(&rest);
    if sub != Sub::App {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only the app itself can be updated",
        );
    }
    let id = match normalize_id(&id) {
        Ok(i) => i,
        Err(e) => return invalid(&InvalidApp::field("/id", e)),
    };
    let q = query(&raw);
    let force = flag(&q, "force");
    let _gate = paas.writes.lock().await;
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid(&InvalidApp::Json(e.to_string())),
    };
    let current = paas
        .lock()
        .apps
        .get(&id)
        .filter(|a| !a.deleting)
        .map(|a| a.def.clone());
    // `{"version": V}` alone: roll back to that version.
    if let (Some(cur), Some(v)) = (&current, patch.get("version").and_then(Value::as_str)) {
        if patch.as_object().is_some_and(|o| o.len() == 1) {
            let versions = match paas.store.versions(&id).await {
                Ok(v) => v,
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            };
            let Some((_, def)) = versions.into_iter().find(|(ver, _)| ver == v) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("App '{id}' does not exist in version {v}"),
                );
            };
            let Ok(def) = serde_json::from_str::<AppDefinition>(&def) else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "stored version unreadable",
                );
            };
            return change(
                &paas,
                def,
                Some(cur.clone()),
                "RestartApplication",
                false,
                force,
            )
            .await;
        }
    }
    // `?partialUpdate=false` (a PUT of a whole definition) replaces instead of merging.
    let replace = q.iter().any(|(k, v)| k == "partialUpdate" && v == "false");
    let (def, previous) = match current {
        Some(cur) => {
            let merged = if replace {
                Ok(patch.clone())
            } else {
                merge(&cur, &patch)
            };
            let merged = match merged {
                Ok(m) if m.is_object() => m,
                Ok(_) => return invalid(&InvalidApp::field("/", "expected a JSON object")),
                Err(e) => return invalid(&e),
            };
            let mut merged = merged;
            merged["id"] = json!(id);
            // Scaling a suspended app up (Marathon's way of bringing an app back) resumes it.
            let scales_up = patch["instances"].as_u64().is_some_and(|n| n > 0);
            if scales_up && patch["scaling"].is_null() {
                if let Some(s) = merged["scaling"].as_object_mut() {
                    s.remove("suspended");
                }
            }
            match AppDefinition::from_value(merged) {
                Ok(d) => (d, Some(cur)),
                Err(e) => return invalid(&e),
            }
        }
        None if create_missing => {
            let mut v = patch.clone();
            if v.is_object() {
                v["id"] = json!(id);
            }
            match AppDefinition::from_value(v) {
                Ok(d) => (d, None),
                Err(e) => return invalid(&e),
            }
        }
        None => return no_app(&id),
    };
    if let Err(r) = check_capacity(&paas, &def).await {
        return r;
    }
    if previous.is_none() {
        if let Some(r) = route_taken(&paas, &def) {
            return r;
        }
    }
    // Only the count or the scaling settings changed: nothing to restart.
    let scale_only = previous.as_ref().is_some_and(|p| {
        let mut p2 = p.clone();
        p2.instances = def.instances;
        p2.scaling = def.scaling.clone();
        p2 == def
    });
    let action = match (&previous, scale_only) {
        (None, _) => "StartApplication",
        (Some(_), true) => "ScaleApplication",
        (Some(_), false) => "RestartApplication",
    };
    // A manual scale of an autoscaled app holds as a floor until cleared (`floor: null`).
    let mut def = def;
    // Marathon's scale: a body of `instances` (and maybe the id) alone.
    let scale_call = patch.as_object().is_some_and(|o| {
        o.contains_key("instances") && o.keys().all(|k| k == "instances" || k == "id")
    });
    let manual = match (&previous, def.scaling.as_mut()) {
        (Some(p), Some(s)) if scale_only && scale_call => {
            s.floor = Some(def.instances);
            Some((p.instances, def.instances))
        }
        _ => None,
    };
    let app_id = def.id.clone();
    let resp = change(&paas, def, previous, action, scale_only, force).await;
    if let (Some((from, to)), true) = (manual, resp.status().is_success()) {
        let decision = paas.scaler.record(
            &app_id,
            from,
            to,
            &format!("manual scale: a floor of {to} until cleared"),
            "api",
        );
        paas.lock().events.publish(crate::events::scheduler(
            "drove_scaling_decision_event",
            decision,
        ));
    }
    resp
}

pub async fn put(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    update(paas, rest, raw, body, true).await
}

pub async fn patch(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    update(paas, rest, raw, body, false).await
}

pub async fn post_sub(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (id, sub) = split(&rest);
    if sub != Sub::Restart {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST is for /v2/apps or /v2/apps/{id}/restart",
        );
    }
    let force = flag(&query(&raw), "force");
    let _gate = paas.writes.lock().await;
    let Some(def) = paas
        .lock()
        .apps
        .get(&id)
        .filter(|a| !a.deleting)
        .map(|a| a.def.clone())
    else {
        return no_app(&id);
    };
    change(
        &paas,
        def.clone(),
        Some(def),
        "RestartApplication",
        false,
        force,
    )
    .await
}

pub async fn delete_sub(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (id, sub) = split(&rest);
    let q = query(&raw);
    let _gate = paas.writes.lock().await;
    match sub {
        Sub::App => delete_app(&paas, &id, flag(&q, "force")).await,
        Sub::Tasks(task) => {
            let host = q.iter().find(|(k, _)| k == "host").map(|(_, v)| v.clone());
            let ids: Vec<String> = {
                let s = paas.lock();
                if !s.apps.contains_key(&id) {
                    return no_app(&id);
                }
                s.instances_of(&id)
                    .filter(|i| task.as_ref().is_none_or(|t| &i.task_id == t))
                    .filter(|i| host.as_ref().is_none_or(|h| &i.host == h))
                    .map(|i| i.task_id.clone())
                    .collect()
            };
            if let Some(t) = &task {
                if ids.is_empty() {
                    return error(StatusCode::NOT_FOUND, format!("Task '{t}' does not exist"));
                }
            }
            kill(&paas, ids, flag(&q, "scale"), task.is_some()).await
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "cannot DELETE this"),
    }
}

pub(crate) async fn delete_app(paas: &Arc<Paas>, id: &str, force: bool) -> Response {
    let (def, version) = {
        let s = paas.lock();
        let Some(a) = s.apps.get(id).filter(|a| !a.deleting) else {
            return no_app(id);
        };
        if !force {
            if let Some(r) = locked(a) {
                return r;
            }
        }
        (a.def.clone(), timestamp())
    };
    if let Err(e) = paas.store.write(Op::DeleteApp(id.to_string())).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let mut rt = new_rt(
        def.clone(),
        version.clone(),
        version.clone(),
        version.clone(),
    );
    rt.deleting = true;
    let deployment = paas.lock().install(rt, "StopApplication", Some(def));
    paas.scaler.forget(id);
    paas.kick.notify_one();
    Json(json!({"deploymentId": deployment, "version": version})).into_response()
}

/// Kills tasks; with `scale`, lowers their apps' instance counts by as many.
async fn kill(paas: &Arc<Paas>, ids: Vec<String>, scale: bool, single: bool) -> Response {
    // With `scale`, the lowered counts are on disk before anything is killed.
    let mut scaled = Vec::new();
    if scale {
        let per_app: HashMap<String, (AppDefinition, String, u32)> = {
            let s = paas.lock();
            let mut per_app: HashMap<String, (AppDefinition, String, u32)> = HashMap::new();
            for i in ids
                .iter()
                .filter_map(|t| s.instances.get(t))
                .filter(|i| !i.killing)
            {
                if let Some(a) = s.apps.get(&i.app_id) {
                    per_app
                        .entry(a.def.id.clone())
                        .or_insert_with(|| (a.def.clone(), a.config_version.clone(), 0))
                        .2 += 1;
                }
            }
            per_app
        };
        for (_, (prev, config, n)) in per_app {
            let mut def = prev.clone();
            def.instances = def.instances.saturating_sub(n);
            let version = timestamp();
            let rt = new_rt(def, version.clone(), config, version);
            if let Err(e) = paas.store.write(Op::PutApp(rt.stored())).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
            scaled.push((rt, prev));
        }
    }
    let (killed, deployment) = {
        let mut s = paas.lock();
        let tasks: Vec<Value> = ids
            .iter()
            .filter_map(|t| s.instances.get(t))
            .map(task_json)
            .collect();
        s.kill_tasks(&ids);
        let mut deployment = None;
        for (rt, prev) in scaled {
            let version = rt.version.clone();
            deployment = Some((s.install(rt, "ScaleApplication", Some(prev)), version));
        }
        (tasks, deployment)
    };
    // The kills were queued in order behind any earlier write: wait until they are on disk.
    if let Err(e) = paas.store.flush().await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    paas.kick.notify_one();
    match deployment {
        Some((id, version)) => {
            Json(json!({"deploymentId": id, "version": version})).into_response()
        }
        None if scale => Json(json!({ "tasks": [] })).into_response(),
        None if single => Json(json!({"task": killed.first()})).into_response(),
        None => Json(json!({ "tasks": killed })).into_response(),
    }
}

pub async fn all_tasks(State(paas): State<Arc<Paas>>, RawQuery(raw): RawQuery) -> Json<Value> {
    let q = query(&raw);
    let status = q
        .iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.to_ascii_lowercase());
    let s = paas.lock();
    let tasks: Vec<Value> = s
        .instances
        .values()
        .filter(|i| match status.as_deref() {
            Some("running") => i.state == drove_proto::mesos::TaskState::TaskRunning,
            Some("staging") => i.state == drove_proto::mesos::TaskState::TaskStaging,
            _ => true,
        })
        .map(task_json)
        .collect();
    Json(json!({ "tasks": tasks }))
}

pub async fn delete_tasks(
    State(paas): State<Arc<Paas>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    struct Ids {
        ids: Vec<String>,
    }
    let ids: Ids = match drove_proto::decode(&body) {
        Ok(i) => i,
        Err(e) => {
            let path = format!("/{}", e.path.trim_start_matches('.').replace('.', "/"));
            return invalid(&InvalidApp::field(&path, e.message));
        }
    };
    let q = query(&raw);
    let _gate = paas.writes.lock().await;
    let known: Vec<String> = {
        let s = paas.lock();
        ids.ids
            .iter()
            .filter(|t| s.instances.contains_key(*t))
            .cloned()
            .collect()
    };
    kill(&paas, known, flag(&q, "scale"), false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_id_and_sub_resource() {
        assert_eq!(split("shop"), ("/shop".into(), Sub::App));
        assert_eq!(
            split("team/shop/restart"),
            ("/team/shop".into(), Sub::Restart)
        );
        assert_eq!(
            split("shop/versions"),
            ("/shop".into(), Sub::Versions(None))
        );
        assert_eq!(
            split("shop/versions/2026-01-01T00:00:00.000Z"),
            (
                "/shop".into(),
                Sub::Versions(Some("2026-01-01T00:00:00.000Z".into()))
            )
        );
        assert_eq!(
            split("shop/tasks/t1"),
            ("/shop".into(), Sub::Tasks(Some("t1".into())))
        );
    }
}
