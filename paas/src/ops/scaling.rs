//! Scale-to-zero's changes: set an app's count (the scaler's and a wake's way), wake it,
//! suspend it, resume it. Each is a scale deployment (the running instances stay), recorded as
//! a decision with its reason and who made it, and published.

use std::time::Instant;

use super::{OpsError, Tx};
use crate::events::Event;
use crate::model::app::AppDefinition;
use crate::model::deployment::Action;
use crate::model::timestamp;
use crate::state::State;

/// Sets app `app_id`'s instance count for `reason` (said by `by`: "scaler", "router", ...).
/// `Ok(false)` when it already had that many; refused for a suspended app.
pub async fn set_instances(
    tx: &Tx<'_>,
    app_id: &str,
    to: u32,
    reason: &str,
    by: &str,
) -> Result<bool, OpsError> {
    set_instances_with(tx, app_id, to, reason, by, |_| {}).await
}

/// [`set_instances`], running `installed` on the state under the same lock as the install (a
/// wake opens its timeline there, before the scheduler can take a step).
async fn set_instances_with(
    tx: &Tx<'_>,
    app_id: &str,
    to: u32,
    reason: &str,
    by: &str,
    installed: impl FnOnce(&mut State),
) -> Result<bool, OpsError> {
    let edit = |def: &mut AppDefinition| {
        if def.instances == to {
            return Ok(false);
        }
        if def.suspended() {
            return Err(OpsError::Conflict(format!(
                "{} is suspended; resume it first",
                def.id
            )));
        }
        def.instances = to;
        Ok(true)
    };
    rescale(tx, app_id, reason, by, edit, installed).await
}

/// What a wake found or did.
#[derive(Debug, Clone, PartialEq)]
pub struct Woken {
    pub app_id: String,
    /// The app's count now (1 when this wake set it).
    pub instances: u32,
}

/// Wakes the app served as `name` (a router held requests for it: `held` of them, the first
/// for `held_for_ms`): an app at zero gets one instance and a wake timeline; an app awake or
/// waking has its route restated (a router that woke it because every backend looked down
/// takes a republished backend as usable again). Idempotent; refused for a suspended app.
pub async fn wake(
    tx: &Tx<'_>,
    name: &str,
    held: Option<u64>,
    held_for_ms: u64,
    by: &str,
) -> Result<Woken, OpsError> {
    let started = Instant::now();
    let paas = tx.paas();
    let app_id = {
        let mut s = paas.lock();
        let a = s
            .app_by_route(name)
            .ok_or_else(|| OpsError::NotFound(format!("no app is served as {name:?}")))?;
        if a.def.suspended() {
            return Err(OpsError::Conflict(format!(
                "{} is suspended: it is not woken",
                a.def.id
            )));
        }
        if a.def.instances > 0 {
            let (app_id, instances) = (a.def.id.clone(), a.def.instances);
            s.publish_routes(true, Some(&app_id));
            return Ok(Woken { app_id, instances });
        }
        a.def.id.clone()
    };
    let reason = match held {
        Some(n) => format!("wake: {n} held"),
        None => "wake: requests held".to_string(),
    };
    let opened = app_id.clone();
    set_instances_with(tx, &app_id, 1, &reason, by, move |s| {
        s.wake_started(&opened, held, held_for_ms, started)
    })
    .await?;
    paas.lock().publish(Event::Wake {
        app_id: app_id.clone(),
        reason,
        timestamp: timestamp(),
    });
    tracing::info!(app = %app_id, took = ?started.elapsed(), "woken");
    Ok(Woken {
        app_id,
        instances: 1,
    })
}

/// Takes an app offline: no instances, and with `scaling` marked suspended, so neither the
/// scaler nor a wake brings it back; the routers answer 503. `Ok(false)` when it was
/// suspended already.
pub async fn suspend(tx: &Tx<'_>, app_id: &str, by: &str) -> Result<bool, OpsError> {
    let edit = |def: &mut AppDefinition| {
        if def.suspended() {
            return Ok(false);
        }
        def.instances = 0;
        if let Some(s) = def.scaling.as_mut() {
            s.suspended = true;
            s.floor = None;
        }
        Ok(true)
    };
    rescale(tx, app_id, "suspended by an operator", by, edit, |_| {}).await
}

/// Brings a suspended app back: with `scaling`, to its minimum (at 0 it is idle, and its next
/// request wakes it); without, to one instance. `Ok(false)` when it was not suspended.
pub async fn resume(tx: &Tx<'_>, app_id: &str, by: &str) -> Result<bool, OpsError> {
    let edit = |def: &mut AppDefinition| {
        if !def.suspended() {
            return Ok(false);
        }
        def.instances = match def.scaling.as_mut() {
            Some(s) => {
                s.suspended = false;
                s.min_instances
            }
            None => 1,
        };
        Ok(true)
    };
    rescale(tx, app_id, "resumed by an operator", by, edit, |_| {}).await
}

/// A scale-only change of an app's definition (its count, its scaling settings) made by
/// `edit` (`Ok(false)`: nothing to change): stored, installed as a scale deployment,
/// recorded as a decision and published.
async fn rescale(
    tx: &Tx<'_>,
    app_id: &str,
    reason: &str,
    by: &str,
    edit: impl FnOnce(&mut AppDefinition) -> Result<bool, OpsError>,
    installed: impl FnOnce(&mut State),
) -> Result<bool, OpsError> {
    let paas = tx.paas();
    let (def, config) = {
        let s = paas.lock();
        let a = s
            .apps
            .get(app_id)
            .filter(|a| !a.deleting)
            .ok_or_else(|| OpsError::NoApp(app_id.to_string()))?;
        (a.def.clone(), a.config_version.clone())
    };
    let previous = def.clone();
    let mut def = def;
    if !edit(&mut def)? {
        return Ok(false);
    }
    let (from, to) = (previous.instances, def.instances);
    let version = timestamp();
    let rt = crate::state::new_rt(def, version.clone(), config, version);
    tx.install(rt, Action::ScaleApplication, Some(previous), |s| {
        let decision = paas.scaler.record(app_id, from, to, reason, by);
        installed(s);
        s.publish(Event::ScalingDecision(decision));
    })
    .await?;
    tracing::info!(app = %app_id, to, %reason, %by, "scaled");
    Ok(true)
}
