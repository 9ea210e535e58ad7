//! The app page's controls. Each is one op (`ops`, as the API's change is), or for a pushed
//! app's releases one call of the API in-process, and answers with its outcome: JSON for the
//! page's script, or a redirect back to the page, which shows the outcome once, for a browser
//! without it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Serialize;

use crate::http_error;
use crate::ops::{self, OpsError};
use crate::Paas;

/// What a control did.
struct Outcome {
    status: StatusCode,
    message: String,
    /// HTML for an element of the page (its id, its new content).
    html: Option<(&'static str, String)>,
}

impl Outcome {
    fn invalid(message: String) -> Outcome {
        Outcome {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
            html: None,
        }
    }
}

fn field<'a>(form: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn whole(form: &HashMap<String, String>, k: &str) -> Result<Option<u32>, Outcome> {
    match field(form, k) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Outcome::invalid(format!("{k}: expected a whole number, found {v:?}"))),
    }
}

fn seconds(form: &HashMap<String, String>, k: &str) -> Result<Option<f64>, Outcome> {
    match field(form, k) {
        None => Ok(None),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| Outcome::invalid(format!("{k}: expected a number, found {v:?}"))),
    }
}

/// What a control answers the page's script: its outcome, and the block to replace with the
/// HTML shown after it (the config values, say).
#[derive(Serialize)]
struct Answer {
    ok: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

/// `POST /admin/apps/{app}/{action}`: `instances`, `scaling`, `zero`, `wake`, `restart`,
/// `auto`, `suspend`, `resume`, `domain-add`, `domain-remove`, `rollback`, `config` (show the
/// config vars' values).
pub async fn act(
    State(paas): State<Arc<Paas>>,
    Path((name, action)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(session): axum::Extension<super::session::Session>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(id) = paas.lock().app_by_route(&name).map(|a| a.def.id.clone()) else {
        let answer = Answer {
            ok: false,
            message: format!("no app {name:?}"),
            target: None,
            html: None,
        };
        return (StatusCode::NOT_FOUND, Json(answer)).into_response();
    };
    let outcome = match run(&paas, &name, &id, &action, &form).await {
        Ok(o) | Err(o) => o,
    };
    if outcome.status.is_success() {
        tracing::info!(app = %name, action, %peer, "dashboard: {}", outcome.message);
    }
    let script = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if script {
        let (target, html) = outcome.html.unzip();
        let answer = Answer {
            ok: outcome.status.is_success(),
            message: outcome.message,
            target,
            html,
        };
        return (outcome.status, Json(answer)).into_response();
    }
    // Without the page's script: back to the page (a route name: [a-z0-9-] only), which shows
    // the outcome once.
    paas.admin
        .sessions
        .set_flash(&session.key, outcome.status.is_success(), outcome.message);
    Redirect::to(&format!("/admin/apps/{name}")).into_response()
}

async fn run(
    paas: &Arc<Paas>,
    name: &str,
    id: &str,
    action: &str,
    form: &HashMap<String, String>,
) -> Result<Outcome, Outcome> {
    let done = |r: Result<String, OpsError>| match r {
        Ok(message) => Outcome {
            status: StatusCode::OK,
            message,
            html: None,
        },
        Err(e) => Outcome {
            status: http_error::status(&e),
            message: e.to_string(),
            html: None,
        },
    };
    // The app's own changes are ops, made here as the API makes them (forced: an operator's
    // click supersedes a deployment under way).
    let op = async {
        let tx = paas.begin().await;
        Ok::<_, Outcome>(Some(match action {
            "instances" | "zero" => {
                let n = if action == "zero" {
                    0
                } else {
                    whole(form, "instances")?.ok_or_else(|| {
                        Outcome::invalid("instances: expected a whole number".into())
                    })?
                };
                ops::apps::scale(&tx, id, n, true)
                    .await
                    .map(|d| format!("scaling {id} to {n}: deployment {}", d.deployment_id))
            }
            "scaling" => {
                let current = paas.lock().apps.get(id).and_then(|a| a.def.scaling.clone());
                let mut scaling = current.unwrap_or_default();
                if let Some(n) = whole(form, "min")? {
                    scaling.min_instances = n;
                }
                if let Some(n) = whole(form, "max")? {
                    scaling.max_instances = n;
                }
                if let Some(s) = seconds(form, "idle")? {
                    scaling.idle_seconds = s;
                }
                if let Some(x) = seconds(form, "target")? {
                    scaling.target_concurrency = x;
                }
                ops::apps::set_scaling(&tx, id, Some(scaling), true)
                    .await
                    .map(|_| format!("{id}: scaling settings saved"))
            }
            "auto" => {
                let current = paas.lock().apps.get(id).and_then(|a| a.def.scaling.clone());
                let Some(mut scaling) = current else {
                    return Err(Outcome {
                        status: StatusCode::CONFLICT,
                        message: format!("{id} has no scaling settings: its count is fixed"),
                        html: None,
                    });
                };
                scaling.floor = None;
                ops::apps::set_scaling(&tx, id, Some(scaling), true)
                    .await
                    .map(|_| format!("{id}: the floor is cleared; the scaler decides its count"))
            }
            "suspend" => ops::scaling::suspend(&tx, id, "dashboard")
                .await
                .map(|changed| match changed {
                    true => format!("{id}: suspended; its requests get 503"),
                    false => format!("{id}: already suspended"),
                }),
            "resume" => {
                ops::scaling::resume(&tx, id, "dashboard")
                    .await
                    .map(|changed| match changed {
                        true => format!("{id}: resumed"),
                        false => format!("{id}: already resumed"),
                    })
            }
            "wake" => ops::scaling::wake(&tx, name, None, 0, "dashboard")
                .await
                .map(|w| format!("{id}: awake, {} instance(s) wanted", w.instances)),
            "restart" => ops::apps::restart(&tx, id, true)
                .await
                .map(|d| format!("restarting {id}: deployment {}", d.deployment_id)),
            "domain-add" => {
                let host = field(form, "hostname").unwrap_or_default();
                ops::domains::add(&tx, id, host)
                    .await
                    .map(|c| format!("{}: routed to {id}", c.domain.hostname))
            }
            "domain-remove" => {
                let host = field(form, "hostname").unwrap_or_default();
                ops::domains::remove(&tx, id, host)
                    .await
                    .map(|d| format!("{}: no longer routed to {id}", d.hostname))
            }
            _ => return Ok(None),
        }))
    };
    // A pushed app's releases are push's: a rollback is a release, rolled out like a push.
    match action {
        "rollback" => {
            let to =
                match field(form, "version") {
                    None => None,
                    Some(v) => Some(v.trim_start_matches('v').parse::<u32>().map_err(|_| {
                        Outcome::invalid(format!("version: expected vN, found {v:?}"))
                    })?),
                };
            let r = crate::push::releases::roll_back(paas, name, to).await;
            Ok(done(
                r.map(|n| format!("{name}: rolled back; v{n} is serving")),
            ))
        }
        "config" => {
            let config = crate::push::releases::config_of(paas, name).await;
            let html = config.as_ref().ok().map(|c| ("config", config_table(c)));
            let mut o = done(config.map(|_| format!("{name}: config values shown")));
            o.html = html;
            Ok(o)
        }
        _ => match op.await? {
            Some(r) => Ok(done(r)),
            None => Ok(Outcome {
                status: StatusCode::NOT_FOUND,
                message: format!("no control {action:?}"),
                html: None,
            }),
        },
    }
}

/// The config vars with their values (escaped: they are the app's, not ours).
fn config_table(config: &BTreeMap<String, String>) -> String {
    let mut out = String::from("<table class=\"kv\"><tr><th>name</th><th>value</th></tr>");
    for (k, v) in config {
        out.push_str(&format!(
            "<tr><td><code>{}</code></td><td><code class=\"secret\">{}</code></td></tr>",
            escape(k),
            escape(v)
        ));
    }
    out.push_str("</table>");
    out
}

fn escape(s: &str) -> String {
    minijinja::HtmlEscape(s).to_string()
}
