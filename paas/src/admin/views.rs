//! What each dashboard page shows, read from `ops::views` (the views the API serves, with no
//! HTTP in between) and the master's `/master/state`; shaped for the templates: plain JSON
//! with the numbers already formatted and the charts already drawn.

use std::time::SystemTime;

use drove_proto::paas::ScalingView;
use serde_json::{json, Value};

use super::charts::{self, Chart, Series};
use super::history::{self, Sample};
use crate::ops;
use crate::ops::views::Stream;
use crate::Paas;

/// An app's wake or failure counts as recent for this long.
const RECENT_MS: u64 = 10 * 60 * 1000;
/// An app with no request for this long is idle.
const IDLE_MS: u64 = 60 * 1000;
/// Lines of each instance's stdout and stderr shown.
const LOG_LINES: usize = 40;
/// Bytes read from the end of each log.
const LOG_TAIL: u64 = 8 * 1024;
/// Releases whose build log is shown, and its last lines shown.
const LOGGED_RELEASES: usize = 3;
const BUILD_LOG_LINES: usize = 200;
/// A log tail that takes longer (an agent away) is shown as not read.
const TAIL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn now_ms() -> u64 {
    crate::model::now_ms()
}

/// An RFC 3339 time as ms since the epoch.
fn epoch_ms(t: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()?;
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// "4 s", "3 min", "2 h 5 min", "3 d".
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d", s / 86_400),
    }
}

fn ago_ms(ms: Option<u64>) -> String {
    match ms {
        Some(t) => format!("{} ago", span(now_ms().saturating_sub(t))),
        None => "never".into(),
    }
}

/// "12:03:04" from an RFC 3339 time.
fn clock(t: &str) -> String {
    t.get(11..19).unwrap_or(t).to_string()
}

/// An instance is ready when it runs and its health checks (if any) pass.
fn ready(task: &Value) -> bool {
    task["state"] == "TASK_RUNNING"
        && match task["healthCheckResults"].as_array() {
            None => true,
            Some(r) => r.first().is_some_and(|h| h["alive"] == true),
        }
}

fn health(task: &Value) -> &'static str {
    match task["healthCheckResults"].as_array() {
        None => "no checks",
        Some(r) => match r.first().map(|h| h["alive"] == true) {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => "unknown",
        },
    }
}

fn addr(task: &Value) -> String {
    let host = task["host"].as_str().unwrap_or("?");
    match task["ports"].as_array().and_then(|p| p.first()) {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// The app's route name (`/team/shop` → `team-shop`): its name in the dashboard's URLs.
pub fn route(id: &str) -> String {
    crate::model::app::route_name(id).unwrap_or_else(|| id.trim_matches('/').to_string())
}

/// The state an operator reads first: failing, waking, deploying, suspended, at zero, idle or
/// running; from the app's `/v2/apps` JSON (with its tasks), its `/v2/queue` entry and its
/// scaling view (`/v1/apps/{app}/scaling`). The dashboard and `drove apps` show it.
pub fn app_state(
    app: &Value,
    queued: Option<&Value>,
    scaling: Option<&ScalingView>,
) -> &'static str {
    let now = now_ms();
    let waking = scaling.is_some_and(|s| s.waking.is_some());
    let load = scaling.map(|s| s.load).unwrap_or_default();
    let wanted = app["instances"].as_u64().unwrap_or(0);
    let tasks = app["tasks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let ready_n = tasks.iter().filter(|t| ready(t)).count() as u64;
    let failed_recently = app["lastTaskFailure"]["timestamp"]
        .as_str()
        .and_then(epoch_ms)
        .is_some_and(|t| now.saturating_sub(t) < RECENT_MS);
    let backing_off = queued.is_some_and(|q| q["delay"]["overdue"] == false);
    if (failed_recently && ready_n < wanted) || backing_off {
        "failing"
    } else if waking {
        "waking"
    } else if app["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
        "deploying"
    } else if wanted == 0
        && app["scaling"]
            .as_object()
            .is_none_or(|s| s.get("suspended") == Some(&Value::Bool(true)))
    {
        "suspended"
    } else if wanted == 0 {
        "at zero"
    } else if load
        .last_request_ms
        .is_none_or(|t| now.saturating_sub(t) > IDLE_MS)
        && load.in_flight == 0
    {
        "idle"
    } else {
        "running"
    }
}

fn state_class(state: &str) -> &'static str {
    match state {
        "failing" => "bad",
        "waking" | "deploying" => "busy",
        "at zero" | "idle" | "suspended" => "quiet",
        _ => "good",
    }
}

fn instance(task: &Value) -> Value {
    let started = task["startedAt"].as_str().and_then(epoch_ms);
    json!({
        "id": task["id"], "addr": addr(task), "state": task["state"].as_str().unwrap_or("")
            .trim_start_matches("TASK_").to_lowercase(),
        "health": health(task), "ready": ready(task),
        "uptime": started.map(|t| span(now_ms().saturating_sub(t))).unwrap_or_else(|| "—".into()),
        "agent": task["slaveId"],
    })
}

/// Why an app that wants instances has none yet: its offers' declines, from `/v2/queue`.
fn waiting(q: &Value) -> Value {
    let summary = &q["processedOffersSummary"];
    let reasons: Vec<String> = summary["rejectSummaryLastOffers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["declined"].as_u64().unwrap_or(0) > 0)
        .map(|r| format!("{} ×{}", r["reason"].as_str().unwrap_or("?"), r["declined"]))
        .collect();
    let delay = q["delay"]["timeLeftSeconds"].as_u64().unwrap_or(0);
    json!({
        "app": q["app"]["id"], "route": route(q["app"]["id"].as_str().unwrap_or("")),
        "count": q["count"], "since": clock(q["since"].as_str().unwrap_or("")),
        "processed": summary["processedOffersCount"], "unused": summary["unusedOffersCount"],
        "reasons": reasons, "backoff": (delay > 0).then(|| format!("backing off for {delay} s after failures")),
    })
}

fn queue(paas: &Paas) -> Vec<Value> {
    ops::views::queue(&paas.lock())
}

fn queued<'a>(queue: &'a [Value], id: &str) -> Option<&'a Value> {
    queue.iter().find(|q| q["app"]["id"] == id)
}

fn mb(x: f64) -> String {
    if x >= 1024.0 {
        format!("{} GB", charts::number(x / 1024.0))
    } else {
        format!("{} MB", charts::number(x))
    }
}

/// The Cluster page: agents, frameworks, offers, and who is starving and why.
pub async fn cluster(paas: &Paas) -> Value {
    let Some(m) = crate::json_answer(paas.master_get("/master/state")).await else {
        return json!({"master_error": format!("the master at {} cannot be read", paas.args.master)});
    };
    let slaves = m["slaves"].as_array().cloned().unwrap_or_default();
    let hostname = |id: &Value| {
        slaves
            .iter()
            .find(|s| &s["id"] == id)
            .and_then(|s| s["hostname"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let agents: Vec<Value> = slaves
        .iter()
        .map(|a| {
            let r = &a["resources"];
            let u = &a["used_resources"];
            let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
            let ping = a["last_ping_seconds_ago"].as_f64();
            let status = if a["active"] == true {
                "active"
            } else if a["recovering"] == true {
                "recovering"
            } else {
                "inactive"
            };
            json!({
                "id": a["id"], "hostname": a["hostname"], "endpoint": a["endpoint"],
                "status": status, "ok": status == "active",
                "cpu": charts::bar(f(u, "cpus"), f(r, "cpus"), "cpus"),
                "mem": charts::bar(f(u, "mem"), f(r, "mem"), "MB"),
                "heartbeat": ping.map(|s| format!("{} ago", span((s * 1000.0) as u64))).unwrap_or_else(|| "—".into()),
                "offered": format!("{} cpus, {}", charts::number(f(&a["offered_resources"], "cpus")),
                    mb(f(&a["offered_resources"], "mem"))),
            })
        })
        .collect();
    let frameworks: Vec<Value> = m["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let u = &f["used_resources"];
            let al = &f["allocator"];
            let filters: Vec<String> = al["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    format!(
                        "declined {}'s offers: filtered for {} more",
                        hostname(&x["agent_id"]),
                        span((x["expires_in_seconds"].as_f64().unwrap_or(0.0) * 1000.0) as u64)
                    )
                })
                .collect();
            let last = al["last_allocation"]["seconds_ago"]
                .as_f64()
                .map(|s| format!("{} ago", span((s * 1000.0) as u64)))
                .unwrap_or_else(|| "never".into());
            json!({
                "name": f["name"], "id": f["id"], "active": f["active"],
                "share": format!("{:.1} %", al["share"].as_f64().unwrap_or(0.0) * 100.0),
                "used": format!("{} cpus, {}", charts::number(u["cpus"].as_f64().unwrap_or(0.0)),
                    mb(u["mem"].as_f64().unwrap_or(0.0))),
                "tasks": f["tasks"].as_array().map(Vec::len).unwrap_or(0),
                "offers": f["offers"].as_array().map(Vec::len).unwrap_or(0),
                "suppressed": f["suppressed"] == true,
                "last_offer": last, "filters": filters,
            })
        })
        .collect();
    let offers: Vec<Value> = m["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| {
            let name = f["name"].clone();
            let hostname = &hostname;
            f["offers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |o| {
                    let r = &o["resources"];
                    json!({
                        "id": o["id"], "framework": name, "agent": hostname(&o["agent_id"]),
                        "resources": format!("{} cpus, {}", charts::number(r["cpus"].as_f64().unwrap_or(0.0)),
                            mb(r["mem"].as_f64().unwrap_or(0.0))),
                    })
                })
        })
        .collect();
    let starving: Vec<Value> = queue(paas).iter().map(waiting).collect();
    let totals = |k: &str, of: &str| {
        slaves
            .iter()
            .map(|s| s[of][k].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    json!({
        "agents": agents, "frameworks": frameworks, "offers": offers, "starving": starving,
        "cpu": charts::bar(totals("cpus", "used_resources"), totals("cpus", "resources"), "cpus"),
        "mem": charts::bar(totals("mem", "used_resources"), totals("mem", "resources"), "MB"),
    })
}

fn rates(samples: &[Sample]) -> Vec<Option<f64>> {
    samples.iter().map(|s| s.rate).collect()
}

/// The Apps page: every app with its state, instances, load.
pub fn apps(paas: &Paas) -> Value {
    let all: Vec<Value> = {
        let s = paas.lock();
        s.apps
            .values()
            .filter(|a| !a.deleting)
            .map(|a| ops::views::app(&s, a, true))
            .collect()
    };
    let queue = queue(paas);
    let mut rows = Vec::new();
    for app in &all {
        let id = app["id"].as_str().unwrap_or("");
        let name = route(id);
        let scaling = ops::views::scaling(paas, &name);
        let state = app_state(app, queued(&queue, id), scaling.as_ref());
        let tasks = app["tasks"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let samples: &[Sample] = scaling.as_ref().map_or(&[], |s| &s.history);
        let recent = &samples[samples.len().saturating_sub(30)..];
        let rate_now = recent.iter().rev().find_map(|s| s.rate);
        rows.push(json!({
            "id": id, "name": name, "state": state, "class": state_class(state),
            "wanted": app["instances"], "ready": tasks.iter().filter(|t| ready(t)).count(),
            "where": tasks.iter().map(addr).collect::<Vec<_>>(),
            "spark": charts::sparkline(&rates(recent),
                &format!("{} req/s now; last 5 min", charts::number(rate_now.unwrap_or(0.0)))),
            "p99": samples.last().and_then(|s| s.p99).map(|p| format!("{} ms", charts::number(p))),
            "last_request": ago_ms(scaling.as_ref().and_then(|s| s.load.last_request_ms)),
            "note": note(app, queued(&queue, id), state),
        }));
    }
    json!({ "apps": rows })
}

/// One line on why an app is not as it should be: what its offers lacked, its backoff, and
/// (while it is failing) how its last instance ended and what it wrote last. The dashboard's
/// apps page and `drove apps` show it.
pub fn note(app: &Value, queued: Option<&Value>, state: &str) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(q) = queued {
        let w = waiting(q);
        let reasons: Vec<&str> = w["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !reasons.is_empty() {
            parts.push(format!("waiting for resources: {}", reasons.join(", ")));
        }
        if let Some(b) = w["backoff"].as_str() {
            parts.push(b.to_string());
        }
    }
    if state == "failing" {
        if let Some(m) = app["lastTaskFailure"]["message"].as_str() {
            let lines: Vec<&str> = m.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            // How it ended, and what it said: its error line if it wrote one (`TypeError: …`,
            // `error: …`), else its last.
            let error_line = |l: &&&str| {
                let name = l.split(':').next().unwrap_or("");
                name.len() < l.len()
                    && !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
                    && (name.ends_with("Error") || name.eq_ignore_ascii_case("error"))
            };
            let said = lines
                .iter()
                .skip(1)
                .find(error_line)
                .or(lines.iter().skip(1).last())
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            parts.push(format!(
                "last failure: {}{said}",
                lines.first().copied().unwrap_or("")
            ));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The hour's charts of one app.
fn app_charts(samples: &[Sample]) -> Value {
    let to = now_ms();
    let from = to.saturating_sub(history::STEP.as_millis() as u64 * history::KEPT as u64);
    let pts = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(u64, Option<f64>)> {
        samples.iter().map(|s| (s.at_ms, f(s))).collect()
    };
    let rate = pts(&|s| s.rate);
    let p50 = pts(&|s| s.p50);
    let p99 = pts(&|s| s.p99);
    let wanted = pts(&|s| Some(f64::from(s.wanted)));
    let ready = pts(&|s| Some(f64::from(s.ready)));
    json!({
        "rate": charts::line(&Chart { title: "Requests", unit: "req/s", from_ms: from, to_ms: to,
            series: vec![Series { name: "rate", class: "s1", points: &rate }], step: false, integer: false }),
        "latency": charts::line(&Chart { title: "Latency (routers' last minute)", unit: "ms",
            from_ms: from, to_ms: to, series: vec![
                Series { name: "p50", class: "s1", points: &p50 },
                Series { name: "p99", class: "s2", points: &p99 }], step: false, integer: false }),
        "instances": charts::line(&Chart { title: "Instances", unit: "instances", from_ms: from,
            to_ms: to, series: vec![
                Series { name: "wanted", class: "s3", points: &wanted },
                Series { name: "ready", class: "s1", points: &ready }], step: true, integer: true }),
    })
}

/// The last lines of a task's stream.
async fn tail(paas: &Paas, task: &str, stream: Stream) -> String {
    let query = format!("tail={LOG_TAIL}");
    let read = ops::views::task_log(paas, task, stream, Some(&query));
    let log = match tokio::time::timeout(TAIL_WAIT, read).await {
        Err(_) => return format!("(not read: no answer within {} s)", TAIL_WAIT.as_secs()),
        Ok(Err(e)) => return format!("({e})"),
        Ok(Ok(log)) => log,
    };
    let text = String::from_utf8_lossy(&log.bytes);
    if !(200..300).contains(&log.status) {
        return format!("({})", text.trim());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
}

/// One app's page; `None` when there is no such app.
pub async fn app(paas: &Paas, name: &str) -> Option<Value> {
    let id = {
        let s = paas.lock();
        s.app_by_route(name)?.def.id.clone()
    };
    let app = {
        let s = paas.lock();
        let a = s.apps.get(&id).filter(|a| !a.deleting)?;
        ops::views::app(&s, a, true)
    };
    let app = &app;
    let scaling = ops::views::scaling(paas, name)?;
    let queue = queue(paas);
    let q = queued(&queue, &id);
    let state = app_state(app, q, Some(&scaling));
    let tasks = app["tasks"].as_array().cloned().unwrap_or_default();
    let samples = &scaling.history;
    // Every instance's tails at once, each bounded by TAIL_WAIT.
    let logs: Vec<Value> = futures::future::join_all(tasks.iter().map(|t| async move {
        let tid = t["id"].as_str().unwrap_or("");
        let (stdout, stderr) = tokio::join!(
            tail(paas, tid, Stream::Stdout),
            tail(paas, tid, Stream::Stderr)
        );
        json!({"id": tid, "addr": addr(t), "stdout": stdout, "stderr": stderr})
    }))
    .await;
    let decisions: Vec<Value> = scaling
        .decisions
        .iter()
        .rev()
        .map(|d| {
            json!({"at": clock(&d.timestamp), "from": d.from, "to": d.to, "reason": d.reason,
                "by": d.by})
        })
        .collect();
    let wakes: Vec<Value> = scaling
        .wakes
        .iter()
        .rev()
        .map(|w| {
            let steps: Vec<(String, f64)> =
                w.steps.iter().map(|s| (s.step.clone(), s.ms)).collect();
            json!({"at": clock(&w.timestamp), "held": w.held,
                "total": format!("{} ms", charts::number(w.total_ms.round())),
                "chart": charts::waterfall(&steps)})
        })
        .collect();
    let s = &app["scaling"];
    let settings = (!s.is_null()).then(|| {
        json!({"min": s["minInstances"], "max": s["maxInstances"], "idle": s["idleSeconds"],
            "target": s["targetConcurrency"], "floor": s["floor"]})
    });
    let releases = releases(paas, name).await;
    Some(json!({
        "id": id, "name": name, "state": state, "class": state_class(state),
        "domain": paas.args.domain, "router_port": paas.args.router_port,
        "wanted": app["instances"], "ready": tasks.iter().filter(|t| ready(t)).count(),
        "version": app["version"], "cmd": app["cmd"],
        "resources": format!("{} cpus, {}", charts::number(app["cpus"].as_f64().unwrap_or(0.0)),
            mb(app["mem"].as_f64().unwrap_or(0.0))),
        "instances": tasks.iter().map(instance).collect::<Vec<_>>(),
        "waiting": q.map(waiting),
        "last_failure": app["lastTaskFailure"]["message"],
        "charts": app_charts(samples),
        "scaling": settings, "panicking": scaling.panicking,
        "load": {"in_flight": scaling.load.in_flight, "held": scaling.load.held,
            "last_request": ago_ms(scaling.load.last_request_ms)},
        "decisions": decisions, "wakes": wakes,
        "waking": scaling.waking.is_some(),
        "releases": releases,
        "logs": logs,
    }))
}

/// A pushed app's releases, newest first, the latest with their build logs; `null` for an app
/// deployed through `/v2`.
async fn releases(paas: &Paas, name: &str) -> Value {
    if paas.push.app(name).is_none() {
        return Value::Null;
    }
    let all = match crate::push::releases::of(paas, name).await {
        Ok(all) => all,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let current = all
        .iter()
        .rev()
        .find(|r| r.status == "succeeded")
        .map(|r| r.number);
    let mut out = Vec::new();
    for (i, r) in all.iter().rev().enumerate() {
        let log = if i < LOGGED_RELEASES {
            r.log[r.log.len().saturating_sub(BUILD_LOG_LINES)..].join("\n")
        } else {
            String::new()
        };
        let current = current == Some(r.number);
        out.push(json!({
            "version": format!("v{}", r.number), "status": r.status, "by": r.by,
            "commit": r.commit.chars().take(8).collect::<String>(),
            "created": format!("{} {}", r.created.get(..10).unwrap_or(""), clock(&r.created)),
            "config": r.config.keys().collect::<Vec<_>>(), "current": current,
            "can_roll_back": !current && r.status == "succeeded",
            "log": log,
        }));
    }
    json!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drove_proto::paas::{Load, WakeTimeline};

    fn app(instances: u32, tasks: Value) -> Value {
        json!({"instances": instances, "tasks": tasks, "deployments": []})
    }

    fn view(last_request_ms: Option<u64>, waking: bool) -> ScalingView {
        let timeline = WakeTimeline {
            app_id: "/a".into(),
            timestamp: crate::model::timestamp(),
            held: None,
            total_ms: 0.0,
            steps: Vec::new(),
            container: Default::default(),
        };
        ScalingView {
            app_id: "/a".into(),
            instances: 1,
            scaling: None,
            decisions: Vec::new(),
            panicking: false,
            idle_seconds: None,
            concurrency: None,
            load: Load {
                in_flight: 0,
                held: 0,
                last_request_ms,
            },
            wakes: Vec::new(),
            waking: waking.then_some(timeline),
            history: Vec::new(),
        }
    }

    #[test]
    fn states_read_as_an_operator_expects() {
        let running = json!([{"state": "TASK_RUNNING"}]);
        let fresh = view(Some(now_ms()), false);
        let fresh = Some(&fresh);
        let stale = view(None, false);
        let stale = Some(&stale);
        assert_eq!(app_state(&app(1, running.clone()), None, fresh), "running");
        assert_eq!(app_state(&app(1, running.clone()), None, stale), "idle");
        let mut scaled = app(0, json!([]));
        scaled["scaling"] = json!({"minInstances": 0});
        assert_eq!(app_state(&scaled, None, stale), "at zero");
        assert_eq!(app_state(&app(0, json!([])), None, stale), "suspended");
        scaled["scaling"]["suspended"] = json!(true);
        assert_eq!(app_state(&scaled, None, stale), "suspended");
        let waking = view(None, true);
        assert_eq!(app_state(&app(1, json!([])), None, Some(&waking)), "waking");
        let mut deploying = app(2, running.clone());
        deploying["deployments"] = json!([{"id": "d"}]);
        assert_eq!(app_state(&deploying, None, fresh), "deploying");
        let mut failing = app(1, json!([]));
        failing["lastTaskFailure"] = json!({"timestamp": crate::model::timestamp()});
        assert_eq!(app_state(&failing, None, fresh), "failing");
        let backoff = json!({"delay": {"overdue": false}});
        assert_eq!(
            app_state(&app(1, running), Some(&backoff), fresh),
            "failing"
        );
    }

    #[test]
    fn spans_and_times_are_short() {
        assert_eq!(span(4_000), "4 s");
        assert_eq!(span(185_000), "3 min");
        assert_eq!(span(7_500_000), "2 h 5 min");
        assert_eq!(clock("2026-12-02T01:02:03.456Z"), "01:02:03");
        assert_eq!(epoch_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(route("/team/shop"), "team-shop");
    }
}
