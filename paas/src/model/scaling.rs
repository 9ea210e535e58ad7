//! An app's scaling settings (`"scaling"` in its definition; drove's own field, next to
//! Marathon's). Without it an app keeps the instance count it is given, as in Marathon.

use serde::{Deserialize, Serialize};

/// How the scaler may move an app's instance count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scaling {
    /// Never fewer; 0 lets the app go to zero when idle.
    #[serde(default)]
    pub min_instances: u32,
    /// Never more.
    #[serde(default = "max_default")]
    pub max_instances: u32,
    /// Seconds with no request and nothing in flight before an app with a minimum of 0 goes
    /// to zero.
    #[serde(default = "idle_default")]
    pub idle_seconds: f64,
    /// In-flight requests per instance the scaler aims at.
    #[serde(default = "target_default")]
    pub target_concurrency: f64,
    /// The stable window (Knative's): load is averaged over it, and the app is scaled down only
    /// once it has been that low for that long. The panic window is a tenth of it (≥ 1 s).
    #[serde(default = "stable_default")]
    pub stable_window_seconds: f64,
    /// Most requests one instance is sent at once (Knative's `containerConcurrency`); more
    /// wait in the router, where they count as held load, so a burst on a cold app starts
    /// more instances instead of flooding the first. 0: no limit.
    #[serde(default)]
    pub concurrency_limit: u32,
    /// Set by a manual scale (the API's or the CLI's): the scaler keeps at least this many
    /// until it is cleared (`null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<u32>,
    /// Taken offline by an operator (`drove suspend`): no instances, never scaled, never
    /// woken; the routers answer its requests 503 at once. `drove resume` clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
}

fn max_default() -> u32 {
    10
}
fn idle_default() -> f64 {
    300.0
}
fn target_default() -> f64 {
    10.0
}
fn stable_default() -> f64 {
    60.0
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            min_instances: 0,
            max_instances: max_default(),
            idle_seconds: idle_default(),
            target_concurrency: target_default(),
            stable_window_seconds: stable_default(),
            concurrency_limit: 0,
            floor: None,
            suspended: false,
        }
    }
}

impl Scaling {
    /// The fewest instances the scaler may leave: the minimum, or the floor if higher.
    pub fn lower(&self) -> u32 {
        self.min_instances.max(self.floor.unwrap_or(0))
    }

    pub fn panic_window_seconds(&self) -> f64 {
        (self.stable_window_seconds / 10.0).max(1.0)
    }

    /// Each violation as (field path, message).
    pub fn violations(&self, max_instances: u32) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut bad = |field: &str, msg: String| v.push((format!("/scaling/{field}"), msg));
        if self.max_instances == 0 || self.max_instances > max_instances {
            bad(
                "maxInstances",
                format!(
                    "expected 1 to {max_instances}, found {}",
                    self.max_instances
                ),
            );
        }
        if self.min_instances > self.max_instances {
            bad(
                "minInstances",
                format!(
                    "expected at most maxInstances ({}), found {}",
                    self.max_instances, self.min_instances
                ),
            );
        }
        if let Some(f) = self.floor {
            if f > self.max_instances {
                bad(
                    "floor",
                    format!(
                        "expected at most maxInstances ({}), found {f}",
                        self.max_instances
                    ),
                );
            }
        }
        let seconds = |x: f64| x.is_finite() && (1.0..=30.0 * 86_400.0).contains(&x);
        if !seconds(self.idle_seconds) {
            bad(
                "idleSeconds",
                format!("expected 1 to 2592000 seconds, found {}", self.idle_seconds),
            );
        }
        if !seconds(self.stable_window_seconds) || self.stable_window_seconds > 3600.0 {
            bad(
                "stableWindowSeconds",
                format!(
                    "expected 1 to 3600 seconds, found {}",
                    self.stable_window_seconds
                ),
            );
        }
        if !(self.target_concurrency.is_finite()
            && self.target_concurrency > 0.0
            && self.target_concurrency <= 100_000.0)
        {
            bad(
                "targetConcurrency",
                format!(
                    "expected a number above 0 and at most 100000, found {}",
                    self.target_concurrency
                ),
            );
        }
        v
    }
}
