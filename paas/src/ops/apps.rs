//! Apps: create, update, restore a version, restart, delete, kill tasks, install a release.

use std::collections::HashMap;

use super::{Deployed, OpsError, Tx};
use crate::model::app::{route_name, AppDefinition, InvalidApp};
use crate::model::deployment::Action;
use crate::model::instance::Instance;
use crate::model::scaling::Scaling;
use crate::model::timestamp;
use crate::state::{new_rt, AppRt};
use crate::Paas;

/// The definition of app `id` as it runs now (None: no such app, or it is being deleted).
fn current(paas: &Paas, id: &str) -> Option<AppDefinition> {
    paas.lock()
        .apps
        .get(id)
        .filter(|a| !a.deleting)
        .map(|a| a.def.clone())
}

fn locked(a: &AppRt) -> Result<(), OpsError> {
    match &a.deployment {
        Some(d) => Err(OpsError::Locked {
            deployment: d.id.clone(),
        }),
        None => Ok(()),
    }
}

/// Refuses definitions no agent could ever run, from the largest agent the master reports
/// (read at most every few seconds; unknown when the master cannot be read).
async fn check_capacity(paas: &Paas, def: &AppDefinition) -> Result<(), OpsError> {
    let Some((cpus, mem)) = paas.capacity().await else {
        return Ok(());
    };
    if def.cpus > cpus {
        let why = format!(
            "{} cpus is more than the largest agent has ({cpus})",
            def.cpus
        );
        return Err(InvalidApp::field("/cpus", why).into());
    }
    if def.mem > mem {
        let why = format!(
            "{} MiB is more than the largest agent has ({mem} MiB)",
            def.mem
        );
        return Err(InvalidApp::field("/mem", why).into());
    }
    Ok(())
}

/// Refuses an app whose host name another app is served under (`/a/b` and `/a-b` are both
/// `a-b`).
fn check_route(paas: &Paas, def: &AppDefinition) -> Result<(), OpsError> {
    let Some(name) = route_name(&def.id) else {
        return Ok(());
    };
    let s = paas.lock();
    let other = s.apps.values().find(|a| {
        !a.deleting && a.def.id != def.id && route_name(&a.def.id).as_deref() == Some(name.as_str())
    });
    match other {
        Some(other) => Err(InvalidApp::field(
            "/id",
            format!(
                "'{}' would be served as {name}, which app '{}' already uses",
                def.id, other.def.id
            ),
        )
        .into()),
        None => Ok(()),
    }
}

/// Creates an app.
pub async fn create(tx: &Tx<'_>, def: AppDefinition) -> Result<Deployed, OpsError> {
    let paas = tx.paas();
    check_capacity(paas, &def).await?;
    check_route(paas, &def)?;
    if paas.lock().apps.contains_key(&def.id) {
        return Err(OpsError::Exists(def.id));
    }
    let version = timestamp();
    let rt = new_rt(def, version.clone(), version.clone(), version.clone());
    let deployment_id = tx
        .install(rt, Action::StartApplication, None, |_| {})
        .await?;
    Ok(Deployed {
        deployment_id,
        version,
    })
}

/// How an update is made.
#[derive(Debug, Default, Clone, Copy)]
pub struct Update {
    /// Supersede a deployment under way instead of refusing.
    pub force: bool,
    /// Marathon's scale call (a body of `instances` alone): on an autoscaled app the count
    /// holds as a floor until cleared (`floor: null`).
    pub manual_scale: bool,
}

/// Replaces app `def.id`'s definition, or creates the app. A change of its count or scaling
/// settings alone is a scale (the running instances stay); anything else is a restart.
pub async fn update(tx: &Tx<'_>, def: AppDefinition, how: Update) -> Result<Deployed, OpsError> {
    let paas = tx.paas();
    let previous = current(paas, &def.id);
    check_capacity(paas, &def).await?;
    if previous.is_none() {
        check_route(paas, &def)?;
    }
    let scale_only = previous.as_ref().is_some_and(|p| {
        let mut p2 = p.clone();
        p2.instances = def.instances;
        p2.scaling = def.scaling.clone();
        p2 == def
    });
    let action = match (&previous, scale_only) {
        (None, _) => Action::StartApplication,
        (Some(_), true) => Action::ScaleApplication,
        (Some(_), false) => Action::RestartApplication,
    };
    let mut def = def;
    let manual = match (&previous, def.scaling.as_mut()) {
        (Some(p), Some(s)) if scale_only && how.manual_scale => {
            s.floor = Some(def.instances);
            Some((p.instances, def.instances))
        }
        _ => None,
    };
    let app_id = def.id.clone();
    let deployed = change(tx, def, previous, action, scale_only, how.force).await?;
    if let Some((from, to)) = manual {
        let reason = format!("manual scale: a floor of {to} until cleared");
        let decision = paas.scaler.record(&app_id, from, to, &reason, "api");
        paas.lock()
            .publish(crate::events::Event::ScalingDecision(decision));
    }
    Ok(deployed)
}

/// Marathon's scale: sets app `id`'s count, a manual scale (on an autoscaled app it holds as
/// a floor until cleared); scaling a suspended app up resumes it.
pub async fn scale(
    tx: &Tx<'_>,
    id: &str,
    instances: u32,
    force: bool,
) -> Result<Deployed, OpsError> {
    let mut def = current(tx.paas(), id).ok_or_else(|| OpsError::NoApp(id.to_string()))?;
    def.instances = instances;
    // Scaling a suspended app up is Marathon's way of bringing it back.
    if let Some(s) = def.scaling.as_mut().filter(|_| instances > 0) {
        s.suspended = false;
    }
    let how = Update {
        force,
        manual_scale: true,
    };
    update(tx, def.validated()?, how).await
}

/// Replaces app `id`'s scaling settings with `scaling` (validated as the definition's field);
/// `None` clears them.
pub async fn set_scaling(
    tx: &Tx<'_>,
    id: &str,
    scaling: Option<Scaling>,
    force: bool,
) -> Result<Deployed, OpsError> {
    let mut def = current(tx.paas(), id).ok_or_else(|| OpsError::NoApp(id.to_string()))?;
    def.scaling = scaling;
    let def = def.validated()?;
    let how = Update {
        force,
        ..Update::default()
    };
    update(tx, def, how).await
}

/// Puts app `id` back to its stored version `version`, as a restart.
pub async fn restore(
    tx: &Tx<'_>,
    id: &str,
    version: &str,
    force: bool,
) -> Result<Deployed, OpsError> {
    let paas = tx.paas();
    let cur = current(paas, id).ok_or_else(|| OpsError::NoApp(id.to_string()))?;
    let versions = paas.store.versions(id).await?;
    let Some((_, def)) = versions.into_iter().find(|(v, _)| v == version) else {
        return Err(OpsError::NotFound(format!(
            "App '{id}' does not exist in version {version}"
        )));
    };
    let def: AppDefinition = serde_json::from_str(&def)
        .map_err(|e| OpsError::Corrupt(format!("app {id} version {version}: {e}")))?;
    change(tx, def, Some(cur), Action::RestartApplication, false, force).await
}

/// Restarts app `id`'s instances (a rolling replacement).
pub async fn restart(tx: &Tx<'_>, id: &str, force: bool) -> Result<Deployed, OpsError> {
    let def = current(tx.paas(), id).ok_or_else(|| OpsError::NoApp(id.to_string()))?;
    change(
        tx,
        def.clone(),
        Some(def),
        Action::RestartApplication,
        false,
        force,
    )
    .await
}

/// Installs a pushed release's definition: a start, or a restart of the app running now
/// (superseding any deployment under way).
pub async fn release(tx: &Tx<'_>, def: AppDefinition) -> Result<Deployed, OpsError> {
    let previous = current(tx.paas(), &def.id);
    let action = match previous {
        Some(_) => Action::RestartApplication,
        None => Action::StartApplication,
    };
    let version = timestamp();
    let rt = new_rt(def, version.clone(), version.clone(), version.clone());
    let deployment_id = tx.install(rt, action, previous, |_| {}).await?;
    Ok(Deployed {
        deployment_id,
        version,
    })
}

/// Installs `def` as the app's new version; `scale_only` keeps the running instances.
async fn change(
    tx: &Tx<'_>,
    def: AppDefinition,
    previous: Option<AppDefinition>,
    action: Action,
    scale_only: bool,
    force: bool,
) -> Result<Deployed, OpsError> {
    let version = timestamp();
    let (config_version, scaling_version) = {
        let s = tx.paas().lock();
        match s.apps.get(&def.id).filter(|a| !a.deleting) {
            Some(a) => {
                if !force {
                    locked(a)?;
                }
                if scale_only {
                    (a.config_version.clone(), version.clone())
                } else {
                    (version.clone(), version.clone())
                }
            }
            None => (version.clone(), version.clone()),
        }
    };
    let rt = new_rt(def, version.clone(), config_version, scaling_version);
    let deployment_id = tx.install(rt, action, previous, |_| {}).await?;
    Ok(Deployed {
        deployment_id,
        version,
    })
}

/// Deletes app `id`: its instances are stopped, then it is gone.
pub async fn delete(tx: &Tx<'_>, id: &str, force: bool) -> Result<Deployed, OpsError> {
    let paas = tx.paas();
    let def = {
        let s = paas.lock();
        let a = s
            .apps
            .get(id)
            .filter(|a| !a.deleting)
            .ok_or_else(|| OpsError::NoApp(id.to_string()))?;
        if !force {
            locked(a)?;
        }
        a.def.clone()
    };
    let version = timestamp();
    let mut rt = new_rt(
        def.clone(),
        version.clone(),
        version.clone(),
        version.clone(),
    );
    rt.deleting = true;
    let deployment_id = tx
        .install(rt, Action::StopApplication, Some(def), |_| {})
        .await?;
    paas.scaler.forget(id);
    Ok(Deployed {
        deployment_id,
        version,
    })
}

/// What a kill did.
#[derive(Debug)]
pub enum Killed {
    /// The tasks killed, as they were.
    Tasks(Vec<Instance>),
    /// Their apps were scaled down by as many (the last app's deployment).
    Scaled(Deployed),
}

/// Kills tasks `ids` (unknown ones are skipped); with `scale`, lowers their apps' instance
/// counts by as many, on disk before anything is killed.
pub async fn kill(tx: &Tx<'_>, ids: &[String], scale: bool) -> Result<Killed, OpsError> {
    let paas = tx.paas();
    let mut scaled = Vec::new();
    if scale {
        let per_app: HashMap<String, (AppDefinition, String, u32)> = {
            let s = paas.lock();
            let mut per_app: HashMap<String, (AppDefinition, String, u32)> = HashMap::new();
            for i in ids
                .iter()
                .filter_map(|t| s.instances.get(t))
                .filter(|i| !i.killing)
            {
                if let Some(a) = s.apps.get(&i.app_id) {
                    per_app
                        .entry(a.def.id.clone())
                        .or_insert_with(|| (a.def.clone(), a.config_version.clone(), 0))
                        .2 += 1;
                }
            }
            per_app
        };
        for (_, (prev, config, n)) in per_app {
            let mut def = prev.clone();
            def.instances = def.instances.saturating_sub(n);
            let version = timestamp();
            let rt = new_rt(def, version.clone(), config, version);
            paas.store
                .write(crate::store::Op::PutApp(rt.stored()))
                .await?;
            scaled.push((rt, prev));
        }
    }
    let (killed, deployed) = {
        let mut s = paas.lock();
        let tasks: Vec<Instance> = ids
            .iter()
            .filter_map(|t| s.instances.get(t))
            .cloned()
            .collect();
        s.kill_tasks(ids);
        let mut deployed = None;
        for (rt, prev) in scaled {
            let version = rt.version.clone();
            let deployment_id = s.install(rt, Action::ScaleApplication, Some(prev));
            deployed = Some(Deployed {
                deployment_id,
                version,
            });
        }
        (tasks, deployed)
    };
    // The kills were queued in order behind any earlier write: wait until they are on disk.
    paas.store.flush().await?;
    paas.kick.notify_one();
    Ok(match deployed {
        Some(d) => Killed::Scaled(d),
        None if scale => Killed::Tasks(Vec::new()),
        None => Killed::Tasks(killed),
    })
}
