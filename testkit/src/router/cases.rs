//! The router's end-to-end cases, each runnable against an in-process router or the binary.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wait::{eventually, until, until_ok};

use super::{
    app_json, client, free_port, get, metric, ws_frame, Backend, Launch, Paas, RouterUnderTest,
};

/// Waits until `host` is routed (answers something other than 404).
async fn wait_routed(c: &reqwest::Client, r: &RouterUnderTest, host: &str) {
    eventually(
        &format!("{host} to be routed"),
        Duration::from_secs(10),
        || async { (get(c, r, host, "/").await.0 != 404).then_some(()) },
    )
    .await;
}

/// Waits until the admin listener lists `app` (its route was applied).
async fn wait_known(r: &RouterUnderTest, app: &str) {
    let series = format!("drove_router_app_held{{app=\"{app}\"}}");
    eventually(
        &format!("{app} to appear in the route table"),
        Duration::from_secs(10),
        || async { metric(&r.metrics().await, &series).map(|_| ()) },
    )
    .await;
}

/// Waits (at most 10 s) for `what`: a stats push whose entry for `app` satisfies `want`, and
/// returns the newest such push.
async fn push_where(paas: &Paas, what: &str, app: &str, want: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(10), || {
        let found = paas.stats().into_iter().rev().find(|s| {
            s["apps"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["app"] == app))
                .is_some_and(&want)
        });
        async move { found }
    })
    .await
}

async fn held(r: &RouterUnderTest, app: &str) -> f64 {
    metric(
        &r.metrics().await,
        &format!("drove_router_app_held{{app=\"{app}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// Waits (at most `limit`) for `what`: the count of `app`'s held requests satisfying `want`.
async fn held_reaches(
    r: &RouterUnderTest,
    app: &str,
    what: &str,
    limit: Duration,
    want: impl Fn(f64) -> bool,
) {
    until_ok(what, limit, || async {
        let h = held(r, app).await;
        if want(h) {
            Ok(())
        } else {
            Err(format!("{h} held"))
        }
    })
    .await;
}

pub async fn host_routing_and_unknown_hosts(l: &Launch) {
    let paas = Paas::start().await;
    let a = Backend::start("alpha").await;
    let b = Backend::start("beta").await;
    let mut alpha = app_json("alpha", &[(a.addr, true, false)]);
    alpha["hostnames"] = json!(["WWW.Alpha.Test"]);
    paas.upsert(alpha);
    paas.upsert(app_json("beta", &[(b.addr, true, false)]));
    let r = l.router(&paas.url, &[]).await;
    let c = client();
    wait_routed(&c, &r, "alpha.localhost").await;
    wait_routed(&c, &r, "beta.localhost").await;

    for host in [
        "alpha.localhost",
        "ALPHA.LocalHost:8080",
        "www.alpha.test",
        "www.ALPHA.test:80",
    ] {
        let (status, headers, body) = get(&c, &r, host, "/").await;
        assert_eq!((status, body.as_str()), (200, "alpha"), "host {host}");
        assert_eq!(headers["x-backend"], "alpha");
    }
    let (status, _, body) = get(&c, &r, "beta.localhost", "/").await;
    assert_eq!((status, body.as_str()), (200, "beta"));

    for host in [
        "gamma.localhost",
        "alpha.localhost.evil.test",
        "localhost",
        "127.0.0.1",
    ] {
        let (status, headers, body) = get(&c, &r, host, "/").await;
        assert_eq!(status, 404, "host {host}");
        assert!(headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain"));
        assert!(body.len() < 100, "short body: {body}");
        assert!(
            !body.contains("alpha") && !body.contains("beta"),
            "reveals apps: {body}"
        );
        assert_eq!(
            headers["x-request-id"].len(),
            36,
            "the 404 carries a request id"
        );
    }

    // Forwarding headers: X-Forwarded-* set, X-Request-Id kept...
    let resp = c
        .get(r.url("/headers"))
        .header("host", "alpha.localhost")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let seen = resp.text().await.expect("body");
    assert!(
        seen.contains("x-forwarded-for: 10.1.2.3, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-host: alpha.localhost\n"),
        "{seen}"
    );
    assert!(seen.contains("x-request-id: abc-123\n"), "{seen}");
    // ...or generated, and the same id is returned to the client.
    let (_, headers, seen) = get(&c, &r, "alpha.localhost", "/headers").await;
    let id = headers["x-request-id"]
        .to_str()
        .expect("ascii id")
        .to_string();
    assert_eq!(id.len(), 36, "uuid request id: {id}");
    assert!(seen.contains(&format!("x-request-id: {id}\n")), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    // Several X-Forwarded-For lines (two proxies in front) are all kept, in order; an
    // X-Request-Id that is not a printable token is replaced.
    let resp = c
        .get(r.url("/headers"))
        .header("host", "alpha.localhost")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-request-id", "bad id with spaces")
        .header("x-forwarded-for", "10.0.0.2, 10.0.0.3")
        .send()
        .await
        .expect("request");
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii id")
        .to_string();
    assert_eq!(id.len(), 36, "replaced request id: {id}");
    let seen = resp.text().await.expect("body");
    assert!(
        seen.contains("x-forwarded-for: 10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1\n"),
        "{seen}"
    );
}

pub async fn least_outstanding_spreads_slow_requests(l: &Launch) {
    let paas = Paas::start().await;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    paas.upsert(app_json(
        "spread",
        &[(a.addr, true, false), (b.addr, true, false)],
    ));
    let r = l.router(&paas.url, &[]).await;
    let c = client();
    wait_routed(&c, &r, "spread.localhost").await;
    let (a0, b0) = (a.hits.load(Ordering::SeqCst), b.hits.load(Ordering::SeqCst));

    // Eight concurrent slow requests: each backend ends up with four at once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), r.url("/slow/600"));
        tasks.push(tokio::spawn(async move {
            c.get(url)
                .header("host", "spread.localhost")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("response"), 200);
    }
    let (a1, b1) = (
        a.hits.load(Ordering::SeqCst) - a0,
        b.hits.load(Ordering::SeqCst) - b0,
    );
    assert_eq!(a1 + b1, 8);
    assert_eq!((a1, b1), (4, 4), "slow requests spread evenly");
    assert!(a.max_inflight.load(Ordering::SeqCst) <= 4);
    assert!(b.max_inflight.load(Ordering::SeqCst) <= 4);

    // A slow backend keeps requests outstanding, so a fast one gets most of the traffic
    // (round robin would split 50/50).
    let slow = Backend::start("slow").await;
    slow.delay_ms.store(300, Ordering::SeqCst);
    let fast = Backend::start("fast").await;
    paas.upsert(app_json(
        "mixed",
        &[(slow.addr, true, false), (fast.addr, true, false)],
    ));
    wait_known(&r, "mixed").await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (c, url) = (c.clone(), r.url("/"));
        workers.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..15 {
                let resp = c.get(&url).header("host", "mixed.localhost").send().await;
                if resp.is_ok_and(|r| r.status() == 200) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for w in workers {
        ok += w.await.expect("worker");
    }
    assert_eq!(ok, 60);
    let s = slow.hits.load(Ordering::SeqCst);
    let f = fast.hits.load(Ordering::SeqCst);
    assert_eq!(s + f, 60);
    assert!(s <= 12, "slow backend got {s} of 60 (fast {f})");
}

pub async fn backup_serves_only_while_primaries_are_down(l: &Launch) {
    let paas = Paas::start().await;
    let p = Backend::start("primary").await;
    let p2 = Backend::start("primary2").await;
    let k = Backend::start("backup").await;
    let (pa, p2a, ka) = (p.addr, p2.addr, k.addr);
    paas.upsert(app_json(
        "bk",
        &[(pa, true, false), (p2a, true, false), (ka, true, true)],
    ));
    let r = l.router(&paas.url, &[]).await;
    let c = client();
    wait_routed(&c, &r, "bk.localhost").await;
    for _ in 0..10 {
        let (s, _, body) = get(&c, &r, "bk.localhost", "/").await;
        assert_eq!(s, 200);
        assert!(body.starts_with("primary"), "{body}");
    }
    // One primary unhealthy: the other primary, never the backup.
    paas.upsert(app_json(
        "bk",
        &[(pa, false, false), (p2a, true, false), (ka, true, true)],
    ));
    until_ok(
        "the unhealthy primary to be left out",
        Duration::from_secs(5),
        || async {
            let (_, _, body) = get(&c, &r, "bk.localhost", "/").await;
            let (_, _, body2) = get(&c, &r, "bk.localhost", "/").await;
            if body == "primary2" && body2 == "primary2" {
                Ok(())
            } else {
                Err(format!("answered {body:?}, {body2:?}"))
            }
        },
    )
    .await;
    for _ in 0..10 {
        assert_eq!(get(&c, &r, "bk.localhost", "/").await.2, "primary2");
    }
    // Every primary unhealthy: the backup.
    paas.upsert(app_json(
        "bk",
        &[(pa, false, false), (p2a, false, false), (ka, true, true)],
    ));
    served_by(&c, &r, "backup", "the backup to be used").await;
    for _ in 0..10 {
        assert_eq!(get(&c, &r, "bk.localhost", "/").await.2, "backup");
    }
    // A primary is back: the backup stops getting traffic.
    paas.upsert(app_json(
        "bk",
        &[(pa, true, false), (p2a, false, false), (ka, true, true)],
    ));
    served_by(&c, &r, "primary", "the primary to come back").await;
    let kb = k.hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get(&c, &r, "bk.localhost", "/").await.2, "primary");
    }
    assert_eq!(k.hits.load(Ordering::SeqCst), kb);
    // The primary dies while the route stream still says healthy: requests fail over to the
    // backup (passively), and never error.
    p.stop();
    drop(p);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..10 {
        let (s, _, body) = get(&c, &r, "bk.localhost", "/").await;
        assert_eq!((s, body.as_str()), (200, "backup"));
    }
    // It comes back on the same address and the route stream restates it.
    let _p = Backend::start_on("primary", pa).await;
    paas.upsert(app_json(
        "bk",
        &[(pa, true, false), (p2a, false, false), (ka, true, true)],
    ));
    served_by(&c, &r, "primary", "the restated primary to be used").await;
}

/// Waits (at most 5 s) for `what`: `bk.localhost` answered by `backend`.
async fn served_by(c: &reqwest::Client, r: &RouterUnderTest, backend: &str, what: &str) {
    until_ok(what, Duration::from_secs(5), || async {
        let (_, _, body) = get(c, r, "bk.localhost", "/").await;
        if body == backend {
            Ok(())
        } else {
            Err(format!("answered {body:?}"))
        }
    })
    .await;
}

pub async fn dead_backend_is_retried_elsewhere(l: &Launch) {
    let paas = Paas::start().await;
    let live = Backend::start("live").await;
    let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    paas.upsert(app_json(
        "retry",
        &[(dead, true, false), (live.addr, true, false)],
    ));
    let r = l.router(&paas.url, &[]).await;
    let c = client();
    wait_known(&r, "retry").await;
    for i in 0..20 {
        let (s, _, body) = get(&c, &r, "retry.localhost", "/").await;
        assert_eq!((s, body.as_str()), (200, "live"), "request {i}");
    }
    let m = r.metrics().await;
    let series =
        format!("drove_router_backend_connect_failures_total{{app=\"retry\",backend=\"{dead}\"}}");
    assert_eq!(
        metric(&m, &series),
        Some(1.0),
        "one failure, then taken out:\n{m}"
    );
    // POST bodies survive the retry too.
    paas.upsert(app_json(
        "retry2",
        &[(dead, true, false), (live.addr, true, false)],
    ));
    wait_known(&r, "retry2").await;
    let body = vec![b'x'; 64 * 1024];
    let resp = c
        .post(r.url("/echo"))
        .header("host", "retry2.localhost")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").len(), body.len());
}

pub async fn held_requests_complete_after_one_wake(l: &Launch) {
    let paas = Paas::start().await;
    paas.upsert(app_json("sleepy", &[]));
    // No resend during the test, however slow the machine: this counts wake calls.
    let r = l.router(&paas.url, &["--wake-resend", "120s"]).await;
    let c = client();
    wait_known(&r, "sleepy").await;
    let n = 20;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (c, url) = (c.clone(), r.url("/"));
        tasks.push(tokio::spawn(async move {
            let resp = c.get(url).header("host", "sleepy.localhost").send().await?;
            let status = resp.status().as_u16();
            Ok::<_, reqwest::Error>((status, resp.text().await?, Instant::now()))
        }));
    }
    held_reaches(
        &r,
        "sleepy",
        &format!("{n} requests to be held"),
        Duration::from_secs(10),
        |h| h == n as f64,
    )
    .await;
    until("the router's wake call", Duration::from_secs(5), || {
        !paas.wakes().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        paas.wakes(),
        vec!["sleepy".to_string()],
        "exactly one wake call"
    );

    // The app comes up; the route stream announces it.
    let b = Backend::start("awake").await;
    let announced = Instant::now();
    paas.upsert(app_json("sleepy", &[(b.addr, true, false)]));
    for t in tasks {
        let (status, body, done) = t.await.expect("task").expect("response");
        assert_eq!((status, body.as_str()), (200, "awake"));
        let lag = done.saturating_duration_since(announced);
        assert!(
            lag < Duration::from_secs(1),
            "held request finished {lag:?} after the route"
        );
    }
    assert_eq!(paas.wakes().len(), 1, "still exactly one wake call");
    assert_eq!(held(&r, "sleepy").await, 0.0);

    // A concurrency limit spreads the released flood instead of piling it on one instance.
    paas.upsert(
        json!({"name": "limited", "state": "idle", "concurrency_limit": 2, "backends": []}),
    );
    wait_known(&r, "limited").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), r.url("/slow/100"));
        tasks.push(tokio::spawn(async move {
            c.get(url)
                .header("host", "limited.localhost")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    held_reaches(
        &r,
        "limited",
        "the 8 limited requests to be held",
        Duration::from_secs(10),
        |h| h >= 8.0,
    )
    .await;
    let first = Backend::start("first").await;
    let second = Backend::start("second").await;
    paas.upsert(
        json!({"name": "limited", "state": "running", "concurrency_limit": 2,
        "backends": [{"addr": first.addr.to_string(), "healthy": true},
                     {"addr": second.addr.to_string(), "healthy": true}]}),
    );
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("response"), 200);
    }
    assert!(first.max_inflight.load(Ordering::SeqCst) <= 2);
    assert!(second.max_inflight.load(Ordering::SeqCst) <= 2);
    assert_eq!(
        first.hits.load(Ordering::SeqCst) + second.hits.load(Ordering::SeqCst),
        8
    );
}

/// A client that hangs up while its request is held leaves the queue at once, and its request
/// is never forwarded once the app is up.
pub async fn held_client_that_hangs_up_leaves_the_queue(l: &Launch) {
    let paas = Paas::start().await;
    paas.upsert(app_json("sleepy", &[]));
    let r = l.router(&paas.url, &[]).await;
    wait_known(&r, "sleepy").await;
    let mut sock = tokio::net::TcpStream::connect(r.proxy)
        .await
        .expect("connect to the router");
    sock.write_all(b"GET /gone HTTP/1.1\r\nHost: sleepy.localhost\r\n\r\n")
        .await
        .expect("send request");
    held_reaches(
        &r,
        "sleepy",
        "the request to be held",
        Duration::from_secs(10),
        |h| h >= 1.0,
    )
    .await;
    drop(sock);
    // Well before the 30 s hold timeout.
    held_reaches(
        &r,
        "sleepy",
        "the hung-up client to leave the queue",
        Duration::from_secs(5),
        |h| h == 0.0,
    )
    .await;
    let b = Backend::start("awake").await;
    paas.upsert(app_json("sleepy", &[(b.addr, true, false)]));
    let c = client();
    wait_routed(&c, &r, "sleepy.localhost").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.hits.load(Ordering::SeqCst),
        1,
        "only the routing probe reached the backend, not the abandoned request"
    );
}

pub async fn wake_timeout_and_full_queue_give_503(l: &Launch) {
    let paas = Paas::start().await;
    paas.upsert(app_json("cold", &[]));
    let r = l
        .router(
            &paas.url,
            &[
                "--hold-timeout",
                "500ms",
                "--hold-queue",
                "3",
                "--retry-after",
                "7",
            ],
        )
        .await;
    let c = client();
    wait_known(&r, "cold").await;
    let t = Instant::now();
    let (status, headers, body) = get(&c, &r, "cold.localhost", "/").await;
    let waited = t.elapsed();
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(
        headers["x-request-id"].len(),
        36,
        "the 503 carries a request id"
    );
    assert!(headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain"));
    assert!(body.contains("did not become ready"), "{body}");
    assert!(waited >= Duration::from_millis(450), "held for {waited:?}");
    assert!(waited < Duration::from_secs(3), "held for {waited:?}");

    // Queue of 3: a fourth request is refused at once.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (c, url) = (c.clone(), r.url("/"));
        tasks.push(tokio::spawn(async move {
            c.get(url)
                .header("host", "cold.localhost")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let end = Instant::now() + Duration::from_secs(5);
    while held(&r, "cold").await < 3.0 {
        assert!(Instant::now() < end, "three held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    let (status, headers, body) = get(&c, &r, "cold.localhost", "/").await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    assert!(body.contains("too many"), "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "refused at once, took {:?}",
        t.elapsed()
    );
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("response"), 503);
    }
    let m = r.metrics().await;
    assert_eq!(
        metric(&m, "drove_router_app_hold_rejected_total{app=\"cold\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "drove_router_app_hold_timeouts_total{app=\"cold\"}"),
        Some(4.0)
    );
}

pub async fn route_changes_under_load_drop_nothing(l: &Launch) {
    let paas = Paas::start().await;
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let cb = Backend::start("c").await;
    let (aa, ba, ca) = (a.addr, b.addr, cb.addr);
    paas.upsert(app_json("busy", &[(aa, true, false), (ba, true, false)]));
    let r = l.router(&paas.url, &[]).await;
    let c = client();
    wait_routed(&c, &r, "busy.localhost").await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (c, url, stop, failures, done) = (
            c.clone(),
            r.url(if w == 0 { "/slow/50" } else { "/" }),
            stop.clone(),
            failures.clone(),
            done.clone(),
        );
        workers.push(tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                match c.get(&url).header("host", "busy.localhost").send().await {
                    Ok(resp) if resp.status() == 200 => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(resp) => {
                        eprintln!("status {}", resp.status());
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("error {e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // A long request in flight on a backend that is about to leave the route table.
    let long = {
        let (c, url) = (c.clone(), r.url("/slow/1200"));
        tokio::spawn(async move {
            c.get(url)
                .header("host", "busy.localhost")
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let sets = [[aa, ca], [ba, ca], [aa, ba], [ca, aa], [ba, ca], [aa, ba]];
    for i in 0..18 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let set = sets[i % sets.len()];
        paas.upsert(app_json(
            "busy",
            &[(set[0], true, false), (set[1], true, false)],
        ));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(long.await.expect("task").expect("long request"), 200);
    let total = done.load(Ordering::SeqCst);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no request dropped ({total} ok)"
    );
    assert!(total > 100, "only {total} requests");
    for x in [&a, &b, &cb] {
        assert!(x.hits.load(Ordering::SeqCst) > 0, "{} got traffic", x.name);
    }
}

pub async fn websocket_and_streaming_pass_through(l: &Launch) {
    let paas = Paas::start().await;
    let b = Backend::start("ws").await;
    paas.upsert(app_json("ws", &[(b.addr, true, false)]));
    let r = l.router(&paas.url, &[]).await;
    let c = client();
    wait_routed(&c, &r, "ws.localhost").await;

    // Twenty tunnels, each over the pooled connection a plain request leaves: a tunnel torn
    // down right after its 101 (cloudflare/pingora#946, which the router's patched
    // pingora-proxy fixes) happened in about one of seven.
    let io = async {
        for _ in 0..20 {
            let plain = c
                .get(r.url("/"))
                .header("host", "ws.localhost")
                .send()
                .await
                .expect("a plain request");
            assert_eq!(plain.status(), 200);
            websocket_echo(r.proxy).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), io)
        .await
        .expect("websockets in time");

    // A streamed response arrives chunk by chunk, not buffered to the end.
    let t = Instant::now();
    let resp = c
        .get(r.url("/stream"))
        .header("host", "ws.localhost")
        .send()
        .await
        .expect("stream");
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("first chunk").expect("chunk ok");
    let first_at = t.elapsed();
    let mut all = first.to_vec();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.expect("chunk ok"));
    }
    let total = t.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&all),
        "part0;part1;part2;part3;part4;"
    );
    assert!(
        first_at < Duration::from_millis(300),
        "first chunk after {first_at:?}"
    );
    assert!(
        total >= Duration::from_millis(400),
        "whole body after {total:?}"
    );
}

/// One WebSocket through the router at `proxy`: the handshake, two echoed messages, a close.
async fn websocket_echo(proxy: std::net::SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("handshake answer");
        head.push(byte[0]);
        assert!(head.len() < 4096);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in ["hello drove", "second message"] {
        s.write_all(&ws_frame(1, msg.as_bytes()))
            .await
            .expect("send frame");
        let mut echo = vec![0u8; 2 + msg.len()];
        s.read_exact(&mut echo).await.expect("echo");
        assert_eq!(echo[0], 0x81);
        assert_eq!(echo[1] as usize, msg.len());
        assert_eq!(&echo[2..], msg.as_bytes());
    }
    s.write_all(&ws_frame(8, b"")).await.expect("close");
    let mut close = [0u8; 2];
    s.read_exact(&mut close).await.expect("close echo");
    assert_eq!(close[0], 0x88);
}

pub async fn stats_match_requests_sent(l: &Launch) {
    let paas = Paas::start().await;
    let b = Backend::start("counted").await;
    paas.upsert(app_json("counted", &[(b.addr, true, false)]));
    let r = l.router(&paas.url, &["--stats-interval", "200ms"]).await;
    let c = client();
    wait_known(&r, "counted").await;
    for _ in 0..25 {
        assert_eq!(get(&c, &r, "counted.localhost", "/").await.0, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(&c, &r, "counted.localhost", "/status/404").await.0, 404);
    }
    for _ in 0..3 {
        assert_eq!(get(&c, &r, "nobody.localhost", "/").await.0, 404);
    }
    let report = push_where(&paas, "a stats push with the 30 requests", "counted", |x| {
        x["requests"] == 30
    })
    .await;
    assert_eq!(report["unknown_host"], 3);
    let app = report["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["app"] == "counted"))
        .expect("app entry")
        .clone();
    assert_eq!(app["responses"]["2xx"], 25, "{app}");
    assert_eq!(app["responses"]["4xx"], 5, "{app}");
    assert_eq!(app["responses"]["5xx"], 0, "{app}");
    assert_eq!(app["in_flight"], 0);
    assert_eq!(app["held"], 0);
    assert_eq!(app["bytes_out"], 30 * "counted".len() as u64);
    assert!(app["last_request_ms"]
        .as_u64()
        .is_some_and(|t| t > 1_600_000_000_000));
    assert!(app["latency_ms"]["p50"].as_f64().is_some(), "{app}");
    assert!(app["latency_ms"]["p99"].as_f64().is_some(), "{app}");
    let backend = &app["backends"][0];
    assert_eq!(backend["addr"], b.addr.to_string());
    assert_eq!(backend["requests"], 30);
    assert_eq!(backend["responses"]["2xx"], 25);
    assert_eq!(b.hits.load(Ordering::SeqCst), 30);
    // Upstream keep-alive: one client sending one request at a time is served over a pooled
    // connection or two, not one connection per request.
    let conns = b.connections.load(Ordering::SeqCst);
    assert!(
        conns <= 3,
        "{conns} upstream connections for 30 sequential requests"
    );

    let m = r.metrics().await;
    assert_eq!(
        metric(&m, "drove_router_app_requests_total{app=\"counted\"}"),
        Some(30.0)
    );
    assert_eq!(
        metric(
            &m,
            "drove_router_app_responses_total{app=\"counted\",class=\"2xx\"}"
        ),
        Some(25.0)
    );
    assert_eq!(
        metric(
            &m,
            "drove_router_app_responses_total{app=\"counted\",class=\"4xx\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &m,
            "drove_router_app_request_duration_seconds_count{app=\"counted\"}"
        ),
        Some(30.0)
    );
    assert_eq!(metric(&m, "drove_router_unknown_host_total"), Some(3.0));
    let backend_series = format!(
        "drove_router_backend_requests_total{{app=\"counted\",backend=\"{}\"}}",
        b.addr
    );
    assert_eq!(metric(&m, &backend_series), Some(30.0));
    let health: Value = c
        .get(format!("http://{}/health", r.admin))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["route_stream_connected"], true);
}

/// A PaaS that hangs on stats pushes costs the proxy nothing: requests keep flowing, each push
/// gives up within its interval and is counted as failed, and once the PaaS answers again the
/// next push carries every request made meanwhile.
pub async fn hung_paas_does_not_slow_the_proxy(l: &Launch) {
    let paas = Paas::start().await;
    let b = Backend::start("steady").await;
    paas.upsert(app_json("steady", &[(b.addr, true, false)]));
    let r = l.router(&paas.url, &["--stats-interval", "100ms"]).await;
    let c = client();
    wait_known(&r, "steady").await;
    paas.stall_stats(true);
    let failures = |m: &str| metric(m, "drove_router_stats_push_failures_total").unwrap_or(0.0);
    let before = failures(&r.metrics().await);
    // 40 requests over at least a second (10 push intervals), each answered promptly.
    let began = Instant::now();
    for i in 0..40 {
        let answered =
            tokio::time::timeout(Duration::from_secs(2), get(&c, &r, "steady.localhost", "/"))
                .await
                .unwrap_or_else(|_| panic!("request {i} hung while the PaaS was stalled"));
        assert_eq!(answered.0, 200);
        assert_eq!(answered.2, "steady");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(began.elapsed() >= Duration::from_secs(1));
    let stalled = failures(&r.metrics().await) - before;
    assert!(
        stalled >= 3.0,
        "pushes to a hung PaaS must time out and be counted (got {stalled})"
    );
    paas.stall_stats(false);
    push_where(
        &paas,
        "a push with the 40 requests after the PaaS recovered",
        "steady",
        |x| x["requests"] == 40 && x["responses"]["2xx"] == 40,
    )
    .await;
}

/// Stopping the router with a request held and another in flight is prompt: neither the
/// hold timeout (30 s) nor a slow backend keeps it running, and both clients get an answer or
/// a closed connection rather than hanging.
pub async fn stop_with_held_and_inflight_requests_is_prompt(l: &Launch) {
    let paas = Paas::start().await;
    let b = Backend::start("slow").await;
    paas.upsert(app_json("slow", &[(b.addr, true, false)]));
    paas.upsert(app_json("sleepy", &[]));
    let r = l.router(&paas.url, &[]).await;
    wait_known(&r, "slow").await;
    wait_known(&r, "sleepy").await;
    let c = client();
    let mut clients = Vec::new();
    for (host, path) in [("slow.localhost", "/slow/20000"), ("sleepy.localhost", "/")] {
        let (c, url) = (c.clone(), r.url(path));
        clients.push(tokio::spawn(async move {
            c.get(url)
                .header("host", host)
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    until_ok(
        "one request held and one in flight",
        Duration::from_secs(10),
        || async {
            let (held, inflight) = (held(&r, "sleepy").await, b.inflight.load(Ordering::SeqCst));
            if held >= 1.0 && inflight >= 1 {
                Ok(())
            } else {
                Err(format!("{held} held, {inflight} in flight"))
            }
        },
    )
    .await;
    let took = r.stop(Duration::from_secs(15)).await;
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    for t in clients {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("the client is not left hanging")
            .expect("client task")
            .ok();
    }
}

pub async fn route_stream_reconnects_and_keeps_serving(l: &Launch) {
    let paas = Paas::start().await;
    let a = Backend::start("first").await;
    paas.upsert(app_json("first", &[(a.addr, true, false)]));
    let r = l.router(&paas.url, &[]).await;
    let c = client();
    wait_routed(&c, &r, "first.localhost").await;
    assert_eq!(paas.streams_opened(), 1);
    paas.drop_streams();
    // The last table keeps serving while the stream is down...
    for _ in 0..5 {
        assert_eq!(get(&c, &r, "first.localhost", "/").await.2, "first");
    }
    // ...and a change made meanwhile arrives with the snapshot after reconnecting.
    let b = Backend::start("second").await;
    paas.upsert(app_json("second", &[(b.addr, true, false)]));
    wait_routed(&c, &r, "second.localhost").await;
    assert!(paas.streams_opened() >= 2);
    assert_eq!(get(&c, &r, "second.localhost", "/").await.2, "second");
    // Removal applies too.
    paas.remove("first");
    eventually(
        "the removed app to be no longer routed",
        Duration::from_secs(5),
        || async { (get(&c, &r, "first.localhost", "/").await.0 == 404).then_some(()) },
    )
    .await;
    // A change is live within 100 ms of being streamed.
    let t = Instant::now();
    paas.upsert(app_json("third", &[(b.addr, true, false)]));
    while get(&c, &r, "third.localhost", "/").await.0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(5), "upsert never applied");
    }
    let applied = t.elapsed();
    assert!(
        applied < Duration::from_millis(100),
        "upsert applied after {applied:?}"
    );

    // With the PaaS gone entirely (no stream, no stats, no wake), the last table keeps serving
    // at full speed.
    paas.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(get(&c, &r, "second.localhost", "/").await.0, 200);
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "50 requests took {took:?} without a PaaS"
    );
    let m = r.metrics().await;
    assert_eq!(metric(&m, "drove_router_route_stream_connected"), Some(0.0));
}

/// With `--metrics-token`, `/metrics` (which names every app) needs it as a bearer token;
/// `/health` stays open for liveness checks.
pub async fn metrics_need_the_token(l: &Launch) {
    let paas = Paas::start().await;
    let r = l
        .router(&paas.url, &["--metrics-token", "metrics-s3cret"])
        .await;
    let c = client();
    let url = format!("http://{}/metrics", r.admin);
    let status = |req: reqwest::RequestBuilder| async move {
        req.send().await.expect("metrics request").status().as_u16()
    };
    assert_eq!(status(c.get(&url)).await, 401);
    assert_eq!(status(c.get(&url).bearer_auth("wrong")).await, 401);
    assert_eq!(status(c.get(&url).bearer_auth("metrics-s3cret")).await, 200);
    let health = format!("http://{}/health", r.admin);
    assert_eq!(status(c.get(&health)).await, 200);
}

/// Sends `n` requests for `host` one after the other on one connection; each answer's head and
/// body, until the router closes the connection (then the last entry says so).
fn on_one_connection(proxy: SocketAddr, host: &str, n: usize) -> Vec<String> {
    use std::io::{Read, Write};
    let mut answers = Vec::new();
    let Ok(mut s) = std::net::TcpStream::connect(proxy) else {
        return vec!["connect failed".into()];
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    for _ in 0..n {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        if s.write_all(request.as_bytes()).is_err() {
            answers.push("closed".into());
            return answers;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Head, then as many body bytes as Content-Length says.
        let complete = |got: &[u8]| {
            let text = String::from_utf8_lossy(got);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                return false;
            };
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            body.len() >= len
        };
        while !complete(&got) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    answers.push("closed".into());
                    return answers;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        answers.push(String::from_utf8_lossy(&got).into_owned());
    }
    answers
}

/// A stopped app (an operator suspended it) is answered 503 at once, without `Retry-After`,
/// and is never woken; the connection stays open for the next request, as after a 404. A
/// request that waited in vain closes its connection and says so (`Connection: close`).
pub async fn a_stopped_app_gets_503_on_a_kept_connection(l: &Launch) {
    let paas = Paas::start().await;
    let mut stopped = app_json("down", &[]);
    stopped["state"] = json!("stopped");
    paas.upsert(stopped);
    paas.upsert(app_json("cold", &[]));
    let r = l.router(&paas.url, &["--hold-timeout", "300ms"]).await;
    wait_known(&r, "down").await;
    wait_known(&r, "cold").await;
    let proxy = r.proxy;
    let answers =
        tokio::task::spawn_blocking(move || on_one_connection(proxy, "down.localhost", 20))
            .await
            .expect("client thread");
    assert_eq!(
        answers.len(),
        20,
        "every request on one connection: {answers:?}"
    );
    for a in &answers {
        assert!(
            a.starts_with("HTTP/1.1 503") && a.ends_with("503 the app is stopped\n"),
            "{a}"
        );
        assert!(!a.to_ascii_lowercase().contains("retry-after"), "{a}");
    }
    // The same client on a known-unknown host keeps its connection too (the control).
    let answers =
        tokio::task::spawn_blocking(move || on_one_connection(proxy, "nope.localhost", 5))
            .await
            .expect("client thread");
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 404")),
        "{answers:?}"
    );
    let answers =
        tokio::task::spawn_blocking(move || on_one_connection(proxy, "cold.localhost", 2))
            .await
            .expect("client thread");
    assert!(
        answers[0].starts_with("HTTP/1.1 503")
            && answers[0]
                .to_ascii_lowercase()
                .contains("connection: close"),
        "{answers:?}"
    );
    assert_eq!(
        answers.get(1).map(String::as_str),
        Some("closed"),
        "{answers:?}"
    );
    assert!(
        paas.wakes().iter().all(|w| w != "down"),
        "a stopped app is never woken: {:?}",
        paas.wakes()
    );
}
