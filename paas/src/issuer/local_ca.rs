//! drove's own CA, for `drove up` (as Caddy's local authority): it signs a certificate for each
//! app's own hostname (`<app>.localhost`), so `https://<app>.localhost:8443` works once the user
//! trusts its root. The root may only sign names under drove's domain (an X.509 name
//! constraint), so trusting it trusts nothing else. Its key stays in the data dir, 0600.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, X509Certificate};

use super::Issued;

/// How long the certificates it signs last (renewed at about two thirds of it).
const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("making the local CA: {0}")]
    Make(#[from] rcgen::Error),
}

pub struct LocalCa {
    /// Where its root certificate is (what users trust).
    pub root_path: PathBuf,
    /// The root's subject, as its certificates name their issuer.
    name: DistinguishedName,
    key: KeyPair,
}

impl LocalCa {
    /// The CA kept in `dir` (`root.pem`, `root.key`), made there first if missing, allowed to
    /// sign names under `domain` only.
    pub fn open_or_create(dir: &Path, domain: &str) -> Result<LocalCa, LocalCaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalCaError::Io { path, source }
        };
        let (root_path, key_path) = (dir.join("root.pem"), dir.join("root.key"));
        if !root_path.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut name = DistinguishedName::new();
            let id = uuid::Uuid::new_v4().simple().to_string();
            name.push(DnType::OrganizationName, "drove");
            name.push(DnType::CommonName, format!("drove local CA {}", &id[..8]));
            params.distinguished_name = name;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.name_constraints = Some(NameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DnsName(domain.to_string())],
                excluded_subtrees: Vec::new(),
            });
            let now = SystemTime::now();
            params.not_before = (now - Duration::from_secs(3600)).into();
            params.not_after = (now + ROOT_LIFETIME).into();
            let cert = params.self_signed(&key)?;
            // The key first, the root last: the root's presence says the CA is whole.
            write_private(&key_path, &key.serialize_pem()).map_err(io(&key_path))?;
            write_private(&root_path, &cert.pem()).map_err(io(&root_path))?;
            tracing::info!(root = %root_path.display(), "local CA created");
        }
        let root_pem = std::fs::read_to_string(&root_path).map_err(io(&root_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let invalid = |path: &Path, why: String| LocalCaError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, e.to_string()))?;
        let der = CertificateDer::from_pem_slice(root_pem.as_bytes())
            .map_err(|e| invalid(&root_path, e.to_string()))?;
        let (_, root) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| invalid(&root_path, e.to_string()))?;
        // Its certificates name their issuer as the root names itself.
        let first = |mut values: Box<dyn Iterator<Item = _> + '_>| {
            values
                .next()
                .and_then(|a: &AttributeTypeAndValue| a.as_str().ok())
        };
        let mut name = DistinguishedName::new();
        if let Some(o) = first(Box::new(root.subject().iter_organization())) {
            name.push(DnType::OrganizationName, o);
        }
        if let Some(cn) = first(Box::new(root.subject().iter_common_name())) {
            name.push(DnType::CommonName, cn);
        }
        Ok(LocalCa {
            root_path,
            name,
            key,
        })
    }

    /// A certificate for `hostname`, signed by the root.
    pub fn issue(&self, hostname: &str) -> Result<Issued, String> {
        let leaf_key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            CertificateParams::new(vec![hostname.to_string()]).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, hostname);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + LEAF_LIFETIME).into();
        let mut ca = CertificateParams::default();
        ca.distinguished_name = self.name.clone();
        let issuer = Issuer::new(ca, &self.key);
        let cert = params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| e.to_string())?;
        Ok(Issued {
            chain_pem: cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }
}

/// Writes `text` to `path`, readable by its owner only, whole or not at all (a temporary file
/// renamed over it): a crash midway leaves no half-made CA that stops the next start.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
