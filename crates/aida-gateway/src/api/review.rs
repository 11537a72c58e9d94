//! The JSON documents for reviewing work and watching the system: a diff
//! file by file, and `GET /api/status`.

use aida_proto::common as pb;
use aida_proto::orchestrator as orch;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Health, TaskStatus, Worker, non_empty, timestamp};

/// What changed between two commits, file by file (`Accept:
/// application/json` on `GET /api/tasks/{id}/diff`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Diff {
    pub from: String,
    pub to: String,
    pub files: Vec<DiffFile>,
    /// Later files came without their hunks: ask for them with `path`.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiffFile {
    pub path: String,
    /// Where a renamed or copied file came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// `added`, `modified`, `deleted`, `renamed`, `copied` or `typechange`.
    pub status: String,
    pub binary: bool,
    pub additions: u32,
    pub deletions: u32,
    pub hunks: Vec<DiffHunk>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hunks_omitted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiffHunk {
    /// `@@ -1,3 +1,4 @@ fn main()`.
    pub header: String,
    pub old_start: u32,
    pub old_lines: u32,
    pub new_start: u32,
    pub new_lines: u32,
    pub lines: Vec<DiffLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiffLine {
    /// `+`, `-` or ` `.
    pub origin: String,
    pub content: String,
}

/// The system at a glance: `GET /api/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SystemStatus {
    pub health: Health,
    pub workers: Vec<Worker>,
    /// Subtasks waiting, by their task's priority (highest first).
    pub queue: Vec<QueueLevel>,
    /// Tasks not ended, oldest first.
    pub active: Vec<TaskLine>,
    /// The last tasks that failed, newest first.
    pub failures: Vec<TaskLine>,
    /// The newest event's id: `GET /api/events?after=` it shows only what
    /// happens from now on.
    pub last_event_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueLevel {
    pub priority: i32,
    /// Pending subtasks (dependencies met or not).
    pub pending: u32,
    pub tasks: u32,
}

/// One task in a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskLine {
    pub id: String,
    pub status: TaskStatus,
    /// Its description's first line.
    pub description: String,
    pub repo: String,
    pub priority: i32,
    pub subtasks: u32,
    pub succeeded: u32,
    pub running: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<pb::Diff> for Diff {
    fn from(d: pb::Diff) -> Self {
        Diff {
            from: d.from,
            to: d.to,
            truncated: d.truncated,
            files: d
                .files
                .into_iter()
                .map(|f| DiffFile {
                    path: f.path,
                    old_path: non_empty(f.old_path),
                    status: f.status,
                    binary: f.binary,
                    additions: f.additions,
                    deletions: f.deletions,
                    hunks_omitted: f.hunks_omitted,
                    hunks: f
                        .hunks
                        .into_iter()
                        .map(|h| DiffHunk {
                            header: h.header,
                            old_start: h.old_start,
                            old_lines: h.old_lines,
                            new_start: h.new_start,
                            new_lines: h.new_lines,
                            lines: h
                                .lines
                                .into_iter()
                                .map(|l| DiffLine {
                                    origin: l.origin,
                                    content: l.content,
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<orch::QueueLevel> for QueueLevel {
    fn from(q: orch::QueueLevel) -> Self {
        QueueLevel {
            priority: q.priority,
            pending: q.pending,
            tasks: q.tasks,
        }
    }
}

impl From<orch::TaskLine> for TaskLine {
    fn from(t: orch::TaskLine) -> Self {
        TaskLine {
            status: TaskStatus::from_proto(t.status),
            id: t.id,
            description: t.description,
            repo: t.repo,
            priority: t.priority,
            subtasks: t.subtasks,
            succeeded: t.succeeded,
            running: t.running,
            error: non_empty(t.error),
            created_at: timestamp(t.created_at),
            finished_at: timestamp(t.finished_at),
        }
    }
}
