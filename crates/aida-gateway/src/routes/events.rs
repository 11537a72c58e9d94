//! `GET /api/events`: events as Server-Sent Events. A client's history
//! comes from the orchestrator's event log, a page at a time; live events
//! come from the gateway's one subscription ([`crate::fanout`]). The SSE
//! `id` is the event id, so a reconnecting client resumes with
//! `Last-Event-ID`; the stream ends when the followed task finished or the
//! gateway shuts down. Live messages are the hub's, rendered once: a
//! client writes the shared bytes.

use std::convert::Infallible;

use aida_core::ids::TaskId;
use aida_proto::orchestrator as orch;
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{ErrorBody, Event, ProgressQuery};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::fanout::{self, Frame, Signal};
use crate::state::AppState;

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
) -> Result<Response, ApiError> {
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
    let mut after = last_event_id(&headers)?.or(query.after).unwrap_or(0);
    let task = task_id.map(|id| id.to_string());
    let mut live = state
        .events()
        .subscribe()
        .await
        .map_err(|_| ApiError::orchestrator_unavailable())?;
    // The first page before the headers: an unknown task is a 404 and an
    // unreachable orchestrator a 503, not an empty stream.
    let mut page = Some(history_page(&state, task.as_deref(), after).await?);
    tracing::debug!(task_id = ?task, after, "following events");

    let stream = async_stream::stream! {
        let _slot = slot;
        loop {
            // Catch up from the history: at the start, and after falling
            // behind the live events.
            loop {
                let events = match page.take() {
                    Some(events) => Ok(events),
                    // Boxed: a client's state stays small while it only
                    // follows the live events.
                    None => tokio::select! {
                        events = Box::pin(history_page(&state, task.as_deref(), after)) => events,
                        () = state.closed() => return,
                    },
                };
                let events = match events {
                    Ok(events) => events,
                    Err(err) => {
                        // Headers are already sent: tell the client in-band.
                        yield Ok(error_event(err));
                        return;
                    }
                };
                let full = events.len() as u32 == HISTORY_PAGE;
                for event in events {
                    after = event.id;
                    let frame = Frame::new(&event);
                    yield Ok::<_, Infallible>(frame.message);
                    if task.is_some() && frame.ends_task {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            loop {
                let signal = tokio::select! {
                    signal = live.recv() => signal,
                    () = state.closed() => return,
                };
                match signal {
                    Ok(Signal::Event(frame)) => {
                        if frame.id <= after || (task.is_some() && frame.task_id != task) {
                            continue;
                        }
                        after = frame.id;
                        yield Ok(frame.message.clone());
                        if task.is_some() && frame.ends_task {
                            return;
                        }
                    }
                    Ok(Signal::KeepAlive) => yield Ok(Bytes::from_static(fanout::KEEP_ALIVE_MESSAGE)),
                    // This client fell behind: the history has the gap.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // A proxy that buffers responses (nginx does) would hold events back.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Events read from the history per call.
const HISTORY_PAGE: u32 = 1000;

/// The next page of `task`'s events (all tasks' when `None`) after `after`.
async fn history_page(
    state: &AppState,
    task: Option<&str>,
    after: i64,
) -> Result<Vec<Event>, ApiError> {
    let response = state
        .orchestrator()
        .list_events(orch::ListEventsRequest {
            task_id: task.unwrap_or_default().to_owned(),
            after_event_id: after,
            limit: HISTORY_PAGE,
        })
        .await?
        .into_inner();
    Ok(response
        .events
        .into_iter()
        .filter_map(|event| match Event::try_from(event) {
            Ok(event) => Some(event),
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "skipping unreadable event");
                None
            }
        })
        .collect())
}

fn error_event(err: ApiError) -> Bytes {
    tracing::warn!(error = %err, "following events failed");
    let data = serde_json::to_string(&err.body()).unwrap_or_default();
    fanout::message(None, Some("error"), &data)
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
