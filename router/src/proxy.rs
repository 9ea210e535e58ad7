//! The Pingora side: host routing, backend choice with passive failover, forwarding headers,
//! custom 404/503 answers and per-request stats.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST, STRICT_TRANSPORT_SECURITY};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use tokio::time::Instant;

use drove_proto::routing::ACME_WELL_KNOWN;

use crate::balance::Lease;
use crate::routes::{App, BackendLive, Table};
use crate::stats::{now_ms, RouterCounters};
use crate::wake::{HoldError, Holder};

const X_REQUEST_ID: &str = "x-request-id";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const UNKNOWN_HOST_BODY: &str = "404 no app is served at this address\n";

/// The router's `ProxyHttp` implementation.
pub struct Router {
    pub table: Arc<ArcSwap<Table>>,
    pub holder: Holder,
    pub global: Arc<RouterCounters>,
    /// Connect attempts per request, the first included.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Seconds put in `Retry-After` on 503s.
    pub retry_after_secs: u64,
    pub request_ids: RequestIds,
    /// ACME HTTP-01 answers, from the PaaS.
    pub challenges: crate::acme::Challenges,
    /// The certificates the HTTPS listener serves, and its port (`None`: no HTTPS listener),
    /// for apps that ask for HTTP→HTTPS redirects.
    pub certs: Arc<crate::tls::Certs>,
    pub https_port: Option<u16>,
}

/// Generates `X-Request-Id`s: UUIDv4-shaped, random per process, unique by a counter (no
/// syscall per request).
pub struct RequestIds {
    base: u128,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        Self {
            base: uuid::Uuid::new_v4().as_u128(),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed) as u128 & ((1 << 48) - 1);
        let bytes =
            ((self.base & !((1 << 48) - 1)) | ((self.base + n) & ((1 << 48) - 1))).to_be_bytes();
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = id.hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements the app's in-router gauge when the request ends.
pub struct AppGuard(Arc<App>);

impl Drop for AppGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    app: Option<AppGuard>,
    lease: Option<Lease>,
    backend: Option<Arc<BackendLive>>,
    failed: Vec<SocketAddr>,
    attempts: u32,
    hold_error: Option<HoldError>,
    request_id: Option<HeaderValue>,
    host: Option<HeaderValue>,
    /// The client's IP rendered as a header value, carried over keep-alive requests on one
    /// connection so it is formatted once per connection, not once per request.
    client_ip: Option<HeaderValue>,
}

/// What survives from one request to the next on a keep-alive client connection.
struct ConnectionMemo {
    client_ip: HeaderValue,
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

/// The router's own answers (404 for unknown hosts, 503 while holding fails), with the
/// request's `X-Request-Id` like every proxied response.
fn plain(
    status: u16,
    body: &'static str,
    retry_after: Option<u64>,
    request_id: HeaderValue,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(5))?;
    resp.insert_header(X_REQUEST_ID, request_id)?;
    resp.insert_header(CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if let Some(s) = retry_after {
        resp.insert_header(http::header::RETRY_AFTER, s.to_string())?;
    }
    Ok(resp)
}

impl Router {
    /// The client's `X-Request-Id` if it sent a sane one, else a new one.
    /// Where an HTTP request for `host` is redirected to over HTTPS: the same host and path on
    /// the HTTPS listener, when there is one and it has a certificate for the host (a redirect
    /// to a name it cannot serve would only fail).
    fn https_location(&self, session: &Session, host: Option<&HeaderValue>) -> Option<String> {
        let port = self.https_port?;
        let host = host?.to_str().ok()?;
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !self.certs.covers(name) {
            return None;
        }
        let path = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        Some(match port {
            443 => format!("https://{name}{path}"),
            port => format!("https://{name}:{port}{path}"),
        })
    }

    fn request_id(&self, session: &Session) -> HeaderValue {
        match session.req_header().headers.get(X_REQUEST_ID) {
            Some(v) if valid_request_id(v) => v.clone(),
            _ => self.request_ids.next(),
        }
    }

    fn peer(&self, addr: SocketAddr) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(self.idle_timeout);
        Box::new(peer)
    }
}

#[async_trait]
impl ProxyHttp for Router {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            start: Instant::now(),
            app: None,
            lease: None,
            backend: None,
            failed: Vec::new(),
            attempts: 0,
            hold_error: None,
            request_id: None,
            host: None,
            client_ip: None,
        }
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // No response compression module: the router passes bodies through untouched.
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Self::CTX,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        ctx.client_ip.clone().map(|client_ip| {
            Box::new(ConnectionMemo { client_ip }) as Box<dyn std::any::Any + Send + Sync>
        })
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(memo) = prev.downcast::<ConnectionMemo>() {
            ctx.client_ip = Some(memo.client_ip);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.start = Instant::now();
        let req = session.req_header();
        let host = req.headers.get(HOST).cloned().or_else(|| {
            req.uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let app = {
            let table = self.table.load();
            host.as_ref()
                .and_then(|h| h.to_str().ok())
                .and_then(|h| table.lookup(h))
                .cloned()
        };
        let token = req
            .uri
            .path()
            .strip_prefix(ACME_WELL_KNOWN)
            .map(str::to_string);
        if let Some(token) = token {
            let host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
            if let Some(answer) = self.challenges.answer(host, &token).await {
                let mut resp = ResponseHeader::build(200, Some(3))?;
                resp.insert_header(CONTENT_TYPE, "text/plain")?;
                resp.insert_header(http::header::CONTENT_LENGTH, answer.len().to_string())?;
                session.write_response_header(Box::new(resp), false).await?;
                session
                    .write_response_body(Some(Bytes::from(answer)), true)
                    .await?;
                return Ok(true);
            }
        }
        let Some(app) = app else {
            self.global.unknown_host.fetch_add(1, Ordering::Relaxed);
            let resp = plain(404, UNKNOWN_HOST_BODY, None, self.request_id(session))?;
            session.write_response_header(Box::new(resp), false).await?;
            session
                .write_response_body(Some(Bytes::from_static(UNKNOWN_HOST_BODY.as_bytes())), true)
                .await?;
            return Ok(true);
        };
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if !tls && app.route.load().https.redirect {
            if let Some(location) = self.https_location(session, host.as_ref()) {
                let mut resp = ResponseHeader::build(308, Some(4))?;
                resp.insert_header(http::header::LOCATION, location)?;
                resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
                resp.insert_header(X_REQUEST_ID, self.request_id(session))?;
                session.write_response_header(Box::new(resp), true).await?;
                return Ok(true);
            }
        }
        app.stats.start(now_ms());
        app.inflight.fetch_add(1, Ordering::Relaxed);
        let stopped = app.route.load().state == drove_proto::routing::AppState::Stopped;
        ctx.app = Some(AppGuard(app));
        ctx.host = host;
        ctx.request_id = Some(self.request_id(session));
        if stopped {
            // Answered here rather than as a proxy failure: Pingora keeps a connection after a
            // request filter's answer, never after a failure (it would close it even though
            // the answer said keep-alive, and the client's next request would meet a reset).
            let body = HoldError::Stopped.message();
            let id = ctx
                .request_id
                .clone()
                .unwrap_or_else(|| self.request_id(session));
            let resp = plain(503, body, None, id)?;
            session.write_response_header(Box::new(resp), false).await?;
            session
                .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        ctx.lease = None;
        ctx.attempts += 1;
        if let Some(b) = ctx.backend.take() {
            // Pingora retries a request whose reused upstream connection failed before any
            // response: close the books on that backend's attempt.
            b.stats.finish(None, 0, 0, ctx.start.elapsed());
        }
        let Some(app) = ctx.app.as_ref().map(|g| g.0.clone()) else {
            return Err(Error::explain(ErrorType::InternalError, "no app selected"));
        };
        let deadline = ctx.start + self.holder.timeout;
        let acquired = if session.is_body_empty() {
            // If held, watch the client for a hang-up. (A request with a body is left alone:
            // reading would consume the body.)
            let hang_up = session.downstream_session.read_body_or_idle(true);
            self.holder
                .acquire(&app, &ctx.failed, deadline, hang_up)
                .await
        } else {
            let never = std::future::pending::<()>();
            self.holder
                .acquire(&app, &ctx.failed, deadline, never)
                .await
        };
        match acquired {
            Ok((lease, _held)) => {
                let backend = lease.backend().clone();
                backend.stats.start(now_ms());
                let peer = self.peer(backend.addr);
                ctx.backend = Some(backend);
                ctx.lease = Some(lease);
                Ok(peer)
            }
            Err(HoldError::ClientGone) => {
                ctx.hold_error = Some(HoldError::ClientGone);
                Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "the client closed the connection while its request was held",
                ))
            }
            Err(e) => {
                ctx.hold_error = Some(e);
                Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    e.message().trim_end(),
                ))
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.lease = None;
        if let Some(b) = ctx.backend.take() {
            b.passive_down.store(true, Ordering::SeqCst);
            b.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            b.stats.finish(None, 0, 0, ctx.start.elapsed());
            ctx.failed.push(b.addr);
            if let Some(app) = &ctx.app {
                app.0.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(app = %app.0.name, backend = %b.label, error = %e,
                    "connect failed; backend taken out until the route stream restates it");
            }
        }
        if ctx.attempts < self.max_attempts {
            e.set_retry(true);
        }
        tracing::debug!(%peer, attempts = ctx.attempts, "connect failure");
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if ctx.client_ip.is_none() {
            ctx.client_ip = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .and_then(|a| HeaderValue::try_from(a.ip().to_string()).ok());
        }
        if let Some(ip) = &ctx.client_ip {
            // Earlier proxies' addresses, from every X-Forwarded-For line the client sent,
            // then the client's own (the common case: none, so no string is built).
            let mut prev = String::new();
            for v in upstream_request.headers.get_all(X_FORWARDED_FOR) {
                if let Some(t) = v.to_str().ok().map(str::trim).filter(|t| !t.is_empty()) {
                    if !prev.is_empty() {
                        prev.push_str(", ");
                    }
                    prev.push_str(t);
                }
            }
            if prev.is_empty() {
                upstream_request.insert_header(X_FORWARDED_FOR, ip.clone())?;
            } else {
                let xff = format!("{prev}, {}", ip.to_str().unwrap_or_default());
                upstream_request.insert_header(X_FORWARDED_FOR, xff)?;
            }
        }
        // Overwritten, never appended: the scheme the client used to reach this router.
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        upstream_request.insert_header("x-forwarded-proto", proto)?;
        if let Some(h) = ctx.host.clone() {
            upstream_request.insert_header("x-forwarded-host", h)?;
        }
        if let Some(id) = ctx.request_id.clone() {
            upstream_request.insert_header(X_REQUEST_ID, id)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let hsts = ctx
            .app
            .as_ref()
            .map_or(0, |a| a.0.route.load().https.hsts_max_age);
        if hsts > 0
            && upstream_response
                .headers
                .get(STRICT_TRANSPORT_SECURITY)
                .is_none()
            && session.digest().is_some_and(|d| d.ssl_digest.is_some())
        {
            upstream_response
                .insert_header(STRICT_TRANSPORT_SECURITY, format!("max-age={hsts}"))?;
        }
        if upstream_response.headers.get(X_REQUEST_ID).is_none() {
            if let Some(id) = ctx.request_id.clone() {
                upstream_response.insert_header(X_REQUEST_ID, id)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        ctx.lease = None;
        if ctx.hold_error == Some(HoldError::ClientGone) {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Some(hold) = ctx.hold_error {
            let body = hold.message();
            let retry = (hold != HoldError::Stopped).then_some(self.retry_after_secs);
            let id = ctx
                .request_id
                .clone()
                .unwrap_or_else(|| self.request_id(session));
            // Pingora closes the connection after a proxy failure whatever the answer says; say
            // `Connection: close`, so the client does not send its next request on it.
            session.set_keepalive(None);
            let written = match plain(503, body, retry, id) {
                Ok(resp) => {
                    let r = session.write_response_header(Box::new(resp), false).await;
                    match r {
                        Ok(()) => session
                            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
                            .await
                            .is_ok(),
                        Err(_) => false,
                    }
                }
                Err(_) => false,
            };
            return FailToProxy {
                error_code: 503,
                can_reuse_downstream: written,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            let body = match code {
                502 => "502 the app did not answer\n",
                504 => "504 the app took too long to answer\n",
                400 => "400 bad request\n",
                _ => "the router could not complete the request\n",
            };
            if let Err(err) = session
                .respond_error_with_body(code, Bytes::from_static(body.as_bytes()))
                .await
            {
                tracing::debug!(error = %err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        ctx.hold_error.is_some()
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        ctx.lease = None;
        let Some(app) = ctx.app.as_ref() else {
            return;
        };
        let status = session.response_written().map(|r| r.status.as_u16());
        let bytes_in = session.body_bytes_read() as u64;
        let bytes_out = session.body_bytes_sent() as u64;
        if ctx.hold_error == Some(HoldError::ClientGone) {
            // Abandoned while held: no response, and its wait is not a latency sample.
            app.0.stats.abandon();
            return;
        }
        let latency = ctx.start.elapsed();
        app.0.stats.finish(status, bytes_in, bytes_out, latency);
        if let Some(b) = &ctx.backend {
            b.stats.finish(status, bytes_in, bytes_out, latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_uuids() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        let a = uuid::Uuid::parse_str(a.to_str().expect("ascii")).expect("uuid");
        assert_eq!(a.get_version_num(), 4);
    }
}
