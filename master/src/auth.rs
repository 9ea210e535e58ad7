//! Framework authentication (`--authenticate-frameworks`): HTTP basic credentials on the
//! scheduler API, checked against a credentials file in Mesos's `--credentials` format, either
//! JSON `{"credentials": [{"principal": "p", "secret": "s"}]}` or one `principal secret` per
//! line. Secrets are compared in constant time and never logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use drove_proto::auth::{same_secret, Credential};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading the credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the credentials file {path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("--authenticate-frameworks needs --credentials FILE")]
    Missing,
    #[error(
        "--authenticate-http-readonly needs someone to let in: --authenticate-frameworks \
         (framework credentials) or --cluster-secret"
    )]
    NoReaders,
}

/// Who an `Authorization` header proves the caller to be, on the master's read endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// The cluster secret as a bearer token: an operator (or an agent).
    Operator,
    /// A framework principal with its secret (HTTP basic).
    Framework(String),
}

/// Identifies the caller from `authorization`; `None` when it proves nothing.
pub fn identify(
    frameworks: Option<&Credentials>,
    cluster_secret: Option<&str>,
    authorization: Option<&str>,
) -> Option<Reader> {
    if let Some(secret) = cluster_secret {
        if drove_proto::auth::bearer_is(authorization, secret) {
            return Some(Reader::Operator);
        }
    }
    frameworks?
        .principal(authorization)
        .ok()
        .map(Reader::Framework)
}

/// The 401 of the read endpoints, asking for basic credentials as Mesos does.
pub fn unauthenticated() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(
            axum::http::header::WWW_AUTHENTICATE,
            "Basic realm=\"drove\"",
        )],
        "this endpoint needs a framework's credentials (HTTP basic) or the cluster secret \
         (Authorization: Bearer)\n",
    )
        .into_response()
}

/// Middleware of the read endpoints under `--authenticate-http-readonly`.
pub async fn only_readers(
    axum::extract::State(shared): axum::extract::State<std::sync::Arc<crate::Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if shared.readonly_auth {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if identify(
            shared.frameworks.as_ref(),
            shared.cluster_secret.as_deref(),
            header,
        )
        .is_none()
        {
            return unauthenticated();
        }
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct JsonFile {
    credentials: Vec<JsonCredential>,
}

#[derive(Deserialize)]
struct JsonCredential {
    principal: String,
    secret: String,
}

/// The principals allowed to subscribe, with their secrets.
#[derive(Clone)]
pub struct Credentials {
    secrets: HashMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("principals", &self.secrets.len())
            .finish()
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Invalid,
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |why: String| CredentialsError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let mut secrets = HashMap::new();
        if text.trim_start().starts_with('{') {
            let file: JsonFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            for c in file.credentials {
                secrets.insert(c.principal, c.secret);
            }
        } else {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(p), Some(s), None) => {
                        secrets.insert(p.to_string(), s.to_string());
                    }
                    _ => {
                        return Err(invalid(format!(
                            "line {}: expected `principal secret`",
                            n + 1
                        )))
                    }
                }
            }
        }
        if secrets.is_empty() || secrets.iter().any(|(p, s)| p.is_empty() || s.is_empty()) {
            return Err(invalid("no principal with a non-empty secret".into()));
        }
        Ok(Credentials { secrets })
    }

    /// The principal an `Authorization: Basic` header proves, if it does.
    pub fn principal(&self, authorization: Option<&str>) -> Result<String, Refused> {
        let header = authorization.ok_or(Refused::Missing)?;
        let Some(Credential::Basic {
            user: principal,
            password: secret,
        }) = Credential::parse(header)
        else {
            return Err(Refused::Invalid);
        };
        let expected = self.secrets.get(&principal).ok_or(Refused::Invalid)?;
        if same_secret(&secret, expected) {
            Ok(principal)
        } else {
            Err(Refused::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use drove_proto::auth::basic;

    #[test]
    fn both_file_formats_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("c.json");
        std::fs::write(
            &json,
            r#"{"credentials":[{"principal":"paas","secret":"s3"}]}"#,
        )
        .unwrap();
        let text = dir.path().join("c.txt");
        std::fs::write(&text, "# comment\nother secret2\n").unwrap();
        let c = Credentials::load(&json).unwrap();
        assert_eq!(c.principal(Some(&basic("paas", "s3"))), Ok("paas".into()));
        assert_eq!(
            c.principal(Some(&basic("paas", "nope"))),
            Err(Refused::Invalid)
        );
        assert_eq!(c.principal(None), Err(Refused::Missing));
        let t = Credentials::load(&text).unwrap();
        assert_eq!(
            t.principal(Some(&basic("other", "secret2"))),
            Ok("other".into())
        );
        std::fs::write(&text, "only-a-principal\n").unwrap();
        assert!(Credentials::load(&text).is_err());
    }
}
