//! The PaaS's git-push API (`/v1/push/…`, `/hooks/github/{app}`): what it answers, as the CLI
//! and the tests read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/push/apps`: a pushed app made, with where to push and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewApp {
    pub app: String,
    /// The git remote (`git push <remote> main`).
    pub remote: String,
    /// The remote's password (HTTP Basic, any user name).
    pub deploy_token: String,
    pub webhook_url: String,
    pub webhook_secret: String,
    /// Where it is served.
    pub url: String,
}

/// `GET /v1/push/apps/{app}/webhook`, and its `POST` (a new secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub webhook_url: String,
    pub webhook_secret: String,
}

/// `DELETE /v1/push/apps/{app}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destroyed {
    pub app: String,
    pub destroyed: bool,
}

/// A release as `GET /v1/push/apps/{app}/releases` lists it: no log, no config values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseSummary {
    /// `v3`.
    pub version: String,
    pub commit: String,
    pub artifact: String,
    /// `push`, `webhook`, `rollback to v2`, `config`.
    pub by: String,
    /// `succeeded`, `failed`, `deploying`.
    pub status: String,
    pub created: String,
    /// Its config var names.
    pub config: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Releases {
    pub releases: Vec<ReleaseSummary>,
}

/// A release made and serving (a rollback, a config change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    pub app: String,
    pub version: String,
    pub status: String,
}

/// `GET /v1/push/apps/{app}/config`: the config vars of the release serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigVars {
    pub config: BTreeMap<String, String>,
}

/// What `POST /hooks/github/{app}` did with a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HookOutcome {
    /// A push of a branch: its commit is being deployed.
    Deploying { app: String, deploying: String },
    /// GitHub's `ping`, when the hook is added.
    Pong { ok: bool, app: String },
    /// Another event, a tag, a deleted branch, a delivery seen already: why it was ignored.
    Ignored { ignored: String },
}
