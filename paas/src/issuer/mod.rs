//! Automatic certificates: every hostname that needs one gets it from the PaaS's authority (an
//! ACME CA, or drove's local CA under `drove up`) and gets a new one at about two thirds of its
//! lifetime. A failure is kept with the CA's reason, shown on the app, and retried with capped
//! exponential backoff; the last certificate keeps serving meanwhile. Certificates an operator
//! gave (`domains:cert`) are theirs to renew.
//!
//! [`schedule`] decides which hostnames are due and when the next one is; [`run`] does them.

pub mod acme;
pub mod local_ca;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use drove_proto::paas::{Issuance, IssuanceState};
use tokio::sync::Notify;

use crate::model::{certificate, timestamp};
use crate::store::{Op, StoredCert};
use crate::Paas;

/// A certificate and its key, as the authority issued them (PEM).
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Who signs the PaaS's certificates.
pub enum Authority {
    Acme(acme::Acme),
    Local(Box<local_ca::LocalCa>),
}

impl Authority {
    /// How [`Issuance::authority`] names it.
    pub fn name(&self) -> &str {
        match self {
            Authority::Acme(a) => &a.directory,
            Authority::Local(_) => "local",
        }
    }

    /// What certificates it issued say they come from (`source`).
    fn source(&self) -> &'static str {
        match self {
            Authority::Acme(_) => "acme",
            Authority::Local(_) => "local",
        }
    }
}

/// HTTP-01 answers waiting for the CA, by token.
#[derive(Default)]
pub struct Challenges {
    by_token: Mutex<HashMap<String, (String, String)>>,
}

impl Challenges {
    fn insert(&self, token: &str, hostname: &str, key_authorization: String) {
        self.lock()
            .insert(token.to_string(), (hostname.to_string(), key_authorization));
    }

    fn remove(&self, tokens: &[String]) {
        let mut m = self.lock();
        for t in tokens {
            m.remove(t);
        }
    }

    /// The key authorization for `token` if it is pending for `hostname`.
    pub fn answer(&self, token: &str, hostname: &str) -> Option<String> {
        let host = crate::model::hostname::spelling(hostname);
        let host = host.split(':').next().unwrap_or_default();
        self.lock()
            .get(token)
            .filter(|(h, _)| h == host)
            .map(|(_, k)| k.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The PaaS's certificate issuing: its authority (none: only operators' certificates), the
/// challenges in flight, and a nudge for when hostnames change.
pub struct Issuer {
    pub authority: Option<Authority>,
    /// The hostnames it signs.
    pub scope: schedule::Scope,
    pub challenges: Challenges,
    /// Wakes [`run`] (a hostname was claimed).
    pub nudge: Notify,
    /// The first retry's delay after a failure; it doubles up to [`schedule::RETRY_MAX`].
    pub retry: Duration,
}

impl Issuer {
    /// The local CA signs the apps' own hostnames (names under drove's domain, which an ACME
    /// CA could not validate on a machine of one's own); an ACME CA signs custom domains, and
    /// the apps' own when `acme_own` (they need DNS for `*.<domain>` pointing at the routers).
    pub fn new(authority: Option<Authority>, acme_own: bool, retry: Duration) -> Issuer {
        let scope = match &authority {
            Some(Authority::Local(_)) => schedule::Scope {
                custom: false,
                own: true,
            },
            _ => schedule::Scope {
                custom: true,
                own: acme_own,
            },
        };
        Issuer {
            authority,
            scope,
            // A retry at once would hammer a CA that refuses.
            retry: retry.max(Duration::from_secs(1)),
            challenges: Challenges::default(),
            nudge: Notify::new(),
        }
    }
}

/// Forgets the certificates of apps' own hostnames that nothing keeps any more (the local CA
/// or `--acme-own-hostnames` turned off, `--domain` changed), so they are not served on until
/// they expire. Custom domains' certificates go with their domains.
pub fn prune(state: &mut crate::state::State, scope: Option<schedule::Scope>, domain: &str) {
    let own = schedule::Scope {
        custom: false,
        own: true,
    };
    let kept: std::collections::HashSet<String> = match scope {
        Some(s) if s.own => schedule::hostnames(state, own, domain).collect(),
        _ => Default::default(),
    };
    let stale: std::collections::BTreeSet<String> = state
        .certificates
        .keys()
        .chain(state.issuance.keys())
        .filter(|h| !state.domains.contains_key(*h) && !kept.contains(*h))
        .cloned()
        .collect();
    for hostname in stale {
        tracing::info!(%hostname, "forgetting a certificate nothing renews any more");
        state.forget_certificate(&hostname);
    }
}

/// Keeps every hostname's certificate issued and fresh, until the PaaS shuts down.
pub async fn run(paas: Arc<Paas>) {
    let Some(authority) = &paas.issuer.authority else {
        return;
    };
    loop {
        let now = SystemTime::now();
        let plan = {
            let s = paas.lock();
            schedule::plan(&s, authority, paas.issuer.scope, &paas.args.domain, now)
        };
        for hostname in &plan.due {
            if paas.shutdown.is_cancelled() {
                return;
            }
            attempt(&paas, authority, hostname).await;
        }
        if !plan.due.is_empty() {
            continue;
        }
        let wait = plan
            .next
            .and_then(|t| t.duration_since(now).ok())
            .unwrap_or(schedule::IDLE_CHECK)
            .min(schedule::IDLE_CHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = paas.issuer.nudge.notified() => {}
            _ = paas.shutdown.cancelled() => return,
        }
    }
}

/// One try at `hostname`'s certificate; its outcome is stored and shown either way.
async fn attempt(paas: &Arc<Paas>, authority: &Authority, hostname: &str) {
    let before = paas.lock().issuance.get(hostname).cloned();
    let attempts = before
        .as_ref()
        .filter(|i| i.state == IssuanceState::Failed)
        .map_or(0, |i| i.attempts);
    if before.is_none() {
        let _tx = paas.begin().await;
        if !schedule::wanted(&paas.lock(), paas.issuer.scope, &paas.args.domain, hostname) {
            return;
        }
        let pending = Issuance {
            state: IssuanceState::Pending,
            authority: authority.name().to_string(),
            error: None,
            attempts: 0,
            next: None,
            updated: timestamp(),
        };
        put_issuance(paas, hostname, pending).await;
    }
    tracing::info!(%hostname, authority = authority.name(), "requesting a certificate");
    let issued = match authority {
        Authority::Acme(acme) => {
            acme.issue(&paas.store, &paas.issuer.challenges, hostname)
                .await
        }
        Authority::Local(ca) => ca.issue(hostname),
    };
    let now = SystemTime::now();
    let checked = issued.and_then(|i| {
        certificate::check(hostname, &i.chain_pem, &i.key_pem, now)
            .map(|c| (i, c))
            .map_err(|e| format!("the CA's certificate is unfit: {e}"))
    });
    let tx = paas.begin().await;
    {
        let s = paas.lock();
        if !schedule::wanted(&s, paas.issuer.scope, &paas.args.domain, hostname) {
            return; // let go meanwhile
        }
        if s.certificates
            .get(hostname)
            .is_some_and(|c| c.source == "operator")
        {
            return; // an operator's certificate arrived meanwhile: theirs wins
        }
    }
    // Kept before it is served; a certificate that cannot be kept counts as a failure (and
    // waits its backoff), so a full disk does not become an order a second.
    let kept = match checked {
        Ok((issued, checked)) => {
            let stored = StoredCert {
                hostname: hostname.to_string(),
                chain_pem: issued.chain_pem,
                key_pem: issued.key_pem,
                source: authority.source().into(),
                not_after: checked.not_after.clone(),
                issuer: checked.issuer.clone(),
                added: timestamp(),
            };
            match paas.store.write(Op::PutCertificate(stored.clone())).await {
                Ok(()) => Ok((stored, checked)),
                Err(e) => Err(format!("the certificate could not be stored: {e}")),
            }
        }
        Err(why) => Err(why),
    };
    let issuance = match kept {
        Ok((stored, checked)) => {
            // Never due at once again (a CA that back-dates, a clock that is off).
            let renew = schedule::renewal(checked.valid_from, checked.valid_until, rand::random())
                .max(SystemTime::now() + paas.issuer.retry);
            tracing::info!(%hostname, not_after = %checked.not_after, "certificate issued");
            {
                let mut s = paas.lock();
                s.certificates.insert(hostname.to_string(), stored);
                s.publish_certificates();
            }
            Issuance {
                state: IssuanceState::Issued,
                authority: authority.name().to_string(),
                error: None,
                attempts: 0,
                next: Some(humantime::format_rfc3339_seconds(renew).to_string()),
                updated: timestamp(),
            }
        }
        Err(why) => {
            let attempts = attempts.saturating_add(1);
            let retry = schedule::retry_in(paas.issuer.retry, attempts);
            tracing::warn!(%hostname, error = %why, attempts, ?retry, "certificate not issued");
            Issuance {
                state: IssuanceState::Failed,
                authority: authority.name().to_string(),
                error: Some(why),
                attempts,
                next: Some(humantime::format_rfc3339_seconds(now + retry).to_string()),
                updated: timestamp(),
            }
        }
    };
    put_issuance(paas, hostname, issuance).await;
    drop(tx);
}

async fn put_issuance(paas: &Paas, hostname: &str, issuance: Issuance) {
    if let Err(e) = paas
        .store
        .write(Op::PutIssuance(hostname.to_string(), issuance.clone()))
        .await
    {
        tracing::warn!(%hostname, error = %e, "the certificate's issuance could not be stored");
    }
    paas.lock().issuance.insert(hostname.to_string(), issuance);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use drove_proto::paas::Domain;

    use super::prune;
    use crate::state::{Effect, State};
    use crate::store::{Op, StoredCert};

    fn cert(hostname: &str, source: &str) -> StoredCert {
        StoredCert {
            hostname: hostname.into(),
            chain_pem: String::new(),
            key_pem: String::new(),
            source: source.into(),
            not_after: String::new(),
            issuer: String::new(),
            added: String::new(),
        }
    }

    #[test]
    fn certificates_nothing_renews_are_forgotten() {
        let mut s = State::new(Duration::from_secs(1), Duration::from_secs(1));
        s.domains.insert(
            "www.shop.test".into(),
            Domain {
                hostname: "www.shop.test".into(),
                app: "/shop".into(),
                added: String::new(),
                certificate: None,
                issuance: None,
            },
        );
        s.certificates
            .insert("www.shop.test".into(), cert("www.shop.test", "acme"));
        s.certificates
            .insert("shop.localhost".into(), cert("shop.localhost", "local"));
        // No authority signs the apps' own hostnames any more.
        prune(&mut s, None, "localhost");
        assert!(
            s.certificates.contains_key("www.shop.test"),
            "a domain's stays"
        );
        assert!(!s.certificates.contains_key("shop.localhost"));
        let effects = s.take_effects();
        assert!(
            effects.iter().any(|e| matches!(e,
                Effect::Store(Op::DeleteCertificate(h)) if h == "shop.localhost")),
            "{effects:?}"
        );
    }
}
