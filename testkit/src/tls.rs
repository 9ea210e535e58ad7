//! Test certificate authorities (rcgen) and HTTPS clients that trust only the roots a test
//! gives them, so every TLS check in the tests verifies a real chain and a real name.

use std::net::SocketAddr;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA of a test's own.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        TestCa {
            cert,
            issuer: Issuer::new(p, key),
        }
    }

    /// Its root certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (hostnames or IP addresses) it signs: (chain PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        self.issue_with(names, |_| {})
    }

    /// [`TestCa::issue`] with the leaf's parameters changed by `edit` first (its validity, say).
    pub fn issue_with(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("leaf params");
        edit(&mut p);
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// An HTTPS client trusting only this CA, reaching each name at its address.
    pub fn client(&self, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
        client_trusting(&self.pem(), resolve)
    }
}

/// An HTTPS client (rustls) trusting only `root_pem`'s certificates, reaching each name at
/// its address (no DNS); its responses carry the peer's certificate (`reqwest::tls::TlsInfo`).
pub fn client_trusting(root_pem: &str, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .timeout(Duration::from_secs(5));
    for root in reqwest::Certificate::from_pem_bundle(root_pem.as_bytes()).expect("root PEM") {
        b = b.add_root_certificate(root);
    }
    for (name, addr) in resolve {
        b = b.resolve(name, *addr);
    }
    b.build().expect("HTTPS client")
}
