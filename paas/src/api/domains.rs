//! `/v1/apps/{app}/domains`: an app's custom domains (`{app}` is its route name, as in its
//! `<app>.<domain>`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::paas::{Certificate, Domains, NewCertificate, NewDomain};

use crate::http_error::ApiError;
use crate::model::app::InvalidApp;
use crate::ops::{self, OpsError};
use crate::Paas;

/// The id of the app served as `name`.
fn app_id(paas: &Paas, name: &str) -> Result<String, ApiError> {
    paas.lock()
        .app_by_route(name)
        .map(|a| a.def.id.clone())
        .ok_or_else(|| ApiError(OpsError::NotFound(format!("no app is served as {name:?}"))))
}

/// `GET`: its custom domains.
pub async fn list(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
) -> Result<Json<Domains>, ApiError> {
    let id = app_id(&paas, &name)?;
    Ok(Json(Domains {
        domains: ops::domains::of(&paas, &id)?,
        own: ops::domains::own(&paas, &id),
    }))
}

/// `POST {"hostname": …}`: claims it (201; 200 when the app had it already; 409 naming the app
/// that has it).
pub async fn add(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewDomain = drove_proto::decode(&body).map_err(|e| {
        let path = format!("/{}", e.path.trim_start_matches('.').replace('.', "/"));
        InvalidApp::field(&path, e.message)
    })?;
    let id = app_id(&paas, &name)?;
    let tx = paas.begin().await;
    let claimed = ops::domains::add(&tx, &id, &new.hostname).await?;
    let status = if claimed.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(claimed.domain)).into_response())
}

/// `DELETE /{hostname}`: lets it go.
pub async fn remove(
    State(paas): State<Arc<Paas>>,
    Path((name, hostname)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = app_id(&paas, &name)?;
    let tx = paas.begin().await;
    let domain = ops::domains::remove(&tx, &id, &hostname).await?;
    Ok(Json(domain).into_response())
}

/// `PUT /{hostname}/certificate {"chain_pem", "key_pem"}`: the certificate the routers serve
/// for it (422 naming the field when it does not fit the hostname).
pub async fn certificate(
    State(paas): State<Arc<Paas>>,
    Path((name, hostname)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Certificate>, ApiError> {
    let new: NewCertificate = drove_proto::decode(&body).map_err(|e| {
        let path = format!("/{}", e.path.trim_start_matches('.').replace('.', "/"));
        InvalidApp::field(&path, e.message)
    })?;
    let id = app_id(&paas, &name)?;
    let tx = paas.begin().await;
    Ok(Json(
        ops::domains::set_certificate(&tx, &id, &hostname, &new).await?,
    ))
}
