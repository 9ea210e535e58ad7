//! When each hostname's certificate is due: now when it has none, at about two thirds of its
//! lifetime when it has one (RFC 9773's advice; Let's Encrypt's lifetimes shrink to 64 and
//! then 45 days), and after a failure when its backoff ends.

use std::time::{Duration, SystemTime};

use drove_proto::paas::IssuanceState;

use super::Authority;
use crate::state::State;

/// The longest wait between retries after failures (Let's Encrypt allows 5 failed
/// validations per hostname per hour).
pub const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);
/// How often the schedule is looked at with nothing due.
pub const IDLE_CHECK: Duration = Duration::from_secs(3600);

/// Which hostnames the authority signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// Custom domains (ACME: validated through the routers).
    pub custom: bool,
    /// The apps' own `<app>.<domain>` (the local CA; ACME with `--acme-own-hostnames`).
    pub own: bool,
}

/// What is due now, and when the next is.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub due: Vec<String>,
    pub next: Option<SystemTime>,
}

/// The hostnames `authority` signs that need a certificate now, and the earliest later time.
pub fn plan(
    state: &State,
    authority: &Authority,
    scope: Scope,
    domain: &str,
    now: SystemTime,
) -> Plan {
    let mut plan = Plan::default();
    for hostname in hostnames(state, scope, domain) {
        if state
            .certificates
            .get(&hostname)
            .is_some_and(|c| c.source == "operator")
        {
            continue;
        }
        let at = match state.issuance.get(&hostname) {
            // Another authority's (the PaaS was moved to a new CA): a new certificate now.
            Some(i) if i.authority != authority.name() => None,
            Some(i) if i.state == IssuanceState::Pending => None,
            Some(i) => i
                .next
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok()),
            None => None,
        };
        match at {
            Some(at) if at > now => {
                plan.next = Some(plan.next.map_or(at, |n: SystemTime| n.min(at)));
            }
            _ => plan.due.push(hostname),
        }
    }
    plan
}

/// Whether `hostname` still wants a certificate.
pub fn wanted(state: &State, scope: Scope, domain: &str, hostname: &str) -> bool {
    hostnames(state, scope, domain).any(|h| h == hostname)
}

/// The hostnames in `scope`: custom domains, the apps' own, or both.
pub fn hostnames<'a>(
    state: &'a State,
    scope: Scope,
    domain: &'a str,
) -> impl Iterator<Item = String> + 'a {
    let custom = state.domains.keys().filter(move |_| scope.custom).cloned();
    let own = state
        .apps
        .values()
        .filter(move |a| scope.own && !a.deleting)
        .filter_map(|a| crate::model::app::route_name(&a.def.id))
        .map(move |name| format!("{name}.{domain}"));
    custom.chain(own)
}

/// When a certificate valid from `from` until `until` is renewed: at two thirds of its
/// lifetime, less up to a twentieth of it by `jitter` (0..1), so certificates issued
/// together do not all renew at once.
pub fn renewal(from: SystemTime, until: SystemTime, jitter: f64) -> SystemTime {
    let life = until.duration_since(from).unwrap_or_default();
    let early = life.mul_f64(jitter.clamp(0.0, 1.0) / 20.0);
    from + life.mul_f64(2.0 / 3.0) - early
}

/// How long after the `attempts`th failure in a row the next try is: `first`, doubled for
/// each failure after the first, at most [`RETRY_MAX`].
pub fn retry_in(first: Duration, attempts: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(RETRY_MAX.max(first))
        .with_factor(2.0)
        .without_max_times()
        .build()
        // Past 64 doublings every delay is the cap: no need to step through them.
        .nth(attempts.clamp(1, 64) as usize - 1)
        .unwrap_or(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_two_thirds_less_jitter() {
        let from = SystemTime::UNIX_EPOCH;
        let until = from + Duration::from_secs(90 * 86_400);
        assert_eq!(
            renewal(from, until, 0.0),
            from + Duration::from_secs(60 * 86_400)
        );
        let earliest = renewal(from, until, 1.0);
        assert_eq!(
            earliest,
            from + Duration::from_secs(60 * 86_400 - 4 * 86_400 - 43_200)
        );
        // A certificate already past its end renews at once, not never.
        assert!(renewal(until, from, 0.5) <= until);
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        let first = Duration::from_secs(60);
        assert_eq!(retry_in(first, 1), first);
        assert_eq!(retry_in(first, 2), first * 2);
        assert_eq!(retry_in(first, 4), first * 8);
        assert_eq!(retry_in(first, 30), RETRY_MAX);
        assert_eq!(retry_in(first, u32::MAX), RETRY_MAX);
    }
}
