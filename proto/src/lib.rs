//! Wire types shared by drove's master, agents, router and frameworks (and the PaaS).
//!
//! - [`mesos`]: the Mesos v1 JSON shapes (stout proto2 JSON: snake_case fields, ids as
//!   `{"value": ..}`, enums as strings), following `mesos.proto` rather than the docs' examples.
//! - [`scheduler`]: the v1 scheduler API's `Call` and `Event`.
//! - [`agent`]: drove's own master <-> agent protocol (HTTP/JSON), documented in ARCHITECTURE.md.
//! - [`resources`]: a compact resource vector with the arithmetic the allocator and agents need.
//! - [`recordio`]: the RecordIO framing of the scheduler event stream.
//! - [`routing`]: the router <-> PaaS contract (route stream, wake and stats bodies and paths),
//!   documented in ARCHITECTURE.md.
//! - [`metrics`]: how every component answers `/metrics` (prometheus-client, a collector
//!   over live state).
//! - [`marathon`]: Marathon's app, task and queue objects as the PaaS serves them.
//! - [`master_state`]: the typed subset of the master's `/master/state` drove's readers use.
//! - [`paas`]: the PaaS's own API types (deployments, scaling decisions, `/v2/events` as one
//!   enum).
//! - [`push`]: the PaaS's git-push API answers (apps, releases, config, webhook).
//! - [`output`]: what tasks write, as people read it (escapes stripped, bounded).
//! - [`secret`]: how every component takes a secret (a file or the environment, never argv).
//! - [`state_dir`]: state directories only root reads (0700, files 0600).
//!
//! This crate knows nothing about any component's internals; every component depends on it,
//! and it depends on none of them.
#![forbid(unsafe_code)]

pub mod agent;
pub mod auth;
pub mod json;
pub mod marathon;
pub mod master_state;
pub mod mesos;
pub mod metrics;
pub mod output;
pub mod paas;
pub mod push;
pub mod recordio;
pub mod resources;
pub mod routing;
pub mod scheduler;
pub mod secret;
pub mod state_dir;

pub use json::{decode, DecodeError};
pub use resources::{Ranges, ResourceError, Resources};
