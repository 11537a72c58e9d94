//! The JSON documents of merge quality: the resolver of textual conflicts,
//! what it did, and the conflicts trial merges saw coming.

use aida_proto::common as pb;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AgentSpec, non_empty, timestamp};

/// An agent that resolves a textual conflict at the merge: it gets the
/// result so far with the merge of the conflicting branch in progress
/// (markers in the files) and both subtasks' prompts, summaries and diffs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveSpec {
    /// The task's agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// Runs per conflicting subtask (2 when absent, at most 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// What the resolver did for one conflicting subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resolution {
    pub subtask: String,
    /// `running`, `resolved` or `refused` (the branch stays out).
    pub status: String,
    /// The files in conflict.
    pub files: Vec<String>,
    /// The merge commit it made (parents: `onto` and the subtask's commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The result so far it resolved the conflict on.
    pub onto: String,
    /// The resolver agent's kind.
    pub agent: String,
    pub attempts: u32,
    /// Why its last run was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Two succeeded subtasks whose branches conflict, seen by a trial merge
/// when the later of them succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PredictedConflict {
    /// The subtask that succeeded later.
    pub subtask: String,
    /// The subtask it conflicts with.
    pub with: String,
    pub files: Vec<String>,
    /// `predicted` (they meet at the merge) or `rerun` (`subtask` runs
    /// again on top of `with`).
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

impl From<ResolveSpec> for pb::ResolveSpec {
    fn from(r: ResolveSpec) -> Self {
        pb::ResolveSpec {
            agent: r.agent.map(Into::into),
            max_attempts: r.max_attempts.unwrap_or_default(),
        }
    }
}

impl From<pb::ResolveSpec> for ResolveSpec {
    fn from(r: pb::ResolveSpec) -> Self {
        ResolveSpec {
            agent: r.agent.map(Into::into),
            max_attempts: (r.max_attempts > 0).then_some(r.max_attempts),
        }
    }
}

impl From<pb::Resolution> for Resolution {
    fn from(r: pb::Resolution) -> Self {
        Resolution {
            subtask: r.subtask,
            status: r.status,
            files: r.files,
            commit: non_empty(r.commit),
            onto: r.onto,
            agent: r.agent,
            attempts: r.attempts,
            error: non_empty(r.error),
        }
    }
}

impl From<pb::PredictedConflict> for PredictedConflict {
    fn from(p: pb::PredictedConflict) -> Self {
        PredictedConflict {
            subtask: p.subtask,
            with: p.with,
            files: p.files,
            action: p.action,
            at: timestamp(p.at),
        }
    }
}
