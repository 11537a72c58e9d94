//! `GET /api/events`: the orchestrator's GetProgress stream as Server-Sent
//! Events. The SSE `id` is the event id, so a reconnecting client resumes
//! with `Last-Event-ID`; the stream ends when the gRPC stream ends (the
//! followed task finished) or the gateway shuts down.

use std::convert::Infallible;
use std::time::Duration;

use aida_core::ids::TaskId;
use aida_proto::orchestrator as orch;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{self, KeepAlive, Sse};
use futures::Stream;

use crate::api::{ErrorBody, Event, ProgressQuery};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Follows events as Server-Sent Events: `id` is the event id, `event` its
/// kind and `data` the event as JSON.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    security(("bearer" = [])),
    params(
        ProgressQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event id"),
    ),
    responses(
        (status = 200, description = "a text/event-stream of events", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 429, description = "too many live streams for this user", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn follow_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    query: Result<Query<ProgressQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<sse::Event, Infallible>>>, ApiError> {
    let Query(query) = query?;
    // Held by the stream: the slot frees when the client goes away.
    let slot = state.limits().streams().open(&principal.username).ok_or_else(|| {
        ApiError::TooManyStreams(format!(
            "{} has {} live event streams open already (AIDA_MAX_SSE_PER_USER); close one first",
            principal.username,
            state.limits().streams().max()
        ))
    })?;
    let task_id = match query.task.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => Some(TaskId::parse(raw)?),
        _ => None,
    };
    // The header wins over the query: it is what a reconnecting EventSource
    // sends, and it is newer than the URL it reconnects to.
    let after = last_event_id(&headers)?.or(query.after).unwrap_or(0);
    let mut updates = state
        .orchestrator()
        .get_progress(orch::ProgressRequest {
            task_id: task_id.map(|id| id.to_string()).unwrap_or_default(),
            after_event_id: after,
        })
        .await?
        .into_inner();
    tracing::debug!(task_id = ?task_id, after, "following events");

    let stream = async_stream::stream! {
        let _slot = slot;
        loop {
            let message = tokio::select! {
                message = updates.message() => message,
                () = state.closed() => break,
            };
            match message {
                Ok(Some(update)) => {
                    let Some(event) = update.event else { continue };
                    match Event::try_from(event) {
                        Ok(event) => yield Ok(sse_event(&event)),
                        Err(err) => tracing::warn!(error = format!("{err:#}"), "skipping unreadable event"),
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    // Headers are already sent: tell the client in-band, then end.
                    tracing::warn!(code = ?status.code(), detail = %status.message(), "progress stream failed");
                    let body = ApiError::from(status).body();
                    let data = serde_json::to_string(&body).unwrap_or_default();
                    yield Ok(sse::Event::default().event("error").data(data));
                    break;
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::InvalidArgument(format!(
            "Last-Event-ID {text:?} is not an event id (an integer)"
        ))
    })
}

fn sse_event(event: &Event) -> sse::Event {
    let data = serde_json::to_string(event).unwrap_or_default();
    let mut out = sse::Event::default().id(event.id.to_string()).data(data);
    // axum panics on line breaks in the event name; kinds never have them,
    // but the name comes from another service.
    if !event.kind.is_empty() && !event.kind.contains(['\n', '\r']) {
        out = out.event(&event.kind);
    }
    out
}
