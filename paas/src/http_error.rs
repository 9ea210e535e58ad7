//! Marathon's error shapes, in one place: `{"message": ...}` with the status, per-field
//! `details` for invalid input, the blocking `deployments` for a locked app.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::model::app::InvalidApp;
use crate::ops::OpsError;

/// Marathon's plain error: `{"message": ...}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"message": message.into()}))).into_response()
}

/// An op's failure as the API answers it.
#[derive(Debug)]
pub struct ApiError(pub OpsError);

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        ApiError(e)
    }
}

impl From<InvalidApp> for ApiError {
    fn from(e: InvalidApp) -> Self {
        ApiError(OpsError::Invalid(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.0.to_string();
        match self.0 {
            OpsError::Invalid(e) => {
                let status = match e {
                    InvalidApp::Json(_) => StatusCode::BAD_REQUEST,
                    InvalidApp::Rules(_) => StatusCode::UNPROCESSABLE_ENTITY,
                };
                (status, Json(e.body())).into_response()
            }
            OpsError::NoApp(_) | OpsError::NotFound(_) => error(StatusCode::NOT_FOUND, message),
            OpsError::Exists(_) | OpsError::Conflict(_) => error(StatusCode::CONFLICT, message),
            OpsError::Locked { deployment } => (
                StatusCode::CONFLICT,
                Json(json!({"message": message, "deployments": [{"id": deployment}]})),
            )
                .into_response(),
            OpsError::Store(_) => error(StatusCode::SERVICE_UNAVAILABLE, message),
            OpsError::Corrupt(_) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}
