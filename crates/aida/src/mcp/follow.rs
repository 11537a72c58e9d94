//! `wait_task`: follows a task's event stream (`GET /api/events?task=ID`,
//! as `aida watch` does) until the task ends, the wait runs out or the
//! client cancels the call, and keeps a short list of what changed: task
//! and subtask statuses, the plan, the merge; never the agents' log lines.

use std::collections::VecDeque;
use std::time::Duration;

use aida_core::event::kind;
use aida_gateway::api::{Event, Task};
use futures::StreamExt;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Client;

/// The most events a result lists; older ones are counted, not listed.
const MAX_LISTED_EVENTS: usize = 50;
/// The longest pause before following a stream that ended early again.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// What `wait_task` answers.
#[derive(Debug, Serialize)]
pub struct WaitOutcome {
    /// Whether the task reached a status it never leaves.
    pub ended: bool,
    /// The task as it was when the wait stopped.
    pub task: Task,
    /// Status changes seen, oldest first (the stream replays the task's
    /// history first, so these go back to its creation).
    pub events: Vec<EventSummary>,
    /// Older status changes left out of `events`.
    #[serde(skip_serializing_if = "is_zero")]
    pub events_left_out: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One status change, in a few fields.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventSummary {
    pub at: chrono::DateTime<chrono::Utc>,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// task.merged: the result branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_branch: Option<String>,
}

impl EventSummary {
    /// The summary of a status change; `None` for log lines, worker
    /// comings and goings and context writes.
    pub fn of(event: &Event) -> Option<EventSummary> {
        let listed = [
            kind::TASK_CREATED,
            kind::TASK_PLANNED,
            kind::TASK_STATUS,
            kind::TASK_MERGED,
            kind::SUBTASK_STATUS,
            kind::TASK_EXTERNAL_STATUS,
        ];
        if !listed.contains(&event.kind.as_str()) {
            return None;
        }
        let text = |key: &str| {
            event
                .data
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Some(EventSummary {
            at: event.at,
            kind: event.kind.clone(),
            subtask: event.subtask.clone(),
            status: text("status"),
            error: text("error"),
            result_branch: text("result_branch"),
        })
    }

    /// One line, for progress notifications.
    pub fn line(&self) -> String {
        let mut line = self.kind.clone();
        if let Some(subtask) = &self.subtask {
            line.push(' ');
            line.push_str(subtask);
        }
        if let Some(status) = &self.status {
            line.push(' ');
            line.push_str(status);
        }
        line
    }
}

/// The last [`MAX_LISTED_EVENTS`] summaries and how many came before.
#[derive(Debug, Default)]
struct Kept {
    events: VecDeque<EventSummary>,
    left_out: usize,
}

impl Kept {
    fn push(&mut self, summary: EventSummary) {
        if self.events.len() == MAX_LISTED_EVENTS {
            self.events.pop_front();
            self.left_out += 1;
        }
        self.events.push_back(summary);
    }
}

/// Where status changes go as they happen: MCP progress notifications,
/// when the client asked for them with a progress token. Some clients
/// restart a call's timeout on each one.
pub struct Progress {
    to: Option<(Peer<RoleServer>, ProgressToken)>,
    sent: u32,
}

impl Progress {
    pub fn new(peer: Peer<RoleServer>, token: Option<ProgressToken>) -> Progress {
        Progress {
            to: token.map(|token| (peer, token)),
            sent: 0,
        }
    }

    async fn report(&mut self, summary: &EventSummary) {
        let Some((peer, token)) = &self.to else {
            return;
        };
        self.sent += 1;
        let note = ProgressNotificationParam::new(token.clone(), f64::from(self.sent))
            .with_message(summary.line());
        // A client that went away ends the call anyway.
        if let Err(error) = peer.notify_progress(note).await {
            tracing::debug!(%error, "progress notification not sent");
        }
    }
}

const CANCELLED: &str = "the client cancelled the wait";

/// Follows task `id` for at most `timeout`, reporting each status change
/// to `progress` as it arrives. Reconnects, from the last event seen, when
/// the stream ends before the task did.
pub async fn wait(
    client: &Client,
    id: &str,
    timeout: Duration,
    cancelled: &CancellationToken,
    progress: &mut Progress,
) -> anyhow::Result<WaitOutcome> {
    let deadline = Instant::now() + timeout;
    let mut kept = Kept::default();
    let mut last_id = None;
    let mut pause = Duration::from_millis(250);
    loop {
        let follow = tokio::select! {
            followed = client.follow(id, last_id) => Some(followed?),
            () = tokio::time::sleep_until(deadline) => None,
            () = cancelled.cancelled() => anyhow::bail!(CANCELLED),
        };
        let mut timed_out = follow.is_none();
        if let Some(mut events) = follow {
            loop {
                let next = tokio::select! {
                    next = events.next() => next,
                    () = tokio::time::sleep_until(deadline) => {
                        timed_out = true;
                        break;
                    }
                    () = cancelled.cancelled() => anyhow::bail!(CANCELLED),
                };
                match next {
                    Some(Ok(event)) => {
                        last_id = Some(event.id);
                        if let Some(summary) = EventSummary::of(&event) {
                            progress.report(&summary).await;
                            kept.push(summary);
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(task_id = id, error = %format!("{err:#}"), "event stream dropped");
                        break;
                    }
                    // The gateway ends the stream when the task ended.
                    None => break,
                }
            }
        }
        // The task says how it stands, whatever the stream did.
        let task = client.get_task(id).await?;
        let ended = task.status.is_terminal();
        if ended || timed_out {
            return Ok(WaitOutcome {
                ended,
                task,
                events: kept.events.into(),
                events_left_out: kept.left_out,
            });
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = cancelled.cancelled() => anyhow::bail!(CANCELLED),
        }
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use aida_core::event::Channel;

    use super::*;

    fn event(kind: &str, subtask: Option<&str>, data: serde_json::Value) -> Event {
        Event {
            id: 1,
            channel: Channel::Task,
            kind: kind.into(),
            task_id: Some("t".into()),
            subtask: subtask.map(str::to_owned),
            worker_id: None,
            at: chrono::Utc::now(),
            data,
            traceparent: None,
        }
    }

    #[test]
    fn status_changes_are_kept_and_log_lines_are_not() {
        let line = event(
            kind::LOG_LINE,
            Some("a"),
            serde_json::json!({"line": "hi", "stream": "stdout"}),
        );
        assert_eq!(EventSummary::of(&line), None);
        let failed = EventSummary::of(&event(
            kind::SUBTASK_STATUS,
            Some("a"),
            serde_json::json!({"status": "failed", "error": "exit 1", "attempt": 1}),
        ))
        .unwrap();
        assert_eq!(failed.status.as_deref(), Some("failed"));
        assert_eq!(failed.error.as_deref(), Some("exit 1"));
        assert_eq!(failed.line(), "subtask.status a failed");
    }

    #[test]
    fn only_the_latest_events_are_listed() {
        let mut kept = Kept::default();
        for n in 0..MAX_LISTED_EVENTS + 3 {
            let mut summary = EventSummary::of(&event(
                kind::TASK_STATUS,
                None,
                serde_json::json!({"status": "running"}),
            ))
            .unwrap();
            summary.subtask = Some(n.to_string());
            kept.push(summary);
        }
        assert_eq!(kept.events.len(), MAX_LISTED_EVENTS);
        assert_eq!(kept.left_out, 3);
        assert_eq!(kept.events[0].subtask.as_deref(), Some("3"));
    }
}
