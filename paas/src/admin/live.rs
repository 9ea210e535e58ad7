//! Live pages: `GET /admin/live?page=..&app=..` is a server-sent event stream of the page's
//! live blocks, re-rendered from the same templates whenever the PaaS publishes an event (at
//! most every [`SOON`]) and every [`EVERY`] anyway; a block goes out only when it changed.
//! The page's script puts each `fragment` event's HTML in the element with its id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

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
    Sse::new(fragments(paas, page, session.csrf))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn fragments(
    paas: Arc<Paas>,
    page: Page,
    csrf: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let events = paas.events.subscribe();
    let sent: HashMap<&'static str, String> = HashMap::new();
    futures::stream::unfold(
        (paas, page, csrf, events, sent, Vec::<Event>::new()),
        |(paas, page, csrf, mut events, mut sent, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop() {
                    return Some((Ok(e), (paas, page, csrf, events, sent, pending)));
                }
                // A new stream (a tab shown again) gets every block at once.
                let first = sent.is_empty();
                if !first {
                    tokio::select! {
                        _ = paas.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(EVERY) => {}
                        r = events.recv() => {
                            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                                return None;
                            }
                            tokio::time::sleep(SOON).await;
                            // What gathered meanwhile is in this render.
                            while events.try_recv().is_ok() {}
                        }
                    }
                }
                let blocks = match super::render_blocks(&paas, &page, &csrf).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "dashboard: rendering a live page");
                        tokio::time::sleep(EVERY).await;
                        continue;
                    }
                };
                for (id, html) in blocks {
                    if sent.get(id) != Some(&html) {
                        let data = json!({ "id": id, "html": html }).to_string();
                        pending.push(Event::default().event("fragment").data(data));
                        sent.insert(id, html);
                    }
                }
            }
        },
    )
}
