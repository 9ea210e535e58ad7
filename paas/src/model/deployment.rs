//! A deployment: a change to an app being rolled out, and what it does.

use super::app::AppDefinition;

pub use drove_proto::paas::Action;

/// A change being rolled out.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub action: Action,
    /// The app before the change (None: the app did not exist), for rollback.
    pub previous: Option<AppDefinition>,
    /// Its config and scaling versions then: a rollback restores them, so the instances that
    /// were current then are current again and are not restarted.
    pub previous_versions: Option<(String, String)>,
    pub started: String,
    /// What holds it up, when something does.
    pub waiting: Option<String>,
}
