//! The tools' parameters, as JSON Schema'd types an MCP client sees in
//! `tools/list`, and their mapping onto the REST API's request bodies.
//! `create_task`'s types mirror `aida_gateway::api::CreateTask` field for
//! field (that type carries an OpenAPI schema, not a JSON Schema); the
//! conversions name every field, so a field added to the API fails to
//! compile here until the tool learns it.

use std::collections::BTreeMap;
use std::path::Path;

use aida_gateway::api::{
    AgentSpec, CreateTask, DeliverSpec, PlanSpec, PullRequestSpec, SubtaskSpec,
};
use anyhow::Context;
use schemars::JsonSchema;
use serde::Deserialize;

/// `wait_task`'s wait when the caller names none, and the longest it may ask.
pub const DEFAULT_WAIT_SECS: u64 = 300;
pub const MAX_WAIT_SECS: u64 = 1800;
/// `list_tasks` without a limit.
pub const DEFAULT_LIST_LIMIT: u32 = 20;

/// The body of `POST /api/tasks`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskParams {
    /// The git repository to work on: a path on the machine AIDA runs on
    /// (a relative path or `~/...` is resolved where this server runs), or
    /// a git URL. AIDA never touches its checkout: the work lands on
    /// branches `aida/<task-id>/<subtask>` and is merged into
    /// `aida/<task-id>/result`.
    pub repo: String,
    /// What to do. Without `subtasks` it is split into subtasks: one per
    /// markdown list item, or a single subtask `main` (or by a planner
    /// agent, with `plan`).
    pub description: String,
    /// The branch to start from; the repository's HEAD branch when absent.
    #[serde(default)]
    pub base: Option<String>,
    /// How each subtask's agent runs, unless the subtask names its own.
    #[serde(default)]
    pub agent: Option<AgentParams>,
    /// The subtasks, run in parallel where their dependencies allow.
    #[serde(default)]
    pub subtasks: Vec<SubtaskParams>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: Option<i32>,
    /// Without `subtasks`: have an agent split the description.
    #[serde(default)]
    pub plan: Option<PlanParams>,
    /// Attempts each subtask may take (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Wall-clock limit of the whole task, in seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
    /// With `repo` a git URL: push the result branch, and open a pull
    /// request, once merged.
    #[serde(default)]
    pub deliver: Option<DeliverParams>,
}

/// What happens to the merged result.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverParams {
    /// Push `aida/<task-id>/result` to the remote (never forced).
    #[serde(default)]
    pub push: bool,
    /// Also push the subtask branches.
    #[serde(default)]
    pub push_subtasks: bool,
    /// Also open a pull (merge) request to `base`, with the report as its
    /// body.
    #[serde(default)]
    pub pull_request: Option<PullRequestParams>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequestParams {
    /// The description's first line when absent.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub draft: bool,
    /// Issue numbers of the same repository it closes.
    #[serde(default)]
    pub closes: Vec<u32>,
}

/// How an agent is run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentParams {
    /// `claude-code`, `codex-cli` or `gemini-cli` run those CLIs headless
    /// with the subtask's prompt; `command` runs `command` directly (no
    /// shell), the prompt on its stdin and in `AIDA_PROMPT`.
    pub kind: String,
    /// The argv of a `command` agent.
    #[serde(default)]
    pub command: Vec<String>,
    /// The model, for CLIs that choose one.
    #[serde(default)]
    pub model: Option<String>,
    /// claude-code's `--permission-mode` (default `acceptEdits`).
    #[serde(default)]
    pub permission_mode: Option<String>,
    /// gemini-cli's `--approval-mode` (default `auto_edit`).
    #[serde(default)]
    pub approval_mode: Option<String>,
    /// claude-code's `--append-system-prompt`.
    #[serde(default)]
    pub append_system_prompt: Option<String>,
    /// claude-code's `--allowedTools`.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Wall-clock limit of one run, in seconds.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
    /// Maximum agent turns, where the CLI supports a limit.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// Maximum spend in USD, where the CLI supports a limit.
    #[serde(default)]
    pub max_budget_usd: Option<f64>,
    /// Further adapter settings by name.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// One subtask: an agent's run on its own branch.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubtaskParams {
    /// Short and branch-safe (letters, digits, `-`, `_`); becomes the
    /// branch `aida/<task-id>/<name>`.
    pub name: String,
    /// What this subtask's agent is told to do.
    pub prompt: String,
    /// Subtasks whose work this one starts from (it waits for them).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Overrides the task's agent for this subtask.
    #[serde(default)]
    pub agent: Option<AgentParams>,
    /// Takes the subtask over when its agent used up its attempts.
    #[serde(default)]
    pub fallback: Option<AgentParams>,
    /// The directories it works in (relative to the repository root): its
    /// worktree holds only them, which starts it fast on a big repository.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// Planning by an agent.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanParams {
    /// The planner; the task's agent when absent.
    #[serde(default)]
    pub agent: Option<AgentParams>,
    /// `auto` (default) runs the plan at once; `manual` waits for approval.
    #[serde(default)]
    pub approve: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdParams {
    /// The task's id, as `create_task` returned it.
    pub task_id: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasksParams {
    /// At most this many tasks, newest first (default 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitTaskParams {
    /// The task's id.
    pub task_id: String,
    /// How long to wait, in seconds (default 300, at most 1800). When it
    /// passes, the task is returned as it is then, with `ended: false`:
    /// call again to keep waiting.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1800))]
    pub timeout_secs: Option<u64>,
}

impl WaitTaskParams {
    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs
            .unwrap_or(DEFAULT_WAIT_SECS)
            .clamp(1, MAX_WAIT_SECS)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// For reading.
    #[default]
    Markdown,
    /// The structured report.
    Json,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetReportParams {
    /// The task's id.
    pub task_id: String,
    /// `markdown` (default) or `json`.
    #[serde(default)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUpParams {
    /// The task's id.
    pub task_id: String,
    /// The subtask whose agent gets another turn.
    pub subtask: String,
    /// What to tell the agent.
    pub prompt: String,
}

impl CreateTaskParams {
    /// The REST body, with `repo` resolved against `cwd` when it is a
    /// relative path.
    pub fn into_request(self, cwd: &Path) -> anyhow::Result<CreateTask> {
        Ok(CreateTask {
            repo: resolve_repo(&self.repo, cwd)?,
            base: self.base,
            description: self.description,
            agent: self.agent.map(AgentSpec::from),
            subtasks: self.subtasks.into_iter().map(SubtaskSpec::from).collect(),
            priority: self.priority.unwrap_or(0),
            plan: self.plan.map(PlanSpec::from),
            max_attempts: self.max_attempts,
            timeout_secs: self.timeout_secs,
            deliver: self.deliver.map(|d| DeliverSpec {
                push: d.push,
                push_subtasks: d.push_subtasks,
                pull_request: d.pull_request.map(|p| PullRequestSpec {
                    title: p.title,
                    draft: p.draft,
                    closes: p.closes,
                }),
            }),
            setup: None,
            verify: None,
            merge_policy: None,
            resolve: None,
        })
    }
}

impl From<AgentParams> for AgentSpec {
    fn from(agent: AgentParams) -> Self {
        AgentSpec {
            kind: agent.kind,
            command: agent.command,
            model: agent.model,
            permission_mode: agent.permission_mode,
            approval_mode: agent.approval_mode,
            append_system_prompt: agent.append_system_prompt,
            allowed_tools: agent.allowed_tools,
            timeout_secs: agent.timeout_secs,
            max_turns: agent.max_turns,
            max_budget_usd: agent.max_budget_usd,
            options: agent.options,
        }
    }
}

impl From<SubtaskParams> for SubtaskSpec {
    fn from(subtask: SubtaskParams) -> Self {
        SubtaskSpec {
            name: subtask.name,
            prompt: subtask.prompt,
            depends_on: subtask.depends_on,
            agent: subtask.agent.map(AgentSpec::from),
            fallback: subtask.fallback.map(AgentSpec::from),
            candidates: None,
            judge: None,
            paths: subtask.paths,
        }
    }
}

impl From<PlanParams> for PlanSpec {
    fn from(plan: PlanParams) -> Self {
        PlanSpec {
            agent: plan.agent.map(AgentSpec::from),
            approve: plan.approve,
        }
    }
}

/// A git URL (`scheme://...` or scp-like `[user@]host:path`) as it is; a
/// path made absolute against `cwd` (and `~` against the home directory),
/// because the orchestrator resolves nothing relative to a client.
fn resolve_repo(repo: &str, cwd: &Path) -> anyhow::Result<String> {
    let repo = repo.trim();
    anyhow::ensure!(!repo.is_empty(), "\"repo\" is empty");
    if is_git_url(repo) {
        return Ok(repo.to_owned());
    }
    let path = if repo == "~" || repo.starts_with("~/") {
        let home = dirs::home_dir().context("no home directory to resolve ~ against")?;
        home.join(repo.trim_start_matches('~').trim_start_matches('/'))
    } else {
        cwd.join(repo)
    };
    let path = std::path::absolute(&path)
        .with_context(|| format!("resolving the repository path {repo:?}"))?;
    Ok(path.to_string_lossy().into_owned())
}

fn is_git_url(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    // scp-like syntax: a colon before any slash, and not a path that
    // merely holds one (`./a:b`, `/x:y`).
    match repo.split_once(':') {
        Some((host, _)) => {
            !host.is_empty() && !host.contains('/') && !repo.starts_with('.') && host != "~"
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos_are_urls_or_absolute_paths() {
        let cwd = Path::new("/work/here");
        let resolve = |repo: &str| resolve_repo(repo, cwd).unwrap();
        assert_eq!(resolve("/srv/shop"), "/srv/shop");
        assert_eq!(resolve("shop"), "/work/here/shop");
        assert_eq!(resolve("."), "/work/here");
        assert_eq!(resolve("./a:b"), "/work/here/a:b");
        assert_eq!(
            resolve("https://git.example/shop.git"),
            "https://git.example/shop.git"
        );
        assert_eq!(
            resolve("git@git.example:team/shop.git"),
            "git@git.example:team/shop.git"
        );
        assert_eq!(resolve("file:///srv/shop"), "file:///srv/shop");
        let home = dirs::home_dir().unwrap();
        assert_eq!(resolve("~/shop"), home.join("shop").to_string_lossy());
        assert!(resolve_repo(" ", cwd).is_err());
    }

    #[test]
    fn parameters_map_onto_the_rest_body() {
        let params: CreateTaskParams = serde_json::from_value(serde_json::json!({
            "repo": "/r",
            "description": "d",
            "agent": {"kind": "command", "command": ["true"]},
            "subtasks": [
                {"name": "a", "prompt": "p"},
                {"name": "b", "prompt": "q", "depends_on": ["a"],
                 "agent": {"kind": "claude-code", "model": "opus", "max_turns": 3}}
            ],
            "max_attempts": 1
        }))
        .unwrap();
        let body = params.into_request(Path::new("/")).unwrap();
        // What the CLI's `--file` would have read from the same JSON.
        let expected: CreateTask = serde_json::from_value(serde_json::json!({
            "repo": "/r",
            "description": "d",
            "agent": {"kind": "command", "command": ["true"]},
            "subtasks": [
                {"name": "a", "prompt": "p"},
                {"name": "b", "prompt": "q", "depends_on": ["a"],
                 "agent": {"kind": "claude-code", "model": "opus", "max_turns": 3}}
            ],
            "max_attempts": 1
        }))
        .unwrap();
        assert_eq!(body, expected);

        let typo = serde_json::from_value::<CreateTaskParams>(
            serde_json::json!({"repo": "/r", "description": "d", "subtask": []}),
        );
        assert!(typo.is_err());
    }

    #[test]
    fn the_schema_requires_repo_and_description() {
        let schema = serde_json::to_value(schemars::schema_for!(CreateTaskParams)).unwrap();
        let required = schema["required"].as_array().unwrap();
        assert!(required.contains(&"repo".into()) && required.contains(&"description".into()));
        assert_eq!(required.len(), 2, "{schema:#}");
    }

    #[test]
    fn waits_are_bounded() {
        let wait = |secs: Option<u64>| {
            WaitTaskParams {
                task_id: "t".into(),
                timeout_secs: secs,
            }
            .timeout_secs()
        };
        assert_eq!(wait(None), DEFAULT_WAIT_SECS);
        assert_eq!(wait(Some(0)), 1);
        assert_eq!(wait(Some(60)), 60);
        assert_eq!(wait(Some(86_400)), MAX_WAIT_SECS);
    }
}
