//! The framework's loop: driver events in, [`State`] transitions, calls to the master out.
//! Everything is event-driven: an offer, an update or an API change runs `plan` at once; the
//! only timer is the next deadline `plan` itself reports (a backoff ending, a drain bound).

use std::sync::Arc;
use std::time::Instant;

use drove_driver::Event;
use drove_proto::mesos::{TaskId, TaskState, TaskStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::Call;
use crate::store::Op;
use crate::task::kill_policy;
use crate::Paas;

pub async fn run(paas: Arc<Paas>, mut events: mpsc::Receiver<Event>, cancel: CancellationToken) {
    loop {
        let now = Instant::now();
        let deadline = paas.lock().next_deadline(now);
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            ev = events.recv() => match ev {
                Some(ev) => handle(&paas, ev).await,
                None => {
                    // The master removed the framework (its tasks are gone with it). Forget the
                    // id, so the next start registers anew, and stop: a PaaS that can no longer
                    // schedule must not keep accepting changes.
                    let reason = paas
                        .lock()
                        .removed
                        .take()
                        .unwrap_or_else(|| "the scheduler driver stopped".into());
                    paas.lock().subscribed = false;
                    let _ = paas.store.write(Op::ForgetFrameworkId).await;
                    tracing::error!(%reason, "the PaaS stops: restart it to register a new framework");
                    *paas.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                    cancel.cancel();
                    return;
                }
            },
            _ = paas.kick.notified() => {}
            _ = sleep => {}
        }
        let calls = paas.lock().plan(Instant::now());
        execute(&paas, calls).await;
    }
}

async fn handle(paas: &Arc<Paas>, ev: Event) {
    let now = Instant::now();
    match ev {
        Event::Subscribed { framework_id, .. } => {
            tracing::info!(framework = %framework_id.value, "subscribed to the master");
            let known: Vec<_> = {
                let mut s = paas.lock();
                s.framework_id = Some(framework_id.value.clone());
                s.subscribed = true;
                s.reset_offer_mode();
                s.instances
                    .values()
                    .map(|i| {
                        (
                            TaskId::new(i.task_id.clone()),
                            Some(drove_proto::mesos::AgentId::new(i.agent_id.clone())),
                        )
                    })
                    .collect()
            };
            paas.store.enqueue(Op::FrameworkId(framework_id.value));
            // The driver reconciles implicitly (everything the master knows, to find tasks we
            // forgot); ask explicitly for the ones we know, to learn which the master lost.
            if !known.is_empty() {
                let driver = paas.driver.clone();
                tokio::spawn(async move {
                    if let Err(e) = driver.reconcile(known).await {
                        tracing::warn!(error = %e, "explicit reconciliation failed");
                    }
                });
            }
        }
        Event::Offers(offers) => {
            let calls = paas.lock().on_offers(offers, now);
            execute(paas, calls).await;
        }
        Event::Update(status) => {
            let calls = paas.lock().on_update(&status, now);
            execute(paas, calls).await;
            let driver = paas.driver.clone();
            tokio::spawn(async move {
                if let Err(e) = driver.acknowledge(&status).await {
                    tracing::warn!(task = %status.task_id.value, error = %e, "acknowledge failed");
                }
            });
        }
        Event::Rescind(_) => {}
        Event::Failure { agent_id } => {
            tracing::warn!(agent = ?agent_id.map(|a| a.value), "agent failure reported");
        }
        Event::Error(message) => {
            tracing::error!(%message, "the master removed the PaaS framework");
            let mut s = paas.lock();
            s.subscribed = false;
            s.removed = Some(format!("the master removed the framework: {message}"));
        }
        Event::Disconnected { reason } => {
            tracing::warn!(%reason, "disconnected from the master");
            paas.lock().subscribed = false;
        }
    }
}

/// Makes the calls. REVIVE and SUPPRESS are made in order (their order matters); the others
/// run concurrently so a slow master never holds up the loop, but a REVIVE waits for the
/// DECLINEs already sent: one arriving after it would refuse the next offers again (for 5 s
/// while launches wait), and a wake would wait that long.
async fn execute(paas: &Arc<Paas>, calls: Vec<Call>) {
    for call in calls {
        let driver = paas.driver.clone();
        match call {
            Call::Revive => {
                let _no_decline_in_flight = paas.declines.write().await;
                if let Err(e) = driver.revive().await {
                    tracing::warn!(error = %e, "REVIVE failed");
                    paas.lock().reset_offer_mode();
                }
            }
            Call::Suppress => {
                if let Err(e) = driver.suppress().await {
                    tracing::warn!(error = %e, "SUPPRESS failed");
                    paas.lock().reset_offer_mode();
                }
            }
            Call::Decline(ids, refuse_seconds) => {
                let in_flight = paas.declines.clone().read_owned().await;
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    if let Err(e) = driver.decline(ids, refuse_seconds).await {
                        tracing::debug!(error = %e, "DECLINE failed");
                    }
                });
            }
            Call::Kill {
                task_id,
                agent_id,
                grace,
            } => {
                tokio::spawn(async move {
                    let agent = drove_proto::mesos::AgentId::new(agent_id);
                    if let Err(e) = driver
                        .kill(
                            TaskId::new(task_id.clone()),
                            Some(agent),
                            Some(kill_policy(grace)),
                        )
                        .await
                    {
                        tracing::warn!(task = %task_id, error = %e, "KILL failed; will resend");
                    }
                });
            }
            Call::Launch { offer_ids, tasks } => {
                let paas = paas.clone();
                tokio::spawn(async move {
                    let ids: Vec<String> = tasks.iter().map(|t| t.task_id.value.clone()).collect();
                    if let Err(e) = driver.launch(offer_ids, tasks, None).await {
                        tracing::warn!(error = %e, "LAUNCH failed");
                        // The master never took these. A refusal is the app's failure (backoff
                        // applies); a master out of reach is not: they are simply launched again.
                        let refused = matches!(e, drove_driver::CallError::Rejected { .. });
                        let now = Instant::now();
                        let mut s = paas.lock();
                        for id in ids {
                            if !refused {
                                s.kill_tasks(std::slice::from_ref(&id));
                            }
                            let state = if refused {
                                TaskState::TaskFailed
                            } else {
                                TaskState::TaskDropped
                            };
                            let mut status = TaskStatus::new(TaskId::new(id), state);
                            status.message = Some(format!("launch not accepted: {e}"));
                            s.on_update(&status, now);
                        }
                        drop(s);
                        paas.kick.notify_one();
                    }
                });
            }
        }
    }
}
