//! Marathon's error shapes, in one place: `{"message": ...}` with the status, per-field
//! `details` for invalid input, the blocking `deployments` for a locked app.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drove_proto::marathon::{DeploymentRef, ErrorBody};

use crate::model::app::InvalidApp;
use crate::ops::OpsError;

/// Marathon's plain error: `{"message": ...}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(message))).into_response()
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

/// The status an op's failure is answered with.
pub fn status(e: &OpsError) -> StatusCode {
    match e {
        OpsError::Invalid(InvalidApp::Json(_)) => StatusCode::BAD_REQUEST,
        OpsError::Invalid(InvalidApp::Rules(_)) | OpsError::Failed(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        OpsError::NoApp(_) | OpsError::NotFound(_) => StatusCode::NOT_FOUND,
        OpsError::Exists(_) | OpsError::Conflict(_) | OpsError::Locked { .. } => {
            StatusCode::CONFLICT
        }
        OpsError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        OpsError::Upstream(_) => StatusCode::BAD_GATEWAY,
        OpsError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status(&self.0);
        let message = self.0.to_string();
        match self.0 {
            OpsError::Invalid(e) => (status, Json(e.body())).into_response(),
            OpsError::Locked { deployment } => (
                status,
                Json(ErrorBody {
                    deployments: vec![DeploymentRef { id: deployment }],
                    ..ErrorBody::new(message)
                }),
            )
                .into_response(),
            _ => error(status, message),
        }
    }
}
