//! The scaler's decision for one app at one moment: a pure function of its settings and what
//! the routers and the agents report, in the manner of Knative's autoscaler.
//!
//! - **Load.** Concurrency (requests in flight plus requests held) is averaged over the stable
//!   window and over the panic window (a tenth of it). The wanted count is the average divided
//!   by the target concurrency, rounded up. When the panic average wants at least twice the
//!   current count, the app enters panic mode for one stable window: it scales up to what the
//!   panic window wants and never down. Otherwise it follows the stable window, scaling down
//!   gradually (at most halving per step) and only after a stable window since its last change.
//!   Load alone never takes an app to zero.
//! - **Idle.** With a lower bound of 0, an app with nothing in flight, nothing held and no
//!   request for its idle period goes to zero, unless its processes are busy on their own
//!   (CPU above [`BUSY_CPUS`] over that period): a request counter cannot see background work.
//! - Always within the lower bound (minimum, or the manual floor) and the maximum.

use std::time::Duration;

use crate::model::scaling::Scaling;

/// CPU (in cores, averaged over the idle period) above which an idle-looking app counts as busy.
pub const BUSY_CPUS: f64 = 0.02;

/// What the scaler knows of an app now.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub current: u32,
    /// Average concurrency over the stable and the panic windows.
    pub stable_avg: f64,
    pub panic_avg: f64,
    /// Whether the stable window is filled with samples yet.
    pub stable_full: bool,
    pub in_flight: u64,
    pub held: u64,
    /// Since the last request (or in-flight/held one), or since the app last scaled up.
    pub idle_for: Duration,
    /// Since the scaler (or anyone) last changed the count.
    pub since_change: Duration,
    /// The app's CPU use over the idle period, in cores, when known.
    pub cpus: Option<f64>,
    /// CPU use is being measured but not known yet (one sample so far): an idle decision
    /// waits for it.
    pub cpu_pending: bool,
    pub panicking: bool,
}

/// A change to make, with the reason shown to people. `to` equal to the current count is a
/// decision not to change, worth recording (an idle app kept up because it is busy).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub to: u32,
    pub reason: String,
    /// Enter (or stay in) panic mode.
    pub panic: bool,
}

fn wanted(avg: f64, target: f64) -> u32 {
    let n = (avg / target).ceil();
    if n.is_finite() && n > 0.0 {
        n.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// The change to make now, if any.
pub fn decide(s: &Scaling, i: &Inputs) -> Option<Change> {
    let lower = s.lower();
    let upper = s.max_instances.max(lower);
    let cur = i.current;
    let stable_window = Duration::from_secs_f64(s.stable_window_seconds);
    // Below the lower bound (a raised minimum or floor): up at once.
    if cur < lower {
        return Some(Change {
            to: lower,
            reason: format!("below the minimum of {lower}"),
            panic: false,
        });
    }
    if cur > upper {
        return Some(Change {
            to: upper,
            reason: format!("above the maximum of {upper}"),
            panic: false,
        });
    }
    // Idle → zero.
    if cur > 0
        && lower == 0
        && i.in_flight == 0
        && i.held == 0
        && i.idle_for.as_secs_f64() >= s.idle_seconds
    {
        if i.cpu_pending {
            return None;
        }
        if let Some(cpus) = i.cpus.filter(|c| *c > BUSY_CPUS) {
            // Busy on its own: stay, and say why (the caller records it once per idle stretch).
            return Some(Change {
                to: cur,
                reason: format!(
                    "idle {} s but busy: {cpus:.2} cpus of background work",
                    i.idle_for.as_secs()
                ),
                panic: false,
            });
        }
        return Some(Change {
            to: 0,
            reason: format!("idle {} s", i.idle_for.as_secs()),
            panic: false,
        });
    }
    if cur == 0 {
        // Waking is the router's call (held requests); the scaler only follows load once up.
        return None;
    }
    let target = s.target_concurrency;
    let want_panic = wanted(i.panic_avg, target);
    let ratio = i.panic_avg / (f64::from(cur) * target);
    if want_panic >= cur.saturating_mul(2) || (i.panicking && want_panic > cur) {
        let to = want_panic.clamp(lower.max(1), upper);
        if to > cur {
            return Some(Change {
                to,
                reason: format!(
                    "in-flight {ratio:.1}× target over {:.0} s (panic)",
                    s.panic_window_seconds()
                ),
                panic: true,
            });
        }
        return None;
    }
    if i.panicking {
        return None; // panic never scales down
    }
    let want = wanted(i.stable_avg, target).clamp(lower.max(1), upper);
    if want > cur {
        return Some(Change {
            to: want,
            reason: format!(
                "in-flight {:.1}× target over {:.0} s",
                i.stable_avg / (f64::from(cur) * target),
                s.stable_window_seconds
            ),
            panic: false,
        });
    }
    if want < cur && i.stable_full && i.since_change >= stable_window {
        let to = want.max(cur.div_ceil(2));
        return Some(Change {
            to,
            reason: format!(
                "in-flight {:.2}× target over {:.0} s",
                i.stable_avg / (f64::from(cur) * target),
                s.stable_window_seconds
            ),
            panic: false,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Scaling {
        Scaling {
            min_instances: 0,
            max_instances: 5,
            idle_seconds: 2.0,
            target_concurrency: 2.0,
            stable_window_seconds: 10.0,
            concurrency_limit: 0,
            floor: None,
            suspended: false,
        }
    }

    fn up(current: u32) -> Inputs {
        Inputs {
            current,
            stable_full: true,
            idle_for: Duration::ZERO,
            since_change: Duration::from_secs(100),
            ..Default::default()
        }
    }

    #[test]
    fn idle_goes_to_zero_unless_busy_or_held_up() {
        let mut i = up(1);
        i.idle_for = Duration::from_secs(3);
        let c = decide(&s(), &i).expect("to zero");
        assert_eq!((c.to, c.reason.as_str()), (0, "idle 3 s"));
        i.cpus = Some(0.5);
        let kept = decide(&s(), &i).expect("a decision to stay");
        assert_eq!(kept.to, 1, "busy on its own: {kept:?}");
        assert!(kept.reason.contains("busy"), "{kept:?}");
        i.cpu_pending = true;
        assert_eq!(decide(&s(), &i), None, "waits for the CPU measure");
        i.cpu_pending = false;
        i.cpus = Some(0.001);
        assert_eq!(decide(&s(), &i).map(|c| c.to), Some(0));
        i.in_flight = 1; // an open WebSocket or long poll
        assert_eq!(decide(&s(), &i), None);
        i.in_flight = 0;
        let floor = Scaling {
            floor: Some(1),
            ..s()
        };
        assert_eq!(decide(&floor, &i), None, "a manual floor holds");
        let min = Scaling {
            min_instances: 1,
            ..s()
        };
        assert_eq!(decide(&min, &i), None);
    }

    #[test]
    fn panic_scales_up_at_once_and_never_down() {
        let mut i = up(1);
        i.panic_avg = 9.0; // 4.5× target
        let c = decide(&s(), &i).expect("panic");
        assert_eq!(c.to, 5);
        assert!(c.panic && c.reason.contains("panic"), "{c:?}");
        let mut calm = up(5);
        calm.panicking = true;
        calm.stable_avg = 0.1;
        assert_eq!(decide(&s(), &calm), None, "no scale-down while panicking");
        calm.panicking = false;
        let c = decide(&s(), &calm).expect("down");
        assert_eq!(c.to, 3, "gradually: at most halving");
        calm.since_change = Duration::from_secs(1);
        assert_eq!(
            decide(&s(), &calm),
            None,
            "not within a stable window of a change"
        );
        let mut low = up(1);
        low.stable_avg = 0.0;
        assert_eq!(decide(&s(), &low), None, "load alone never goes to zero");
    }

    #[test]
    fn bounds_are_kept() {
        let s2 = Scaling {
            min_instances: 2,
            ..s()
        };
        assert_eq!(decide(&s2, &up(1)).map(|c| c.to), Some(2));
        assert_eq!(decide(&s(), &up(7)).map(|c| c.to), Some(5));
        let mut i = up(1);
        i.stable_avg = 5.0;
        assert_eq!(decide(&s(), &i).map(|c| c.to), Some(3));
        assert_eq!(decide(&s(), &up(0)), None, "waking is the router's call");
    }
}
