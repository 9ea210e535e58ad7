//! The floor for the router benchmark: Pingora's HTTP proxy with no routing, no stats and no
//! header changes — every request goes to one fixed upstream over the same keep-alive pool.
//! `benches/router/run.sh` runs it beside `drove router` so the table shows how much of the
//! cost per request is Pingora's own.
//!
//!   cargo run --release -p drove-router --example bare_pingora -- LISTEN UPSTREAM [THREADS] [steal|nosteal]

// The same allocator as the `drove` binary, so the comparison is Pingora against Pingora.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

struct Fixed(String);

#[async_trait]
impl ProxyHttp for Fixed {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.0.as_str(),
            false,
            String::new(),
        )))
    }
}

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
    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, Fixed(upstream.clone()));
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
