//! One-off tasks (builds): placed on offers like instances, before them, but never restarted
//! or routed; when one ends its terminal status goes to whoever submitted it. A job is given
//! up (killed) on request, e.g. when its time bound passes.

use std::collections::BTreeMap;

use drove_proto::mesos::{Offer, TaskInfo, TaskState, TaskStatus};
use tokio::sync::oneshot;

use super::Call;
use super::{gone, State};
use crate::model::app::AppDefinition;
use crate::placement::Space;
use crate::task::task_info;

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub state: TaskState,
    pub message: String,
    /// The task it ran as, if it was launched.
    pub task_id: Option<String>,
}

pub struct Job {
    def: AppDefinition,
    /// Set once launched.
    task: Option<(String, String)>,
    cancel: bool,
    kill_sent: bool,
    done: Option<oneshot::Sender<JobEnd>>,
    /// When it was submitted (Marathon's timestamp), and what the offers it did not fit lacked.
    since: String,
    offers: super::OfferStats,
}

/// A job still waiting for an offer it fits: what it needs and what the offers lacked, for
/// the pusher, `/v2/queue` and the dashboard.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub def: AppDefinition,
    pub since: String,
    pub offers: super::OfferStats,
}

impl Waiting {
    /// In a line: `the build needs 1 cpus and 1024 MiB; 3 offers lacked: InsufficientCpus ×3`.
    pub fn describe(&self) -> String {
        let needs = format!("it needs {} cpus and {} MiB", self.def.cpus, self.def.mem);
        if self.offers.processed == 0 {
            return format!(
                "{needs}; no offer has come since it was submitted (everything offered is in use)"
            );
        }
        let lacked: Vec<String> = self
            .offers
            .reasons
            .iter()
            .map(|(r, n)| format!("{} ×{n}", r.as_str()))
            .collect();
        format!(
            "{needs}; of {} offers, none fit: {}",
            self.offers.processed,
            lacked.join(", ")
        )
    }
}

/// Jobs by id.
pub type Jobs = BTreeMap<String, Job>;

impl State {
    /// Queues a job running `def` (one instance, its `cmd`, `fetch`, `cpus`, `mem`, `user`);
    /// returns its id and where its end will be told.
    pub fn submit_job(&mut self, def: AppDefinition) -> (String, oneshot::Receiver<JobEnd>) {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.jobs.insert(
            id.clone(),
            Job {
                def,
                task: None,
                cancel: false,
                kill_sent: false,
                done: Some(tx),
                since: crate::model::timestamp(),
                offers: Default::default(),
            },
        );
        (id, rx)
    }

    /// The job, while it waits for an offer it fits.
    pub fn job_waiting(&self, id: &str) -> Option<Waiting> {
        self.jobs
            .get(id)
            .filter(|j| j.task.is_none() && !j.cancel)
            .map(|j| Waiting {
                def: j.def.clone(),
                since: j.since.clone(),
                offers: j.offers.clone(),
            })
    }

    /// Every job waiting for an offer.
    pub fn jobs_waiting(&self) -> Vec<Waiting> {
        self.jobs
            .keys()
            .filter_map(|id| self.job_waiting(id))
            .collect()
    }

    /// The (task id, agent id) a job runs as, once launched.
    pub fn job_task(&self, id: &str) -> Option<(String, String)> {
        self.jobs.get(id).and_then(|j| j.task.clone())
    }

    /// Gives a job up: killed if it runs, dropped if it waits.
    pub fn cancel_job(&mut self, id: &str) {
        let waiting = match self.jobs.get_mut(id) {
            Some(j) => {
                j.cancel = true;
                j.task.is_none()
            }
            None => return,
        };
        if waiting {
            if let Some(mut j) = self.jobs.remove(id) {
                if let Some(done) = j.done.take() {
                    let _ = done.send(JobEnd {
                        state: TaskState::TaskKilled,
                        message: "given up before it started".into(),
                        task_id: None,
                    });
                }
            }
        }
    }

    pub(super) fn pending_jobs(&self) -> usize {
        self.jobs.values().filter(|j| j.task.is_none()).count()
    }

    /// Kills for cancelled jobs not yet asked to die.
    pub(super) fn job_kills(&mut self) -> Vec<Call> {
        let grace = self.kill_grace;
        let mut calls = Vec::new();
        for j in self.jobs.values_mut() {
            if let (true, false, Some((task, agent))) = (j.cancel, j.kill_sent, &j.task) {
                j.kill_sent = true;
                calls.push(Call::Kill {
                    task_id: task.clone(),
                    agent_id: agent.clone(),
                    grace,
                });
            }
        }
        calls
    }

    /// Places waiting jobs on the offers, first come first placed.
    pub(super) fn place_jobs(&mut self, spaces: &mut [(Offer, Space, Vec<TaskInfo>)]) {
        for j in self
            .jobs
            .values_mut()
            .filter(|j| j.task.is_none() && !j.cancel)
        {
            let mut lacked: BTreeMap<crate::placement::Reject, u64> = BTreeMap::new();
            for (offer, space, tasks) in spaces.iter_mut() {
                if let Err(r) = space.check(&j.def) {
                    *lacked.entry(r).or_default() += 1;
                    continue;
                }
                let Ok(ports) = space.take(&j.def) else {
                    continue;
                };
                let task = task_info(&j.def, "job", offer, &ports);
                j.task = Some((task.task_id.value.clone(), offer.agent_id.value.clone()));
                tasks.push(task);
                break;
            }
            j.offers.processed += spaces.len() as u64;
            if j.task.is_none() && !spaces.is_empty() {
                j.offers.unused += spaces.len() as u64;
                j.offers.last_unused_at = Some(crate::model::timestamp());
                j.offers.reasons = lacked;
            }
        }
    }

    /// Takes a status of a job's task; false if the task is not a job's.
    pub(super) fn job_update(&mut self, status: &TaskStatus) -> bool {
        let id = self
            .jobs
            .iter()
            .find(|(_, j)| {
                j.task
                    .as_ref()
                    .is_some_and(|(t, _)| *t == status.task_id.value)
            })
            .map(|(id, _)| id.clone());
        let Some(id) = id else {
            return false;
        };
        if gone(status.state) {
            self.freed = true;
            if let Some(mut j) = self.jobs.remove(&id) {
                if let Some(done) = j.done.take() {
                    let _ = done.send(JobEnd {
                        state: status.state,
                        message: status.message.clone().unwrap_or_default(),
                        task_id: Some(status.task_id.value.clone()),
                    });
                }
            }
        }
        true
    }
}
