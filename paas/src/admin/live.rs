//! Live pages: `GET /admin/live?page=..&app=..` is a server-sent event stream of the page's
//! live blocks, re-rendered from the same templates whenever the PaaS publishes an event (at
//! most every [`SOON`]) and every [`EVERY`] anyway; a block goes out only when it changed.
//! The page's script puts each `fragment` event's HTML in the element with its id. The stream
//! ends when its session does (logout, expiry), and with a `gone` event when its app is
//! deleted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::session::Session;
use super::Page;
use crate::Paas;

/// Re-rendered this often when nothing happens (charts, uptimes, log tails move anyway).
const EVERY: Duration = Duration::from_secs(2);
/// After an event, this long for more to gather before a render.
const SOON: Duration = Duration::from_millis(150);

#[derive(Deserialize)]
pub struct LiveQuery {
    page: String,
    app: Option<String>,
}

pub async fn stream(
    State(paas): State<Arc<Paas>>,
    Query(q): Query<LiveQuery>,
    axum::Extension(session): axum::Extension<super::session::Session>,
) -> Response {
    let Some(page) = Page::parse(&q.page, q.app) else {
        return (axum::http::StatusCode::NOT_FOUND, "no such page\n").into_response();
    };
    Sse::new(fragments(paas, page, session))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What a stream keeps between its events.
struct Stream {
    paas: Arc<Paas>,
    page: Page,
    session: Session,
    events: tokio::sync::broadcast::Receiver<crate::events::Event>,
    /// Each block's HTML as last sent.
    sent: HashMap<&'static str, String>,
    pending: Vec<Event>,
    /// Ends once `pending` is out.
    done: bool,
}

fn fragments(
    paas: Arc<Paas>,
    page: Page,
    session: Session,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    let state = Stream {
        events: paas.events.subscribe(),
        paas,
        page,
        session,
        sent: HashMap::new(),
        pending: Vec::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop() {
                return Some((Ok(e), st));
            }
            if st.done || !st.paas.admin.sessions.alive(&st.session.key) {
                return None;
            }
            // A new stream (a tab shown again) gets every block at once.
            if !st.sent.is_empty() {
                tokio::select! {
                    _ = st.paas.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(EVERY) => {}
                    r = st.events.recv() => {
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                            return None;
                        }
                        tokio::time::sleep(SOON).await;
                        // What gathered meanwhile is in this render.
                        while st.events.try_recv().is_ok() {}
                    }
                }
            }
            match super::render_blocks(&st.paas, &st.page, &st.session.csrf).await {
                Ok(Some(blocks)) => {
                    for (id, html) in blocks {
                        if st.sent.get(id) != Some(&html) {
                            let data = json!({ "id": id, "html": html }).to_string();
                            st.pending
                                .push(Event::default().event("fragment").data(data));
                            st.sent.insert(id, html);
                        }
                    }
                }
                Ok(None) => {
                    st.pending
                        .push(Event::default().event("gone").data("this app was deleted"));
                    st.done = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard: rendering a live page");
                    tokio::time::sleep(EVERY).await;
                }
            }
        }
    })
}
