//! Where the cluster reads the time: the system's clocks, or in tests one moved by hand, so
//! timeouts (agent pings, framework failover, agent removal) are tested without waiting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Both clocks the cluster needs: a monotonic one for deadlines, and Unix seconds for what it
/// reports (Mesos's `registered_time`, status timestamps).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Manual>>>);

struct Manual {
    now: Instant,
    unix_secs: f64,
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        Clock(Some(Arc::new(Mutex::new(Manual {
            now: Instant::now(),
            unix_secs: drove_proto::mesos::now_secs(),
        }))))
    }

    /// Moves a manual clock forward (a system clock moves on its own).
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.0 {
            let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
            m.now += by;
            m.unix_secs += by.as_secs_f64();
        }
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            Some(m) => m.lock().unwrap_or_else(|p| p.into_inner()).now,
            None => Instant::now(),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix_secs(&self) -> f64 {
        match &self.0 {
            Some(m) => m.lock().unwrap_or_else(|p| p.into_inner()).unix_secs,
            None => drove_proto::mesos::now_secs(),
        }
    }

    pub fn unix_ms(&self) -> i64 {
        (self.unix_secs() * 1000.0) as i64
    }
}
