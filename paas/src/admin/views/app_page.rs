//! One app's page: its state, instances, charts, scaler, wakes, releases and log tails.

use drove_proto::marathon::Task;
use serde::Serialize;

use super::{
    ago_ms, app_state, clock, cpus_mem, epoch_ms, now_ms, queue, queued, span, state_class, Waiting,
};
use crate::admin::charts::{self, Chart, Series};
use crate::admin::history::{self, Sample};
use crate::model::app::route_name;
use crate::ops;
use crate::ops::views::Stream;
use crate::push::releases::Release;
use crate::Paas;

/// A custom domain as its row shows it.
#[derive(Debug, Serialize)]
pub struct DomainRow {
    pub hostname: String,
    /// Its certificate and issuance, in a line.
    pub https: String,
}

/// Lines of each instance's stdout and stderr shown.
const LOG_LINES: usize = 40;
/// Bytes read from the end of each log.
const LOG_TAIL: u64 = 8 * 1024;
/// Releases whose build log is shown, and its last lines shown.
const LOGGED_RELEASES: usize = 3;
const BUILD_LOG_LINES: usize = 200;
/// A log tail that takes longer (an agent away) is shown as not read.
const TAIL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct AppPage {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub class: &'static str,
    /// Where it is served: `<name>.<domain>:<router_port>`.
    pub domain: String,
    pub router_port: u16,
    pub wanted: u32,
    pub ready: usize,
    pub version: String,
    pub cmd: Option<String>,
    pub resources: String,
    pub instances: Vec<InstanceRow>,
    pub waiting: Option<Waiting>,
    /// How its last instance ended, and what it wrote last.
    pub last_failure: Option<String>,
    pub charts: Charts,
    pub scaling: Option<ScalingSettings>,
    pub panicking: bool,
    pub load: LoadNow,
    /// Newest first.
    pub decisions: Vec<DecisionRow>,
    pub wakes: Vec<WakeRow>,
    pub waking: bool,
    /// Its custom domains.
    pub domains: Vec<DomainRow>,
    /// Its own hostname's certificate, in a line, when it has one or one is being got.
    pub own_https: Option<String>,
    /// Its HTTPS address, once it has a certificate.
    pub https_url: Option<String>,
    /// `None` for an app deployed through `/v2` (it has no releases).
    pub releases: Option<Vec<ReleaseRow>>,
    /// Why its releases could not be read.
    pub releases_error: Option<String>,
    pub logs: Vec<LogTail>,
}

#[derive(Debug, Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub addr: String,
    /// `running`, `staging`, …
    pub state: String,
    /// `healthy`, `unhealthy`, `unknown` or `no checks`.
    pub health: &'static str,
    pub ready: bool,
    pub uptime: String,
    pub agent: String,
}

#[derive(Debug, Serialize)]
pub struct Charts {
    pub rate: String,
    pub latency: String,
    pub instances: String,
}

/// Its scaling settings, as the form shows them.
#[derive(Debug, Serialize)]
pub struct ScalingSettings {
    pub min: u32,
    pub max: u32,
    pub idle: f64,
    pub target: f64,
    pub floor: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct LoadNow {
    pub in_flight: u64,
    pub held: u64,
    pub last_request: String,
}

#[derive(Debug, Serialize)]
pub struct DecisionRow {
    pub at: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    pub by: String,
}

#[derive(Debug, Serialize)]
pub struct WakeRow {
    pub at: String,
    pub held: Option<u64>,
    pub total: String,
    /// Its steps, as a waterfall.
    pub chart: String,
}

#[derive(Debug, Serialize)]
pub struct ReleaseRow {
    /// `v3`.
    pub version: String,
    pub status: String,
    pub by: String,
    /// Its first 8 characters.
    pub commit: String,
    pub created: String,
    /// Its config var names (never their values).
    pub config: Vec<String>,
    /// The release serving now.
    pub current: bool,
    pub can_roll_back: bool,
    /// The last lines of its build log (the latest releases only).
    pub log: String,
}

#[derive(Debug, Serialize)]
pub struct LogTail {
    pub id: String,
    pub addr: String,
    pub stdout: String,
    pub stderr: String,
}

fn health(task: &Task) -> &'static str {
    match (&task.health_check_results, task.alive()) {
        (None, _) => "no checks",
        (Some(_), Some(true)) => "healthy",
        (Some(_), Some(false)) => "unhealthy",
        (Some(_), None) => "unknown",
    }
}

fn instance(task: &Task) -> InstanceRow {
    let started = task.started_at.as_deref().and_then(epoch_ms);
    InstanceRow {
        id: task.id.clone(),
        addr: task.addr(),
        state: task
            .state
            .as_str()
            .trim_start_matches("TASK_")
            .to_lowercase(),
        health: health(task),
        ready: task.ready(),
        uptime: started
            .map(|t| span(now_ms().saturating_sub(t)))
            .unwrap_or_else(|| "—".into()),
        agent: task.slave_id.clone(),
    }
}

/// The hour's charts of one app.
fn app_charts(samples: &[Sample]) -> Charts {
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
    let chart = |title, unit, series, step| {
        charts::line(&Chart {
            title,
            unit,
            from_ms: from,
            to_ms: to,
            series,
            step,
            integer: step,
        })
    };
    Charts {
        rate: chart(
            "Requests",
            "req/s",
            vec![Series {
                name: "rate",
                class: "s1",
                points: &rate,
            }],
            false,
        ),
        latency: chart(
            "Latency (routers' last minute)",
            "ms",
            vec![
                Series {
                    name: "p50",
                    class: "s1",
                    points: &p50,
                },
                Series {
                    name: "p99",
                    class: "s2",
                    points: &p99,
                },
            ],
            false,
        ),
        instances: chart(
            "Instances",
            "instances",
            vec![
                Series {
                    name: "wanted",
                    class: "s3",
                    points: &wanted,
                },
                Series {
                    name: "ready",
                    class: "s1",
                    points: &ready,
                },
            ],
            true,
        ),
    }
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
pub async fn app(paas: &Paas, name: &str) -> Option<AppPage> {
    let app = {
        let s = paas.lock();
        let a = s.app_by_route(name).filter(|a| !a.deleting)?;
        ops::views::app(&s, a, true)
    };
    let id = app.definition.id.clone();
    let scaling = ops::views::scaling(paas, name)?;
    let queue = queue(paas);
    let q = queued(&queue, &id);
    let state = app_state(&app, q, Some(&scaling));
    let tasks = app.tasks();
    // Every instance's tails at once, each bounded by TAIL_WAIT.
    let logs = futures::future::join_all(tasks.iter().map(|t| async move {
        let (stdout, stderr) = tokio::join!(
            tail(paas, &t.id, Stream::Stdout),
            tail(paas, &t.id, Stream::Stderr)
        );
        LogTail {
            id: t.id.clone(),
            addr: t.addr(),
            stdout,
            stderr,
        }
    }))
    .await;
    let decisions = scaling
        .decisions
        .iter()
        .rev()
        .map(|d| DecisionRow {
            at: clock(&d.timestamp),
            from: d.from,
            to: d.to,
            reason: d.reason.clone(),
            by: d.by.clone(),
        })
        .collect();
    let wakes = scaling
        .wakes
        .iter()
        .rev()
        .map(|w| {
            let steps: Vec<(String, f64)> =
                w.steps.iter().map(|s| (s.step.clone(), s.ms)).collect();
            WakeRow {
                at: clock(&w.timestamp),
                held: w.held,
                total: format!("{} ms", charts::number(w.total_ms.round())),
                chart: charts::waterfall(&steps),
            }
        })
        .collect();
    let settings = app.definition.scaling.as_ref().map(|s| ScalingSettings {
        min: s.min_instances,
        max: s.max_instances,
        idle: s.idle_seconds,
        target: s.target_concurrency,
        floor: s.floor,
    });
    let (releases, releases_error) = releases(paas, name).await;
    let def = &app.definition;
    Some(AppPage {
        name: name.to_string(),
        state,
        class: state_class(state),
        domain: paas.args.domain.clone(),
        router_port: paas.args.router_port,
        wanted: def.instances,
        ready: tasks.iter().filter(|t| t.ready()).count(),
        version: app.version.clone(),
        cmd: def.cmd.clone(),
        resources: cpus_mem(def.cpus, def.mem),
        instances: tasks.iter().map(instance).collect(),
        waiting: q.map(Waiting::of),
        last_failure: app.last_task_failure.as_ref().map(|f| f.message.clone()),
        charts: app_charts(&scaling.history),
        scaling: settings,
        panicking: scaling.panicking,
        load: LoadNow {
            in_flight: scaling.load.in_flight,
            held: scaling.load.held,
            last_request: ago_ms(scaling.load.last_request_ms),
        },
        decisions,
        wakes,
        waking: scaling.waking.is_some(),
        domains: ops::domains::of(paas, &id)
            .map(|ds| {
                ds.into_iter()
                    .map(|d| DomainRow {
                        https: d.https_note(),
                        hostname: d.hostname,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        own_https: ops::domains::own(paas, &id).map(|d| d.https_note()),
        https_url: route_name(&id).and_then(|r| paas.app_https_url(&r)),
        releases,
        releases_error,
        logs,
        id,
    })
}

fn release_row(r: &Release, current: Option<u32>, logged: bool) -> ReleaseRow {
    let current = current == Some(r.number);
    ReleaseRow {
        version: format!("v{}", r.number),
        status: r.status.clone(),
        by: r.by.clone(),
        commit: r.commit.chars().take(8).collect(),
        created: format!(
            "{} {}",
            r.created.get(..10).unwrap_or(""),
            clock(&r.created)
        ),
        config: r.config.keys().cloned().collect(),
        current,
        can_roll_back: !current && r.status == "succeeded",
        log: if logged {
            r.log[r.log.len().saturating_sub(BUILD_LOG_LINES)..].join("\n")
        } else {
            String::new()
        },
    }
}

/// A pushed app's releases, newest first, the latest with their build logs (`None` for an app
/// deployed through `/v2`); or why they could not be read.
async fn releases(paas: &Paas, name: &str) -> (Option<Vec<ReleaseRow>>, Option<String>) {
    if paas.push.app(name).is_none() {
        return (None, None);
    }
    let all = match crate::push::releases::of(paas, name).await {
        Ok(all) => all,
        Err(e) => return (Some(Vec::new()), Some(e.to_string())),
    };
    let current = all
        .iter()
        .rev()
        .find(|r| r.status == "succeeded")
        .map(|r| r.number);
    let rows = all
        .iter()
        .rev()
        .enumerate()
        .map(|(i, r)| release_row(r, current, i < LOGGED_RELEASES))
        .collect();
    (Some(rows), None)
}
