//! Backend choice: least outstanding requests among usable primaries, backups only when no
//! primary is usable (HAProxy `backup` semantics), and an optional per-backend concurrency limit.
//!
//! A [`Lease`] is one outstanding request on one backend; it holds the backend's in-flight
//! counter up until it is dropped, and then lets one held request of the app try again.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::routes::{App, AppRoute, BackendLive};

/// One outstanding request on a backend.
#[derive(Debug)]
pub struct Lease {
    app: Arc<App>,
    backend: Arc<BackendLive>,
}

impl Lease {
    pub fn backend(&self) -> &Arc<BackendLive> {
        &self.backend
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.inflight.fetch_sub(1, Ordering::SeqCst);
        if self.app.held.load(Ordering::SeqCst) > 0 {
            self.app.notify.notify_one();
        }
    }
}

/// The outcome of one attempt to pick a backend.
#[derive(Debug)]
pub enum Pick {
    Leased(Lease),
    /// Usable backends exist but all are at the app's concurrency limit.
    Busy,
    /// No backend is usable: the app must be woken (or is down).
    NoBackend,
}

/// Picks a backend for `app` and takes a lease on it, skipping `exclude` (backends that
/// already failed for this request).
pub fn pick(app: &Arc<App>, exclude: &[SocketAddr]) -> Pick {
    let route = app.route.load();
    let start = app.rotor.fetch_add(1, Ordering::Relaxed);
    let primary = pick_tier(app, &route, false, exclude, start);
    if !matches!(primary, Pick::NoBackend) {
        return primary;
    }
    pick_tier(app, &route, true, exclude, start)
}

fn pick_tier(
    app: &Arc<App>,
    route: &AppRoute,
    backup: bool,
    exclude: &[SocketAddr],
    start: usize,
) -> Pick {
    let limit = match route.concurrency_limit {
        0 => usize::MAX,
        n => n as usize,
    };
    let n = route.backends.len();
    if n == 0 {
        return Pick::NoBackend;
    }
    // Bounded: each failed compare-exchange means another request took a slot, which can
    // happen at most a handful of times before the tier is full.
    for _ in 0..8 {
        let mut best: Option<(&Arc<BackendLive>, usize)> = None;
        let mut usable = false;
        for i in 0..n {
            let b = &route.backends[(start + i) % n];
            if b.backup != backup
                || !b.healthy
                || b.live.passive_down.load(Ordering::Relaxed)
                || exclude.contains(&b.live.addr)
            {
                continue;
            }
            usable = true;
            let load = b.live.inflight.load(Ordering::Relaxed);
            if load < limit && best.is_none_or(|(_, l)| load < l) {
                best = Some((&b.live, load));
            }
        }
        let Some((live, load)) = best else {
            return if usable { Pick::Busy } else { Pick::NoBackend };
        };
        let ok = if limit == usize::MAX {
            live.inflight.fetch_add(1, Ordering::SeqCst);
            true
        } else {
            live.inflight
                .compare_exchange(load, load + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        };
        if ok {
            return Pick::Leased(Lease {
                app: app.clone(),
                backend: live.clone(),
            });
        }
    }
    Pick::Busy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{AppSpec, AppState, BackendSpec, Registry, RouteMessage, Table};
    use arc_swap::ArcSwap;

    fn app(backends: &[(&str, bool, bool)], limit: u32) -> Arc<App> {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let mut reg = Registry::new("localhost", table.clone());
        reg.apply(RouteMessage::Snapshot {
            apps: vec![AppSpec {
                https: Default::default(),
                name: "a".into(),
                hostnames: vec![],
                state: AppState::Running,
                concurrency_limit: limit,
                backends: backends
                    .iter()
                    .map(|(a, h, b)| BackendSpec {
                        addr: (*a).into(),
                        healthy: *h,
                        backup: *b,
                    })
                    .collect(),
            }],
        });
        let t = table.load();
        t.lookup("a.localhost").expect("app").clone()
    }

    fn leased(p: Pick) -> Lease {
        match p {
            Pick::Leased(l) => l,
            other => panic!("expected a lease, got {other:?}"),
        }
    }

    #[test]
    fn least_outstanding_spreads() {
        let a = app(
            &[("127.0.0.1:1", true, false), ("127.0.0.1:2", true, false)],
            0,
        );
        let l1 = leased(pick(&a, &[]));
        let l2 = leased(pick(&a, &[]));
        assert_ne!(l1.backend().addr, l2.backend().addr);
        drop(l1);
        let l3 = leased(pick(&a, &[]));
        let l4 = leased(pick(&a, &[]));
        assert_ne!(l3.backend().addr, l4.backend().addr);
        drop((l2, l3, l4));
        for b in &a.route.load().backends {
            assert_eq!(b.live.inflight.load(Ordering::SeqCst), 0);
        }
    }

    #[test]
    fn backup_only_without_primary() {
        let a = app(
            &[("127.0.0.1:1", true, false), ("127.0.0.1:9", true, true)],
            0,
        );
        for _ in 0..4 {
            let l = leased(pick(&a, &[]));
            assert_eq!(l.backend().addr.port(), 1);
        }
        a.route.load().backends[0]
            .live
            .passive_down
            .store(true, Ordering::SeqCst);
        assert_eq!(leased(pick(&a, &[])).backend().addr.port(), 9);
        let a = app(
            &[("127.0.0.1:1", false, false), ("127.0.0.1:9", true, true)],
            0,
        );
        assert_eq!(leased(pick(&a, &[])).backend().addr.port(), 9);
        let a = app(&[("127.0.0.1:1", false, false)], 0);
        assert!(matches!(pick(&a, &[]), Pick::NoBackend));
    }

    #[test]
    fn exclusion_and_limit() {
        let a = app(
            &[("127.0.0.1:1", true, false), ("127.0.0.1:2", true, false)],
            1,
        );
        let first: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let l = leased(pick(&a, &[first]));
        assert_eq!(l.backend().addr.port(), 2);
        let l2 = leased(pick(&a, &[]));
        assert_eq!(l2.backend().addr.port(), 1);
        assert!(matches!(pick(&a, &[]), Pick::Busy));
        drop(l);
        assert_eq!(leased(pick(&a, &[])).backend().addr.port(), 2);
    }
}
