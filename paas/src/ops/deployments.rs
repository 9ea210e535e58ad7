//! Deployments: roll one back, or stop tracking it.

use super::{Deployed, OpsError, Tx};
use crate::model::deployment::Action;
use crate::model::timestamp;
use crate::state::new_rt;

fn no_deployment(id: &str) -> OpsError {
    OpsError::NotFound(format!("DeploymentPlan {id} does not exist"))
}

/// Rolls deployment `id`'s app back to where it was before it (a new deployment): the earlier
/// definition with its config and scaling versions, so the instances that were current then
/// are current again; an app the deployment created is deleted.
pub async fn rollback(tx: &Tx<'_>, id: &str) -> Result<Deployed, OpsError> {
    let (current, deployment) = {
        let s = tx.paas().lock();
        s.apps
            .values()
            .find_map(|a| {
                let d = a.deployment.as_ref().filter(|d| d.id == id)?;
                Some((a.def.clone(), d.clone()))
            })
            .ok_or_else(|| no_deployment(id))?
    };
    let version = timestamp();
    let rt = match (deployment.previous, deployment.previous_versions) {
        (None, _) if deployment.action == Action::StartApplication => {
            let mut rt = new_rt(
                current.clone(),
                version.clone(),
                version.clone(),
                version.clone(),
            );
            rt.deleting = true;
            rt
        }
        (None, _) => {
            return Err(OpsError::Conflict(format!(
                "DeploymentPlan {id} was resumed after a restart and has no earlier version to roll back to; use ?force=true to stop tracking it"
            )))
        }
        (Some(prev), versions) => {
            let (config, scaling) =
                versions.unwrap_or_else(|| (version.clone(), version.clone()));
            new_rt(prev, version.clone(), config, scaling)
        }
    };
    let action = if rt.deleting {
        Action::StopApplication
    } else {
        Action::RestartApplication
    };
    let deployment_id = tx.install(rt, action, Some(current), |_| {}).await?;
    Ok(Deployed {
        deployment_id,
        version,
    })
}

/// Stops tracking deployment `id`; its app stays as it is.
pub fn forget(tx: &Tx<'_>, id: &str) -> Result<(), OpsError> {
    let mut s = tx.paas().lock();
    let a = s
        .apps
        .values_mut()
        .find(|a| a.deployment.as_ref().is_some_and(|d| d.id == id))
        .ok_or_else(|| no_deployment(id))?;
    a.deployment = None;
    Ok(())
}
