//! The JSON documents of verification: how a task's work is checked, and
//! how checking its merged result went.

use aida_proto::common as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::non_empty;

/// A command that checks the work (`cargo test`, `npm test`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// An argv, run directly (never through a shell) in a worktree of what
    /// is checked; exit code 0 passes.
    #[schema(example = json!(["cargo", "test"]))]
    pub command: Vec<String>,
    /// Limit of one run, in seconds (at least 1); 900 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// `result` (default): the merged result; `subtasks`: each subtask's
    /// branch in its own run (a failure fails that attempt); `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// When the result fails: `fail` (default) or `exclude` (leave out the
    /// subtask that broke it and what depends on it, and check again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

/// How checking the merged result went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// `running`, `passed`, `failed` or `skipped`.
    pub status: String,
    /// The subtasks found to break the result (by bisecting over the
    /// merge's prefixes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken_by: Vec<String>,
    /// Verification runs so far.
    pub runs: u32,
    /// The end of the last failing run's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    /// Subtasks left out of the result because of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// While running: the commit being checked, and what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checking_label: Option<String>,
}

impl From<VerifySpec> for pb::VerifySpec {
    fn from(v: VerifySpec) -> Self {
        pb::VerifySpec {
            command: v.command,
            timeout_secs: v.timeout_secs.unwrap_or_default(),
            on: v.on.unwrap_or_default(),
            on_failure: v.on_failure.unwrap_or_default(),
        }
    }
}

impl From<pb::VerifySpec> for VerifySpec {
    fn from(v: pb::VerifySpec) -> Self {
        VerifySpec {
            command: v.command,
            timeout_secs: (v.timeout_secs > 0).then_some(v.timeout_secs),
            on: non_empty(v.on),
            on_failure: non_empty(v.on_failure),
        }
    }
}

impl From<pb::Verification> for Verification {
    fn from(v: pb::Verification) -> Self {
        Verification {
            status: v.status,
            broken_by: v.broken_by,
            runs: v.runs,
            output_tail: non_empty(v.output_tail),
            excluded: v.excluded,
            checking: non_empty(v.checking),
            checking_label: non_empty(v.checking_label),
        }
    }
}
