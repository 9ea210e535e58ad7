//! The admin dashboard at `/admin`: server-rendered pages from `paas/templates/` (minijinja,
//! compiled into the binary), kept live by server-sent events ([`live`]), with SVG charts
//! drawn here ([`charts`]) from the last hour of every app ([`history`]).
//!
//! - [`session`]: login with the admin token or `--admin-password`, session cookies, CSRF;
//! - [`views`]: what each page shows, from `ops::views`; [`controls`]: what its forms do,
//!   through `ops` (the same ops, checks and messages as the API's).

pub mod charts;
mod controls;
pub mod history;
mod live;
pub mod session;
pub mod views;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use views::View;

use crate::Paas;

/// The dashboard's shared parts (on [`Paas`]).
pub struct Admin {
    pub sessions: session::Sessions,
    pub history: history::History,
}

impl Admin {
    /// The dashboard's parts, its history restored from the samples journalled before
    /// (`(route name, JSON)`, oldest first).
    pub fn new(
        session_ttl: Duration,
        secure_cookies: bool,
        samples: impl IntoIterator<Item = (String, String)>,
    ) -> Admin {
        Admin {
            sessions: session::Sessions::new(session_ttl, secure_cookies),
            history: history::History::restore(samples),
        }
    }
}

/// A page and the ids of its live blocks (template blocks and element ids alike).
#[derive(Debug, Clone)]
pub enum Page {
    Cluster,
    Apps,
    App(String),
}

impl Page {
    fn parse(page: &str, app: Option<String>) -> Option<Page> {
        match (page, app) {
            ("cluster", _) => Some(Page::Cluster),
            ("apps", _) => Some(Page::Apps),
            ("app", Some(a)) => Some(Page::App(a)),
            _ => None,
        }
    }

    fn template(&self) -> &'static str {
        match self {
            Page::Cluster => "cluster.html",
            Page::Apps => "apps.html",
            Page::App(_) => "app.html",
        }
    }

    fn blocks(&self) -> &'static [&'static str] {
        match self {
            Page::Cluster => &["totals", "agents", "frameworks", "offers", "starving"],
            Page::Apps => &["apps"],
            Page::App(_) => &[
                "summary",
                "charts",
                "instances",
                "scaler",
                "wakes",
                "domains",
                "releases",
                "logs",
            ],
        }
    }

    /// The page's data; `None` for an app that does not exist.
    async fn view(&self, paas: &Paas) -> Option<View> {
        Some(match self {
            Page::Cluster => View::Cluster(views::cluster(paas).await),
            Page::Apps => View::Apps(views::apps(paas)),
            Page::App(name) => View::App(Box::new(views::app(paas, name).await?)),
        })
    }
}

/// The templates, compiled once.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        let all = [
            ("base.html", include_str!("../../templates/base.html")),
            ("login.html", include_str!("../../templates/login.html")),
            ("cluster.html", include_str!("../../templates/cluster.html")),
            ("apps.html", include_str!("../../templates/apps.html")),
            ("app.html", include_str!("../../templates/app.html")),
        ];
        for (name, source) in all {
            if let Err(e) = env.add_template(name, source) {
                // A broken template is a build defect; the test of every page finds it.
                tracing::error!(template = name, error = %e, "dashboard template");
            }
        }
        env
    })
}

/// What a page's template reads: its view (`v`), the session's CSRF token for its forms, which
/// page it is (for the live updates) and the flash message of the last control used.
#[derive(Serialize)]
struct Context<'a> {
    v: &'a View,
    csrf: &'a str,
    page: &'a str,
    app: &'a str,
    flash: Option<&'a str>,
    flash_ok: bool,
}

fn render(name: &str, ctx: &impl Serialize) -> Result<String, minijinja::Error> {
    templates()
        .get_template(name)?
        .render(minijinja::value::Serde(ctx))
}

/// The page's live blocks, rendered (with the session's CSRF token for their forms); `None`
/// when the page's app is gone.
async fn render_blocks(
    paas: &Paas,
    page: &Page,
    csrf: &str,
) -> Result<Option<Vec<(&'static str, String)>>, minijinja::Error> {
    let Some(view) = page.view(paas).await else {
        return Ok(None);
    };
    let ctx = Context {
        v: &view,
        csrf,
        page: "",
        app: "",
        flash: None,
        flash_ok: false,
    };
    let tmpl = templates().get_template(page.template())?;
    let mut captured = tmpl.render_captured(minijinja::value::Serde(&ctx))?;
    captured
        .with_state_mut(|state| {
            page.blocks()
                .iter()
                .map(|b| state.render_block(b).map(|html| (*b, html)))
                .collect::<Result<Vec<_>, _>>()
        })
        .map(Some)
}

fn page_error(e: minijinja::Error) -> Response {
    tracing::error!(error = %e, "dashboard: rendering a page");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("rendering the page failed: {e}\n"),
    )
        .into_response()
}

async fn show(paas: &Paas, page: Page, session: &session::Session) -> Response {
    let flash = paas.admin.sessions.take_flash(&session.key);
    let Some(view) = page.view(paas).await else {
        return (StatusCode::NOT_FOUND, Html("no such app\n".to_string())).into_response();
    };
    let (live_page, live_app) = match &page {
        Page::Cluster => ("cluster", String::new()),
        Page::Apps => ("apps", String::new()),
        Page::App(a) => ("app", a.clone()),
    };
    let ctx = Context {
        v: &view,
        csrf: &session.csrf,
        page: live_page,
        app: &live_app,
        flash: flash.as_ref().map(|f| f.1.as_str()),
        flash_ok: flash.as_ref().is_some_and(|f| f.0),
    };
    match render(page.template(), &ctx) {
        Ok(html) => Html(html).into_response(),
        Err(e) => page_error(e),
    }
}

async fn cluster(
    State(paas): State<Arc<Paas>>,
    axum::Extension(s): axum::Extension<session::Session>,
) -> Response {
    show(&paas, Page::Cluster, &s).await
}

async fn apps(
    State(paas): State<Arc<Paas>>,
    axum::Extension(s): axum::Extension<session::Session>,
) -> Response {
    show(&paas, Page::Apps, &s).await
}

async fn app(
    State(paas): State<Arc<Paas>>,
    Path(name): Path<String>,
    axum::Extension(s): axum::Extension<session::Session>,
) -> Response {
    show(&paas, Page::App(name), &s).await
}

#[derive(Deserialize)]
struct LoginForm {
    secret: String,
    csrf: String,
}

/// `GET /admin/login`: the form, with a fresh login CSRF token in a cookie and in the form.
async fn login_page(State(paas): State<Arc<Paas>>) -> Response {
    login_form(&paas, None, StatusCode::OK)
}

fn login_form(paas: &Paas, error: Option<&str>, status: StatusCode) -> Response {
    let token = crate::tokens::generate();
    match render(
        "login.html",
        &minijinja::context! { csrf => &token, error => error },
    ) {
        Ok(html) => (
            status,
            [(
                header::SET_COOKIE,
                paas.admin.sessions.set_cookie(
                    session::LOGIN_COOKIE,
                    &token,
                    Duration::from_secs(3600),
                ),
            )],
            Html(html),
        )
            .into_response(),
        Err(e) => page_error(e),
    }
}

/// `POST /admin/login`: the admin token or the configured password opens a session.
async fn login(
    State(paas): State<Arc<Paas>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = session::cookie(&headers, session::LOGIN_COOKIE);
    if !expected.is_some_and(|c| drove_proto::auth::same_secret(&c, &form.csrf)) {
        return login_form(
            &paas,
            Some("The login form expired or came from elsewhere; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    // The admin token is never locked out: nobody guesses 32 random bytes, and whoever holds
    // it must always get in (a task on the same host may spend a client's whole budget).
    if !drove_proto::auth::same_secret(&form.secret, &paas.tokens.admin) {
        let client = session::client_of(peer.ip());
        if !paas.admin.sessions.reserve(client) {
            return login_form(
                &paas,
                Some("Too many failed logins from here in the last minute; wait a minute."),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        let by_password = paas
            .args
            .admin_password
            .as_deref()
            .is_some_and(|p| !p.is_empty() && drove_proto::auth::same_secret(&form.secret, p));
        if !by_password {
            paas.metrics.request(false);
            tracing::warn!(%client, "dashboard: a failed login");
            // A guess costs a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return login_form(
                &paas,
                Some("Wrong token or password."),
                StatusCode::UNAUTHORIZED,
            );
        }
        paas.admin.sessions.refund(client);
    }
    // A new login ends the session this browser had.
    if let Some(old) = session::cookie(&headers, session::COOKIE) {
        paas.admin.sessions.close(&old);
    }
    let id = paas.admin.sessions.open();
    tracing::info!("dashboard: logged in");
    let mut resp = Redirect::to("/admin/apps").into_response();
    let h = resp.headers_mut();
    for c in [
        paas.admin
            .sessions
            .set_cookie(session::COOKIE, &id, paas.admin.sessions.ttl()),
        paas.admin.sessions.clear_cookie(session::LOGIN_COOKIE),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /admin/logout`.
async fn logout(State(paas): State<Arc<Paas>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(id) = session::cookie(&headers, session::COOKIE) {
        paas.admin.sessions.close(&id);
    }
    (
        [(
            header::SET_COOKIE,
            paas.admin.sessions.clear_cookie(session::COOKIE),
        )],
        Redirect::to("/admin/login"),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../templates/admin.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../templates/admin.js"),
    )
        .into_response()
}

/// Every dashboard answer: no framing by other sites, nothing from elsewhere, not cached.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The dashboard's routes.
pub fn router(paas: Arc<Paas>) -> Router {
    let private = Router::new()
        .route("/admin/cluster", get(cluster))
        .route("/admin/apps", get(apps))
        .route("/admin/apps/{app}", get(app))
        .route("/admin/apps/{app}/{action}", post(controls::act))
        .route("/admin/live", get(live::stream))
        .route("/admin/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(
            paas.clone(),
            session::require,
        ));
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/apps") }))
        .route("/admin/", get(|| async { Redirect::to("/admin/apps") }))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/static/admin.css", get(stylesheet))
        .route("/admin/static/admin.js", get(script))
        .merge(private)
        .layer(axum::middleware::from_fn(headers))
        .layer(axum::extract::DefaultBodyLimit::max(session::MAX_FORM))
        .with_state(paas)
}
