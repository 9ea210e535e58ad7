//! The PaaS's domain types, a leaf every other module builds on (it names no other module of
//! the crate): an app's definition with its scaling settings and placement constraints, its
//! instances, its deployments, and the clock they are stamped with.

pub mod app;
pub mod constraint;
pub mod deployment;
pub mod instance;
pub mod scaling;

/// Marathon's version timestamp for now.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
