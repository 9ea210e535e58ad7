//! The PaaS's two secrets: the admin token (everything) and the router token (routes, wakes
//! and stats only). Given by flag or environment, else generated once and kept under the data
//! dir in files only root can read. Compared in constant time; never logged.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

use drove_proto::auth::{same_secret, Credential};

pub const ADMIN_FILE: &str = "admin-token";
pub const ROUTER_FILE: &str = "router-token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token in {path} is empty")]
    Empty { path: PathBuf },
}

/// Who a request's credentials make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Router,
    Nobody,
}

#[derive(Clone)]
pub struct Tokens {
    pub admin: String,
    pub router: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }")
    }
}

/// A new random token: 32 bytes, URL-safe base64.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn load_or_make(
    dir: &Path,
    file: &str,
    given: Option<String>,
) -> Result<(String, bool), TokenError> {
    match given.filter(|t| !t.is_empty()) {
        Some(t) => Ok((t, false)),
        None => secret_file(&dir.join(file)),
    }
}

/// The secret kept in `path`: read it, or generate one into a new file only root can read.
/// `true` when it was generated now.
pub fn secret_file(path: &Path) -> Result<(String, bool), TokenError> {
    let path = path.to_path_buf();
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(TokenError::Empty { path });
            }
            Ok((t, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| TokenError::Write {
                    path: path.clone(),
                    source,
                })?;
            writeln!(f, "{token}").map_err(|source| TokenError::Write { path, source })?;
            Ok((token, true))
        }
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

impl Tokens {
    /// The tokens in force; `true` when one was generated now.
    pub fn load_or_create(
        dir: &Path,
        admin: Option<String>,
        router: Option<String>,
    ) -> Result<(Tokens, bool), TokenError> {
        std::fs::create_dir_all(dir).map_err(|source| TokenError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let (admin, a) = load_or_make(dir, ADMIN_FILE, admin)?;
        let (router, r) = load_or_make(dir, ROUTER_FILE, router)?;
        Ok((Tokens { admin, router }, a || r))
    }

    /// Identifies the caller from an `Authorization` header value: `Bearer <token>` or HTTP
    /// basic with the token as password (any user name, as Marathon's `--http_credentials`).
    pub fn caller(&self, authorization: Option<&str>) -> Caller {
        let Some(presented) = authorization.and_then(Credential::parse) else {
            return Caller::Nobody;
        };
        let presented = presented.secret();
        if same_secret(presented, &self.admin) {
            Caller::Admin
        } else if same_secret(presented, &self.router) {
            Caller::Router
        } else {
            Caller::Nobody
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_are_recognised() {
        let t = Tokens {
            admin: "adm".into(),
            router: "rtr".into(),
        };
        assert_eq!(t.caller(Some("Bearer adm")), Caller::Admin);
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:rtr");
        assert_eq!(t.caller(Some(&format!("Basic {basic}"))), Caller::Router);
        assert_eq!(t.caller(Some("Bearer nope")), Caller::Nobody);
        assert_eq!(t.caller(None), Caller::Nobody);
    }

    #[test]
    fn generated_tokens_are_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, generated) = Tokens::load_or_create(dir.path(), None, None).unwrap();
        assert!(generated);
        let (b, again) = Tokens::load_or_create(dir.path(), None, None).unwrap();
        assert!(!again);
        assert_eq!(a.admin, b.admin);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(ADMIN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
