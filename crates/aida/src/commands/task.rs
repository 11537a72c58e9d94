//! `aida task ...`: create, show, list, cancel, report and events.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aida_gateway::api::{
    AgentSpec, Candidates, CreateTask, DeliverSpec, PlanSpec, PullRequestSpec, ResolveSpec,
    SubtaskSpec, VerifySpec, WorktreeSetup,
};
use anyhow::Context;
use clap::{Args, Subcommand};

use super::Global;
use crate::output;

#[derive(Debug, Clone, Subcommand)]
pub enum TaskCommand {
    /// Create a task from flags or from a JSON file.
    Create(Box<CreateArgs>),
    /// Show one task with its subtasks.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List tasks, newest first.
    List {
        /// At most this many tasks.
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Let a task whose plan waits for approval run.
    Approve {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task, or with --subtask one of its subtasks.
    Cancel {
        id: String,
        /// Cancel only this subtask (and what depends on it).
        #[arg(long)]
        subtask: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print a task's report (markdown, or the JSON document).
    Report {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print what a subtask changed (from where it started), or the task's
    /// result against its base: a unified diff, or the files as JSON.
    Diff {
        id: String,
        #[arg(long)]
        subtask: Option<String>,
        /// Only this file.
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print a task's stored events.
    Events {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run an ended subtask's agent again on its own branch with a new
    /// instruction; the task merges (and delivers) again.
    FollowUp {
        id: String,
        subtask: String,
        /// The new instruction; `-` reads it from stdin.
        #[arg(long, short = 'm', value_name = "TEXT", allow_hyphen_values = true)]
        prompt: String,
        #[arg(long)]
        json: bool,
    },
}

/// `aida task create`: either the flags below or `--file` with the REST body.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The REST request body as a JSON file; `-` reads stdin.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["repo", "base", "description", "priority", "subtasks", "depends", "paths", "agent", "options", "command", "argv", "plan", "max_attempts", "timeout_secs", "push", "pull_request", "setup", "verify", "merge_policy", "resolve"]
    )]
    pub file: Option<PathBuf>,
    /// The git repository: a remote URL (`https://...`, `ssh://...`,
    /// `git@host:path`, `file://...`), or a path as the orchestrator and
    /// workers see it (a relative path is made absolute).
    #[arg(long, value_name = "URL|PATH", required_unless_present = "file")]
    pub repo: Option<String>,
    /// Branch to start from; the repository's HEAD branch by default.
    #[arg(long, value_name = "BRANCH")]
    pub base: Option<String>,
    /// What to do; split into subtasks by the orchestrator when no
    /// --subtask is given.
    #[arg(long, value_name = "TEXT", required_unless_present = "file")]
    pub description: Option<String>,
    /// Higher runs first.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// A subtask and its prompt; repeat for several.
    #[arg(long = "subtask", value_name = "NAME=PROMPT", value_parser = parse_pair)]
    pub subtasks: Vec<(String, String)>,
    /// Subtask NAME starts from DEP's work; repeat for several.
    #[arg(long = "depends", value_name = "NAME=DEP", value_parser = parse_pair)]
    pub depends: Vec<(String, String)>,
    /// Subtask NAME works only in directory DIR (its worktree is a sparse
    /// checkout of the directories given); repeat for several.
    #[arg(long = "paths", value_name = "NAME=DIR", value_parser = parse_pair)]
    pub paths: Vec<(String, String)>,
    /// Best of N: run subtask NAME as N candidates (2 to 8); the passing
    /// one with the smallest diff wins.
    #[arg(long = "candidates", value_name = "NAME=N", value_parser = parse_pair)]
    pub candidates: Vec<(String, String)>,
    /// The agent kind: command, claude-code, gemini-cli, codex-cli.
    #[arg(long, value_name = "KIND", default_value = "command")]
    pub agent: String,
    /// An agent option (model, permission_mode, ...); repeat for several.
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub options: Vec<(String, String)>,
    /// The command agent's program; its arguments follow as --arg.
    #[arg(long, value_name = "PROG", conflicts_with = "argv")]
    pub command: Option<String>,
    /// One argument of --command; repeat for several.
    #[arg(
        long = "arg",
        value_name = "ARG",
        requires = "command",
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
    /// The command agent's program and arguments, after `--`.
    #[arg(last = true, value_name = "PROG ARGS")]
    pub argv: Vec<String>,
    /// Attempts each subtask may take (default 3).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Wall-clock limit of the whole task, in seconds.
    #[arg(long)]
    pub timeout_secs: Option<u32>,
    /// Have the agent split the description into subtasks (instead of
    /// --subtask).
    #[arg(long, conflicts_with = "subtasks")]
    pub plan: bool,
    /// With --plan: `manual` holds the plan until `aida task approve`.
    #[arg(long, requires = "plan", value_parser = ["auto", "manual"])]
    pub approve: Option<String>,
    /// Push the result branch to the remote once merged.
    #[arg(long)]
    pub push: bool,
    /// Also open a pull (merge) request with this title ("" for the
    /// description's first line).
    #[arg(long, value_name = "TITLE")]
    pub pull_request: Option<String>,
    /// With --pull-request: open it as a draft.
    #[arg(long, requires = "pull_request")]
    pub draft: bool,
    /// With --pull-request: an issue number it closes; repeat for several.
    #[arg(long, value_name = "N", requires = "pull_request")]
    pub closes: Vec<u32>,
    /// A set-up command run in each worktree before the agent, its argv
    /// one word per --setup (over the repository's .aida/config.toml).
    #[arg(long, value_name = "WORD", allow_hyphen_values = true)]
    pub setup: Vec<String>,
    /// Ports each run gets (AIDA_PORT_0 ...).
    #[arg(long, value_name = "N")]
    pub ports: Option<u32>,
    /// A command that checks the work before the task may succeed, its argv
    /// one word per --verify (`--verify cargo --verify test`).
    #[arg(long, value_name = "WORD", allow_hyphen_values = true)]
    pub verify: Vec<String>,
    /// With --verify: what is checked.
    #[arg(long, requires = "verify", value_parser = ["result", "subtasks", "both"])]
    pub verify_on: Option<String>,
    /// With --verify: when the merged result fails, `fail` the task or
    /// `exclude` the subtask that broke it.
    #[arg(long, requires = "verify", value_parser = ["fail", "exclude"])]
    pub verify_on_failure: Option<String>,
    /// `rerun`: a subtask whose branch would conflict with one that already
    /// succeeded runs again on top of it; `merge` (default): they meet at
    /// the merge.
    #[arg(long, value_parser = ["merge", "rerun"])]
    pub merge_policy: Option<String>,
    /// Have the task's agent resolve textual conflicts at the merge.
    #[arg(long)]
    pub resolve: bool,
    /// With --resolve: runs per conflicting subtask (2 by default).
    #[arg(long, value_name = "N", requires = "resolve")]
    pub resolve_attempts: Option<u32>,
    /// Print the created task as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `--subtask NAME=...` that flag `--FLAG NAME=VALUE` refers to.
fn named<'a>(
    subtasks: &'a mut [SubtaskSpec],
    flag: &str,
    name: &str,
    value: &str,
) -> anyhow::Result<&'a mut SubtaskSpec> {
    subtasks
        .iter_mut()
        .find(|s| s.name == name)
        .with_context(|| format!("--{flag} {name}={value}: there is no --subtask {name}=..."))
}

fn parse_pair(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got {raw:?}")),
    }
}

impl CreateArgs {
    /// The request body: read from `--file`, or built from the flags.
    pub fn request(&self) -> anyhow::Result<CreateTask> {
        match &self.file {
            Some(path) => read_body(path),
            None => self.request_from_flags(),
        }
    }

    /// Builds the body from the flags. Only syntax is checked here; the
    /// orchestrator validates names, dependencies and the repository.
    pub fn request_from_flags(&self) -> anyhow::Result<CreateTask> {
        let repo = self.repo.as_deref().context("--repo is required")?;
        let description = self
            .description
            .clone()
            .context("--description is required")?;
        // A remote goes as it is; a path is made absolute.
        let repo = if looks_like_remote(repo) {
            repo.to_owned()
        } else {
            std::path::absolute(repo)
                .with_context(|| format!("resolving {repo}"))?
                .to_string_lossy()
                .into_owned()
        };

        let command: Vec<String> = match &self.command {
            Some(program) => std::iter::once(program.clone())
                .chain(self.args.iter().cloned())
                .collect(),
            None => self.argv.clone(),
        };
        if self.agent == "command" && command.is_empty() {
            anyhow::bail!(
                "the command agent needs its program: --command PROG [--arg ARG]... or -- PROG ARGS..."
            );
        }
        let agent = AgentSpec {
            kind: self.agent.clone(),
            command,
            options: self.options.iter().cloned().collect::<BTreeMap<_, _>>(),
            ..Default::default()
        };

        let mut subtasks: Vec<SubtaskSpec> = self
            .subtasks
            .iter()
            .map(|(name, prompt)| SubtaskSpec {
                fallback: None,
                name: name.clone(),
                prompt: prompt.clone(),
                depends_on: Vec::new(),
                agent: None,
                candidates: None,
                judge: None,
                paths: Vec::new(),
            })
            .collect();
        for (name, raw) in &self.candidates {
            let n: u32 = raw
                .parse()
                .map_err(|_| anyhow::anyhow!("--candidates {name}={raw}: N is a number"))?;
            named(&mut subtasks, "candidates", name, raw)?.candidates = Some(Candidates::Count(n));
        }
        for (name, dep) in &self.depends {
            named(&mut subtasks, "depends", name, dep)?
                .depends_on
                .push(dep.clone());
        }
        for (name, dir) in &self.paths {
            named(&mut subtasks, "paths", name, dir)?
                .paths
                .push(dir.clone());
        }

        let deliver = (self.push || self.pull_request.is_some()).then(|| DeliverSpec {
            push: true,
            push_subtasks: false,
            pull_request: self.pull_request.as_ref().map(|title| PullRequestSpec {
                title: Some(title.clone()).filter(|t| !t.trim().is_empty()),
                draft: self.draft,
                closes: self.closes.clone(),
            }),
        });
        let verify = (!self.verify.is_empty()).then(|| VerifySpec {
            command: self.verify.clone(),
            timeout_secs: None,
            on: self.verify_on.clone(),
            on_failure: self.verify_on_failure.clone(),
        });
        let setup = (!self.setup.is_empty() || self.ports.is_some()).then(|| WorktreeSetup {
            command: self.setup.clone(),
            ports: self.ports,
            ..Default::default()
        });
        Ok(CreateTask {
            repo,
            base: self.base.clone(),
            description,
            agent: Some(agent),
            subtasks,
            priority: self.priority.unwrap_or(0),
            max_attempts: self.max_attempts,
            timeout_secs: self.timeout_secs,
            plan: self.plan.then(|| PlanSpec {
                agent: None,
                approve: self.approve.clone(),
            }),
            deliver,
            setup,
            verify,
            merge_policy: self.merge_policy.clone(),
            resolve: self.resolve.then_some(ResolveSpec {
                agent: None,
                max_attempts: self.resolve_attempts,
            }),
        })
    }
}

/// Whether `repo` names a remote rather than a path: a URL scheme, or
/// git's `user@host:path` form.
pub(crate) fn looks_like_remote(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    match repo.split_once(':') {
        Some((before, _)) => before.contains('@') && !before.contains('/'),
        None => false,
    }
}

fn read_body(path: &Path) -> anyhow::Result<CreateTask> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the task from stdin")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not a task request", path.display()))
}

impl TaskCommand {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.client()?;
        match self {
            TaskCommand::Create(args) => {
                let task = client.create_task(&args.request()?).await?;
                show(&task, args.json)?;
            }
            TaskCommand::Show { id, json } => show(&client.get_task(&id).await?, json)?,
            TaskCommand::List { limit, json } => {
                let tasks = client.list_tasks(limit).await?;
                if json {
                    output::print_json(&tasks)?;
                } else {
                    output::print(&output::task_table(&tasks))?;
                }
            }
            TaskCommand::Approve { id, json } => show(&client.approve_task(&id).await?, json)?,
            TaskCommand::Cancel { id, subtask, json } => {
                let task = match subtask {
                    Some(name) => client.cancel_subtask(&id, &name).await?,
                    None => client.cancel_task(&id).await?,
                };
                show(&task, json)?
            }
            TaskCommand::Report { id, json } => {
                if json {
                    output::print_json(&client.report_json(&id).await?)?;
                } else {
                    let mut markdown = client.report_markdown(&id).await?;
                    if !markdown.ends_with('\n') {
                        markdown.push('\n');
                    }
                    output::print(&markdown)?;
                }
            }
            TaskCommand::Diff {
                id,
                subtask,
                path,
                json,
            } => {
                let (subtask, path) = (subtask.as_deref(), path.as_deref());
                if json {
                    output::print_json(&client.diff_json(&id, subtask, path).await?)?;
                } else {
                    output::print(&client.diff_text(&id, subtask, path).await?)?;
                }
            }
            TaskCommand::FollowUp {
                id,
                subtask,
                prompt,
                json,
            } => {
                let prompt = if prompt == "-" {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("reading the prompt from stdin")?;
                    text
                } else {
                    prompt
                };
                let body = aida_gateway::api::FollowUp { prompt };
                show(&client.follow_up(&id, &subtask, &body).await?, json)?
            }
            TaskCommand::Events { id, json } => {
                let events = client.events(&id).await?;
                if json {
                    output::print_json(&events)?;
                } else {
                    let lines: String = events.iter().map(output::event_line).collect();
                    output::print(&lines)?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn show(task: &aida_gateway::api::Task, json: bool) -> anyhow::Result<()> {
    if json {
        output::print_json(task)
    } else {
        output::print(&output::task(task))
    }
}
