//! The framework's loop: driver events in, [`State`] transitions, calls to the master out.
//! Everything is event-driven: an offer, an update or an API change runs `plan` at once; the
//! only timer is the next deadline `plan` itself reports (a backoff ending, a drain bound).

use std::sync::Arc;
use std::time::Instant;

use drove_driver::Event;
use drove_proto::mesos::{TaskId, TaskState, TaskStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::{Call, DECLINE_SECONDS};
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
                    tracing::error!("the scheduler driver stopped; the PaaS no longer schedules");
                    paas.lock().subscribed = false;
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
            paas.lock().subscribed = false;
        }
        Event::Disconnected { reason } => {
            tracing::warn!(%reason, "disconnected from the master");
            paas.lock().subscribed = false;
        }
    }
}

/// Makes the calls. REVIVE and SUPPRESS are made in order (their order matters); the others
/// run concurrently so a slow master never holds up the loop.
async fn execute(paas: &Arc<Paas>, calls: Vec<Call>) {
    for call in calls {
        let driver = paas.driver.clone();
        match call {
            Call::Revive => {
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
            Call::Decline(ids) => {
                tokio::spawn(async move {
                    if let Err(e) = driver.decline(ids, DECLINE_SECONDS).await {
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
                        // The master never took these: they failed, and backoff applies.
                        let now = Instant::now();
                        let mut s = paas.lock();
                        for id in ids {
                            let mut status =
                                TaskStatus::new(TaskId::new(id), TaskState::TaskFailed);
                            status.message = Some(format!("launch refused: {e}"));
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
