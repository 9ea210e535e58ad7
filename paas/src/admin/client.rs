//! The dashboard reads and acts through the PaaS's own HTTP API, called in-process with the
//! admin token: the same routes, validation and messages as the CLI and Marathon's tools, so
//! the dashboard can do nothing the API would refuse.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Largest answer read (release logs are the biggest).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct ApiClient {
    api: Router,
    authorization: String,
}

/// An API answer: its status and its JSON (`{"message": ...}` for errors), or the text it
/// gave when it was not JSON.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub bytes: bytes::Bytes,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message, with Marathon's per-field details when it gave them.
    pub fn message(&self) -> String {
        let mut m = match self.body["message"].as_str() {
            Some(m) => m.to_string(),
            None => String::from_utf8_lossy(&self.bytes).trim().to_string(),
        };
        for d in self.body["details"].as_array().into_iter().flatten() {
            let errors: Vec<&str> = d["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            m.push_str(&format!(
                "; {}: {}",
                d["path"].as_str().unwrap_or(""),
                errors.join(", ")
            ));
        }
        if m.is_empty() {
            m = self.status.to_string();
        }
        m
    }
}

impl ApiClient {
    pub fn new(api: Router, admin_token: &str) -> ApiClient {
        ApiClient {
            api,
            authorization: format!("Bearer {admin_token}"),
        }
    }

    /// Calls `method uri` with a JSON body, as `peer` (the browser, for the API's events).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        peer: SocketAddr,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
        let mut req = match req.body(body) {
            Ok(r) => r,
            Err(e) => return failed(format!("{uri}: {e}")),
        };
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => return failed(format!("{uri}: {e}")),
        };
        let status = resp.status();
        match axum::body::to_bytes(resp.into_body(), MAX_ANSWER).await {
            Ok(bytes) => Answer {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                bytes,
            },
            Err(e) => failed(format!("{uri}: reading the answer: {e}")),
        }
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, None, local()).await
    }
}

/// The peer of the dashboard's own reads.
fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn failed(message: String) -> Answer {
    Answer {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: json!({ "message": message }),
        bytes: bytes::Bytes::new(),
    }
}
