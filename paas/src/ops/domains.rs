//! Custom domains: an app claims a hostname (refused, naming the holder, when another app has
//! it), lets it go, lists its own. The routers route a claimed hostname to its app as they do
//! its own `<app>.<domain>`.

use drove_proto::paas::{Certificate, Domain, NewCertificate};

use super::{OpsError, Tx};
use crate::model::app::{route_name, InvalidApp};
use crate::model::{certificate, hostname, timestamp};
use crate::store::{Op, StoredCert};
use crate::Paas;

/// App `app`'s custom domains, by hostname.
pub fn of(paas: &Paas, app: &str) -> Result<Vec<Domain>, OpsError> {
    let s = paas.lock();
    if s.apps.get(app).is_none_or(|a| a.deleting) {
        return Err(OpsError::NoApp(app.to_string()));
    }
    Ok(s.domains
        .values()
        .filter(|d| d.app == app)
        .map(|d| Domain {
            certificate: s.certificates.get(&d.hostname).map(shown),
            issuance: s.issuance.get(&d.hostname).cloned(),
            ..d.clone()
        })
        .collect())
}

/// App `app`'s own `<app>.<domain>`, when it has a certificate or one is being got for it (from
/// the PaaS's authority).
pub fn own(paas: &Paas, app: &str) -> Option<Domain> {
    let hostname = format!("{}.{}", route_name(app)?, paas.args.domain);
    let s = paas.lock();
    let certificate = s.certificates.get(&hostname);
    let issuance = s.issuance.get(&hostname).cloned();
    let added = certificate
        .map(|c| c.added.clone())
        .or_else(|| issuance.as_ref().map(|i| i.updated.clone()))?;
    Some(Domain {
        certificate: certificate.map(shown),
        issuance,
        added,
        hostname,
        app: app.to_string(),
    })
}

/// `host` in drove's spelling, if app `app` may claim it: a valid hostname outside drove's
/// own domain that no other app holds.
pub fn claimable(paas: &Paas, app: &str, host: &str) -> Result<String, OpsError> {
    let hostname =
        hostname::parse(host, &paas.args.domain).map_err(|e| InvalidApp::field("/hostname", e))?;
    match paas.lock().domains.get(&hostname) {
        Some(d) if d.app != app => Err(OpsError::Conflict(format!(
            "{hostname} belongs to the app {}: it must let it go first",
            d.app
        ))),
        _ => Ok(hostname),
    }
}

/// What a claim did.
pub struct Claimed {
    pub domain: Domain,
    /// False when the app held it already (nothing changed).
    pub new: bool,
}

/// App `app` claims `host`; claiming one it holds already changes nothing.
pub async fn add(tx: &Tx<'_>, app: &str, host: &str) -> Result<Claimed, OpsError> {
    let paas = tx.paas();
    let hostname = claimable(paas, app, host)?;
    {
        let s = paas.lock();
        if s.apps.get(app).is_none_or(|a| a.deleting) {
            return Err(OpsError::NoApp(app.to_string()));
        }
        if let Some(d) = s.domains.get(&hostname) {
            return Ok(Claimed {
                domain: d.clone(),
                new: false,
            });
        }
    }
    let domain = Domain {
        hostname: hostname.clone(),
        app: app.to_string(),
        added: timestamp(),
        certificate: None,
        issuance: None,
    };
    paas.store.write(Op::PutDomain(domain.clone())).await?;
    let mut s = paas.lock();
    s.domains.insert(hostname, domain.clone());
    s.publish_routes(false, None);
    drop(s);
    // Its certificate, when the PaaS has a CA.
    paas.issuer.nudge.notify_one();
    tracing::info!(app, hostname = %domain.hostname, "custom domain claimed");
    Ok(Claimed { domain, new: true })
}

/// App `app` lets `host` go.
pub async fn remove(tx: &Tx<'_>, app: &str, host: &str) -> Result<Domain, OpsError> {
    let paas = tx.paas();
    let hostname = hostname::spelling(host);
    let held = paas
        .lock()
        .domains
        .get(&hostname)
        .filter(|d| d.app == app)
        .cloned();
    let Some(domain) = held else {
        return Err(OpsError::NotFound(format!(
            "{app} has no domain {hostname:?}"
        )));
    };
    paas.store.write(Op::DeleteDomain(hostname.clone())).await?;
    let mut s = paas.lock();
    s.domains.remove(&hostname);
    s.publish_routes(false, None);
    s.issuance.remove(&hostname);
    if s.certificates.remove(&hostname).is_some() {
        s.publish_certificates();
    }
    tracing::info!(app, %hostname, "custom domain let go");
    Ok(domain)
}

/// App `app`'s domain `host` is served over HTTPS with the certificate the operator gives
/// (replacing the one it had): refused, saying why, unless its chain parses, its key is its
/// own, it names `host` and it has not expired.
pub async fn set_certificate(
    tx: &Tx<'_>,
    app: &str,
    host: &str,
    new: &NewCertificate,
) -> Result<Certificate, OpsError> {
    let paas = tx.paas();
    let hostname = hostname::spelling(host);
    let held = paas.lock().domains.get(&hostname).map(|d| d.app.clone());
    if held.as_deref() != Some(app) {
        return Err(OpsError::NotFound(format!(
            "{app} has no domain {hostname:?} (drove domains:add first)"
        )));
    }
    let checked = certificate::check(
        &hostname,
        &new.chain_pem,
        &new.key_pem,
        std::time::SystemTime::now(),
    )
    .map_err(|e| {
        let (field, why) = e.split_once(": ").unwrap_or(("cert", e.as_str()));
        let field = if field == "key" {
            "/key_pem"
        } else {
            "/chain_pem"
        };
        InvalidApp::field(field, why)
    })?;
    let stored = StoredCert {
        hostname: hostname.clone(),
        chain_pem: new.chain_pem.clone(),
        key_pem: new.key_pem.clone(),
        source: "operator".into(),
        not_after: checked.not_after,
        issuer: checked.issuer,
        added: timestamp(),
    };
    paas.store.write(Op::PutCertificate(stored.clone())).await?;
    let shown = shown(&stored);
    let mut s = paas.lock();
    s.certificates.insert(hostname.clone(), stored);
    s.publish_certificates();
    tracing::info!(app, %hostname, not_after = %shown.not_after, "certificate set");
    Ok(shown)
}

/// A certificate as the API shows it (never its key).
pub fn shown(c: &StoredCert) -> Certificate {
    Certificate {
        source: c.source.clone(),
        not_after: c.not_after.clone(),
        issuer: c.issuer.clone(),
    }
}
