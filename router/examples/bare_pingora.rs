//! The floor for the router benchmark: Pingora's HTTP proxy with no routing, no stats and no
//! header changes — every request goes to one fixed upstream over the same keep-alive pool.
//! `benches/router/run.sh` runs it beside `drove router` so the table shows how much of the
//! cost per request is Pingora's own.
//!
//!   cargo run --release -p drove-router --example bare_pingora -- LISTEN UPSTREAM [THREADS] [steal|nosteal]
//!
//! To take drove's costs apart, `BARE_TIMEOUTS=1` sets drove's peer timeouts and
//! `BARE_HEADERS=1` makes the same five header inserts drove makes (`BARE_VARIANTS=1` in the
//! benchmark script runs both beside the plain floor).

// The same allocator as the `drove` binary, so the comparison is Pingora against Pingora.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

struct Fixed {
    upstream: String,
    /// `BARE_TIMEOUTS`, read once at start.
    timeouts: bool,
    /// `BARE_HEADERS`, read once at start.
    headers: bool,
}

#[async_trait]
impl ProxyHttp for Fixed {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if self.timeouts {
            // drove's peer options (connect timeout, pooled connection idle timeout).
            peer.options.connection_timeout = Some(std::time::Duration::from_secs(2));
            peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut pingora::http::RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        if self.headers {
            // The four headers drove adds to every request (fixed values here).
            req.insert_header("x-forwarded-for", "127.0.0.1")?;
            req.insert_header("x-forwarded-proto", "http")?;
            req.insert_header("x-forwarded-host", "bench.localhost")?;
            req.insert_header("x-request-id", REQUEST_ID)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut pingora::http::ResponseHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        if self.headers {
            resp.insert_header("x-request-id", REQUEST_ID)?;
        }
        Ok(())
    }
}

const REQUEST_ID: &str = "0b7c5bb2-6b4e-4c4e-9a53-2b9a4a3c5d11";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM [THREADS] [steal|nosteal]");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: 4096,
        work_stealing: args.get(4).map(String::as_str) != Some("nosteal"),
        // Exit promptly on SIGTERM, as `drove router` does.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let fixed = Fixed {
        upstream: upstream.clone(),
        timeouts: std::env::var_os("BARE_TIMEOUTS").is_some(),
        headers: std::env::var_os("BARE_HEADERS").is_some(),
    };
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, fixed);
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
