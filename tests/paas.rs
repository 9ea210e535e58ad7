//! End-to-end tests of the PaaS as people and tools use it: the real `drove` binary running a
//! master, agents on 127.0.0.N, `drove paas` and `drove router`; apps are the Node server in
//! `tests/apps/server.js`, reached through the router by Host.

use drove_testkit as support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::drove_cli as cli;
use support::paas::{
    agent, event_types, node_app, task_pid, watch_events, Drove, ADMIN_TOKEN, ROUTER_TOKEN,
};
use support::wait::{eventually, until_ok};
use tokio::time::Instant;

/// Two healthy instances spread over two agents answer through the router by Host; scaling
/// to 3, to 0 (an app with `scaling` is then idle, and requests wake it) and the event stream
/// all behave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_is_spread_routed_scaled_and_woken() {
    let d = Drove::start(&[&agent(0), &agent(1)]).await;
    let (events, _watch) = watch_events(&d);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut web = node_app("/web", 2, "v1");
    web["scaling"] = json!({"minInstances": 0, "idleSeconds": 3600});
    let created = d.create(web).await;
    assert_eq!(created["id"], "/web");
    assert_eq!(created["instances"], 2);
    let app = d.wait_healthy("web", 2, Duration::from_secs(40)).await;
    let hosts: HashSet<&str> = app["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["host"].as_str())
        .collect();
    assert_eq!(hosts.len(), 2, "instances on two agents: {app}");

    // Both answer through the router.
    let mut pids = HashSet::new();
    for _ in 0..20 {
        let (status, body) = d
            .through_router("web.localhost", "/")
            .await
            .expect("router");
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("v1 "), "{body}");
        pids.insert(body);
    }
    assert_eq!(pids.len(), 2, "both instances served: {pids:?}");
    let (status, _) = d.through_router("nope.localhost", "/").await.unwrap();
    assert_eq!(status, 404);
    // The router's stats for the app are kept and readable.
    until_ok(
        "the router's stats for web's 20 requests",
        Duration::from_secs(10),
        || async {
            let (status, stats) = d.call(Method::GET, "/v1/apps/web/stats", None).await;
            let requests = stats["routers"]
                .as_object()
                .and_then(|r| r.values().next())
                .and_then(|r| r["report"]["requests"].as_u64());
            if status == 200 && requests >= Some(20) {
                assert!(stats["history"].as_array().is_some_and(|h| !h.is_empty()));
                return Ok(());
            }
            Err(format!("{stats}"))
        },
    )
    .await;

    // Scale to 3.
    d.put("web", json!({"instances": 3})).await;
    d.wait_healthy("web", 3, Duration::from_secs(40)).await;

    // Scale to 0: nothing left, then a request wakes it and succeeds.
    d.put("web", json!({"instances": 0})).await;
    d.wait_app("web", Duration::from_secs(30), "no instances", |a| {
        a["tasks"].as_array().is_some_and(|t| t.is_empty())
    })
    .await;
    let started = Instant::now();
    let (status, body) = d
        .through_router("web.localhost", "/")
        .await
        .expect("held request");
    assert_eq!(
        status, 200,
        "the held request succeeds after the wake: {body}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let app = d.app("web").await;
    assert_eq!(
        app["instances"], 1,
        "the wake raised the app to one instance"
    );

    let seen = event_types(&events);
    for kind in [
        "event_stream_attached",
        "api_post_event",
        "deployment_info",
        "deployment_success",
        "status_update_event",
        "health_status_changed_event",
        "instance_changed_event",
    ] {
        assert!(seen.contains(kind), "{kind} missing from {seen:?}");
    }
}

/// A killed instance is replaced; one that keeps dying is relaunched with growing delays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_instances_are_replaced_with_backoff() {
    let d = Drove::start(&[&agent(2)]).await;
    d.create(node_app("/phoenix", 1, "v1")).await;
    let app = d.wait_healthy("phoenix", 1, Duration::from_secs(40)).await;
    let task = app["tasks"][0]["id"].as_str().unwrap().to_string();
    let pid = task_pid(&task).expect("the instance's node process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let app = d
        .wait_app(
            "phoenix",
            Duration::from_secs(40),
            "a new healthy instance",
            |a| a["tasksHealthy"] == 1 && a["tasks"][0]["id"].as_str().is_some_and(|t| t != task),
        )
        .await;
    assert!(app["lastTaskFailure"]["taskId"] == task.as_str(), "{app}");

    // An app that exits at once: its launches spread out (0.5 s, 1 s, 2 s, ...).
    let mut crashy = node_app("/crashy", 1, "x");
    crashy["cmd"] = json!("exit 3");
    crashy["healthChecks"] = json!([]);
    let (events, _watch) = watch_events(&d);
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.create(crashy).await;
    until_ok(
        "the crashing app to be relaunched and fail 4 times",
        Duration::from_secs(40),
        || async {
            let failed = events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["eventType"] == "status_update_event"
                        && e["appId"] == "/crashy"
                        && e["taskStatus"] == "TASK_FAILED"
                })
                .count();
            if failed >= 4 {
                Ok(())
            } else {
                Err(format!("{failed} failures"))
            }
        },
    )
    .await;
    let stamps: Vec<std::time::SystemTime> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            e["eventType"] == "status_update_event"
                && e["appId"] == "/crashy"
                && e["taskStatus"] == "TASK_FAILED"
        })
        .filter_map(|e| humantime::parse_rfc3339(e["timestamp"].as_str()?).ok())
        .collect();
    let gaps: Vec<Duration> = stamps
        .windows(2)
        .filter_map(|w| w[1].duration_since(w[0]).ok())
        .collect();
    assert!(gaps.len() >= 3, "{gaps:?}");
    assert!(
        gaps[2] > gaps[0],
        "the delay grows between failures: {gaps:?}"
    );
    let queue = d.get("/v2/queue").await;
    let entry = queue["queue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["app"]["id"] == "/crashy")
        .cloned();
    assert!(
        entry.is_some(),
        "the crashing app waits in the queue: {queue}"
    );
    let app = d.app("crashy").await;
    assert!(app["lastTaskFailure"]["message"].is_string(), "{app}");
}

/// A new `cmd` rolled out under steady load through the router fails no request; a version
/// whose health check never passes leaves the old one serving and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_under_load_drops_nothing() {
    let d = Arc::new(Drove::start(&[&agent(3), &agent(4)]).await);
    d.create(node_app("/roll", 2, "v1")).await;
    d.wait_healthy("roll", 2, Duration::from_secs(40)).await;

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let seen_v2 = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let load = {
        let (d, ok, failed, seen_v2, stop) = (
            d.clone(),
            ok.clone(),
            failed.clone(),
            seen_v2.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            // At most 60 s and 3,000 requests, ~50 a second.
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..3000 {
                if Instant::now() > deadline {
                    break;
                }
                tokio::select! {
                    _ = stop.notified() => break,
                    r = d.through_router("roll.localhost", "/?delay_ms=5") => match r {
                        Ok((200, body)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if body.starts_with("v2 ") {
                                seen_v2.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        other => failed.lock().unwrap().push(format!("{other:?}")),
                    },
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A slow request in flight on an old instance when the deploy starts still completes:
    // the instance leaves the routes, and is killed only once the router reports it idle.
    let slow = {
        let d = d.clone();
        tokio::spawn(async move { d.through_router("roll.localhost", "/?delay_ms=2500").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut v2 = node_app("/roll", 2, "v2");
    v2["id"] = json!("/roll");
    d.put("roll", v2).await;
    d.wait_app("roll", Duration::from_secs(60), "v2 rolled out", |a| {
        a["deployments"].as_array().is_some_and(|x| x.is_empty())
            && a["tasks"]
                .as_array()
                .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["version"] == a["version"]))
            && a["tasksHealthy"] == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.notify_one();
    load.await.unwrap();
    let failures = failed.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests failed during the deploy: {failures:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");
    let slow = slow.await.unwrap();
    assert!(
        matches!(&slow, Ok((200, body)) if body.starts_with("v1 ")),
        "the slow request on an old instance completed: {slow:?}"
    );
    assert!(seen_v2.load(Ordering::Relaxed) > 0, "v2 served");

    // A version that never becomes healthy: v2 keeps serving, the deployment says why.
    let mut bad = node_app("/roll", 2, "v3");
    bad["env"]["UNHEALTHY"] = json!("1");
    let deployment = d.put("roll", bad).await;
    let reason = until_ok(
        "the stuck deployment to say why",
        Duration::from_secs(40),
        || async {
            let deployments = d.get("/v2/deployments").await;
            deployments
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"] == deployment.as_str()))
                .and_then(|x| {
                    x["currentActions"][0]["readinessCheckResults"][0]["lastResponse"]["body"]
                        .as_str()
                        .map(str::to_string)
                })
                .filter(|r| r.contains("health"))
                .ok_or_else(|| format!("{deployments}"))
        },
    )
    .await;
    assert!(reason.contains("health"), "{reason}");
    for _ in 0..10 {
        let (status, body) = d.through_router("roll.localhost", "/").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.starts_with("v2 "),
            "the old version keeps serving: {body}"
        );
    }
    // Rolling the deployment back returns to v2 alone.
    let (status, body) = d
        .call(
            Method::DELETE,
            &format!("/v2/deployments/{deployment}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let app = d.wait_healthy("roll", 2, Duration::from_secs(40)).await;
    assert_eq!(app["env"]["MESSAGE"], "v2", "{app}");
}

/// The ids of an app's tasks.
fn task_ids(app: &Value) -> HashSet<String> {
    app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

/// Restarting the PaaS kills nothing; the API shows the same instances afterwards. An agent
/// that dies has its instances replaced on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paas_restart_and_agent_loss() {
    let mut d = Drove::start(&[&agent(5), &agent(6)]).await;
    let mut app = node_app("/steady", 2, "v1");
    app["constraints"] = json!([["hostname", "UNIQUE"]]);
    d.create(app).await;
    let before = d.wait_healthy("steady", 2, Duration::from_secs(40)).await;
    let ids = task_ids(&before);
    let pids: Vec<i32> = ids.iter().map(|t| task_pid(t).expect("pid")).collect();

    d.kill_paas();
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.start_paas();
    d.wait_paas().await;
    let after = d.wait_healthy("steady", 2, Duration::from_secs(30)).await;
    let ids_after = task_ids(&after);
    assert_eq!(ids, ids_after, "the same instances after a PaaS restart");
    for p in &pids {
        assert!(support::pid_alive(*p), "instance {p} survived the restart");
    }
    let (status, _) = d.through_router("steady.localhost", "/").await.unwrap();
    assert_eq!(status, 200);

    // Restart the master: nothing is killed; the PaaS subscribes again and carries on.
    d.cluster.kill_master();
    d.cluster.start_master();
    d.cluster.wait_agents(2).await;
    // `/metrics` says whether the PaaS is subscribed (Marathon's /v2/info has no such field).
    eventually(
        "the PaaS to subscribe again",
        Duration::from_secs(30),
        || async {
            let text = d
                .api
                .get(format!("{}/metrics", d.paas_url()))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default();
            text.lines()
                .any(|l| l.trim() == "drove_paas_subscribed 1")
                .then_some(())
        },
    )
    .await;
    let after = d.wait_healthy("steady", 2, Duration::from_secs(30)).await;
    let ids_after = task_ids(&after);
    assert_eq!(ids, ids_after, "the same instances after a master restart");
    for p in &pids {
        assert!(
            support::pid_alive(*p),
            "instance {p} survived the master restart"
        );
    }

    // A task the PaaS does not know (forgotten while it was down) is killed once the master
    // reports it, and replaced.
    d.kill_paas();
    let victim = ids.iter().next().unwrap().clone();
    let victim_pid = task_pid(&victim).expect("pid");
    let db = d.cluster.dir.path().join("paas/paas.db");
    let forget = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM instances WHERE task_id=?', (sys.argv[2],)); c.commit()")
        .arg(&db)
        .arg(&victim)
        .status()
        .expect("python3");
    assert!(forget.success());
    d.start_paas();
    d.wait_paas().await;
    support::wait::until_ok_with(
        "the unknown task to be killed",
        Duration::from_secs(30),
        || async {
            if support::pid_alive(victim_pid) {
                Err(format!("pid {victim_pid} is alive"))
            } else {
                Ok(())
            }
        },
        || format!("logs:\n{}", d.cluster.logs()),
    )
    .await;
    let after = d.wait_healthy("steady", 2, Duration::from_secs(40)).await;
    assert!(after["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["id"] != victim.as_str()));

    // Lose an agent: its instance comes back on the other one (UNIQUE is dropped so it fits).
    d.put("steady", json!({"constraints": []})).await;
    d.wait_healthy("steady", 2, Duration::from_secs(40)).await;
    let lost_host = d.cluster.specs[1].ip.clone();
    d.cluster.kill_agent(1);
    let app = d
        .wait_app(
            "steady",
            Duration::from_secs(60),
            "2 healthy on the surviving agent",
            |a| {
                a["tasksHealthy"] == 2
                    && a["tasks"].as_array().is_some_and(|t| {
                        t.len() == 2 && t.iter().all(|t| t["host"] != lost_host.as_str())
                    })
            },
        )
        .await;
    assert_eq!(app["instances"], 2);
}

/// Tokens and bad input: 401 without or with a wrong token; the router token opens only the
/// router's endpoints; malformed or invalid definitions get Marathon's errors naming the field;
/// nothing is lost by a refused request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_bad_input() {
    let d = Drove::start(&[&agent(7)]).await;
    only_the_right_tokens_get_in(&d).await;
    bad_definitions_are_refused_naming_the_field(&d).await;
    a_deployment_in_progress_locks_the_app_unless_forced(&d).await;
    nothing_refused_was_lost(&d).await;
}

/// 401 without a token or with a wrong one (with `WWW-Authenticate`); the admin token works as
/// a bearer token and as the basic password; the router token only wakes.
async fn only_the_right_tokens_get_in(d: &Drove) {
    let url = |p: &str| format!("{}{p}", d.paas_url());
    let r = d.anon.get(url("/v2/apps")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = d
        .anon
        .get(url("/v2/apps"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .anon
        .get(url("/v2/apps"))
        .basic_auth("marathon", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "basic auth with the token as password");
    let r = d
        .anon
        .get(url("/v2/apps"))
        .bearer_auth(ROUTER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the router token cannot read apps");
    let r = d
        .anon
        .post(url("/v1/apps/nothing/wake"))
        .bearer_auth(ROUTER_TOKEN)
        .json(&json!({"app":"nothing","held":1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the router token may wake; unknown apps are 404"
    );
    let r = d
        .anon
        .post(url("/v1/apps/nothing/wake"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Malformed JSON is a 400; each invalid definition a 422 naming its field; a duplicate id a
/// 409; two apps whose ids make the same host name are refused; an unknown app is a 404.
async fn bad_definitions_are_refused_naming_the_field(d: &Drove) {
    let url = |p: &str| format!("{}{p}", d.paas_url());
    d.create(node_app("/keep", 1, "v1")).await;
    d.wait_healthy("keep", 1, Duration::from_secs(40)).await;

    let post_raw = |body: &'static str| {
        d.api
            .post(url("/v2/apps"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let r = post_raw("{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Invalid JSON");

    for (body, path) in [
        (
            json!({"id": "x1", "cmd": "true", "instances": "two"}),
            "/instances",
        ),
        (json!({"id": "Bad_Id!", "cmd": "true"}), "/id"),
        (json!({"id": "x2", "cmd": "true", "mem": -5}), "/mem"),
        (json!({"id": "x3"}), "/cmd"),
        (json!({"id": "x4", "cmd": "true", "cpus": 1000}), "/cpus"),
        (
            json!({"id": "x5", "cmd": "true", "healthChecks": [{"protocol": "HTTP", "intervalSeconds": 0}]}),
            "/healthChecks(0)/intervalSeconds",
        ),
        (
            json!({"id": "x6", "cmd": "true", "upgradeStrategy": {"minimumHealthCapacity": 2}}),
            "/upgradeStrategy/minimumHealthCapacity",
        ),
        (
            json!({"id": "x7", "cmd": "true", "constraints": [["hostname", "NEAR"]]}),
            "/constraints(0)",
        ),
    ] {
        let (status, v) = d.call(Method::POST, "/v2/apps", Some(body.clone())).await;
        assert_eq!(status, 422, "{body} → {v}");
        assert_eq!(v["message"], "Object is not valid", "{v}");
        assert_eq!(v["details"][0]["path"], path, "{body} → {v}");
    }
    let (status, v) = d
        .call(
            Method::POST,
            "/v2/apps",
            Some(json!({"id": "/k/eep", "cmd": "true", "instances": 0})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = d
        .call(
            Method::POST,
            "/v2/apps",
            Some(json!({"id": "/k-eep", "cmd": "true", "instances": 0})),
        )
        .await;
    assert_eq!(status, 422, "two apps cannot share a host name: {v}");
    assert_eq!(v["details"][0]["path"], "/id");
    let (status, v) = d
        .call(
            Method::POST,
            "/v2/apps",
            Some(node_app("/keep", 1, "again")),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("already exists"));
    let (status, _) = d.call(Method::GET, "/v2/apps/missing", None).await;
    assert_eq!(status, 404);
}

/// A deployment in progress locks the app unless forced.
async fn a_deployment_in_progress_locks_the_app_unless_forced(d: &Drove) {
    let (status, v) = d
        .call(
            Method::PUT,
            "/v2/apps/keep",
            Some(json!({"env": {"MESSAGE": "v2"}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = d
        .call(Method::PUT, "/v2/apps/keep", Some(json!({"instances": 2})))
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["deployments"][0]["id"].is_string(), "{v}");
    let (status, v) = d
        .call(
            Method::PATCH,
            "/v2/apps/keep",
            Some(json!({"instances": "many"})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
}

/// Nothing was lost: the app is still there, serving, with its versions.
async fn nothing_refused_was_lost(d: &Drove) {
    let url = |p: &str| format!("{}{p}", d.paas_url());
    let app = d.wait_healthy("keep", 1, Duration::from_secs(40)).await;
    assert_eq!(app["env"]["MESSAGE"], "v2");
    let versions = d.get("/v2/apps/keep/versions").await;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        2,
        "{versions}"
    );
    let (status, body) = d.through_router("keep.localhost", "/").await.unwrap();
    assert_eq!(
        (status, body.starts_with("v2 ")),
        (200, true),
        "{body}; app {app}\nlogs:\n{}",
        d.cluster.logs()
    );
    for path in [
        "/v2/info",
        "/v2/leader",
        "/v2/tasks",
        "/v2/queue",
        "/v2/deployments",
    ] {
        d.get(path).await;
    }
    let r = d.api.get(url("/ping")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "pong");
    let metrics = d
        .api
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("drove_paas_instances"), "{metrics}");
}

/// What a new user does: `drove up`, `drove deploy` of the README's example, browse it through
/// the router, list it, read its logs, scale it to zero and wake it with a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drove_up_and_the_cli() {
    let up = support::up::Up::start((21600, 21799), &[]).await;
    let dir = &up.dir;
    let paas_url = up.paas_url.clone();
    let router = up.router_port;
    let (data_arg, paas_arg) = (up.data_arg(), up.paas_arg());
    let args = up.args.clone();
    let log = || up.log();
    let token = up.token.clone();
    assert!(log().contains(&token), "drove up prints the admin token");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/hello.json");
    let (ok, out) = cli(&["deploy", example, &paas_arg, &data_arg]).await;
    assert!(ok, "drove deploy: {out}");
    let http = reqwest::Client::new();
    let body = support::wait::until_ok_with(
        "hello to answer",
        Duration::from_secs(40),
        || async {
            let r = http
                .get(format!("http://127.0.0.1:{router}/"))
                .header("Host", "hello.localhost")
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => Ok(r.text().await.unwrap()),
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        },
        || format!("drove up's log:\n{}", log()),
    )
    .await;
    assert!(body.starts_with("hello from drove"), "{body}");

    let (ok, out) = cli(&["apps", &paas_arg, &data_arg]).await;
    assert!(ok && out.contains("/hello"), "drove apps: {out}");
    // Deploying the same file again restarts nothing.
    let tasks = |v: &Value| -> Vec<String> {
        v["app"]["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect()
    };
    let get_app = || async {
        http.get(format!("{paas_url}/v2/apps/hello"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    // Both instances up and the deployment over before comparing.
    let before = until_ok("hello to settle", Duration::from_secs(30), || async {
        let app = get_app().await;
        let settled = app["app"]["tasksHealthy"] == 2
            && app["app"]["deployments"]
                .as_array()
                .is_some_and(|d| d.is_empty());
        if settled {
            Ok(tasks(&app))
        } else {
            Err(format!("{app}"))
        }
    })
    .await;
    let (ok, out) = cli(&["deploy", example, &paas_arg, &data_arg, "--force"]).await;
    assert!(ok, "drove deploy again: {out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = get_app().await;
    assert_eq!(
        tasks(&after),
        before,
        "the same instances: {after}\n{}",
        log()
    );
    // A second drove up on the same ports says why it cannot start.
    let (ok, out) = cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(!ok && out.contains("cannot listen"), "{out}");
    let (ok, out) = cli(&["app", "hello", &paas_arg, &data_arg]).await;
    assert!(ok && out.contains("\"tasksRunning\""), "drove app: {out}");
    // A wrong token is refused with the PaaS's message.
    let (ok, out) = cli(&["apps", &paas_arg, "--token=wrong"]).await;
    assert!(!ok && out.contains("401"), "{out}");

    // Scale to zero, then a request wakes it.
    let (ok, out) = cli(&["scale", "hello", "0", &paas_arg, &data_arg]).await;
    assert!(ok, "drove scale: {out}");
    until_ok(
        "hello to give up its instances",
        Duration::from_secs(30),
        || async {
            let v: Value = http
                .get(format!("{paas_url}/v2/apps/hello"))
                .bearer_auth(token.trim())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["app"]["tasks"].as_array().is_some_and(|t| t.is_empty()) {
                Ok(())
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;
    let r = http
        .get(format!("http://127.0.0.1:{router}/"))
        .header("Host", "hello.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the request that woke hello was answered");

    // Logs come from the agent through the PaaS (the one-liner writes nothing; the test app
    // prints "listening on").
    let mut logged = node_app("/talker", 1, "hi");
    logged["cmd"] = json!("exec node server.js");
    logged["fetch"] =
        json!([{"uri": support::paas::server_js().display().to_string(), "extract": false}]);
    let file = dir.path().join("talker.json");
    std::fs::write(&file, logged.to_string()).unwrap();
    let (ok, out) = cli(&["deploy", file.to_str().unwrap(), &paas_arg, &data_arg]).await;
    assert!(ok, "{out}");
    support::wait::until_ok_with(
        "talker's log line",
        Duration::from_secs(40),
        || async {
            let (ok, out) = cli(&["logs", "talker", &paas_arg, &data_arg]).await;
            if ok && out.contains("listening on") {
                Ok(())
            } else {
                Err(out)
            }
        },
        || format!("drove up's log:\n{}", log()),
    )
    .await;

    // An app with a 2 s idle period goes to zero by itself under `drove up`, and the next
    // request wakes it; the scaler says why, and the wake's timeline is there.
    let mut sleepy = logged.clone();
    sleepy["id"] = json!("/sleepy");
    sleepy["scaling"] = json!({"minInstances": 0, "idleSeconds": 2});
    let file = dir.path().join("sleepy.json");
    std::fs::write(&file, sleepy.to_string()).unwrap();
    let (ok, out) = cli(&["deploy", file.to_str().unwrap(), &paas_arg, &data_arg]).await;
    assert!(ok, "{out}");
    let scaling = || async {
        http.get(format!("{paas_url}/v1/apps/sleepy/scaling"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    until_ok(
        "sleepy to idle to zero",
        Duration::from_secs(40),
        || async {
            let v = scaling().await;
            let idled = v["decisions"].as_array().into_iter().flatten().any(|d| {
                d["to"] == 0 && d["reason"].as_str().is_some_and(|r| r.starts_with("idle"))
            });
            if idled && v["instances"] == 0 {
                Ok(())
            } else {
                Err(format!("{v}"))
            }
        },
    )
    .await;
    let r = http
        .get(format!("http://127.0.0.1:{router}/"))
        .header("Host", "sleepy.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the request that woke sleepy was answered");
    let v = scaling().await;
    assert!(
        v["wakes"].as_array().is_some_and(|w| !w.is_empty()),
        "a wake timeline: {v}"
    );
    drop(up);
}

/// The rest of the Marathon surface tools use: nested ids and their host names, embed and
/// filters, restart, versions and rollback, killing tasks (with and without scale), the queue
/// explaining a launch that cannot happen, the event stream's Accept rule, and deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_api_surface() {
    let d = Drove::start(&[&agent(9)]).await;
    let first = create_list_and_route(&d).await;
    let oldest = restart_records_both_versions(&d, &first).await;
    update_then_roll_back_by_version(&d, &oldest).await;
    tasks_as_text_killed_and_scaled(&d).await;
    an_unplaceable_app_waits_in_the_queue_saying_why(&d).await;
    the_event_stream_wants_its_media_type(&d).await;
    delete_removes_the_app_its_instances_and_route(&d).await;
}

/// An app in a group is created, served through the router at `team-shop.localhost`, and
/// listed by id prefix (with its tasks embedded); an unmatched prefix lists nothing.
async fn create_list_and_route(d: &Drove) -> Value {
    d.create(node_app("/team/shop", 1, "v1")).await;
    let first = d
        .wait_healthy("team/shop", 1, Duration::from_secs(40))
        .await;
    let (status, body) = d.through_router("team-shop.localhost", "/").await.unwrap();
    assert_eq!((status, body.starts_with("v1 ")), (200, true), "{body}");

    let listed = d.get("/v2/apps?embed=apps.tasks&id=team").await;
    assert_eq!(listed["apps"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["apps"][0]["tasks"].as_array().unwrap().len(), 1);
    let none = d.get("/v2/apps?id=nothing-like-it").await;
    assert!(none["apps"].as_array().unwrap().is_empty());
    first
}

/// A restart replaces the instance, and the versions record both definitions (each readable;
/// an unknown one is a 404). Returns the oldest version.
async fn restart_records_both_versions(d: &Drove, first: &Value) -> String {
    let old_task = first["tasks"][0]["id"].as_str().unwrap().to_string();
    let (status, v) = d
        .call(Method::POST, "/v2/apps/team/shop/restart", None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["deploymentId"].is_string());
    d.wait_app(
        "team/shop",
        Duration::from_secs(40),
        "a new instance",
        |a| {
            a["tasksHealthy"] == 1
                && a["deployments"].as_array().is_some_and(|x| x.is_empty())
                && a["tasks"]
                    .as_array()
                    .is_some_and(|t| t.len() == 1 && t[0]["id"] != old_task.as_str())
        },
    )
    .await;
    let versions = d.get("/v2/apps/team/shop/versions").await;
    let versions: Vec<String> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let oldest = versions.last().unwrap().clone();
    let at = d
        .get(&format!("/v2/apps/team/shop/versions/{oldest}"))
        .await;
    assert_eq!(at["version"], oldest.as_str());
    assert_eq!(at["env"]["MESSAGE"], "v1");
    let (status, _) = d
        .call(
            Method::GET,
            "/v2/apps/team/shop/versions/1999-01-01T00:00:00.000Z",
            None,
        )
        .await;
    assert_eq!(status, 404);
    oldest
}

/// A change, then a rollback to the first version by `{"version": V}`.
async fn update_then_roll_back_by_version(d: &Drove, oldest: &str) {
    d.put("team/shop", json!({"env": {"MESSAGE": "v2"}})).await;
    d.wait_app("team/shop", Duration::from_secs(40), "v2 serving", |a| {
        a["env"]["MESSAGE"] == "v2"
            && a["deployments"].as_array().is_some_and(|x| x.is_empty())
            && a["tasksHealthy"] == 1
    })
    .await;
    d.put("team/shop", json!({"version": oldest})).await;
    d.wait_app("team/shop", Duration::from_secs(40), "v1 again", |a| {
        a["env"]["MESSAGE"] == "v1"
            && a["deployments"].as_array().is_some_and(|x| x.is_empty())
            && a["tasksHealthy"] == 1
    })
    .await;
}

/// Tasks as plain text; a task killed without `scale` is replaced, with `scale=true` the count
/// drops.
async fn tasks_as_text_killed_and_scaled(d: &Drove) {
    let text = d
        .api
        .get(format!("{}/v2/apps/team/shop/tasks", d.paas_url()))
        .header("Accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("127.0.0.2:"), "{text}");
    d.put("team/shop", json!({"instances": 2})).await;
    let app = d
        .wait_healthy("team/shop", 2, Duration::from_secs(40))
        .await;
    let victim = app["tasks"][0]["id"].as_str().unwrap().to_string();
    let (status, v) = d
        .call(
            Method::POST,
            "/v2/tasks/delete",
            Some(json!({"ids": [victim]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    d.wait_app(
        "team/shop",
        Duration::from_secs(40),
        "the killed task replaced",
        |a| {
            a["tasksHealthy"] == 2
                && a["tasks"]
                    .as_array()
                    .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["id"] != victim.as_str()))
        },
    )
    .await;
    let app = d.app("team/shop").await;
    let victim = app["tasks"][0]["id"].as_str().unwrap().to_string();
    let (status, v) = d
        .call(
            Method::DELETE,
            &format!("/v2/apps/team/shop/tasks/{victim}?scale=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let app = d
        .wait_healthy("team/shop", 1, Duration::from_secs(40))
        .await;
    assert_eq!(app["instances"], 1, "scale=true lowered the count");
}

/// An app no agent can take waits in the queue, which says why.
async fn an_unplaceable_app_waits_in_the_queue_saying_why(d: &Drove) {
    let mut nowhere = node_app("/nowhere", 1, "x");
    nowhere["constraints"] = json!([["hostname", "CLUSTER", "no-such-host"]]);
    d.create(nowhere).await;
    until_ok(
        "the queue to explain /nowhere",
        Duration::from_secs(30),
        || async {
            let q = d.get("/v2/queue").await;
            let entry = q["queue"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["app"]["id"] == "/nowhere")
                .cloned();
            let declined = entry.as_ref().and_then(|e| {
                e["processedOffersSummary"]["rejectSummaryLastOffers"]
                    .as_array()?
                    .iter()
                    .find(|r| r["reason"] == "UnfulfilledConstraint")
                    .and_then(|r| r["declined"].as_u64())
            });
            if declined.is_some_and(|n| n > 0) {
                assert_eq!(entry.unwrap()["count"], 1);
                return Ok(());
            }
            Err(format!("{q}"))
        },
    )
    .await;
}

/// `/v2/events` without `Accept: text/event-stream` is refused.
async fn the_event_stream_wants_its_media_type(d: &Drove) {
    let r = d
        .api
        .get(format!("{}/v2/events", d.paas_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

/// Deleting removes the app, its instances and its route.
async fn delete_removes_the_app_its_instances_and_route(d: &Drove) {
    let pid = task_pid(d.app("team/shop").await["tasks"][0]["id"].as_str().unwrap()).expect("pid");
    let (status, v) = d.call(Method::DELETE, "/v2/apps/team/shop", None).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = d.call(Method::GET, "/v2/apps/team/shop", None).await;
    assert_eq!(status, 404);
    eventually(
        "the deleted app's instance and route to go",
        Duration::from_secs(30),
        || async {
            let gone = !support::pid_alive(pid)
                && d.through_router("team-shop.localhost", "/")
                    .await
                    .map(|r| r.0)
                    == Ok(404);
            gone.then_some(())
        },
    )
    .await;
}

/// A PaaS whose database stops taking writes refuses the change (503) instead of answering it,
/// says so on `/ping` and refuses the next change at once; what its scheduler did meanwhile (an
/// instance replaced) is kept and written once the disk is back, so after a restart the
/// replacement is still the app's instance (not killed as unknown); every answered change
/// survives the restart (a write after a failed one really reaches the disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_is_refused_and_nothing_answered_is_lost() {
    let mut d = Drove::start(&[&agent(18)]).await;
    d.create(node_app("/durable", 1, "v1")).await;
    let app = d.wait_healthy("/durable", 1, Duration::from_secs(30)).await;
    let first = app["tasks"][0]["id"].as_str().expect("a task").to_string();
    let dir = d.cluster.dir.path().join("paas");
    let mut immutable = support::Immutable::set(&[dir.join("paas.db"), dir.join("paas.db-wal")]);
    let (status, body) = d
        .call(
            Method::PUT,
            "/v2/apps/durable?force=true",
            Some(json!({"instances": 2})),
        )
        .await;
    assert_eq!(
        status, 503,
        "an unwritable store refuses the change: {body}"
    );
    assert_eq!(
        d.app("/durable").await["instances"],
        1,
        "nothing was applied"
    );
    let ping = d.api.get(url_of(&d, "/ping")).send().await.expect("ping");
    assert_eq!(ping.status(), 503);
    assert!(ping.text().await.unwrap_or_default().contains("paas.db"));
    let started = Instant::now();
    let (status, _) = d
        .call(
            Method::PUT,
            "/v2/apps/durable?force=true",
            Some(json!({"instances": 2})),
        )
        .await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once while failed"
    );
    // The scheduler replaces a dead instance meanwhile: its own bookkeeping waits for the disk.
    let pid = support::paas::task_pid(&first).expect("the instance's process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let app = d
        .wait_app("durable", Duration::from_secs(30), "a replacement", |a| {
            a["tasksHealthy"] == 1 && a["tasks"][0]["id"] != first.as_str()
        })
        .await;
    let second = app["tasks"][0]["id"].as_str().expect("a task").to_string();
    immutable.clear();
    until_ok("the store to recover", Duration::from_secs(20), || async {
        let metrics = d
            .api
            .get(url_of(&d, "/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        let ping = d.api.get(url_of(&d, "/ping")).send().await.expect("ping");
        if ping.status() == 200
            && metrics.contains("drove_paas_store_failed 0")
            && metrics.contains("drove_paas_store_pending_ops 0")
        {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
    let (status, body) = d
        .call(
            Method::PUT,
            "/v2/apps/durable?force=true",
            Some(json!({"instances": 3})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    d.kill_paas();
    d.start_paas();
    d.wait_paas().await;
    let app = d.app("/durable").await;
    assert_eq!(
        app["instances"], 3,
        "the answered change survived a restart: {app}"
    );
    let app = d.wait_healthy("/durable", 3, Duration::from_secs(40)).await;
    let ids: Vec<&str> = app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(
        ids.contains(&second.as_str()),
        "the replacement made while the store failed is still the app's: {ids:?}"
    );
}

fn url_of(d: &Drove, path: &str) -> String {
    format!("{}{path}", d.paas_url())
}

/// An app gets its own network by default; asking for the host's (Marathon's
/// `networks: [{mode: host}]`) is refused, naming the flag, unless the agent allows it, and then
/// the instance is reached at its agent's address. A Docker container or an unknown network
/// mode is a 422 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_networking_only_where_the_operator_allows_it() {
    let d = Drove::start(&[&agent(35)]).await;
    let mut bad = node_app("/odd", 1, "x");
    bad["networks"] = json!([{"mode": "bridge-ish"}]);
    let (status, body) = d.call(Method::POST, "/v2/apps", Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("/networks(0)/mode"), "{body}");
    let mut docker = node_app("/docker", 1, "x");
    docker["container"] = json!({"type": "DOCKER", "docker": {"image": "nginx"}});
    let (status, body) = d.call(Method::POST, "/v2/apps", Some(docker)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("/container/type"), "{body}");

    // Positive control: the same app on its own network runs, at its own address.
    d.create(node_app("/own", 1, "own")).await;
    let app = d.wait_healthy("own", 1, Duration::from_secs(40)).await;
    let ip = app["tasks"][0]["ipAddresses"][0]["ipAddress"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(ip.starts_with("10.213."), "its own address: {app}");
    let (status, body) = d
        .through_router("own.localhost", "/")
        .await
        .expect("router");
    assert_eq!((status, body.starts_with("own ")), (200, true), "{body}");

    let mut host = node_app("/hostnet", 1, "host");
    host["networks"] = json!([{"mode": "host"}]);
    d.create(host.clone()).await;
    let app = d
        .wait_app(
            "hostnet",
            Duration::from_secs(40),
            "a refused launch",
            |a| {
                a["lastTaskFailure"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("host's network"))
            },
        )
        .await;
    assert!(
        app["lastTaskFailure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--allow-host-network")),
        "{app}"
    );

    let allowed = Drove::start_with_agent_args(&[&agent(36)], &["--allow-host-network"]).await;
    allowed.create(host).await;
    let app = allowed
        .wait_healthy("hostnet", 1, Duration::from_secs(40))
        .await;
    let task = &app["tasks"][0];
    assert_eq!(
        task["ipAddresses"][0]["ipAddress"], task["host"],
        "on the host's network it is reached at its agent's address: {app}"
    );
    let (status, body) = allowed
        .through_router("hostnet.localhost", "/")
        .await
        .expect("router");
    assert_eq!((status, body.starts_with("host ")), (200, true), "{body}");
}
