//! Maintenance: removing what tasks that ended long ago left behind.

use aida_proto::orchestrator as orch;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What to collect.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Tasks that ended at least this long ago (`30d`, `12h`, `90m`); the
    /// orchestrator's `AIDA_EVENT_RETENTION` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<String>,
    /// Report what would go and remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What was (or, for a dry run, would be) removed and what stayed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    /// Tasks that ended before this were collected.
    pub ended_before: Option<DateTime<Utc>>,
    /// How many such tasks there were.
    pub tasks: u32,
    pub events_removed: u64,
    pub branches_removed: Vec<GcBranch>,
    /// Branches that stay, each with the reason.
    pub branches_kept: Vec<GcBranch>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GcBranch {
    pub task_id: String,
    pub repo: String,
    pub branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<orch::GarbageReport> for GcReport {
    fn from(r: orch::GarbageReport) -> Self {
        GcReport {
            dry_run: r.dry_run,
            ended_before: r
                .ended_before
                .as_ref()
                .and_then(aida_core::time::from_proto),
            tasks: r.tasks,
            events_removed: r.events_removed,
            branches_removed: r
                .branches_removed
                .into_iter()
                .map(|b| GcBranch {
                    task_id: b.task_id,
                    repo: b.repo,
                    branch: b.branch,
                    reason: None,
                })
                .collect(),
            branches_kept: r
                .branches_kept
                .into_iter()
                .map(|b| GcBranch {
                    task_id: b.task_id,
                    repo: b.repo,
                    branch: b.branch,
                    reason: Some(b.reason),
                })
                .collect(),
        }
    }
}
