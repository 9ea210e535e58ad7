//! End-to-end tests of `drove router` as a user runs it: the binary, a fake PaaS serving the
//! route stream / wake / stats endpoints, and real backend servers, all on loopback.
//! The cases live in `drove_testkit::router::cases` (shared with the router crate's
//! in-process tests).

use drove_testkit::router::{cases, Launch};

const DROVE: Launch = Launch::Binary(env!("CARGO_BIN_EXE_drove"));

macro_rules! case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            tokio::time::timeout(std::time::Duration::from_secs(90), cases::$name(&DROVE))
                .await
                .expect("case finished within 90s");
        }
    };
}

case!(host_routing_and_unknown_hosts);
case!(least_outstanding_spreads_slow_requests);
case!(backup_serves_only_while_primaries_are_down);
case!(dead_backend_is_retried_elsewhere);
case!(held_requests_complete_after_one_wake);
case!(held_client_that_hangs_up_leaves_the_queue);
case!(wake_timeout_and_full_queue_give_503);
case!(route_changes_under_load_drop_nothing);
case!(websocket_and_streaming_pass_through);
case!(stats_match_requests_sent);
case!(hung_paas_does_not_slow_the_proxy);
case!(stop_with_held_and_inflight_requests_is_prompt);
case!(route_stream_reconnects_and_keeps_serving);
case!(metrics_need_the_token);
case!(a_stopped_app_gets_503_on_a_kept_connection);

/// The binary refuses a taken port with a message naming it.
#[test]
fn taken_listen_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drove"))
        .args(["router", "--paas", "http://127.0.0.1:9", "--listen", &addr])
        .args(["--admin", "127.0.0.1:0"])
        .output()
        .expect("run drove router");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
}
