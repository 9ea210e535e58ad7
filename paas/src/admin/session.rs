//! Dashboard sessions: a login with the admin token (or the configured password) opens a
//! session named by a random cookie (HttpOnly, SameSite=Strict, Path=/admin, expiring); each
//! session has its own CSRF token, which every state-changing request must carry as the form
//! field `csrf`. Sessions live in memory: a restarted PaaS asks for a new login. The admin
//! token always logs in (32 random bytes are not guessed); password guesses cost a second
//! each and come out of a budget per client address, [`MAX_FAILURES`] a minute, taken before
//! the comparison so that concurrent guesses count too.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use drove_proto::auth::same_secret;
use sha2::{Digest, Sha256};

use crate::Paas;

pub const COOKIE: &str = "drove_session";
/// The login form's own CSRF cookie (double submit): a login form posted from another site
/// carries neither it nor its value.
pub const LOGIN_COOKIE: &str = "drove_login";
/// Most sessions kept at once; the oldest goes first.
const MAX_SESSIONS: usize = 1024;
/// Largest form body the CSRF check reads.
pub const MAX_FORM: usize = 64 * 1024;
/// The shortest `--admin-password` taken.
pub const MIN_PASSWORD: usize = 12;
/// Failed password logins a minute from one client address before it is refused (429).
pub const MAX_FAILURES: usize = 20;
/// Client addresses whose failures are remembered at once (the least recent goes first).
const MAX_CLIENTS: usize = 4096;

/// What a request's session gives its handler.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    /// The session's name in [`Sessions`] (the SHA-256 of its cookie).
    pub key: String,
}

struct Entry {
    expires: Instant,
    created: Instant,
    csrf: String,
    /// A control's outcome for the next page (browsers without the page's script).
    flash: Option<(bool, String)>,
}

/// The open sessions, by the SHA-256 of their cookie (a dump of memory gives no cookie).
pub struct Sessions {
    ttl: Duration,
    secure: bool,
    open: Mutex<HashMap<String, Entry>>,
    /// Each client's password guesses of the last minute (reserved before the comparison).
    guesses: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Whose budget a guess from `ip` comes out of: the address, or for IPv6 its /64 (one
/// holder's whole network, where it may pick any address).
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

impl Sessions {
    pub fn new(ttl: Duration, secure: bool) -> Sessions {
        Sessions {
            ttl,
            secure,
            open: Mutex::new(HashMap::new()),
            guesses: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one password guess from `client`'s budget; false when its last minute has had
    /// [`MAX_FAILURES`] already. A guess that turns out right is given back ([`Self::refund`]).
    pub fn reserve(&self, client: IpAddr) -> bool {
        let minute = Duration::from_secs(60);
        let mut all = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !all.contains_key(&client) && all.len() >= MAX_CLIENTS {
            all.retain(|_, g| g.back().is_some_and(|t| now.duration_since(*t) < minute));
            if all.len() >= MAX_CLIENTS {
                let least_recent = all
                    .iter()
                    .min_by_key(|(_, g)| g.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(ip) = least_recent {
                    all.remove(&ip);
                }
            }
        }
        let mine = all.entry(client).or_default();
        while mine
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            mine.pop_front();
        }
        if mine.len() >= MAX_FAILURES {
            return false;
        }
        mine.push_back(now);
        true
    }

    /// Gives back a guess [`Self::reserve`] took (it was right).
    pub fn refund(&self, client: IpAddr) {
        let mut all = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mine) = all.get_mut(&client) {
            mine.pop_back();
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session; returns its cookie value.
    pub fn open(&self) -> String {
        let id = crate::tokens::generate();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, e| e.expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
            {
                open.remove(&oldest);
            }
        }
        open.insert(
            digest(&id),
            Entry {
                expires: now + self.ttl,
                created: now,
                csrf: crate::tokens::generate(),
                flash: None,
            },
        );
        id
    }

    /// The live session a cookie names.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let key = digest(id);
        match open.get(&key) {
            Some(e) if e.expires > Instant::now() => Some(Session {
                csrf: e.csrf.clone(),
                key,
            }),
            Some(_) => {
                open.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest(id));
    }

    /// Whether the session named `key` is still open (neither expired nor logged out).
    pub fn alive(&self, key: &str) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|e| e.expires > Instant::now())
    }

    /// Leaves a control's outcome for the session's next page.
    pub fn set_flash(&self, key: &str, ok: bool, message: String) {
        if let Some(e) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
        {
            e.flash = Some((ok, message));
        }
    }

    /// The outcome left for this page, once.
    pub fn take_flash(&self, key: &str) -> Option<(bool, String)> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
            .and_then(|e| e.flash.take())
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl Sessions {
    /// A `Set-Cookie` value for the dashboard: HttpOnly, SameSite=Strict, under `/admin`, and
    /// `Secure` with `--admin-secure-cookies` (behind TLS; drove itself serves plain HTTP).
    pub fn set_cookie(&self, name: &str, value: &str, max_age: Duration) -> String {
        format!(
            "{name}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
            max_age.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    pub fn clear_cookie(&self, name: &str) -> String {
        self.set_cookie(name, "", Duration::ZERO)
    }
}

/// The form field `csrf` of a urlencoded body.
pub fn form_field(body: &[u8], field: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
}

fn refused(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// A request from another origin (when the browser says where it comes from).
fn cross_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    origin_host != host
}

/// Every dashboard path but the login page and the static files: a page without a session is
/// sent to the login; anything else without one is 401. A request that changes something must
/// come from the dashboard's own origin and carry the session's CSRF token (403 otherwise,
/// and nothing is done).
pub async fn require(State(paas): State<Arc<Paas>>, req: Request, next: Next) -> Response {
    let session = cookie(req.headers(), COOKIE).and_then(|id| paas.admin.sessions.get(&id));
    let Some(session) = session else {
        paas.metrics.request(false);
        if req.method() == Method::GET && !req.uri().path().starts_with("/admin/live") {
            return Redirect::to("/admin/login").into_response();
        }
        return refused(
            StatusCode::UNAUTHORIZED,
            "not logged in: log in at /admin/login",
        );
    };
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if cross_origin(req.headers()) {
            return refused(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => return refused(StatusCode::PAYLOAD_TOO_LARGE, "form too large"),
        };
        let ok = form_field(&bytes, "csrf").is_some_and(|t| same_secret(&t, &session.csrf));
        if !ok {
            tracing::warn!(path = %parts.uri.path(), "dashboard: bad or missing CSRF token");
            return refused(
                StatusCode::FORBIDDEN,
                "csrf: bad or missing token; reload the page and try again",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    paas.metrics.request(true);
    req.extensions_mut().insert(session);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_expires_and_closes() {
        let s = Sessions::new(Duration::from_millis(50), false);
        let id = s.open();
        assert!(s.get(&id).is_some());
        assert!(s.get("forged").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&id).is_none(), "expired");
        let id = Sessions::new(Duration::from_secs(60), false);
        let c = id.open();
        id.close(&c);
        assert!(id.get(&c).is_none(), "closed");
    }

    #[test]
    fn guesses_are_budgeted_per_client_and_flashes_show_once() {
        let s = Sessions::new(Duration::from_secs(60), false);
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        for _ in 0..MAX_FAILURES {
            assert!(s.reserve(a));
        }
        assert!(!s.reserve(a), "a's budget is spent");
        assert!(s.reserve(b), "b has its own");
        let (x, y): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::ffff".parse().unwrap(),
        );
        assert_eq!(client_of(x), client_of(y), "one /64, one budget");
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(client_of(mapped), a);
        s.refund(b);
        for _ in 0..MAX_FAILURES {
            assert!(s.reserve(b), "a right guess was given back");
        }
        let id = s.open();
        let key = s.get(&id).map(|x| x.key).unwrap_or_default();
        assert!(s.alive(&key));
        s.set_flash(&key, true, "done".into());
        assert_eq!(s.take_flash(&key), Some((true, "done".into())));
        assert_eq!(s.take_flash(&key), None);
        assert!(same_secret("a", "a") && !same_secret("a", "ab"));
    }

    #[test]
    fn cookies_and_form_fields_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; drove_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(
            form_field(b"instances=3&csrf=a%2Bb", "csrf").as_deref(),
            Some("a+b")
        );
        assert_eq!(form_field(b"instances=3", "csrf"), None);
    }

    #[test]
    fn cookies_are_strict_and_secure_when_asked() {
        let plain = Sessions::new(Duration::from_secs(60), false).set_cookie(
            "a",
            "b",
            Duration::from_secs(9),
        );
        assert_eq!(
            plain,
            "a=b; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=9"
        );
        let tls = Sessions::new(Duration::from_secs(60), true).clear_cookie("a");
        assert_eq!(
            tls,
            "a=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
    }

    #[test]
    fn another_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7070".parse().unwrap());
        assert!(!cross_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:7070".parse().unwrap());
        assert!(!cross_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(cross_origin(&h));
    }
}
