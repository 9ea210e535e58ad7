//! Request statistics: lock-free counters and latency histograms bumped by the proxy.
//! [`crate::report`] pushes them to the PaaS every second (Flock's stats CSV) and
//! [`crate::metrics`] exposes them to Prometheus.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The report's wire types are the router <-> PaaS contract, defined in `drove-proto`.
pub use drove_proto::routing::{
    AppReport, BackendReport, CounterReport, Quantiles, Responses, StatsReport,
};

/// Upper bounds of the latency buckets, in microseconds (the last bucket is +Inf).
pub const BUCKETS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Latency quantiles (in reports and in `/metrics`) cover the requests of about this long ago
/// until now, so they follow the app's current behaviour instead of its whole history.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);
/// How often the control runtime snapshots each histogram for the window; the window's start
/// is accurate to this.
pub const WINDOW_STEP: Duration = Duration::from_secs(5);

type Counts = [u64; BUCKETS_US.len() + 1];

/// A fixed-bucket latency histogram: cumulative counts (bumped by the proxy, lock-free) plus
/// snapshots of them taken every [`WINDOW_STEP`] by the control runtime, from which the counts
/// of the last [`LATENCY_WINDOW`] are a subtraction. The proxy never touches the snapshots.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    snapshots: Mutex<VecDeque<(Instant, Counts)>>,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts since the router started.
    pub fn counts(&self) -> Counts {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// Takes a snapshot for the window (at most one per [`WINDOW_STEP`]) and forgets the ones
    /// no longer needed to cover [`LATENCY_WINDOW`].
    pub fn snapshot(&self, now: Instant) {
        let mut snaps = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        // Half a step: the control loop's ticks (a step apart, give or take scheduling
        // jitter) are all taken, so the window's start stays within a step of a window ago.
        if let Some((last, _)) = snaps.back() {
            if now.saturating_duration_since(*last) < WINDOW_STEP / 2 {
                return;
            }
        }
        snaps.push_back((now, self.counts()));
        // Keep the newest snapshot that is at least a window old: it is the window's start.
        while snaps
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= LATENCY_WINDOW)
        {
            snaps.pop_front();
        }
    }

    /// Counts of the requests recorded in the last [`LATENCY_WINDOW`] (up to one
    /// [`WINDOW_STEP`] more), as of `now`: everything since the newest snapshot at least a
    /// window old, or since the start when there is none yet.
    pub fn recent(&self, now: Instant) -> Counts {
        let counts = self.counts();
        let snaps = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        match snaps.front() {
            Some((t, base)) if now.saturating_duration_since(*t) >= LATENCY_WINDOW => {
                std::array::from_fn(|i| counts[i].saturating_sub(base[i]))
            }
            _ => counts,
        }
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }
}

/// Estimates quantile `q` (0..1) in milliseconds from bucket counts, interpolating linearly
/// inside the bucket. Returns `None` without samples.
pub fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).max(1.0);
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        if (seen + c) as f64 >= rank {
            let lo = if i == 0 { 0 } else { BUCKETS_US[i - 1] } as f64;
            let hi = BUCKETS_US
                .get(i)
                .copied()
                .unwrap_or(BUCKETS_US[BUCKETS_US.len() - 1]) as f64;
            let frac = (rank - seen as f64) / c as f64;
            return Some((lo + (hi - lo) * frac) / 1000.0);
        }
        seen += c;
    }
    Some(BUCKETS_US[BUCKETS_US.len() - 1] as f64 / 1000.0)
}

/// Counters for one app or one backend.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    /// Responses by class: index 0 = no response (connection failed or aborted), 1..=5 = 1xx..5xx.
    pub classes: [AtomicU64; 6],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Unix time of the last request, in milliseconds (0 = never).
    pub last_request_ms: AtomicU64,
    pub latency: Histogram,
    /// Requests that had to be held waiting for a backend (app level only).
    pub held_total: AtomicU64,
    /// Held requests that gave up after the hold timeout (app level only).
    pub hold_timeouts: AtomicU64,
    /// Requests refused because the hold queue was full (app level only).
    pub hold_rejected: AtomicU64,
    /// Wake calls sent to the PaaS (app level only).
    pub wakes: AtomicU64,
    /// Connect failures (backend level) or retries (app level).
    pub connect_failures: AtomicU64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Counters {
    pub fn start(&self, now_ms: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_request_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn finish(&self, status: Option<u16>, bytes_in: u64, bytes_out: u64, latency: Duration) {
        let class = match status {
            Some(s @ 100..=599) => (s / 100) as usize,
            _ => 0,
        };
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        self.latency.record(latency);
    }

    /// A request that ended without a response and whose duration says nothing about the app
    /// (its client hung up while it was held).
    pub fn abandon(&self) {
        self.classes[0].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self, in_flight: u64) -> CounterReport {
        let counts = self.latency.recent(Instant::now());
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = g(&self.last_request_ms);
        CounterReport {
            requests: g(&self.requests),
            responses: Responses {
                informational: g(&self.classes[1]),
                success: g(&self.classes[2]),
                redirect: g(&self.classes[3]),
                client_error: g(&self.classes[4]),
                server_error: g(&self.classes[5]),
                failed: g(&self.classes[0]),
            },
            in_flight,
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            last_request_ms: (last > 0).then_some(last),
            latency_ms: Quantiles {
                p50: quantile_ms(&counts, 0.50),
                p95: quantile_ms(&counts, 0.95),
                p99: quantile_ms(&counts, 0.99),
            },
            connect_failures: g(&self.connect_failures),
        }
    }
}

/// Router-wide counters.
#[derive(Debug, Default)]
pub struct RouterCounters {
    pub unknown_host: AtomicU64,
    pub route_stream_connected: AtomicBool,
    pub route_messages: AtomicU64,
    pub route_errors: AtomicU64,
    pub stats_pushes: AtomicU64,
    pub stats_push_failures: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record(Duration::from_micros(200));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(40));
        }
        let c = h.counts();
        let p50 = quantile_ms(&c, 0.5).expect("samples");
        assert!(p50 > 0.1 && p50 <= 0.25, "{p50}");
        let p99 = quantile_ms(&c, 0.99).expect("samples");
        assert!(p99 > 25.0 && p99 <= 50.0, "{p99}");
        assert_eq!(quantile_ms(&[0; 19], 0.5), None);
    }

    #[test]
    fn quantiles_follow_the_last_window() {
        let h = Histogram::default();
        let t0 = Instant::now();
        h.snapshot(t0);
        for _ in 0..100 {
            h.record(Duration::from_millis(40));
        }
        assert!(quantile_ms(&h.recent(t0), 0.5).expect("samples") > 25.0);
        // Snapshots younger than the window do not cut it short.
        h.snapshot(t0 + WINDOW_STEP);
        assert_eq!(h.recent(t0 + WINDOW_STEP).iter().sum::<u64>(), 100);
        // Snapshots every step (the control runtime's loop); extra calls within a step are
        // ignored. Once the slow requests are a window old they no longer count.
        let mut t = t0;
        while t < t0 + LATENCY_WINDOW + WINDOW_STEP {
            t += WINDOW_STEP;
            h.snapshot(t);
            h.snapshot(t + Duration::from_millis(1));
        }
        assert_eq!(h.recent(t).iter().sum::<u64>(), 0);
        for _ in 0..10 {
            h.record(Duration::from_micros(200));
        }
        let p99 = quantile_ms(&h.recent(t), 0.99).expect("samples");
        assert!(p99 <= 0.25, "{p99}");
        // The cumulative counts (the Prometheus histogram) keep everything.
        assert_eq!(h.counts().iter().sum::<u64>(), 110);
        // Snapshots are bounded by the window, however long the router runs.
        let kept = h.snapshots.lock().expect("lock").len();
        assert!(kept <= 14, "{kept}");
    }

    #[test]
    fn counters_classes() {
        let c = Counters::default();
        c.start(5);
        c.finish(Some(204), 1, 2, Duration::from_millis(1));
        c.finish(Some(503), 0, 0, Duration::from_millis(1));
        c.finish(None, 0, 0, Duration::from_millis(1));
        let r = c.report(0);
        assert_eq!(r.requests, 1);
        assert_eq!(r.responses.success, 1);
        assert_eq!(r.responses.server_error, 1);
        assert_eq!(r.responses.failed, 1);
        assert_eq!(r.last_request_ms, Some(5));
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(json["responses"]["2xx"], 1);
    }
}
