//! The REST API's JSON documents, shared with the `aida` CLI: request bodies
//! the gateway accepts, responses it returns, and their conversions from and
//! to the orchestrator's proto messages. Empty proto strings become absent
//! fields, statuses become lowercase words and timestamps RFC 3339.

use std::collections::BTreeMap;

use aida_core::status::StatusLabel;
use aida_proto::common as pb;
use aida_proto::orchestrator as orch;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use aida_core::event::Event;

mod auth;
mod delivery;
mod maintenance;
mod merge_quality;
mod review;
mod verification;
mod workflows;

pub use auth::*;
pub use delivery::*;
pub use maintenance::*;
pub use merge_quality::*;
pub use review::*;
pub use verification::*;
pub use workflows::*;

/// How a subtask's agent is run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// `command` runs `command` directly; `claude-code`, `gemini-cli` and
    /// `codex-cli` run those CLIs headless.
    #[schema(example = "command")]
    pub kind: String,
    /// The argv of a `command` agent, executed without a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The model, for adapters that choose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// claude-code's `--permission-mode` (default `acceptEdits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// gemini-cli's `--approval-mode` (default `auto_edit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<String>,
    /// claude-code's `--append-system-prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    /// claude-code's `--allowedTools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// Wall-clock limit of one run in seconds; the agent's whole process
    /// group is killed past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Maximum agent turns, where the CLI supports a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Maximum spend in USD, where the CLI supports a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Further adapter settings by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Fields of [`AgentSpec`] that travel as proto `options`.
const PERMISSION_MODE: &str = "permission_mode";
const APPROVAL_MODE: &str = "approval_mode";
const APPEND_SYSTEM_PROMPT: &str = "append_system_prompt";
/// A JSON array of tool names (names may hold spaces and commas).
const ALLOWED_TOOLS: &str = "allowed_tools";

/// One subtask of a new task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubtaskSpec {
    /// Becomes the branch component `aida/<task>/<name>`.
    #[schema(example = "api")]
    pub name: String,
    pub prompt: String,
    /// Names of subtasks whose work this one starts from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Overrides the task's agent for this subtask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// Takes the subtask over when its agent's attempts are used up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<AgentSpec>,
    /// Best of N: run this many candidates with the subtask's agent, or one
    /// per agent listed (2 to 8); the passing one with the smallest diff
    /// wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Candidates>,
    /// With `candidates`: an agent that chooses among the passing ones
    /// from their diffs (it answers `{"chosen": "<name>", "why": "..."}`),
    /// instead of the smallest diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<AgentSpec>,
    /// The directories it works in, relative to the repository root (at
    /// most 64, no patterns): its worktree holds only them, plus the files
    /// directly in the root and in their parent directories (git's sparse
    /// checkout, cone mode), so it starts fast on a big repository. Its
    /// commit keeps every other file as it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(example = json!(["src/api"]))]
    pub paths: Vec<String>,
}

/// How many candidates a best-of-N subtask runs, or with which agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Candidates {
    Count(u32),
    Agents(Vec<AgentSpec>),
}

/// The body of `POST /api/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// A git remote (`https://`, `ssh://`, `git@host:path`, `file://`; no
    /// credentials in it) allowed by `AIDA_ALLOWED_REMOTES`, or the path of
    /// a local repository under `AIDA_REPO_ROOTS`.
    #[schema(example = "https://github.com/acme/shop.git")]
    pub repo: String,
    /// Branch to start from; the repository's HEAD branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// What to do. Required when `subtasks` is absent: it is then split into
    /// subtasks (one per markdown list item).
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// When empty, the orchestrator splits `description` itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtasks: Vec<SubtaskSpec>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Without `subtasks`: have an agent split the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSpec>,
    /// Attempts each subtask may take (3 when absent); failures that a retry
    /// cannot cure are not retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Wall-clock limit of the whole task, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// What happens after the merge: push, pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<DeliverSpec>,
    /// Set-up of each worktree, over the repository's `.aida/config.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<WorktreeSetup>,
    /// How the work is checked before the task may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// `merge` (default): branches meet at the merge; `rerun`: a subtask
    /// whose branch would conflict with one that already succeeded runs
    /// again on top of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<String>,
    /// An agent that resolves textual conflicts at the merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<ResolveSpec>,
}

/// How an agent splits a task into subtasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// The planner; the task's agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    /// `auto` (default) runs the plan at once; `manual` waits for
    /// `POST /api/tasks/{id}/approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Running,
    Merging,
    Succeeded,
    Conflicted,
    Failed,
    Cancelled,
    /// A planner agent is splitting the task.
    Planning,
    /// The plan waits for `POST /api/tasks/{id}/approve`.
    #[serde(rename = "awaiting_approval")]
    AwaitingApproval,
    /// Only seen if the orchestrator sent a status this gateway does not know.
    Unspecified,
}

impl TaskStatus {
    /// A status the task never leaves.
    pub fn is_terminal(self) -> bool {
        self.proto().is_terminal()
    }

    pub fn label(self) -> &'static str {
        self.proto().label()
    }

    fn proto(self) -> pb::TaskStatus {
        match self {
            TaskStatus::Queued => pb::TaskStatus::Queued,
            TaskStatus::Running => pb::TaskStatus::Running,
            TaskStatus::Merging => pb::TaskStatus::Merging,
            TaskStatus::Succeeded => pb::TaskStatus::Succeeded,
            TaskStatus::Conflicted => pb::TaskStatus::Conflicted,
            TaskStatus::Failed => pb::TaskStatus::Failed,
            TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
            TaskStatus::Planning => pb::TaskStatus::Planning,
            TaskStatus::AwaitingApproval => pb::TaskStatus::AwaitingApproval,
            TaskStatus::Unspecified => pb::TaskStatus::Unspecified,
        }
    }

    fn from_proto(raw: i32) -> Self {
        match pb::TaskStatus::try_from(raw).unwrap_or(pb::TaskStatus::Unspecified) {
            pb::TaskStatus::Queued => TaskStatus::Queued,
            pb::TaskStatus::Running => TaskStatus::Running,
            pb::TaskStatus::Merging => TaskStatus::Merging,
            pb::TaskStatus::Succeeded => TaskStatus::Succeeded,
            pb::TaskStatus::Conflicted => TaskStatus::Conflicted,
            pb::TaskStatus::Failed => TaskStatus::Failed,
            pb::TaskStatus::Cancelled => TaskStatus::Cancelled,
            pb::TaskStatus::Planning => TaskStatus::Planning,
            pb::TaskStatus::AwaitingApproval => TaskStatus::AwaitingApproval,
            pb::TaskStatus::Unspecified => TaskStatus::Unspecified,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubtaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Only seen if the orchestrator sent a status this gateway does not know.
    Unspecified,
}

impl SubtaskStatus {
    pub fn label(self) -> &'static str {
        self.proto().label()
    }

    fn proto(self) -> pb::SubtaskStatus {
        match self {
            SubtaskStatus::Pending => pb::SubtaskStatus::Pending,
            SubtaskStatus::Running => pb::SubtaskStatus::Running,
            SubtaskStatus::Succeeded => pb::SubtaskStatus::Succeeded,
            SubtaskStatus::Failed => pb::SubtaskStatus::Failed,
            SubtaskStatus::Cancelled => pb::SubtaskStatus::Cancelled,
            SubtaskStatus::Unspecified => pb::SubtaskStatus::Unspecified,
        }
    }

    fn from_proto(raw: i32) -> Self {
        match pb::SubtaskStatus::try_from(raw).unwrap_or(pb::SubtaskStatus::Unspecified) {
            pb::SubtaskStatus::Pending => SubtaskStatus::Pending,
            pb::SubtaskStatus::Running => SubtaskStatus::Running,
            pb::SubtaskStatus::Succeeded => SubtaskStatus::Succeeded,
            pb::SubtaskStatus::Failed => SubtaskStatus::Failed,
            pb::SubtaskStatus::Cancelled => SubtaskStatus::Cancelled,
            pb::SubtaskStatus::Unspecified => SubtaskStatus::Unspecified,
        }
    }
}

/// What a subtask changed relative to the commit it started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiffStats {
    pub files_changed: u32,
    pub insertions: u32,
    pub deletions: u32,
    #[serde(default)]
    pub files: Vec<String>,
}

/// What an agent reported about its run (for a task: summed over its
/// subtasks), where its CLI reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub turns: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl Usage {
    /// None when the agent reported nothing (a `command` agent).
    fn from_proto(u: Option<pb::AgentUsage>) -> Option<Self> {
        let u = u?;
        let reported = !u.session_id.is_empty()
            || u.turns > 0
            || u.input_tokens > 0
            || u.output_tokens > 0
            || u.cost_usd > 0.0;
        reported.then(|| Usage {
            session_id: non_empty(u.session_id),
            turns: u.turns,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost_usd: u.cost_usd,
        })
    }
}

/// One value of a key in a task's shared context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContextEntry {
    pub key: String,
    pub value: String,
    /// 1 for a key's first value, then 2, 3, ...
    pub version: u32,
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<pb::ContextEntry> for ContextEntry {
    fn from(e: pb::ContextEntry) -> Self {
        ContextEntry {
            key: e.key,
            value: e.value,
            version: e.version,
            author: e.author,
            updated_at: timestamp(e.updated_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContextList {
    pub context: Vec<ContextEntry>,
}

/// The body of `PUT /api/tasks/{id}/context/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutContext {
    pub value: String,
    /// Who writes it, for the history (a subtask name, for example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContextHistoryQuery {
    /// Every value instead of the latest ones.
    #[serde(default)]
    pub history: bool,
}

/// Files a subtask's branch conflicted on while merging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Conflict {
    pub subtask: String,
    #[serde(default)]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Subtask {
    pub name: String,
    pub prompt: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    pub status: SubtaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Head of `branch` once the subtask finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Commit the worktree started from (base plus merged dependencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_commit: Option<String>,
    /// The worker running or last running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The agent's exit code, once the subtask finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// `finished_at - started_at`, once both are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<DiffStats>,
    /// True once the aggregator merged this subtask into the result branch.
    #[serde(default)]
    pub merged: bool,
    /// Session, turns, tokens and cost, where the agent's CLI reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The agent's final message, when it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Every attempt so far, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// After a failed attempt: when the next one may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// Takes over when the agent's attempts are used up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<AgentSpec>,
    /// Follow-up instructions given after it ended, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow_ups: Vec<String>,
    /// The last follow-up waits to run or runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_up_pending: bool,
    /// Its fallback agent runs it now: the first agent used up its attempts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_fallback: bool,
    /// A best-of-N candidate: the subtask it is one for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_of: Option<String>,
    /// A best-of-N subtask: the candidate chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// The directories its worktree holds (a sparse checkout); absent: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// One attempt at a subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub number: u32,
    pub worker: String,
    /// `running`, `succeeded`, `failed`, `cancelled`, or `lost` (the worker
    /// stopped sending heartbeats).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<pb::Attempt> for Attempt {
    fn from(a: pb::Attempt) -> Self {
        let finished_at = timestamp(a.finished_at);
        Attempt {
            number: a.number,
            worker: a.worker_id,
            status: a.status,
            error: non_empty(a.error),
            commit: non_empty(a.commit),
            exit_code: finished_at.map(|_| a.exit_code),
            started_at: timestamp(a.started_at),
            finished_at,
        }
    }
}

/// A lock held right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lock {
    /// What is locked, e.g. `repo:/workspace/repos/shop`.
    pub resource: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<orch::Lock> for Lock {
    fn from(l: orch::Lock) -> Self {
        Lock {
            resource: l.resource,
            owner: l.owner,
            acquired_at: timestamp(l.acquired_at),
            expires_at: timestamp(l.expires_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockList {
    pub locks: Vec<Lock>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    #[schema(example = "0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10")]
    pub id: String,
    pub status: TaskStatus,
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The base branch's commit when the task was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub subtasks: Vec<Subtask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_commit: Option<String>,
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The subtasks' turns, tokens and cost, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The shared context: the latest value of each key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextEntry>,
    /// The planner's run, when an agent split the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner: Option<Box<Subtask>>,
    /// `manual` when the plan waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve: Option<String>,
    /// Attempts each subtask may take.
    #[serde(default)]
    pub max_attempts: u32,
    /// Wall-clock limit of the whole task, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Who created it: a user's name, or `system` for a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The remote the task works on, when `repo` named one (`repo` is then
    /// the local mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<DeliverSpec>,
    /// Where the result went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<WorktreeSetup>,
    /// The issue that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<TaskOrigin>,
    /// The workflow it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// How checking the merged result went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The verification runs: one attempt each, in `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<Box<Subtask>>,
    /// `merge` or `rerun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<String>,
    /// Conflicts seen coming, as subtasks succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted_conflicts: Vec<PredictedConflict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<ResolveSpec>,
    /// What the resolver did, per conflicting subtask.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolutions: Vec<Resolution>,
    /// The resolver's runs: one attempt each, in `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<Box<Subtask>>,
    /// Best of N: the candidates of the subtasks that give them, each with
    /// its outcome, diff and cost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Subtask>,
    /// Their judges' runs (read-only), for the subtasks that give a judge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judges: Vec<Subtask>,
}

/// The issue that started a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskOrigin {
    /// `github_issue`.
    pub kind: String,
    /// `owner/name`.
    pub repository: String,
    pub number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    /// Newest first.
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    pub worker_id: String,
    /// The worker's own gRPC service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub agent_kinds: Vec<String>,
    /// `idle`, `busy` or `offline`.
    #[schema(example = "idle")]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<String>,
    /// Subtask runs this worker finished.
    #[serde(default)]
    pub completed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// An admin drained it: it finishes what it runs and takes nothing new.
    #[serde(default)]
    pub draining: bool,
    /// Bytes its worktree root takes on disk (its pooled worktrees
    /// included), as it reported when it connected or after its last run.
    #[serde(default)]
    pub disk_usage_bytes: u64,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// While set, the monitor gives it nothing new: its runs kept failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<Worker>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Oldest first.
    #[schema(value_type = Vec<EventDoc>)]
    pub events: Vec<Event>,
}

/// `aida_core::event::Event` as the OpenAPI document describes it; that
/// crate does not depend on utoipa, so its shape is restated here.
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub(crate) struct EventDoc {
    /// Increasing; the SSE `id`.
    id: i64,
    /// `task`, `worker` or `log`.
    channel: String,
    /// For example `task.status`, `subtask.status`, `log.line`.
    kind: String,
    task_id: Option<String>,
    subtask: Option<String>,
    worker_id: Option<String>,
    at: DateTime<Utc>,
    /// Kind-specific fields.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// `GET /api/health`: the system's health with each part's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `healthy`; `degraded` when a part is down but work goes on (Redis,
    /// the aggregator, no worker connected); `unhealthy` when nothing can
    /// (the orchestrator or its database).
    #[schema(example = "healthy")]
    pub status: String,
    /// This gateway's version.
    pub version: String,
    pub checked_at: DateTime<Utc>,
    /// By name: `orchestrator`, `database`, `redis`, `aggregator`,
    /// `workers`.
    pub components: std::collections::BTreeMap<String, ComponentHealth>,
}

/// One part of the system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentHealth {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    /// How long its check took, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// What failed, or a figure worth showing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Health {
    /// Names the parts that are not healthy, with what failed:
    /// `redis (connection refused)`.
    pub fn failing(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|(_, c)| c.status != "healthy")
            .map(|(name, c)| match &c.detail {
                Some(detail) => format!("{name} ({detail})"),
                None => name.clone(),
            })
            .collect()
    }
}

/// Every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `not_found`, `already_exists`,
    /// `failed_precondition`, `unavailable`, `deadline_exceeded`, `internal`.
    pub code: String,
    pub message: String,
}

/// Query of `GET /api/tasks`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTasksQuery {
    /// At most this many tasks, newest first; 50 when absent.
    pub limit: Option<u32>,
}

/// Query of `GET /api/tasks/{id}/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEventsQuery {
    /// Only events with a larger id.
    pub after: Option<i64>,
    /// At most this many events; 1000 when absent.
    pub limit: Option<u32>,
}

/// Query of `GET /api/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProgressQuery {
    /// Follow only this task; the stream then ends when the task finished.
    pub task: Option<String>,
    /// Only events with a larger id; the `Last-Event-ID` header wins.
    pub after: Option<i64>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn timestamp(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.as_ref().and_then(aida_core::time::from_proto)
}

impl From<pb::AgentSpec> for AgentSpec {
    fn from(a: pb::AgentSpec) -> Self {
        let mut options: BTreeMap<String, String> = a.options.into_iter().collect();
        let allowed_tools = options
            .remove(ALLOWED_TOOLS)
            .and_then(|raw| serde_json::from_str(&raw).ok())
            .unwrap_or_default();
        AgentSpec {
            kind: a.kind,
            command: a.command,
            model: non_empty(a.model),
            permission_mode: options.remove(PERMISSION_MODE),
            approval_mode: options.remove(APPROVAL_MODE),
            append_system_prompt: options.remove(APPEND_SYSTEM_PROMPT),
            allowed_tools,
            timeout_secs: (a.timeout_secs > 0).then_some(a.timeout_secs),
            max_turns: (a.max_turns > 0).then_some(a.max_turns),
            max_budget_usd: (a.max_budget_usd > 0.0).then_some(a.max_budget_usd),
            options,
        }
    }
}

impl From<AgentSpec> for pb::AgentSpec {
    fn from(a: AgentSpec) -> Self {
        let mut options: std::collections::HashMap<String, String> =
            a.options.into_iter().collect();
        for (key, value) in [
            (PERMISSION_MODE, a.permission_mode),
            (APPROVAL_MODE, a.approval_mode),
            (APPEND_SYSTEM_PROMPT, a.append_system_prompt),
        ] {
            if let Some(value) = value {
                options.insert(key.to_owned(), value);
            }
        }
        if !a.allowed_tools.is_empty() {
            options.insert(
                ALLOWED_TOOLS.to_owned(),
                serde_json::Value::from(a.allowed_tools).to_string(),
            );
        }
        pb::AgentSpec {
            kind: a.kind,
            command: a.command,
            options,
            model: a.model.unwrap_or_default(),
            timeout_secs: a.timeout_secs.unwrap_or_default(),
            max_turns: a.max_turns.unwrap_or_default(),
            max_budget_usd: a.max_budget_usd.unwrap_or_default(),
        }
    }
}

impl From<SubtaskSpec> for orch::SubtaskSpec {
    fn from(s: SubtaskSpec) -> Self {
        orch::SubtaskSpec {
            name: s.name,
            prompt: s.prompt,
            depends_on: s.depends_on,
            agent: s.agent.map(Into::into),
            fallback: s.fallback.map(Into::into),
            candidate_count: match &s.candidates {
                Some(Candidates::Count(n)) => *n,
                _ => 0,
            },
            candidate_agents: match s.candidates {
                Some(Candidates::Agents(agents)) => agents.into_iter().map(Into::into).collect(),
                _ => Vec::new(),
            },
            judge: s.judge.map(Into::into),
            paths: s.paths,
        }
    }
}

impl From<CreateTask> for orch::CreateTaskRequest {
    fn from(t: CreateTask) -> Self {
        orch::CreateTaskRequest {
            repo: t.repo,
            base: t.base.unwrap_or_default(),
            description: t.description,
            agent: t.agent.map(Into::into),
            subtasks: t.subtasks.into_iter().map(Into::into).collect(),
            priority: t.priority,
            max_attempts: t.max_attempts.unwrap_or_default(),
            timeout_secs: t.timeout_secs.unwrap_or_default(),
            idempotency_key: String::new(),
            actor: None,
            webhook_delivery: String::new(),
            deliver: t.deliver.map(Into::into),
            setup: t.setup.map(Into::into),
            origin: None,
            workflow: String::new(),
            verify: t.verify.map(Into::into),
            merge_policy: t.merge_policy.unwrap_or_default(),
            resolve: t.resolve.map(Into::into),
            plan: t.plan.map(|p| orch::PlanSpec {
                agent: p.agent.map(Into::into),
                approve: p.approve.unwrap_or_default(),
            }),
        }
    }
}

impl From<pb::DiffStats> for DiffStats {
    fn from(s: pb::DiffStats) -> Self {
        DiffStats {
            files_changed: s.files_changed,
            insertions: s.insertions,
            deletions: s.deletions,
            files: s.files,
        }
    }
}

impl From<pb::Conflict> for Conflict {
    fn from(c: pb::Conflict) -> Self {
        Conflict {
            subtask: c.subtask,
            files: c.files,
        }
    }
}

impl From<pb::Subtask> for Subtask {
    fn from(s: pb::Subtask) -> Self {
        let started_at = timestamp(s.started_at);
        let finished_at = timestamp(s.finished_at);
        let duration_ms = match (started_at, finished_at) {
            (Some(start), Some(end)) => Some((end - start).num_milliseconds()),
            _ => None,
        };
        Subtask {
            status: SubtaskStatus::from_proto(s.status),
            name: s.name,
            prompt: s.prompt,
            depends_on: s.depends_on,
            agent: s.agent.map(Into::into),
            branch: non_empty(s.branch),
            commit: non_empty(s.commit),
            start_commit: non_empty(s.start_commit),
            worker: non_empty(s.worker_id),
            attempts: s.attempts,
            error: non_empty(s.error),
            // Proto3 cannot tell "exited 0" from "has not exited": only a
            // finished subtask has an exit code.
            exit_code: finished_at.map(|_| s.exit_code),
            started_at,
            finished_at,
            duration_ms,
            stats: s.stats.map(Into::into),
            merged: s.merged,
            usage: Usage::from_proto(s.usage),
            summary: non_empty(s.summary),
            history: s.history.into_iter().map(Into::into).collect(),
            retry_at: timestamp(s.retry_at),
            fallback: s.fallback.map(Into::into),
            follow_ups: s.follow_ups,
            follow_up_pending: s.follow_up_pending,
            on_fallback: s.on_fallback,
            candidate_of: non_empty(s.candidate_of),
            chosen: non_empty(s.chosen),
            paths: s.paths,
        }
    }
}

impl From<pb::Task> for Task {
    fn from(t: pb::Task) -> Self {
        Task {
            id: t.id,
            status: TaskStatus::from_proto(t.status),
            repo: t.repo,
            base: non_empty(t.base),
            base_commit: non_empty(t.base_commit),
            description: non_empty(t.description),
            agent: t.agent.map(Into::into),
            priority: t.priority,
            subtasks: t.subtasks.into_iter().map(Into::into).collect(),
            result_branch: non_empty(t.result_branch),
            result_commit: non_empty(t.result_commit),
            conflicts: t.conflicts.into_iter().map(Into::into).collect(),
            error: non_empty(t.error),
            created_at: timestamp(t.created_at),
            started_at: timestamp(t.started_at),
            finished_at: timestamp(t.finished_at),
            usage: Usage::from_proto(t.usage),
            context: t.context.into_iter().map(Into::into).collect(),
            planner: t.planner.map(|p| Box::new(p.into())),
            approve: non_empty(t.approve),
            max_attempts: t.max_attempts,
            timeout_secs: (t.timeout_secs > 0).then_some(t.timeout_secs),
            created_by: non_empty(t.created_by),
            remote: non_empty(t.remote),
            deliver: t.deliver.map(Into::into),
            delivery: t.delivery.map(Into::into),
            setup: t.setup.map(Into::into),
            origin: t.origin.map(|o| TaskOrigin {
                kind: o.kind,
                repository: o.repository,
                number: o.number,
                url: non_empty(o.url),
                title: non_empty(o.title),
            }),
            workflow: non_empty(t.workflow),
            verify: t.verify.map(Into::into),
            verification: t.verification.map(Into::into),
            verifier: t.verifier.map(|v| Box::new(v.into())),
            merge_policy: non_empty(t.merge_policy),
            predicted_conflicts: t.predicted_conflicts.into_iter().map(Into::into).collect(),
            resolve: t.resolve.map(Into::into),
            resolutions: t.resolutions.into_iter().map(Into::into).collect(),
            resolver: t.resolver.map(|v| Box::new(v.into())),
            candidates: t.candidates.into_iter().map(Into::into).collect(),
            judges: t.judges.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<orch::WorkerInfo> for Worker {
    fn from(w: orch::WorkerInfo) -> Self {
        Worker {
            worker_id: w.worker_id,
            address: non_empty(w.address),
            agent_kinds: w.agent_kinds,
            state: w.state,
            task_id: non_empty(w.task_id),
            subtask: non_empty(w.subtask),
            completed: w.completed,
            connected_at: timestamp(w.connected_at),
            last_seen_at: timestamp(w.last_seen_at),
            draining: w.draining,
            disk_usage_bytes: w.disk_usage_bytes,
            metrics_address: (!w.metrics_address.is_empty()).then_some(w.metrics_address),
            quarantined_until: timestamp(w.quarantined_until),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn a_proto_task_becomes_the_documented_json() {
        let proto = pb::Task {
            id: "0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10".into(),
            status: pb::TaskStatus::Conflicted as i32,
            repo: "/srv/shop".into(),
            base: "main".into(),
            base_commit: "abc".into(),
            description: "add an api".into(),
            agent: Some(pb::AgentSpec {
                kind: "command".into(),
                command: vec!["sh".into(), "-c".into(), "true".into()],
                ..Default::default()
            }),
            priority: 2,
            subtasks: vec![
                pb::Subtask {
                    name: "api".into(),
                    prompt: "write it".into(),
                    status: pb::SubtaskStatus::Succeeded as i32,
                    branch: "aida/x/api".into(),
                    commit: "def".into(),
                    worker_id: "w1".into(),
                    attempts: 1,
                    started_at: at(1_700_000_000),
                    finished_at: at(1_700_000_002),
                    stats: Some(pb::DiffStats {
                        files_changed: 1,
                        insertions: 3,
                        deletions: 0,
                        files: vec!["src/api.rs".into()],
                    }),
                    merged: true,
                    exit_code: 0,
                    ..Default::default()
                },
                pb::Subtask {
                    name: "ui".into(),
                    prompt: "draw it".into(),
                    depends_on: vec!["api".into()],
                    status: pb::SubtaskStatus::Pending as i32,
                    ..Default::default()
                },
            ],
            conflicts: vec![pb::Conflict {
                subtask: "ui".into(),
                files: vec!["README.md".into()],
            }],
            created_at: at(1_699_999_999),
            ..Default::default()
        };
        let json = serde_json::to_value(Task::from(proto)).unwrap();
        assert_eq!(json["status"], "conflicted");
        assert_eq!(json["base"], "main");
        assert_eq!(json["agent"]["command"][2], "true");
        assert_eq!(json["created_at"], "2023-11-14T22:13:19Z");
        // Empty strings and unset timestamps are absent, not "".
        for absent in [
            "result_branch",
            "result_commit",
            "error",
            "started_at",
            "finished_at",
        ] {
            assert!(
                json.get(absent).is_none(),
                "{absent} should be absent: {json}"
            );
        }
        assert_eq!(json["conflicts"][0]["files"][0], "README.md");

        let api = &json["subtasks"][0];
        assert_eq!(api["status"], "succeeded");
        assert_eq!(api["worker"], "w1");
        assert_eq!(api["duration_ms"], 2000);
        assert_eq!(api["exit_code"], 0);
        assert_eq!(api["stats"]["insertions"], 3);
        assert_eq!(api["merged"], true);
        assert!(api.get("start_commit").is_none());

        let ui = &json["subtasks"][1];
        assert_eq!(ui["status"], "pending");
        assert_eq!(ui["depends_on"][0], "api");
        for absent in [
            "branch",
            "commit",
            "worker",
            "error",
            "exit_code",
            "duration_ms",
            "stats",
            "agent",
        ] {
            assert!(ui.get(absent).is_none(), "{absent} should be absent: {ui}");
        }

        // The CLI reads the JSON back into the same type.
        let back: Task = serde_json::from_value(json).unwrap();
        assert_eq!(back.status, TaskStatus::Conflicted);
        assert!(back.status.is_terminal());
        assert_eq!(back.subtasks[0].duration_ms, Some(2000));
    }

    #[test]
    fn a_create_body_becomes_the_request_the_orchestrator_expects() {
        let body: CreateTask = serde_json::from_str(
            r#"{"repo": "/r", "description": "d", "agent": {"kind": "command", "command": ["true"], "options": {"model": "m"}},
                "subtasks": [{"name": "a", "prompt": "p"}, {"name": "b", "prompt": "q", "depends_on": ["a"]}]}"#,
        )
        .unwrap();
        let request = orch::CreateTaskRequest::from(body);
        assert_eq!(request.base, "");
        assert_eq!(request.priority, 0);
        assert_eq!(request.agent.as_ref().unwrap().options["model"], "m");
        assert_eq!(request.subtasks[1].depends_on, vec!["a".to_owned()]);
        assert!(request.subtasks[0].agent.is_none());
    }

    #[test]
    fn a_worker_without_a_task_has_no_task_fields() {
        let json = serde_json::to_value(Worker::from(orch::WorkerInfo {
            worker_id: "w1".into(),
            address: "http://10.0.0.2:50052".into(),
            agent_kinds: vec!["command".into()],
            state: "idle".into(),
            completed: 4,
            connected_at: at(1_700_000_000),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(json["state"], "idle");
        assert_eq!(json["completed"], 4);
        assert!(json.get("task_id").is_none() && json.get("subtask").is_none());
        assert_eq!(json["connected_at"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn agent_settings_survive_the_trip_through_the_proto() {
        let json = serde_json::json!({
            "kind": "claude-code",
            "model": "opus",
            "permission_mode": "acceptEdits",
            "append_system_prompt": "be brief",
            "allowed_tools": ["Bash(git log:*)", "Edit"],
            "timeout_secs": 600,
            "max_turns": 12,
            "max_budget_usd": 1.5,
            "options": {"verbose": "true"}
        });
        let spec: AgentSpec = serde_json::from_value(json.clone()).unwrap();
        let proto = pb::AgentSpec::from(spec.clone());
        assert_eq!(proto.model, "opus");
        assert_eq!(proto.options["permission_mode"], "acceptEdits");
        assert_eq!(
            (proto.timeout_secs, proto.max_turns, proto.max_budget_usd),
            (600, 12, 1.5)
        );
        assert_eq!(AgentSpec::from(proto), spec);
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
        let unknown = serde_json::json!({"kind": "claude-code", "colour": "red"});
        assert!(serde_json::from_value::<AgentSpec>(unknown).is_err());
    }
}
