//! End-to-end tests of the router running in this process, with real listeners, real backend
//! servers and a fake PaaS. The same cases run against the `drove router` binary from the
//! root package's `tests/router.rs`.

use drove_testkit::router::{cases, Launch};

macro_rules! case {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            tokio::time::timeout(
                std::time::Duration::from_secs(60),
                cases::$name(&Launch::InProcess),
            )
            .await
            .expect("case finished within 60s");
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
