//! The JSON documents of delivering a task's result (push, pull request)
//! and of setting up its worktrees, and their conversions.

use std::collections::BTreeMap;

use aida_proto::common as pb;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{non_empty, timestamp};

/// What happens to a task's result once it is merged. Needs a task on a
/// remote (`repo` a URL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverSpec {
    /// Push `aida/<task>/result` to the remote (never forced).
    #[serde(default)]
    pub push: bool,
    /// Push the subtask branches too.
    #[serde(default)]
    pub push_subtasks: bool,
    /// Also open a pull request (GitHub) or merge request (GitLab) from the
    /// result branch to `base`, with the report as its body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequestSpec {
    /// The description's first line when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub draft: bool,
    /// Issues of the same repository it closes (`Closes #N`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closes: Vec<u32>,
}

/// Where a task's result went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// `pending`, `pushed`, `opened`, `failed` or `skipped`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What each worktree gets before its agent runs; over the repository's
/// `.aida/config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorktreeSetup {
    /// An argv run in the new worktree (never through a shell); its failure
    /// fails the attempt with its output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Extra environment for the set-up command and the agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Ports each run gets, its own while it runs: `AIDA_PORT_0` ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<u32>,
    /// Limit of the set-up command, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
}

impl From<DeliverSpec> for pb::DeliverSpec {
    fn from(d: DeliverSpec) -> Self {
        pb::DeliverSpec {
            push: d.push,
            push_subtasks: d.push_subtasks,
            pull_request: d.pull_request.map(|p| pb::PullRequestSpec {
                title: p.title.unwrap_or_default(),
                draft: p.draft,
                closes: p.closes,
            }),
        }
    }
}

impl From<pb::DeliverSpec> for DeliverSpec {
    fn from(d: pb::DeliverSpec) -> Self {
        DeliverSpec {
            push: d.push,
            push_subtasks: d.push_subtasks,
            pull_request: d.pull_request.map(|p| PullRequestSpec {
                title: non_empty(p.title),
                draft: p.draft,
                closes: p.closes,
            }),
        }
    }
}

impl From<pb::Delivery> for Delivery {
    fn from(d: pb::Delivery) -> Self {
        Delivery {
            status: d.status,
            branch: non_empty(d.branch),
            commit: non_empty(d.commit),
            pull_request_url: non_empty(d.pull_request_url),
            pull_request_number: (d.pull_request_number > 0).then_some(d.pull_request_number),
            error: non_empty(d.error),
            attempts: d.attempts,
            delivered_at: timestamp(d.delivered_at),
        }
    }
}

impl From<WorktreeSetup> for pb::WorktreeSetup {
    fn from(s: WorktreeSetup) -> Self {
        pb::WorktreeSetup {
            command: s.command,
            env: s.env.into_iter().collect(),
            ports: s.ports.unwrap_or_default(),
            timeout_secs: s.timeout_secs.unwrap_or_default(),
        }
    }
}

impl From<pb::WorktreeSetup> for WorktreeSetup {
    fn from(s: pb::WorktreeSetup) -> Self {
        WorktreeSetup {
            command: s.command,
            env: s.env.into_iter().collect(),
            ports: (s.ports > 0).then_some(s.ports),
            timeout_secs: (s.timeout_secs > 0).then_some(s.timeout_secs),
        }
    }
}
