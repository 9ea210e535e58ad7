//! TLS on the router's HTTPS listener: the certificates the PaaS sent on the route stream,
//! chosen per connection by the client's SNI. The set is swapped whole when a new one arrives
//! (open connections keep the certificate they were made with). A name the set does not cover
//! gets no certificate at all (the handshake fails), never another app's.
//!
//! rustls (Pingora's `rustls` feature, ring as its crypto): pure Rust, no system OpenSSL to
//! match, and its `ResolvesServerCert` is the per-SNI hook Pingora 0.9 takes.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use drove_proto::routing::CertSpec;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate of the set was not taken.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("certificate for {hostnames:?}: {why}")]
pub struct CertError {
    pub hostnames: Vec<String>,
    pub why: String,
}

/// The certificates served, by hostname (lowercase).
#[derive(Debug, Default)]
pub struct Certs {
    by_host: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certs {
    /// Replaces the set with `specs`; one that cannot be used is left out (and said why),
    /// the others are served.
    pub fn replace(&self, specs: &[CertSpec]) -> Vec<CertError> {
        let mut by_host = HashMap::new();
        let mut errors = Vec::new();
        for spec in specs {
            match certified_key(spec) {
                Ok(key) => {
                    let key = Arc::new(key);
                    for h in &spec.hostnames {
                        by_host.insert(h.to_ascii_lowercase(), key.clone());
                    }
                }
                Err(why) => errors.push(CertError {
                    hostnames: spec.hostnames.clone(),
                    why,
                }),
            }
        }
        self.by_host.store(Arc::new(by_host));
        errors
    }

    /// Whether `hostname` has a certificate.
    pub fn covers(&self, hostname: &str) -> bool {
        let name = hostname.trim_end_matches('.').to_ascii_lowercase();
        self.by_host.load().contains_key(&name)
    }

    /// How many hostnames have a certificate.
    pub fn len(&self) -> usize {
        self.by_host.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.by_host.load().get(&name).cloned()
    }
}

/// The chain and key of `spec`, checked to belong together.
fn certified_key(spec: &CertSpec) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(spec.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the chain is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the chain holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(spec.key_pem.as_bytes())
        .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the key cannot sign: {e}"))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| format!("the key is not the certificate's: {e}"))?;
    Ok(certified)
}
