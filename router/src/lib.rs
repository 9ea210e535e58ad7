//! drove's data plane: an HTTP router built on Pingora.
//!
//! Users browse `http://<app>.<domain>:8080`; the router finds the app's healthy instances,
//! spreads requests over them by least outstanding requests, and, when the app is scaled to
//! zero, holds the request while the app wakes. It follows the PaaS's route stream (no config
//! files, no reloads), pushes stats to the PaaS every second and serves `/metrics` + `/health`
//! on an admin listener. See ARCHITECTURE.md (`## router`) for the wire contract,
//! whose types live in [`drove_proto::routing`].
//!
//! Embedding: [`start`] runs everything on threads of its own (Pingora's `Server` owns its
//! runtimes) and returns a [`RouterHandle`]; it may be called from inside a tokio runtime.
#![forbid(unsafe_code)]

mod acme;
mod admin;
mod args;
mod balance;
mod metrics;
mod proxy;
mod report;
mod route_stream;
pub mod routes;
mod server;
pub mod stats;
pub mod tls;
mod wake;

pub use args::RouterArgs;
pub use drove_proto::routing::StatsReport;
pub use drove_proto::routing::{AppSpec, AppState, BackendSpec, RouteMessage};
pub use server::{run, start, RouterError, RouterHandle};
