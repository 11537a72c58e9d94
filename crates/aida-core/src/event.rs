//! The event model. The orchestrator stores every event (its id orders them),
//! publishes it as JSON on the Redis channel `aida:events:<channel>`, and
//! streams it to `GetProgress` followers; the gateway turns that stream into
//! Server-Sent Events.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::proto::common as pb;

/// Which Redis channel an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Task and subtask lifecycle.
    Task,
    /// Workers connecting, leaving, taking work; the monitor's actions
    /// (quarantines, anomalies, alerts).
    Worker,
    /// Agent output lines.
    Log,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Task, Channel::Worker, Channel::Log];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Task => "task",
            Channel::Worker => "worker",
            Channel::Log => "log",
        }
    }

    /// The Redis pub/sub channel name.
    pub fn redis_channel(self) -> &'static str {
        match self {
            Channel::Task => "aida:events:task",
            Channel::Worker => "aida:events:worker",
            Channel::Log => "aida:events:log",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "task" => Ok(Channel::Task),
            "worker" => Ok(Channel::Worker),
            "log" => Ok(Channel::Log),
            other => Err(format!("unknown event channel {other:?}")),
        }
    }
}

/// Event kinds. The channel is implied by the kind.
pub mod kind {
    pub const TASK_CREATED: &str = "task.created";
    /// `data.subtasks`: the planner's subtasks (names and dependencies).
    pub const TASK_PLANNED: &str = "task.planned";
    /// `data.status` is the new task status, `data.error` the reason if any.
    pub const TASK_STATUS: &str = "task.status";
    /// `data`: result branch and commit, merged subtasks and conflicts.
    pub const TASK_MERGED: &str = "task.merged";
    /// `data.status` is the new subtask status; also worker, attempt,
    /// branch, commit and error where known.
    pub const SUBTASK_STATUS: &str = "subtask.status";
    /// `data`: key, version and author of a new shared-context value.
    pub const CONTEXT_UPDATED: &str = "context.updated";
    /// A status reported from outside (a CI result, through a webhook).
    pub const TASK_EXTERNAL_STATUS: &str = "task.external_status";
    /// The result reached the remote: `data.status` (`pushed`, `opened`,
    /// `skipped`), branch, commit, pull request URL and number.
    pub const TASK_DELIVERED: &str = "task.delivered";
    /// Delivery failed: `data.error` says why (never a secret).
    pub const TASK_DELIVERY_FAILED: &str = "task.delivery_failed";
    /// A follow-up instruction for an ended subtask: `data.prompt`, `data.by`.
    pub const SUBTASK_FOLLOW_UP: &str = "subtask.follow_up";
    /// The subtask's agent used up its attempts and its fallback agent takes
    /// over: `data.agent` (its kind), `data.after_attempts`, `data.error`.
    pub const SUBTASK_FALLBACK: &str = "subtask.fallback";
    /// A verification run of the merged result (or a prefix of it) was
    /// queued: `data.commit`, `data.label`, `data.run`.
    pub const VERIFY_STARTED: &str = "verify.started";
    /// It ended: `data.passed`, `data.error` (the end of its output).
    pub const VERIFY_FINISHED: &str = "verify.finished";
    /// A trial merge found that a subtask that just succeeded conflicts with
    /// one that succeeded before: `data.with`, `data.files`, `data.action`
    /// (`predicted`, or `rerun` when the subtask runs again on top of the
    /// other).
    pub const CONFLICT_PREDICTED: &str = "conflict.predicted";
    /// The resolver agent resolved a subtask's textual conflict at the
    /// merge: `data.files`, `data.commit` (a merge with both parents),
    /// `data.agent`; or it could not: `data.resolved` false, `data.error`.
    pub const CONFLICT_RESOLVED: &str = "conflict.resolved";
    /// Best of N: a subtask's candidates all ended and `data.chosen` won
    /// (null when none succeeded); `data.candidates` lists each with its
    /// status, lines changed and cost.
    pub const CANDIDATE_CHOSEN: &str = "candidate.chosen";
    /// AIDA commented on the issue that started the task: `data.url`, or
    /// `data.error` when it could not.
    pub const TASK_ISSUE_COMMENT: &str = "task.issue_comment";
    pub const WORKER_CONNECTED: &str = "worker.connected";
    pub const WORKER_DISCONNECTED: &str = "worker.disconnected";
    /// The monitor gives the worker nothing new until `data.until`: its
    /// runs kept failing (`data.failures_in_a_row`).
    pub const WORKER_QUARANTINED: &str = "worker.quarantined";
    /// Its quarantine is over.
    pub const WORKER_RELEASED: &str = "worker.released";
    /// A run far beyond its agent kind's average (`data.ran_for_secs`,
    /// `data.average_secs`).
    pub const MONITOR_ANOMALY: &str = "monitor.anomaly";
    /// An alert: `data.alert` (its kind), `data.key`, `data.message`.
    pub const MONITOR_ALERT: &str = "monitor.alert";
    /// An alert is over: `data.key`, `data.message`.
    pub const MONITOR_ALERT_RESOLVED: &str = "monitor.alert_resolved";
    /// `data.stream` and `data.line`.
    pub const LOG_LINE: &str = "log.line";
}

/// One event, as stored, streamed and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub channel: Channel,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
    /// The W3C trace context it was recorded in, so a consumer of the Redis
    /// channel can continue the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Event {
    /// Whether this event is the last one of its task: the task reached a
    /// status it never leaves.
    pub fn ends_task(&self) -> bool {
        use crate::status::StatusLabel;
        self.kind == kind::TASK_STATUS
            && self
                .data
                .get("status")
                .and_then(|s| s.as_str())
                .and_then(pb::TaskStatus::from_label)
                .is_some_and(|s| s.is_terminal())
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<Event> for pb::Event {
    fn from(e: Event) -> Self {
        pb::Event {
            id: e.id,
            channel: e.channel.as_str().to_owned(),
            kind: e.kind,
            task_id: e.task_id.unwrap_or_default(),
            subtask: e.subtask.unwrap_or_default(),
            worker_id: e.worker_id.unwrap_or_default(),
            at: Some(crate::time::to_proto(e.at)),
            data_json: e.data.to_string(),
            traceparent: e.traceparent.unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = anyhow::Error;
    fn try_from(e: pb::Event) -> Result<Self, Self::Error> {
        Ok(Event {
            id: e.id,
            channel: e.channel.parse().map_err(anyhow::Error::msg)?,
            kind: e.kind,
            task_id: non_empty(e.task_id),
            subtask: non_empty(e.subtask),
            worker_id: non_empty(e.worker_id),
            at: e
                .at
                .as_ref()
                .and_then(crate::time::from_proto)
                .unwrap_or_else(Utc::now),
            data: if e.data_json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&e.data_json)?
            },
            traceparent: non_empty(e.traceparent),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip_keeps_every_field() {
        let event = Event {
            id: 7,
            channel: Channel::Task,
            kind: kind::TASK_STATUS.into(),
            task_id: Some("t".into()),
            subtask: None,
            worker_id: Some("w".into()),
            at: Utc::now(),
            data: serde_json::json!({"status": "failed"}),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        };
        let back = Event::try_from(pb::Event::from(event.clone())).unwrap();
        assert_eq!(back, event);
        assert!(back.ends_task());
    }
}
