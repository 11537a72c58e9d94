//! `aida mcp`: AIDA's main operations as Model Context Protocol tools,
//! served over stdio so that a coding assistant (Claude Code, Codex) can
//! hand work to AIDA. Every tool is one or a few calls of the gateway's
//! REST API through the CLI's [`Client`], with the CLI's credentials.
//!
//! A tool answers with JSON text (the markdown report as text); a refused
//! call is a tool error (`isError: true`) carrying the API's own message,
//! so the assistant can read it and act. Stdout carries protocol messages
//! only; logs go to stderr.

mod follow;
mod params;

use std::path::PathBuf;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Serialize;

use crate::client::Client;
use follow::Progress;
use params::{
    CreateTaskParams, DEFAULT_LIST_LIMIT, FollowUpParams, GetReportParams, ListTasksParams,
    ReportFormat, TaskIdParams, WaitTaskParams,
};

/// Told to the client at `initialize`: what AIDA is and how its tools fit
/// together.
const INSTRUCTIONS: &str = "\
AIDA runs AI coding agents (Claude Code, Codex, Gemini CLI, or any command) \
in parallel on a git repository, each subtask in its own git worktree on its \
own branch aida/<task-id>/<subtask>, then merges the succeeded branches into \
aida/<task-id>/result and writes a report. The repository's checkout and \
base branch are never touched.

Typical flow:
1. create_task with the repository, a description and an agent \
(e.g. {\"kind\": \"claude-code\"}); give subtasks (name, prompt, depends_on) \
to split the work, or let AIDA split the description. It returns the task \
with its id, status `queued`.
2. wait_task with the id until `ended` is true (call it again if the wait \
ran out). Statuses: planning, awaiting_approval, queued, running, merging, \
then succeeded, conflicted (some branch could not be merged), failed or \
cancelled.
3. get_report for what each subtask did, the diff stats, the result branch \
and any conflicts; inspect the result with git (e.g. \
`git log aida/<task-id>/result`).
4. follow_up to give one subtask's agent another instruction; cancel_task \
to stop a task. get_task and list_tasks show tasks at any time.";

/// The MCP server: the tools, and the client they call the API with.
#[derive(Clone)]
pub struct AidaMcp {
    client: Client,
    /// Where a relative repository path given to `create_task` is resolved:
    /// the directory the assistant started this server in, usually its
    /// project.
    cwd: PathBuf,
    /// Built once; `tools/list` and `tools/call` go through it.
    tool_router: ToolRouter<AidaMcp>,
}

/// A tool's answer: JSON text, or the error's message as a tool error.
type ToolResult = Result<String, String>;

fn json_text(value: &impl Serialize) -> ToolResult {
    serde_json::to_string_pretty(value).map_err(|err| format!("encoding the answer: {err}"))
}

/// The message of a failed call: the API's error with the CLI's hint, or
/// why the gateway could not be reached. Never holds a token: the client
/// sends it in a header, which no error message shows.
fn tool_error(err: anyhow::Error) -> String {
    format!("{err:#}")
}

#[tool_router]
impl AidaMcp {
    pub fn new(client: Client, cwd: PathBuf) -> AidaMcp {
        AidaMcp {
            client,
            cwd,
            tool_router: Self::tool_router(),
        }
    }

    /// Create a task: AIDA runs the agent on each subtask in parallel
    /// (dependencies first), each on its own branch, then merges them into
    /// aida/<task-id>/result. Returns the task (id, status, subtasks); follow
    /// it with wait_task.
    #[tool(annotations(
        title = "Create an AIDA task",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn create_task(&self, Parameters(params): Parameters<CreateTaskParams>) -> ToolResult {
        let body = params.into_request(&self.cwd).map_err(tool_error)?;
        let task = self.client.create_task(&body).await.map_err(tool_error)?;
        json_text(&task)
    }

    /// A task as it is now: status, each subtask's status, branch, commit,
    /// attempts, errors and diff stats, the result branch and conflicts.
    #[tool(annotations(title = "Show an AIDA task", read_only_hint = true))]
    async fn get_task(&self, Parameters(params): Parameters<TaskIdParams>) -> ToolResult {
        let task = self
            .client
            .get_task(&params.task_id)
            .await
            .map_err(tool_error)?;
        json_text(&task)
    }

    /// The latest tasks, newest first, one summary each (id, status, repo,
    /// description, subtask statuses, result branch); get_task has the rest.
    #[tool(annotations(title = "List AIDA tasks", read_only_hint = true))]
    async fn list_tasks(&self, Parameters(params): Parameters<ListTasksParams>) -> ToolResult {
        let limit = params.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        let tasks = self
            .client
            .list_tasks(Some(limit))
            .await
            .map_err(tool_error)?;
        let summaries: Vec<serde_json::Value> = tasks.iter().map(task_summary).collect();
        json_text(&serde_json::json!({ "tasks": summaries }))
    }

    /// Wait until a task ends (succeeded, conflicted, failed or cancelled)
    /// or timeout_secs pass (default 300, at most 1800). Returns `ended`,
    /// the task, and its status changes (not the agents' log lines). Sends
    /// progress notifications when the call carries a progress token.
    #[tool(annotations(title = "Wait for an AIDA task", read_only_hint = true))]
    async fn wait_task(
        &self,
        Parameters(params): Parameters<WaitTaskParams>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        let timeout = Duration::from_secs(params.timeout_secs());
        let mut progress = Progress::new(context.peer.clone(), context.meta.get_progress_token());
        let outcome = follow::wait(
            &self.client,
            &params.task_id,
            timeout,
            &context.ct,
            &mut progress,
        )
        .await
        .map_err(tool_error)?;
        json_text(&outcome)
    }

    /// A task's report: per subtask what was done, diff stats, usage and
    /// summary; the merge result and conflicts. Markdown by default, or the
    /// JSON document.
    #[tool(annotations(title = "Read an AIDA task's report", read_only_hint = true))]
    async fn get_report(&self, Parameters(params): Parameters<GetReportParams>) -> ToolResult {
        match params.format {
            ReportFormat::Markdown => self
                .client
                .report_markdown(&params.task_id)
                .await
                .map_err(tool_error),
            ReportFormat::Json => {
                let report = self
                    .client
                    .report_json(&params.task_id)
                    .await
                    .map_err(tool_error)?;
                json_text(&report)
            }
        }
    }

    /// Cancel a task: running agents are stopped, pending subtasks
    /// cancelled; what already succeeded is still merged. Returns the task.
    #[tool(annotations(
        title = "Cancel an AIDA task",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = true
    ))]
    async fn cancel_task(&self, Parameters(params): Parameters<TaskIdParams>) -> ToolResult {
        let task = self
            .client
            .cancel_task(&params.task_id)
            .await
            .map_err(tool_error)?;
        json_text(&task)
    }

    /// Give a subtask's agent another instruction (a follow-up turn on its
    /// branch), e.g. to fix what the report or a review found.
    #[tool(annotations(
        title = "Follow up on an AIDA subtask",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn follow_up(&self, Parameters(params): Parameters<FollowUpParams>) -> ToolResult {
        let answer = self
            .client
            .follow_up(
                &params.task_id,
                &params.subtask,
                &aida_gateway::api::FollowUp {
                    prompt: params.prompt,
                },
            )
            .await
            .map_err(tool_error)?;
        json_text(&answer)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AidaMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("aida", env!("CARGO_PKG_VERSION")).with_title("AIDA"),
            )
            .with_instructions(INSTRUCTIONS)
    }
}

/// A task in a few fields, for lists.
fn task_summary(task: &aida_gateway::api::Task) -> serde_json::Value {
    let description = task
        .description
        .as_deref()
        .map(|d| {
            let first = d.lines().next().unwrap_or_default();
            match first.char_indices().nth(120) {
                Some((cut, _)) => format!("{}...", &first[..cut]),
                None => first.to_owned(),
            }
        })
        .unwrap_or_default();
    let subtasks: serde_json::Map<String, serde_json::Value> = task
        .subtasks
        .iter()
        .map(|s| (s.name.clone(), s.status.label().into()))
        .collect();
    let mut summary = serde_json::json!({
        "id": task.id,
        "status": task.status.label(),
        "repo": task.repo,
        "description": description,
        "subtasks": subtasks,
        "created_at": task.created_at,
        "finished_at": task.finished_at,
    });
    if let Some(branch) = &task.result_branch {
        summary["result_branch"] = branch.clone().into();
    }
    summary
}

/// Serves the tools on stdin and stdout until the client closes stdin.
pub async fn serve_stdio(client: Client, cwd: PathBuf) -> anyhow::Result<()> {
    let service = AidaMcp::new(client, cwd)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|err| anyhow::anyhow!("starting the MCP session: {err}"))?;
    let reason = service.waiting().await?;
    tracing::debug!(?reason, "mcp session ended");
    Ok(())
}
