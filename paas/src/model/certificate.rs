//! Certificates for custom domains: what makes one fit to serve a hostname, checked before it
//! is kept (its chain parses, its key is its own, it names the hostname, it has not expired).

use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a fit certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// When it expires (RFC 3339).
    pub not_after: String,
    /// Who issued it (its issuer's distinguished name).
    pub issuer: String,
    /// The span it is valid for (notBefore, notAfter).
    pub valid_from: SystemTime,
    pub valid_until: SystemTime,
}

/// Whether `chain_pem` (leaf first) with `key_pem` may serve `hostname` at `now`; why not.
pub fn check(
    hostname: &str,
    chain_pem: &str,
    key_pem: &str,
    now: SystemTime,
) -> Result<Checked, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert: not PEM certificates: {e}"))?;
    let leaf = chain.first().ok_or("cert: no certificate in it")?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("cert: the first certificate does not parse: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("key: not a PEM private key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("key: cannot sign: {e}"))?;
    CertifiedKey::new(chain.clone(), signer)
        .keys_match()
        .map_err(|e| format!("key: not the certificate's key: {e}"))?;
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !names.iter().any(|n| covers(n, hostname)) {
        return Err(format!(
            "cert: it names {names:?}, not {hostname} (its subject alternative names)"
        ));
    }
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0).unsigned_abs());
    let valid_from = at(cert.validity().not_before.timestamp());
    let expires = at(cert.validity().not_after.timestamp());
    let not_after = humantime::format_rfc3339_seconds(expires).to_string();
    if expires <= now {
        return Err(format!("cert: it expired at {not_after}"));
    }
    Ok(Checked {
        not_after,
        issuer: cert.issuer().to_string(),
        valid_from,
        valid_until: expires,
    })
}

/// Whether certificate name `name` (maybe `*.example.com`) covers `hostname`.
fn covers(name: &str, hostname: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => hostname
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == hostname,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("www.a.test", "www.a.test"));
        assert!(covers("*.a.test", "www.a.test"));
        assert!(!covers("*.a.test", "a.test"));
        assert!(!covers("*.a.test", "x.www.a.test"));
        assert!(!covers("www.a.test", "a.test"));
    }
}
