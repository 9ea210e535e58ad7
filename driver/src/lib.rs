//! A client of the Mesos v1 scheduler HTTP API: the one Mesos client in drove's tree, used by
//! the PaaS, the end-to-end tests and the benchmarks.
//!
//! [`Driver::start`] SUBSCRIBEs and keeps the subscription alive:
//! - **failover**: it subscribes with the framework id it was given (or the one the master
//!   assigned on an earlier SUBSCRIBED of this driver), so a restarted scheduler resumes its
//!   framework; the caller stores the id it sees in [`Event::Subscribed`];
//! - **heartbeat watchdog**: a stream silent for `missed_heartbeats` × the master's heartbeat
//!   interval is dropped and re-subscribed;
//! - **reconnect** with capped exponential backoff, reset after each successful SUBSCRIBED;
//! - **reconcile** (implicit, all tasks) after every SUBSCRIBED, when configured;
//! - **bounded** RecordIO records.
//!
//! Events arrive on a channel; status updates are **not** acknowledged by the driver: the caller
//! acknowledges with [`Driver::acknowledge`] once it has acted on (or persisted) the update.
//!
//! Calls return a classified [`CallError`]: the master rejected the call (4xx, not retried), the
//! framework is not subscribed (403: the driver re-subscribes), or the master could not be
//! reached (retried a few times with backoff, then reported).
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use drove_proto::mesos::{
    AgentId, Filters, FrameworkId, FrameworkInfo, KillPolicy, Offer, OfferId, TaskId, TaskInfo,
    TaskStatus,
};
use drove_proto::recordio;
use drove_proto::scheduler::{
    Accept, Acknowledge, Call, CallType, Decline, EventType, Kill, Launch, Operation,
    OperationType, Reconcile, ReconcileTask, Roles, Subscribe,
};
use futures::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// HTTP basic credentials for an authenticating master.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub principal: String,
    pub secret: String,
}

/// How the driver talks to the master.
#[derive(Debug, Clone)]
pub struct Config {
    /// The master's base URL, e.g. `http://127.0.0.1:5050`.
    pub master: String,
    /// The framework to register; with `id` set, that framework is resumed (failover).
    pub framework: FrameworkInfo,
    pub credentials: Option<Credentials>,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The stream is dead after this many heartbeat intervals without a byte.
    pub missed_heartbeats: u32,
    /// Largest event accepted from the stream.
    pub max_record: usize,
    /// Send an implicit RECONCILE after every SUBSCRIBED.
    pub reconcile_on_subscribe: bool,
    /// Bound on one call's HTTP exchange.
    pub call_timeout: Duration,
    /// Attempts for a call that meets a transport error or a 5xx.
    pub call_attempts: usize,
    /// Events buffered before the stream reader waits for the consumer.
    pub event_buffer: usize,
}

impl Config {
    pub fn new(master: impl Into<String>, framework: FrameworkInfo) -> Self {
        Config {
            master: master.into().trim_end_matches('/').to_string(),
            framework,
            credentials: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            missed_heartbeats: 5,
            max_record: recordio::DEFAULT_MAX_RECORD,
            reconcile_on_subscribe: true,
            call_timeout: Duration::from_secs(10),
            call_attempts: 4,
            event_buffer: 1024,
        }
    }
}

/// What the driver reports to its user.
#[derive(Debug, Clone)]
pub enum Event {
    /// Subscribed (or re-subscribed): store `framework_id` to fail over later.
    Subscribed {
        framework_id: FrameworkId,
        heartbeat_interval: Duration,
    },
    Offers(Vec<Offer>),
    Rescind(OfferId),
    /// A status update; acknowledge it with [`Driver::acknowledge`] when it carries a uuid.
    Update(TaskStatus),
    /// An agent (or executor) failed.
    Failure {
        agent_id: Option<AgentId>,
    },
    /// The master removed the framework (ERROR event). The driver stops after this.
    Error(String),
    /// The stream broke; the driver is re-subscribing. Outstanding offers are void.
    Disconnected {
        reason: String,
    },
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the master refused the {call:?} call with {status}: {message}")]
    Rejected {
        call: CallType,
        status: u16,
        message: String,
    },
    #[error("not subscribed to the master (re-subscribing)")]
    NotSubscribed,
    #[error("cannot reach the master at {url} for {call:?}: {reason}")]
    Transport {
        call: CallType,
        url: String,
        reason: String,
    },
}

impl CallError {
    fn retryable(&self) -> bool {
        matches!(self, CallError::Transport { .. })
    }
}

#[derive(Debug, Clone)]
struct Session {
    framework_id: FrameworkId,
    stream_id: String,
}

struct Inner {
    config: Config,
    url: String,
    calls: reqwest::Client,
    stream: reqwest::Client,
    session: Mutex<Option<Session>>,
    /// The framework id to subscribe with next: the configured one, then the master's.
    framework_id: Mutex<Option<FrameworkId>>,
    /// Wakes the stream reader when a call met 403; `stale` names the stream it was sent on,
    /// so a late 403 from an earlier stream does not drop the current one.
    resubscribe: Notify,
    stale: Mutex<Option<String>>,
    cancel: CancellationToken,
}

/// A handle on a running subscription; cheap to clone.
#[derive(Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

impl Driver {
    /// Starts subscribing in the background; events arrive on the returned channel. The
    /// driver stops when `cancel` fires or the master removes the framework (the channel then
    /// closes).
    pub fn start(config: Config, cancel: CancellationToken) -> (Driver, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(config.event_buffer.max(1));
        let calls = reqwest::Client::builder()
            .timeout(config.call_timeout)
            .build()
            .unwrap_or_default();
        let stream = reqwest::Client::builder()
            .connect_timeout(config.call_timeout)
            .build()
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            url: format!("{}/api/v1/scheduler", config.master),
            framework_id: Mutex::new(config.framework.id.clone()),
            config,
            calls,
            stream,
            session: Mutex::new(None),
            resubscribe: Notify::new(),
            stale: Mutex::new(None),
            cancel,
        });
        tokio::spawn(subscription(inner.clone(), tx));
        (Driver { inner }, rx)
    }

    /// The framework id of the current subscription, if subscribed.
    pub fn framework_id(&self) -> Option<FrameworkId> {
        lock(&self.inner.session)
            .as_ref()
            .map(|s| s.framework_id.clone())
    }

    /// The `Mesos-Stream-Id` of the current subscription, if subscribed. Every call the driver
    /// sends carries it; it changes with each SUBSCRIBED.
    pub fn stream_id(&self) -> Option<String> {
        lock(&self.inner.session)
            .as_ref()
            .map(|s| s.stream_id.clone())
    }

    /// Whether a subscription is established.
    pub fn is_subscribed(&self) -> bool {
        lock(&self.inner.session).is_some()
    }

    /// Sends `call` on the current subscription (its framework id and stream id are filled in).
    pub async fn call(&self, call: Call) -> Result<(), CallError> {
        let kind = call.kind;
        let attempt = || async { self.call_once(call.clone()).await };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(self.inner.config.min_backoff)
                    .with_max_delay(self.inner.config.max_backoff)
                    .with_max_times(self.inner.config.call_attempts.saturating_sub(1)),
            )
            .when(CallError::retryable)
            .notify(|e, after| tracing::debug!(?kind, error = %e, ?after, "call retried"))
            .await
    }

    async fn call_once(&self, mut call: Call) -> Result<(), CallError> {
        let session = lock(&self.inner.session).clone();
        let Some(session) = session else {
            return Err(CallError::NotSubscribed);
        };
        let kind = call.kind;
        call.framework_id = Some(session.framework_id.clone());
        let transport = |reason: String| CallError::Transport {
            call: kind,
            url: self.inner.url.clone(),
            reason,
        };
        let body = serde_json::to_vec(&call).map_err(|e| transport(e.to_string()))?;
        let mut req = self
            .inner
            .calls
            .post(&self.inner.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header("Mesos-Stream-Id", &session.stream_id)
            .body(body);
        if let Some(c) = &self.inner.config.credentials {
            req = req.basic_auth(&c.principal, Some(&c.secret));
        }
        let resp = req.send().await.map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let message = resp.text().await.unwrap_or_default();
        match status {
            403 => {
                // The master does not know this stream: subscribe again.
                *lock(&self.inner.stale) = Some(session.stream_id.clone());
                self.inner.resubscribe.notify_waiters();
                Err(CallError::NotSubscribed)
            }
            400..=499 => Err(CallError::Rejected {
                call: kind,
                status,
                message,
            }),
            _ => Err(transport(format!("{status}: {message}"))),
        }
    }

    /// LAUNCHes `tasks` on `offer_ids` (all from one agent).
    pub async fn launch(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        filters: Option<Filters>,
    ) -> Result<(), CallError> {
        let mut call = Call::new(CallType::Accept, None);
        call.accept = Some(Accept {
            offer_ids,
            operations: vec![Operation {
                kind: OperationType::Launch,
                launch: Some(Launch { task_infos: tasks }),
                launch_group: None,
            }],
            filters,
        });
        self.call(call).await
    }

    /// DECLINEs offers, refusing their agents' resources for `refuse_seconds`.
    pub async fn decline(
        &self,
        offer_ids: Vec<OfferId>,
        refuse_seconds: f64,
    ) -> Result<(), CallError> {
        let mut call = Call::new(CallType::Decline, None);
        call.decline = Some(Decline {
            offer_ids,
            filters: Some(Filters {
                refuse_seconds: Some(refuse_seconds),
            }),
        });
        self.call(call).await
    }

    /// REVIVE: clears filters and asks for offers again (all roles).
    pub async fn revive(&self) -> Result<(), CallError> {
        let mut call = Call::new(CallType::Revive, None);
        call.revive = Some(Roles::default());
        self.call(call).await
    }

    /// SUPPRESS: no offers until the next REVIVE (all roles).
    pub async fn suppress(&self) -> Result<(), CallError> {
        let mut call = Call::new(CallType::Suppress, None);
        call.suppress = Some(Roles::default());
        self.call(call).await
    }

    pub async fn kill(
        &self,
        task_id: TaskId,
        agent_id: Option<AgentId>,
        kill_policy: Option<KillPolicy>,
    ) -> Result<(), CallError> {
        let mut call = Call::new(CallType::Kill, None);
        call.kill = Some(Kill {
            task_id,
            agent_id,
            kill_policy,
        });
        self.call(call).await
    }

    /// Acknowledges an update; does nothing for updates without a uuid (the master's own).
    pub async fn acknowledge(&self, status: &TaskStatus) -> Result<(), CallError> {
        let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) else {
            return Ok(());
        };
        let mut call = Call::new(CallType::Acknowledge, None);
        call.acknowledge = Some(Acknowledge {
            agent_id: agent_id.clone(),
            task_id: status.task_id.clone(),
            uuid: uuid.clone(),
        });
        self.call(call).await
    }

    /// RECONCILE: explicit for the given tasks, implicit (all the master knows) for none.
    pub async fn reconcile(&self, tasks: Vec<(TaskId, Option<AgentId>)>) -> Result<(), CallError> {
        let mut call = Call::new(CallType::Reconcile, None);
        call.reconcile = Some(Reconcile {
            tasks: tasks
                .into_iter()
                .map(|(task_id, agent_id)| ReconcileTask { task_id, agent_id })
                .collect(),
        });
        self.call(call).await
    }

    /// TEARDOWN: the master kills every task of the framework and forgets it.
    pub async fn teardown(&self) -> Result<(), CallError> {
        self.call(Call::new(CallType::Teardown, None)).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one subscription attempt ended.
enum Ended {
    Cancelled,
    /// The master removed the framework.
    Removed(String),
    /// The stream broke after (`true`) or before a SUBSCRIBED.
    Broken {
        subscribed: bool,
        reason: String,
    },
}

/// Hands `event` to the user. False when the driver is to stop: `cancel` fired first (a full
/// channel nobody reads must not keep the stream open) or the receiver is gone.
async fn deliver(inner: &Inner, tx: &mpsc::Sender<Event>, event: Event) -> bool {
    tokio::select! {
        _ = inner.cancel.cancelled() => false,
        sent = tx.send(event) => sent.is_ok(),
    }
}

async fn subscription(inner: Arc<Inner>, tx: mpsc::Sender<Event>) {
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(inner.config.min_backoff)
            .with_max_delay(inner.config.max_backoff)
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        let ended = subscribe_once(&inner, &tx).await;
        *lock(&inner.session) = None;
        match ended {
            Ended::Cancelled => return,
            Ended::Removed(message) => {
                tracing::error!(%message, "the master removed the framework");
                deliver(&inner, &tx, Event::Error(message)).await;
                return;
            }
            Ended::Broken { subscribed, reason } => {
                if subscribed {
                    delays = backoff();
                }
                tracing::warn!(%reason, "scheduler stream lost; re-subscribing");
                if !deliver(&inner, &tx, Event::Disconnected { reason }).await {
                    return;
                }
            }
        }
        let delay = delays.next().unwrap_or(inner.config.max_backoff);
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn subscribe_once(inner: &Arc<Inner>, tx: &mpsc::Sender<Event>) -> Ended {
    let broken = |subscribed: bool, reason: String| Ended::Broken { subscribed, reason };
    let framework_id = lock(&inner.framework_id).clone();
    let mut info = inner.config.framework.clone();
    info.id = framework_id.clone();
    let mut call = Call::new(CallType::Subscribe, framework_id);
    call.subscribe = Some(Subscribe {
        framework_info: info,
        suppressed_roles: Vec::new(),
    });
    let body = match serde_json::to_vec(&call) {
        Ok(b) => b,
        Err(e) => return broken(false, e.to_string()),
    };
    let mut req = inner
        .stream
        .post(&inner.url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body);
    if let Some(c) = &inner.config.credentials {
        req = req.basic_auth(&c.principal, Some(&c.secret));
    }
    let resp = tokio::select! {
        _ = inner.cancel.cancelled() => return Ended::Cancelled,
        r = req.send() => r,
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return broken(false, format!("SUBSCRIBE to {}: {e}", inner.url)),
    };
    if resp.status().as_u16() != 200 {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        return broken(false, format!("SUBSCRIBE answered {status}: {text}"));
    }
    let Some(stream_id) = resp
        .headers()
        .get("Mesos-Stream-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return broken(false, "SUBSCRIBE answer has no Mesos-Stream-Id".into());
    };
    let mut body = resp.bytes_stream();
    let mut decoder = recordio::Decoder::with_limit(inner.config.max_record);
    let mut subscribed = false;
    // Until SUBSCRIBED says otherwise, Mesos's default heartbeat interval.
    let mut watchdog = Duration::from_secs(15) * inner.config.missed_heartbeats.max(1);
    loop {
        let chunk = tokio::select! {
            _ = inner.cancel.cancelled() => return Ended::Cancelled,
            _ = inner.resubscribe.notified() => {
                if lock(&inner.stale).take().as_deref() == Some(stream_id.as_str()) {
                    return broken(subscribed, "the master no longer knows this stream".into());
                }
                continue;
            }
            c = tokio::time::timeout(watchdog, body.next()) => c,
        };
        let chunk = match chunk {
            Err(_) => return broken(subscribed, format!("no heartbeat for {watchdog:?}")),
            Ok(None) => return broken(subscribed, "the master closed the stream".into()),
            Ok(Some(Err(e))) => return broken(subscribed, format!("reading the stream: {e}")),
            Ok(Some(Ok(c))) => c,
        };
        decoder.push(&chunk);
        loop {
            let record = match decoder.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return broken(subscribed, e.to_string()),
            };
            let event: drove_proto::scheduler::Event = match serde_json::from_slice(&record) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable scheduler event skipped");
                    continue;
                }
            };
            let out = match event.kind {
                EventType::Subscribed => {
                    let Some(s) = event.subscribed else { continue };
                    let interval = s
                        .heartbeat_interval_seconds
                        .filter(|v| v.is_finite() && *v > 0.0 && *v < 86_400.0)
                        .map(Duration::from_secs_f64)
                        .unwrap_or(Duration::from_secs(15));
                    watchdog = interval * inner.config.missed_heartbeats.max(1);
                    *lock(&inner.framework_id) = Some(s.framework_id.clone());
                    *lock(&inner.session) = Some(Session {
                        framework_id: s.framework_id.clone(),
                        stream_id: stream_id.clone(),
                    });
                    subscribed = true;
                    if inner.config.reconcile_on_subscribe {
                        let driver = Driver {
                            inner: inner.clone(),
                        };
                        tokio::spawn(async move {
                            if let Err(e) = driver.reconcile(Vec::new()).await {
                                tracing::warn!(error = %e, "implicit reconciliation failed");
                            }
                        });
                    }
                    Event::Subscribed {
                        framework_id: s.framework_id,
                        heartbeat_interval: interval,
                    }
                }
                EventType::Offers => match event.offers {
                    Some(o) => Event::Offers(o.offers),
                    None => continue,
                },
                EventType::Rescind => match event.rescind {
                    Some(r) => Event::Rescind(r.offer_id),
                    None => continue,
                },
                EventType::Update => match event.update {
                    Some(u) => Event::Update(u.status),
                    None => continue,
                },
                EventType::Failure => Event::Failure {
                    agent_id: event.failure.and_then(|f| f.agent_id),
                },
                EventType::Error => {
                    let message = event.error.map(|e| e.message).unwrap_or_default();
                    return Ended::Removed(message);
                }
                _ => continue,
            };
            if !deliver(inner, tx, out).await {
                return Ended::Cancelled;
            }
        }
    }
}
