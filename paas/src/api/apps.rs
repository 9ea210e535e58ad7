//! `/v2/apps` and `/v2/tasks`: Marathon's app and task resources.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::marathon::{Apps, OneApp, OneTask, Task, Tasks, Versions};
use serde_json::{json, Value};

use super::wants;
use crate::events;
use crate::http_error::{error, ApiError};
use crate::model::app::{merge, normalize_id, resume_if_scaled_up, AppDefinition, InvalidApp};
use crate::model::instance::Instance;
use crate::ops::{self, apps::Killed, views, OpsError};
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

fn embeds_tasks(q: &[(String, String)]) -> bool {
    q.iter()
        .any(|(k, v)| k == "embed" && (v == "apps.tasks" || v == "app.tasks"))
}

pub async fn list(
    State(paas): State<Arc<Paas>>,
    RawQuery(raw): RawQuery,
) -> Json<Apps<AppDefinition>> {
    let q = query(&raw);
    let id_filter = q.iter().find(|(k, _)| k == "id").map(|(_, v)| v.clone());
    let cmd_filter = q.iter().find(|(k, _)| k == "cmd").map(|(_, v)| v.clone());
    let label_filter = q.iter().find(|(k, _)| k == "label").map(|(_, v)| v.clone());
    let tasks = embeds_tasks(&q);
    let s = paas.lock();
    let apps: Vec<views::App> = s
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
        .map(|a| views::app(&s, a, tasks))
        .collect();
    Json(Apps { apps })
}

pub async fn create(
    State(paas): State<Arc<Paas>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let def = AppDefinition::parse(&body)?;
    let tx = paas.begin().await;
    ops::apps::create(&tx, def.clone()).await?;
    let body = {
        let mut s = paas.lock();
        s.publish(events::api_post(&peer.ip().to_string(), "/v2/apps", &def));
        s.apps.get(&def.id).map(|a| views::app(&s, a, false))
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v2/apps{}", def.id))],
        Json(body),
    )
        .into_response())
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
    ApiError(OpsError::NoApp(id.to_string())).into_response()
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
                Some(a) => Json(OneApp {
                    app: views::app(&s, a, true),
                })
                .into_response(),
                None => no_app(&id),
            }
        }
        Sub::Versions(v) => {
            if !paas.lock().apps.contains_key(&id) {
                return no_app(&id);
            }
            let versions = match paas.store.versions(&id).await {
                Ok(v) => v,
                Err(e) => return ApiError(e.into()).into_response(),
            };
            match v {
                None => {
                    let mut list: Vec<String> = versions.into_iter().map(|(v, _)| v).collect();
                    list.reverse();
                    Json(Versions { versions: list }).into_response()
                }
                Some(v) => match versions.into_iter().find(|(ver, _)| *ver == v) {
                    Some((ver, def)) => match serde_json::from_str::<AppDefinition>(&def) {
                        Ok(d) => Json(d.shown(Some(&ver))).into_response(),
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
            Json(Tasks {
                tasks: tasks.iter().map(|i| views::task(i)).collect(),
            })
            .into_response()
        }
        Sub::Tasks(Some(t)) => {
            let s = paas.lock();
            match s.instances.get(&t).filter(|i| i.app_id == id) {
                Some(i) => Json(OneTask {
                    task: views::task(i),
                })
                .into_response(),
                None => error(StatusCode::NOT_FOUND, format!("Task '{t}' does not exist")),
            }
        }
        Sub::Restart => error(StatusCode::METHOD_NOT_ALLOWED, "use POST to restart"),
    }
}

async fn update(
    paas: Arc<Paas>,
    rest: String,
    raw: Option<String>,
    body: Bytes,
    create_missing: bool,
) -> Result<Response, ApiError> {
    let (id, sub) = split(&rest);
    if sub != Sub::App {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only the app itself can be updated",
        ));
    }
    let id = normalize_id(&id).map_err(|e| InvalidApp::field("/id", e))?;
    let q = query(&raw);
    let force = flag(&q, "force");
    let tx = paas.begin().await;
    let patch: Value =
        serde_json::from_slice(&body).map_err(|e| InvalidApp::Json(e.to_string()))?;
    let current = paas
        .lock()
        .apps
        .get(&id)
        .filter(|a| !a.deleting)
        .map(|a| a.def.clone());
    // `{"version": V}` alone: roll back to that version.
    if let (Some(_), Some(v)) = (&current, patch.get("version").and_then(Value::as_str)) {
        if patch.as_object().is_some_and(|o| o.len() == 1) {
            let d = ops::apps::restore(&tx, &id, v, force).await?;
            return Ok(Json(d).into_response());
        }
    }
    // `?partialUpdate=false` (a PUT of a whole definition) replaces instead of merging.
    let replace = q.iter().any(|(k, v)| k == "partialUpdate" && v == "false");
    let created = current.is_none();
    let def = match current {
        Some(cur) => {
            let mut merged = if replace {
                patch.clone()
            } else {
                merge(&cur, &patch)?
            };
            if !merged.is_object() {
                return Err(InvalidApp::field("/", "expected a JSON object").into());
            }
            merged["id"] = json!(id);
            resume_if_scaled_up(&patch, &mut merged);
            AppDefinition::from_value(merged)?
        }
        None if create_missing => {
            let mut v = patch.clone();
            if v.is_object() {
                v["id"] = json!(id);
            }
            AppDefinition::from_value(v)?
        }
        None => return Err(OpsError::NoApp(id).into()),
    };
    // Marathon's scale: a body of `instances` (and maybe the id) alone.
    let manual_scale = patch.as_object().is_some_and(|o| {
        o.contains_key("instances") && o.keys().all(|k| k == "instances" || k == "id")
    });
    let how = ops::apps::Update {
        force,
        manual_scale,
    };
    let deployed = ops::apps::update(&tx, def, how).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed)).into_response())
}

pub async fn put(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(paas, rest, raw, body, true).await
}

pub async fn patch(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(paas, rest, raw, body, false).await
}

pub async fn post_sub(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (id, sub) = split(&rest);
    if sub != Sub::Restart {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST is for /v2/apps or /v2/apps/{id}/restart",
        ));
    }
    let force = flag(&query(&raw), "force");
    let tx = paas.begin().await;
    Ok(Json(ops::apps::restart(&tx, &id, force).await?).into_response())
}

pub async fn delete_sub(
    State(paas): State<Arc<Paas>>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (id, sub) = split(&rest);
    let q = query(&raw);
    let tx = paas.begin().await;
    match sub {
        Sub::App => Ok(Json(ops::apps::delete(&tx, &id, flag(&q, "force")).await?).into_response()),
        Sub::Tasks(task) => {
            let host = q.iter().find(|(k, _)| k == "host").map(|(_, v)| v.clone());
            let ids: Vec<String> = {
                let s = paas.lock();
                if !s.apps.contains_key(&id) {
                    return Err(OpsError::NoApp(id).into());
                }
                s.instances_of(&id)
                    .filter(|i| task.as_ref().is_none_or(|t| &i.task_id == t))
                    .filter(|i| host.as_ref().is_none_or(|h| &i.host == h))
                    .map(|i| i.task_id.clone())
                    .collect()
            };
            if let Some(t) = &task {
                if ids.is_empty() {
                    return Err(OpsError::NotFound(format!("Task '{t}' does not exist")).into());
                }
            }
            let killed = ops::apps::kill(&tx, &ids, flag(&q, "scale")).await?;
            Ok(killed_json(killed, task.is_some()))
        }
        _ => Ok(error(StatusCode::METHOD_NOT_ALLOWED, "cannot DELETE this")),
    }
}

/// Marathon's answer to a kill: the deployment when apps were scaled, else the tasks killed
/// (one `task` when one was named).
fn killed_json(killed: Killed, single: bool) -> Response {
    match killed {
        Killed::Scaled(d) => Json(d).into_response(),
        Killed::Tasks(tasks) => match tasks.first() {
            Some(t) if single => Json(OneTask {
                task: views::task(t),
            })
            .into_response(),
            _ => Json(Tasks {
                tasks: tasks.iter().map(views::task).collect(),
            })
            .into_response(),
        },
    }
}

pub async fn all_tasks(State(paas): State<Arc<Paas>>, RawQuery(raw): RawQuery) -> Json<Tasks> {
    let q = query(&raw);
    let status = q
        .iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.to_ascii_lowercase());
    let s = paas.lock();
    let tasks: Vec<Task> = s
        .instances
        .values()
        .filter(|i| match status.as_deref() {
            Some("running") => i.state == drove_proto::mesos::TaskState::TaskRunning,
            Some("staging") => i.state == drove_proto::mesos::TaskState::TaskStaging,
            _ => true,
        })
        .map(views::task)
        .collect();
    Json(Tasks { tasks })
}

pub async fn delete_tasks(
    State(paas): State<Arc<Paas>>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct Ids {
        ids: Vec<String>,
    }
    let ids: Ids = drove_proto::decode(&body).map_err(|e| {
        let path = format!("/{}", e.path.trim_start_matches('.').replace('.', "/"));
        InvalidApp::field(&path, e.message)
    })?;
    let q = query(&raw);
    let tx = paas.begin().await;
    let killed = ops::apps::kill(&tx, &ids.ids, flag(&q, "scale")).await?;
    Ok(killed_json(killed, false))
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
