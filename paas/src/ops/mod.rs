//! The service layer: every change to apps and deployments, for every caller (the `/v2` API,
//! git push and the webhook, the scaler, the dashboard).
//!
//! An op takes a [`Tx`], which only [`Paas::begin`] hands out: holding one is holding the
//! write gate, so changes are made one at a time in the order they were asked, and an op
//! cannot be called without it. Each op checks, stores, then changes the state (the store
//! first: what a caller was told happened is on disk) and wakes the scheduler, and returns
//! what it did or an [`OpsError`]. HTTP shapes are the callers' business
//! ([`crate::http_error::ApiError`] turns an `OpsError` into Marathon's).

pub mod apps;
pub mod deployments;
pub mod domains;
pub mod scaling;
pub mod views;

use std::sync::Arc;

use crate::model::app::{AppDefinition, InvalidApp};
use crate::model::deployment::Action;
use crate::state::{AppRt, State};
use crate::store::{Op, StoreError};
use crate::Paas;

/// Why an op refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The input breaks a rule (naming the field).
    #[error(transparent)]
    Invalid(#[from] InvalidApp),
    #[error("App '{0}' does not exist")]
    NoApp(String),
    /// Something else named does not exist (a version, a task, a deployment).
    #[error("{0}")]
    NotFound(String),
    #[error("An app with id [{0}] already exists.")]
    Exists(String),
    /// A deployment is under way; `force` overrides.
    #[error("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{deployment}'.")]
    Locked { deployment: String },
    /// The change conflicts with what is there.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot take the change: nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What is stored cannot be read back.
    #[error("{0}")]
    Corrupt(String),
    /// A component drove asks (the master, an agent) did not answer.
    #[error("{0}")]
    Upstream(String),
    /// The change was made and did not work (a release that never became healthy): it was
    /// undone.
    #[error("{0}")]
    Failed(String),
}

pub use drove_proto::paas::Deployed;

/// The write gate, held: proof that the holder makes the only change under way.
pub struct Tx<'p> {
    paas: &'p Arc<Paas>,
    _gate: tokio::sync::MutexGuard<'p, ()>,
}

impl Paas {
    /// Waits for the write gate: the one way to make changes.
    pub async fn begin(self: &Arc<Self>) -> Tx<'_> {
        Tx {
            paas: self,
            _gate: self.writes.lock().await,
        }
    }
}

impl<'p> Tx<'p> {
    pub fn paas(&self) -> &'p Arc<Paas> {
        self.paas
    }

    /// The install sequence, the one place it is written: stores `rt` (or its removal, for an
    /// app being deleted), installs it as a deployment doing `action`, runs `then` in the same
    /// state lock, and wakes the scheduler. Returns the deployment's id.
    pub(crate) async fn install(
        &self,
        rt: AppRt,
        action: Action,
        previous: Option<AppDefinition>,
        then: impl FnOnce(&mut State),
    ) -> Result<String, StoreError> {
        let op = if rt.deleting {
            Op::DeleteApp(rt.def.id.clone())
        } else {
            Op::PutApp(rt.stored())
        };
        self.paas.store.write(op).await?;
        let deployment = {
            let mut s = self.paas.lock();
            let d = s.install(rt, action, previous);
            then(&mut s);
            d
        };
        self.paas.kick.notify_one();
        Ok(deployment)
    }
}
