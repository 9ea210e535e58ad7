//! The PaaS's domain types, a leaf every other module builds on (it names no other module of
//! the crate): an app's definition with its scaling settings and placement constraints, its
//! instances, its deployments, custom domains' hostnames, and the clock they are stamped with.

pub mod app;
pub mod certificate;
pub mod constraint;
pub mod deployment;
pub mod hostname;
pub mod instance;
pub mod scaling;

/// Marathon's version timestamp for now.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Wall-clock milliseconds since the epoch (the routers' report times are on the same clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
