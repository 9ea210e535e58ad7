//! How every drove listener reads a caller's credentials: one parser for the `Authorization`
//! header (`Bearer <token>`, `Basic base64(user:password)`) and one constant-time comparison
//! of secrets.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What an `Authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(String),
    Basic { user: String, password: String },
}

impl Credential {
    /// Reads a header value; `None` for any other scheme or a malformed value.
    pub fn parse(header: &str) -> Option<Credential> {
        let header = header.trim();
        if let Some(token) = header.strip_prefix("Bearer ") {
            return Some(Credential::Bearer(token.trim().to_string()));
        }
        let b64 = header.strip_prefix("Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        Some(Credential::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    }

    /// The secret it presents: the bearer token, or the basic password (Marathon's
    /// `--http_credentials` style, any user name).
    pub fn secret(&self) -> &str {
        match self {
            Credential::Bearer(t) => t,
            Credential::Basic { password, .. } => password,
        }
    }
}

/// The `Authorization` value that presents `token` as a bearer token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The `Authorization` value of HTTP basic authentication.
pub fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// Whether two secrets are equal, in time that depends on neither their contents nor their
/// lengths (their SHA-256 digests are compared in constant time).
pub fn same_secret(given: &str, expected: &str) -> bool {
    bool::from(Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())))
}

/// Whether an `Authorization` header value is `Bearer <secret>`.
pub fn bearer_is(header: Option<&str>, secret: &str) -> bool {
    match header.and_then(Credential::parse) {
        Some(Credential::Bearer(given)) => same_secret(&given, secret),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_are_read() {
        assert_eq!(
            Credential::parse(" Bearer abc "),
            Some(Credential::Bearer("abc".into()))
        );
        let c = Credential::parse(&basic("ops", "pa:ss")).expect("basic");
        assert_eq!(
            c,
            Credential::Basic {
                user: "ops".into(),
                password: "pa:ss".into()
            }
        );
        assert_eq!(c.secret(), "pa:ss");
        assert_eq!(Credential::parse("Basic !!!"), None);
        assert_eq!(Credential::parse("Basic bm9jb2xvbg=="), None, "no colon");
        assert_eq!(Credential::parse("Digest x"), None);
    }

    #[test]
    fn only_the_secret_matches() {
        assert!(same_secret("s3", "s3"));
        assert!(!same_secret("s3", "s4") && !same_secret("s3", "s33") && !same_secret("", "s"));
        assert!(bearer_is(Some(&bearer("s3")), "s3"));
        assert!(!bearer_is(Some("Bearer s4"), "s3"));
        assert!(
            !bearer_is(Some(&basic("u", "s3")), "s3"),
            "a bearer check wants a bearer"
        );
        assert!(!bearer_is(None, "s3"));
    }
}
