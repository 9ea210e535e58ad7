//! An ACME CA (RFC 8555) as the PaaS's authority, through `instant-acme`: one account per
//! PaaS and directory (created on first use, its credentials kept in the store), one order per
//! hostname, proved with HTTP-01: the challenge waits in [`Challenges`] and the routers answer
//! the CA's request for it on their HTTP port.

use std::path::PathBuf;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use tokio::sync::Mutex;

use super::{Challenges, Issued};
use crate::store::{Op, Setting, Store};

/// Let's Encrypt's production directory, what `--acme-directory letsencrypt` means.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`letsencrypt-staging`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How long an order may take to be validated, and then to be issued.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(std::time::Duration::from_millis(250))
    .timeout(std::time::Duration::from_secs(90));

pub struct Acme {
    pub directory: String,
    /// The root trusted for the directory's HTTPS instead of the system's (a test CA's, say).
    ca_file: Option<PathBuf>,
    /// `mailto:` contacts for the account.
    contact: Vec<String>,
    account: Mutex<Option<Account>>,
    /// The credentials kept from an earlier start, if any.
    saved: std::sync::Mutex<Option<String>>,
}

impl Acme {
    pub fn new(
        directory: &str,
        ca_file: Option<PathBuf>,
        contact: Option<&str>,
        settings: &[Setting],
    ) -> Acme {
        let directory = match directory {
            "letsencrypt" => LETS_ENCRYPT.to_string(),
            "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_string(),
            url => url.to_string(),
        };
        let key = setting_key(&directory);
        let saved = settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.value.clone());
        Acme {
            directory,
            ca_file,
            contact: contact.map(|c| format!("mailto:{c}")).into_iter().collect(),
            account: Mutex::new(None),
            saved: std::sync::Mutex::new(saved),
        }
    }

    /// The account: the saved one, or a new one (whose credentials are saved).
    async fn account(&self, store: &Store) -> Result<Account, String> {
        let mut account = self.account.lock().await;
        if let Some(a) = &*account {
            return Ok(a.clone());
        }
        let builder = || match &self.ca_file {
            Some(path) => Account::builder_with_root(path)
                .map_err(|e| format!("reading --acme-ca-file {}: {e}", path.display())),
            None => Account::builder().map_err(|e| format!("the ACME client: {e}")),
        };
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let made = match saved {
            Some(json) => {
                let credentials: AccountCredentials = serde_json::from_str(&json)
                    .map_err(|e| format!("the saved ACME account does not parse: {e}"))?;
                builder()?
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("the ACME account: {e}"))?
            }
            None => {
                let contact: Vec<&str> = self.contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder()?
                    .create(&new, self.directory.clone(), None)
                    .await
                    .map_err(|e| format!("creating an account at {}: {e}", self.directory))?;
                let value = serde_json::to_string(&credentials)
                    .map_err(|e| format!("saving the ACME account: {e}"))?;
                store
                    .write(Op::PutSetting(Setting {
                        key: setting_key(&self.directory),
                        value,
                    }))
                    .await
                    .map_err(|e| format!("saving the ACME account: {e}"))?;
                tracing::info!(directory = %self.directory, id = account.id(), "ACME account created");
                account
            }
        };
        *account = Some(made.clone());
        Ok(made)
    }

    /// A certificate for `hostname`, proved by HTTP-01; the CA's reason when it refuses.
    pub async fn issue(
        &self,
        store: &Store,
        challenges: &Challenges,
        hostname: &str,
    ) -> Result<Issued, String> {
        let account = self.account(store).await?;
        let identifiers = [Identifier::Dns(hostname.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("the CA refused the order: {e}"))?;
        let mut tokens = Vec::new();
        let proved = prove(&mut order, challenges, hostname, &mut tokens).await;
        let status = match proved {
            Ok(()) => order.poll_ready(&POLL).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let status = match status {
            Ok(OrderStatus::Ready) => Ok(()),
            Ok(_) => Err(why_invalid(&mut order).await),
            Err(e) => Err(format!("validation: {e}")),
        };
        challenges.remove(&tokens);
        status?;
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("the CA refused to finalize: {e}"))?;
        let chain_pem = order
            .poll_certificate(&POLL)
            .await
            .map_err(|e| format!("the CA did not issue: {e}"))?;
        Ok(Issued { chain_pem, key_pem })
    }
}

/// Puts each pending authorization's HTTP-01 answer where the routers find it and tells the CA
/// to check; the tokens put are added to `tokens` (to be taken away after).
async fn prove(
    order: &mut instant_acme::Order,
    challenges: &Challenges,
    hostname: &str,
    tokens: &mut Vec<String>,
) -> Result<(), String> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("reading the authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the authorization is {other:?}")),
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or("the CA offers no HTTP-01 challenge")?;
        let token = challenge.token.clone();
        challenges.insert(
            &token,
            hostname,
            challenge.key_authorization().as_str().to_string(),
        );
        tokens.push(token);
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("the CA refused the challenge: {e}"))?;
    }
    Ok(())
}

/// Why an order went invalid: the CA's words on the failed challenge.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        if let Some(problem) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
            return format!("validation failed: {problem}");
        }
    }
    "the order is invalid (the CA gave no reason)".into()
}

fn setting_key(directory: &str) -> String {
    format!("acme_account {directory}")
}
