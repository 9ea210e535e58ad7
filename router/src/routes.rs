//! The route table: which hostnames belong to which app, and which backends serve each app.
//!
//! The control plane (see [`crate::route_stream`]) owns a [`Registry`] and publishes an
//! immutable [`Table`] through an `ArcSwap` after every change; the proxy only ever loads it.
//! Per-app and per-backend live state (in-flight counters, passive-down marks, stats, the hold
//! queue) lives in [`App`] and [`BackendLive`], which survive route updates so that counters and
//! held requests are never lost when the PaaS republishes an app.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use drove_proto::routing::{valid_app_name, HttpsPolicy};
use tokio::sync::Notify;

// The route stream's wire types are the router <-> PaaS contract, defined in `drove-proto`.
pub use drove_proto::routing::{AppSpec, AppState, BackendSpec, RouteMessage};

use crate::stats::Counters;

/// What the router knows about one backend right now (replaced on every upsert).
#[derive(Debug)]
pub struct BackendRoute {
    pub live: Arc<BackendLive>,
    pub healthy: bool,
    pub backup: bool,
}

/// Per-backend state that survives route updates.
#[derive(Debug)]
pub struct BackendLive {
    pub addr: SocketAddr,
    /// The address as the PaaS wrote it (used as the stats label).
    pub label: String,
    /// Requests currently sent to this backend (or waiting on its connection).
    pub inflight: AtomicUsize,
    /// Set when a connect to this backend failed; cleared when the route stream
    /// (re)states the backend as healthy.
    pub passive_down: AtomicBool,
    pub stats: Counters,
}

/// The routable part of an app, replaced wholesale on every upsert.
#[derive(Debug)]
pub struct AppRoute {
    pub state: AppState,
    pub https: HttpsPolicy,
    pub concurrency_limit: u32,
    pub hostnames: Vec<String>,
    pub backends: Vec<BackendRoute>,
}

impl AppRoute {
    /// Whether any backend may take traffic (healthy per the PaaS and not passively down).
    pub fn has_usable_backend(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.healthy && !b.live.passive_down.load(Ordering::Relaxed))
    }
}

/// An app and its live state.
#[derive(Debug)]
pub struct App {
    pub name: String,
    pub route: ArcSwap<AppRoute>,
    /// Woken on every route change (all waiters) and, while requests are held, whenever a
    /// lease is released (one waiter).
    pub notify: Notify,
    /// Requests currently held waiting for a backend.
    pub held: AtomicUsize,
    /// Requests currently inside the router for this app (held or proxied).
    pub inflight: AtomicUsize,
    /// When the current wake episode last sent a wake call (see [`crate::wake::mono_ms`]);
    /// 0 when no episode is open. Cleared when the app becomes routable or nobody waits.
    pub wake_sent_ms: AtomicU64,
    /// A wake call (with its retries) is in progress; further wakes wait for it to end.
    pub wake_calling: AtomicBool,
    /// The app was removed from the route table; held requests fail at once.
    pub removed: AtomicBool,
    /// Rotating start index for tie-breaking between equally loaded backends.
    pub rotor: AtomicUsize,
    pub stats: Counters,
}

/// The immutable lookup structure the proxy loads on every request.
#[derive(Debug, Default)]
pub struct Table {
    hosts: HashMap<String, Arc<App>>,
    /// Every app by name (for stats).
    pub apps: BTreeMap<String, Arc<App>>,
}

impl Table {
    /// Finds the app for a `Host` header value (any case, with or without port).
    pub fn lookup(&self, host: &str) -> Option<&Arc<App>> {
        let host = normalize_host(host)?;
        self.hosts.get(host.as_ref())
    }
}

/// Lowercases a Host header value and strips its port and a trailing dot.
/// Returns `None` for an empty host.
pub fn normalize_host(host: &str) -> Option<std::borrow::Cow<'_, str>> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080"
        let end = rest.find(']')?;
        &host[..end + 2]
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(name))
    }
}

/// A route the stream sent that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouteError {
    #[error("invalid app name {0:?}: use lowercase letters, digits and '-'")]
    AppName(String),
    #[error("app {app}: invalid backend address {addr:?}")]
    BackendAddr { app: String, addr: String },
    #[error(transparent)]
    Certificate(#[from] crate::tls::CertError),
}

fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Some(a);
    }
    addr.to_socket_addrs().ok()?.next()
}

/// The control plane's mutable view, from which [`Table`]s are published.
pub struct Registry {
    domain: String,
    apps: BTreeMap<String, Arc<App>>,
    table: Arc<ArcSwap<Table>>,
    /// The HTTPS listener's certificates.
    certs: Arc<crate::tls::Certs>,
}

impl Registry {
    pub fn new(domain: &str, table: Arc<ArcSwap<Table>>) -> Self {
        Self {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            apps: BTreeMap::new(),
            table,
            certs: Arc::default(),
        }
    }

    /// The certificates the HTTPS listener serves (from the route stream's `certificates`).
    pub fn certs(&self) -> Arc<crate::tls::Certs> {
        self.certs.clone()
    }

    /// Applies one message; the new table is visible to the proxy when this returns.
    /// Invalid apps are skipped (and reported) without affecting the others.
    pub fn apply(&mut self, msg: RouteMessage) -> Vec<RouteError> {
        let mut errors = Vec::new();
        match msg {
            RouteMessage::Heartbeat => return errors,
            RouteMessage::Certificates { certs } => {
                return self
                    .certs
                    .replace(&certs)
                    .into_iter()
                    .map(RouteError::from)
                    .collect();
            }
            RouteMessage::Snapshot { apps } => {
                let mut seen = std::collections::BTreeSet::new();
                for spec in apps {
                    // An app whose new route cannot be applied (say, a backend name that does
                    // not resolve right now) is still listed: it keeps its previous route
                    // rather than disappearing, as with a failed upsert.
                    seen.insert(spec.name.clone());
                    if let Err(e) = self.upsert(spec) {
                        errors.push(e);
                    }
                }
                let gone: Vec<String> = self
                    .apps
                    .keys()
                    .filter(|n| !seen.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.remove(&name);
                }
            }
            RouteMessage::Upsert { app } => {
                if let Err(e) = self.upsert(app) {
                    errors.push(e);
                }
            }
            RouteMessage::Remove { app } => self.remove(&app),
        }
        self.publish();
        errors
    }

    fn remove(&mut self, name: &str) {
        if let Some(app) = self.apps.remove(name) {
            app.removed.store(true, Ordering::SeqCst);
            app.notify.notify_waiters();
        }
    }

    fn upsert(&mut self, spec: AppSpec) -> Result<(), RouteError> {
        if !valid_app_name(&spec.name) {
            return Err(RouteError::AppName(spec.name));
        }
        let app = self.apps.get(&spec.name).cloned();
        let old = app.as_ref().map(|a| a.route.load_full());
        let mut backends = Vec::with_capacity(spec.backends.len());
        for b in &spec.backends {
            let addr = resolve(&b.addr).ok_or_else(|| RouteError::BackendAddr {
                app: spec.name.clone(),
                addr: b.addr.clone(),
            })?;
            let live = old
                .as_ref()
                .and_then(|r| r.backends.iter().find(|x| x.live.addr == addr))
                .map(|x| x.live.clone())
                .unwrap_or_else(|| {
                    Arc::new(BackendLive {
                        addr,
                        label: b.addr.clone(),
                        inflight: AtomicUsize::new(0),
                        passive_down: AtomicBool::new(false),
                        stats: Counters::default(),
                    })
                });
            if b.healthy {
                // The PaaS says it is healthy: that overrides a passive mark.
                live.passive_down.store(false, Ordering::SeqCst);
            }
            if backends
                .iter()
                .any(|x: &BackendRoute| x.live.addr == live.addr)
            {
                continue;
            }
            backends.push(BackendRoute {
                live,
                healthy: b.healthy,
                backup: b.backup,
            });
        }
        let mut hostnames: Vec<String> = spec
            .hostnames
            .iter()
            .filter_map(|h| normalize_host(h).map(|h| h.into_owned()))
            .collect();
        hostnames.insert(0, format!("{}.{}", spec.name, self.domain));
        hostnames.dedup();
        let route = AppRoute {
            state: spec.state,
            https: spec.https,
            concurrency_limit: spec.concurrency_limit,
            hostnames,
            backends,
        };
        let routable = route.has_usable_backend();
        match app {
            Some(app) => {
                app.route.store(Arc::new(route));
                if routable {
                    app.wake_sent_ms.store(0, Ordering::SeqCst);
                }
                app.notify.notify_waiters();
            }
            None => {
                let app = Arc::new(App {
                    name: spec.name.clone(),
                    route: ArcSwap::from_pointee(route),
                    notify: Notify::new(),
                    held: AtomicUsize::new(0),
                    inflight: AtomicUsize::new(0),
                    wake_sent_ms: AtomicU64::new(0),
                    wake_calling: AtomicBool::new(false),
                    removed: AtomicBool::new(false),
                    rotor: AtomicUsize::new(0),
                    stats: Counters::default(),
                });
                self.apps.insert(spec.name, app);
            }
        }
        Ok(())
    }

    /// Builds the host map. An app's own `<app>.<domain>` always routes to it; a custom
    /// hostname goes to the first app (by name) claiming it, unless it is another app's own
    /// name. (Keeping custom domains unique across apps is the PaaS's job; the router only
    /// makes sure no app can take over another's default hostname.)
    fn publish(&self) {
        let mut hosts: HashMap<String, Arc<App>> = HashMap::new();
        for app in self.apps.values() {
            hosts.insert(format!("{}.{}", app.name, self.domain), app.clone());
        }
        for app in self.apps.values() {
            for h in &app.route.load().hostnames {
                match hosts.get(h) {
                    Some(owner) if owner.name != app.name => {
                        tracing::warn!(host = %h, app = %app.name, owner = %owner.name,
                            "hostname already claimed by another app; ignored");
                    }
                    _ => {
                        hosts.insert(h.clone(), app.clone());
                    }
                }
            }
        }
        self.table.store(Arc::new(Table {
            hosts,
            apps: self.apps.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, backends: &[(&str, bool, bool)]) -> AppSpec {
        AppSpec {
            https: Default::default(),
            name: name.into(),
            hostnames: vec!["Shop.Example.COM".into()],
            state: AppState::Running,
            concurrency_limit: 0,
            backends: backends
                .iter()
                .map(|(a, h, b)| BackendSpec {
                    addr: (*a).into(),
                    healthy: *h,
                    backup: *b,
                })
                .collect(),
        }
    }

    #[test]
    fn host_normalization() {
        assert_eq!(
            normalize_host("Shop.LOCALHOST:8080").as_deref(),
            Some("shop.localhost")
        );
        assert_eq!(
            normalize_host("shop.localhost.").as_deref(),
            Some("shop.localhost")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host(":80"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn snapshot_upsert_remove_keep_live_state() {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let mut reg = Registry::new("LocalHost", table.clone());
        let errs = reg.apply(RouteMessage::Snapshot {
            apps: vec![spec("shop", &[("127.0.0.1:9001", true, false)])],
        });
        assert!(errs.is_empty());
        let t = table.load();
        let app = t
            .lookup("SHOP.localhost:8080")
            .expect("app by default host");
        assert!(Arc::ptr_eq(
            app,
            t.lookup("shop.example.com").expect("custom")
        ));
        let live = app.route.load().backends[0].live.clone();
        live.inflight.store(3, Ordering::SeqCst);
        live.passive_down.store(true, Ordering::SeqCst);

        reg.apply(RouteMessage::Upsert {
            app: spec(
                "shop",
                &[
                    ("127.0.0.1:9001", true, false),
                    ("127.0.0.1:9002", false, true),
                ],
            ),
        });
        let t = table.load();
        let app2 = t.lookup("shop.localhost").expect("still there");
        assert!(Arc::ptr_eq(app, app2), "app identity survives upserts");
        let r = app2.route.load();
        assert_eq!(r.backends.len(), 2);
        assert_eq!(r.backends[0].live.inflight.load(Ordering::SeqCst), 3);
        assert!(!r.backends[0].live.passive_down.load(Ordering::SeqCst));

        let errs = reg.apply(RouteMessage::Upsert {
            app: spec("Bad_Name", &[]),
        });
        assert_eq!(errs, vec![RouteError::AppName("Bad_Name".into())]);
        let errs = reg.apply(RouteMessage::Upsert {
            app: spec("x", &[("nope", true, false)]),
        });
        assert!(matches!(errs[0], RouteError::BackendAddr { .. }));

        reg.apply(RouteMessage::Remove { app: "shop".into() });
        assert!(table.load().lookup("shop.localhost").is_none());
        assert!(app.removed.load(Ordering::SeqCst));
    }

    #[test]
    fn own_hostname_cannot_be_claimed_by_another_app() {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let mut reg = Registry::new("localhost", table.clone());
        let mut thief = spec("aaa", &[]);
        thief.hostnames = vec!["shop.localhost".into(), "www.shop.com".into()];
        let mut shop = spec("shop", &[]);
        shop.hostnames = vec!["www.shop.com".into()];
        reg.apply(RouteMessage::Snapshot {
            apps: vec![thief, shop],
        });
        let t = table.load();
        assert_eq!(t.lookup("shop.localhost").expect("shop").name, "shop");
        assert_eq!(t.lookup("aaa.localhost").expect("aaa").name, "aaa");
        // A custom domain claimed twice goes to one app, the same one every time.
        assert_eq!(t.lookup("www.shop.com").expect("custom").name, "aaa");
    }

    #[test]
    fn snapshot_keeps_an_app_whose_new_route_fails() {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let mut reg = Registry::new("localhost", table.clone());
        reg.apply(RouteMessage::Snapshot {
            apps: vec![spec("a", &[("127.0.0.1:9001", true, false)])],
        });
        let errs = reg.apply(RouteMessage::Snapshot {
            apps: vec![spec("a", &[("127.0.0.1:99999", true, false)])],
        });
        assert_eq!(errs.len(), 1);
        let t = table.load();
        let app = t.lookup("a.localhost").expect("still routed");
        assert_eq!(app.route.load().backends[0].live.addr.port(), 9001);
    }

    #[test]
    fn snapshot_drops_missing_apps() {
        let table = Arc::new(ArcSwap::from_pointee(Table::default()));
        let mut reg = Registry::new("localhost", table.clone());
        reg.apply(RouteMessage::Snapshot {
            apps: vec![spec("a", &[]), {
                let mut b = spec("b", &[]);
                b.hostnames.clear();
                b
            }],
        });
        assert!(table.load().lookup("b.localhost").is_some());
        reg.apply(RouteMessage::Snapshot {
            apps: vec![spec("a", &[])],
        });
        assert!(table.load().lookup("b.localhost").is_none());
        assert!(table.load().lookup("a.localhost").is_some());
    }
}
