//! ACME HTTP-01 answers (RFC 8555 §8.3): a CA checking that the PaaS controls a hostname asks
//! any router for `http://{hostname}/.well-known/acme-challenge/{token}`; the router asks the
//! PaaS, which holds the challenge while its order waits, and answers with its key
//! authorization. Asking the PaaS (rather than pushing challenges on the route stream) leaves
//! no race between the PaaS telling the CA to check and a router hearing of the challenge.

use std::sync::Arc;
use std::time::Duration;

use drove_proto::routing::{valid_acme_token, ACME_CHALLENGES_PATH};
use tokio::sync::Semaphore;

/// Lookups in flight at once: challenges are rare, and a stranger sending many must not
/// become as many calls to the PaaS.
const MAX_LOOKUPS: usize = 16;
/// How long a lookup waits for a free slot before the request goes on as any other.
const PERMIT_WAIT: Duration = Duration::from_secs(1);
/// A key authorization is a token, a dot and a 43-character thumbprint.
const MAX_ANSWER: usize = 512;

pub struct Challenges {
    client: reqwest::Client,
    url: String,
    /// The control runtime, whose client this is (the proxy's runtimes are Pingora's).
    rt: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
}

impl Challenges {
    pub fn new(client: reqwest::Client, paas: &str, rt: tokio::runtime::Handle) -> Challenges {
        Challenges {
            client,
            url: format!("{}{ACME_CHALLENGES_PATH}", paas.trim_end_matches('/')),
            rt,
            permits: Arc::new(Semaphore::new(MAX_LOOKUPS)),
        }
    }

    /// The key authorization the PaaS has pending for `token` on `host` (`Host`, its port
    /// ignored); `None` when it has none, the token is malformed or lookups are saturated.
    pub async fn answer(&self, host: &str, token: &str) -> Option<String> {
        if !valid_acme_token(token) {
            return None;
        }
        // A burst of made-up tokens must not crowd out the CA's own request: wait a little.
        let permit = tokio::time::timeout(PERMIT_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h).to_string();
        let request = self
            .client
            .get(format!("{}/{token}", self.url))
            .query(&[("host", hostname)])
            .timeout(Duration::from_secs(5));
        let lookup = self.rt.spawn(async move {
            let _permit = permit;
            let response = request.send().await.ok()?.error_for_status().ok()?;
            let body = response.text().await.ok()?;
            (body.len() <= MAX_ANSWER && body.bytes().all(|b| b.is_ascii_graphic())).then_some(body)
        });
        lookup.await.ok().flatten()
    }
}
