//! End-to-end tests of scaling as a developer sees it: idle apps go to zero and hold nothing,
//! the next request wakes them, a burst on a cold app all succeeds and scales it up (and back
//! down), an open WebSocket keeps an app up, a manual scale holds as a floor, and every
//! decision shows in the API and on `/v2/events`. Real binaries, a real Node app.

use drove_testkit as support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::paas::{agent, node_app, task_pid, watch_events, Drove};
use support::wait::{until, until_ok};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// A Node app with scaling settings.
fn scaled_app(id: &str, instances: u32, scaling: Value) -> Value {
    let mut app = node_app(id, instances, "scaled");
    app["scaling"] = scaling;
    app
}

/// The app's scaling view (`GET /v1/apps/{route}/scaling`).
async fn scaling_view(d: &Drove, route: &str) -> Value {
    d.get(&format!("/v1/apps/{route}/scaling")).await
}

fn decisions(view: &Value) -> Vec<(String, String, u64)> {
    view["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["by"].as_str().unwrap_or("").to_string(),
                d["reason"].as_str().unwrap_or("").to_string(),
                d["to"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// The CPUs the master counts as used on all agents.
async fn used_cpus(d: &Drove) -> f64 {
    let state: Value = d
        .cluster
        .http
        .get(format!("{}/master/state", d.cluster.master_url()))
        .send()
        .await
        .expect("master state")
        .json()
        .await
        .expect("state json");
    state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["used_resources"]["cpus"].as_f64().unwrap_or(0.0))
        .sum()
}

/// An app idle for its idle period goes to zero: no process left, its resources free again;
/// the next request wakes it and succeeds; the decisions and their reasons show in the API
/// and the event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_app_goes_to_zero_and_the_next_request_wakes_it() {
    let d = Drove::start(&[&agent(10)]).await;
    let (events, _watch) = watch_events(&d);
    let scaling = json!({"minInstances": 0, "maxInstances": 2, "idleSeconds": 2,
                         "targetConcurrency": 5, "stableWindowSeconds": 4});
    d.create(scaled_app("/sleepy", 1, scaling)).await;
    let app = d.wait_healthy("/sleepy", 1, Duration::from_secs(30)).await;
    let task_id = app["tasks"][0]["id"].as_str().expect("task id").to_string();
    let pid = task_pid(&task_id).expect("the instance's pid");
    let (status, _) = d
        .through_router("sleepy.localhost", "/")
        .await
        .expect("request");
    assert_eq!(status, 200);

    d.wait_app("/sleepy", Duration::from_secs(20), "scaled to zero", |a| {
        a["instances"] == 0 && a["tasks"].as_array().is_some_and(|t| t.is_empty())
    })
    .await;
    until(
        &format!("pid {pid} to end after the scale to zero"),
        Duration::from_secs(10),
        || !nix_alive(pid),
    )
    .await;
    until_ok(
        "the app's resources to be given back",
        Duration::from_secs(10),
        || async {
            let used = used_cpus(&d).await;
            if used > 0.0 {
                Err(format!("{used} cpus in use"))
            } else {
                Ok(())
            }
        },
    )
    .await;

    let started = Instant::now();
    let (status, body) = d
        .through_router("sleepy.localhost", "/")
        .await
        .expect("the request that wakes it");
    assert_eq!(status, 200, "{body}");
    eprintln!("wake answered in {:?}", started.elapsed());

    let view = scaling_view(&d, "sleepy").await;
    let made = decisions(&view);
    assert!(
        made.iter()
            .any(|(by, why, to)| by == "scaler" && why.starts_with("idle") && *to == 0),
        "{view}"
    );
    assert!(
        made.iter()
            .any(|(by, why, to)| by == "router" && why.starts_with("wake") && *to == 1),
        "{view}"
    );
    // Where the wake's time went, step by step, in order.
    let wake = view["wakes"]
        .as_array()
        .and_then(|w| w.last())
        .cloned()
        .unwrap_or_else(|| panic!("no wake timeline: {view}"));
    let steps: Vec<(String, f64)> = wake["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or("").to_string(),
                s["ms"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    for step in [
        "held", "wake", "offer", "accept", "starting", "running", "ready", "routed",
    ] {
        assert!(names.contains(&step), "{step} missing from {wake}");
    }
    assert!(
        steps.windows(2).all(|w| w[0].1 <= w[1].1),
        "steps in time order: {wake}"
    );
    assert_eq!(names.last(), Some(&"routed"), "{wake}");
    // The container's own steps, as its agent measured them, fit inside starting → running.
    let span = |name: &str| steps.iter().find(|(s, _)| s == name).map(|(_, ms)| *ms);
    let (Some(starting), Some(running)) = (span("starting"), span("running")) else {
        unreachable!("checked above")
    };
    let mut inside = 0.0;
    for part in ["networkMs", "bundleMs", "runtimeMs"] {
        let ms = wake["container"][part]
            .as_f64()
            .unwrap_or_else(|| panic!("{part} missing from the wake's container steps: {wake}"));
        assert!(ms >= 0.0, "{wake}");
        inside += ms;
    }
    assert!(
        inside <= running - starting + 5.0,
        "the container steps ({inside} ms) fit between starting and running: {wake}"
    );
    eprintln!("wake timeline: {steps:?} container: {}", wake["container"]);
    until_ok(
        "the idle and wake decisions and the wake's timeline published as events",
        Duration::from_secs(5),
        || async {
            let published = events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e["eventType"] == "drove_scaling_decision_event")
                .map(|e| e["reason"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>();
            let timeline =
                events.lock().unwrap().iter().any(|e| {
                    e["eventType"] == "drove_wake_timeline_event" && e["appId"] == "/sleepy"
                });
            if published.iter().any(|r| r.starts_with("idle"))
                && published.iter().any(|r| r.starts_with("wake"))
                && timeline
            {
                Ok(())
            } else {
                Err(format!("events: {published:?}"))
            }
        },
    )
    .await;
}

fn nix_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// 1,000 concurrent requests to an app at zero all succeed (held while it wakes, never a 5xx);
/// the burst sends the scaler into panic mode and more instances start while the router keeps
/// each instance within its concurrency limit (the first is not flooded: later instances
/// answer too); once the load is gone the app comes back down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_cold_app_all_succeeds_and_scales_it_up_then_down() {
    let d = Drove::start(&[&agent(11)]).await;
    let scaling = json!({"minInstances": 0, "maxInstances": 3, "idleSeconds": 3,
                         "targetConcurrency": 2, "stableWindowSeconds": 4,
                         "concurrencyLimit": 100});
    d.create(scaled_app("/bursty", 0, scaling)).await;
    d.wait_app("/bursty", Duration::from_secs(10), "created at zero", |a| {
        a["deployments"].as_array().is_some_and(|x| x.is_empty())
    })
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("http://{}/?delay_ms=1500", d.router_addr());
    let started = Instant::now();
    let requests = (0..1000).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            match client
                .get(&url)
                .header("Host", "bursty.localhost")
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap_or_default())
                }
                Err(e) => {
                    eprintln!("request failed: {e:?}");
                    (0, String::new())
                }
            }
        }
    });
    let answers = futures::future::join_all(requests).await;
    let failed: Vec<u16> = answers
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| *s != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 1000 failed ({:?}…) in {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(10)],
        started.elapsed(),
        d.cluster.logs()
    );
    eprintln!("1000 cold requests answered in {:?}", started.elapsed());
    // "scaled <pid>": more than one process served the burst.
    let pids: std::collections::HashSet<&str> = answers
        .iter()
        .filter_map(|(_, body)| body.split_whitespace().nth(1))
        .collect();
    assert!(
        pids.len() > 1,
        "one instance took the whole burst: {pids:?}"
    );
    let view = scaling_view(&d, "bursty").await;
    let made = decisions(&view);
    assert!(
        made.iter()
            .any(|(by, why, to)| by == "scaler" && why.contains("panic") && *to > 1),
        "the burst scaled it up in panic mode: {view}"
    );
    // Load gone: down again (to zero, after the idle period).
    d.wait_app(
        "/bursty",
        Duration::from_secs(40),
        "back down to zero",
        |a| a["instances"] == 0 && a["tasks"].as_array().is_some_and(|t| t.is_empty()),
    )
    .await;
}

/// An app with an open WebSocket is not taken to zero while it is open, and is once it
/// closes. A manual scale holds as a floor until `drove scale <app> auto` clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_and_a_manual_floor_keep_an_app_up() {
    let d = Drove::start(&[&agent(12)]).await;
    let scaling = json!({"minInstances": 0, "maxInstances": 3, "idleSeconds": 2,
                         "targetConcurrency": 5, "stableWindowSeconds": 4});
    d.create(scaled_app("/chatty", 1, scaling)).await;
    d.wait_healthy("/chatty", 1, Duration::from_secs(30)).await;

    let mut ws = tokio::net::TcpStream::connect(d.router_addr())
        .await
        .expect("connect to the router");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: chatty.localhost\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("handshake");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), ws.read_exact(&mut head))
        .await
        .expect("handshake answered in time")
        .expect("handshake read");
    assert_eq!(&head, b"HTTP/1.1 101", "{}", String::from_utf8_lossy(&head));
    // Three idle periods with the socket open: still up.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        d.app("/chatty").await["instances"],
        1,
        "kept up by its WebSocket"
    );
    drop(ws);
    d.wait_app(
        "/chatty",
        Duration::from_secs(20),
        "to zero once closed",
        |a| a["instances"] == 0,
    )
    .await;

    // A manual scale is a floor: idle, it stays.
    let (status, body) = d
        .call(
            Method::PUT,
            "/v2/apps/chatty?force=true",
            Some(json!({"instances": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let app = d.wait_healthy("/chatty", 2, Duration::from_secs(30)).await;
    assert_eq!(app["scaling"]["floor"], 2, "{app}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        d.app("/chatty").await["instances"],
        2,
        "the floor holds while idle"
    );
    let view = scaling_view(&d, "chatty").await;
    assert!(
        decisions(&view)
            .iter()
            .any(|(by, why, to)| by == "api" && why.contains("floor") && *to == 2),
        "{view}"
    );
    // Cleared with the CLI: the scaler takes it to zero again.
    let out = support::drove_cli(&[
        "scale",
        "chatty",
        "auto",
        &format!("--paas={}", d.paas_url()),
        &format!("--token={}", support::paas::ADMIN_TOKEN),
    ])
    .await;
    assert!(out.0, "drove scale chatty auto: {}", out.1);
    d.wait_app(
        "/chatty",
        Duration::from_secs(20),
        "to zero once the floor is cleared",
        |a| a["instances"] == 0 && a["scaling"].get("floor").is_none(),
    )
    .await;
}

/// An app with no requests but busy on its own (background work in its cgroup, read from the
/// agent as Mesos's `/monitor/statistics` reports it) is not taken to zero, and the decision
/// says why; once the work ends, it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_busy_on_its_own_is_not_taken_to_zero() {
    let d = Drove::start(&[&agent(13)]).await;
    let scaling = json!({"minInstances": 0, "maxInstances": 1, "idleSeconds": 2,
                         "targetConcurrency": 5, "stableWindowSeconds": 4});
    let mut app = scaled_app("/worker", 1, scaling);
    // 30 ms of CPU in every 100 ms for 10 s, next to the web server.
    app["cmd"] = json!(
        "node -e 'setInterval(()=>{const e=Date.now()+30;while(Date.now()<e){}},100);\
         setTimeout(()=>process.exit(0),10000)' & exec node server.js"
    );
    d.create(app).await;
    d.wait_healthy("/worker", 1, Duration::from_secs(30)).await;
    let since = Instant::now();
    // Past its idle period three times over, it is still up, and says why.
    let deadline = since + Duration::from_secs(6);
    while Instant::now() < deadline {
        assert_eq!(
            d.app("/worker").await["instances"],
            1,
            "a busy app went to zero: {}",
            scaling_view(&d, "worker").await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let view = scaling_view(&d, "worker").await;
    assert!(
        decisions(&view)
            .iter()
            .any(|(by, why, to)| by == "scaler" && why.contains("busy") && *to == 1),
        "{view}"
    );
    // The background work ends after 10 s: then it goes to zero.
    d.wait_app(
        "/worker",
        Duration::from_secs(25),
        "to zero once idle for real",
        |a| a["instances"] == 0,
    )
    .await;
}
