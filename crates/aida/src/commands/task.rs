//! `aida task ...`: create, show, list, cancel, report and events.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aida_gateway::api::{AgentSpec, CreateTask, PlanSpec, SubtaskSpec};
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
    /// Print a task's stored events.
    Events {
        id: String,
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
        conflicts_with_all = ["repo", "base", "description", "priority", "subtasks", "depends", "agent", "options", "command", "argv", "plan", "max_attempts", "timeout_secs"]
    )]
    pub file: Option<PathBuf>,
    /// The git repository, as the orchestrator and workers see it; a
    /// relative path is made absolute.
    #[arg(long, value_name = "PATH", required_unless_present = "file")]
    pub repo: Option<PathBuf>,
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
    /// Print the created task as JSON.
    #[arg(long)]
    pub json: bool,
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
        let repo =
            std::path::absolute(repo).with_context(|| format!("resolving {}", repo.display()))?;

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
                name: name.clone(),
                prompt: prompt.clone(),
                depends_on: Vec::new(),
                agent: None,
            })
            .collect();
        for (name, dep) in &self.depends {
            let subtask = subtasks
                .iter_mut()
                .find(|s| &s.name == name)
                .with_context(|| {
                    format!("--depends {name}={dep}: there is no --subtask {name}=...")
                })?;
            subtask.depends_on.push(dep.clone());
        }

        Ok(CreateTask {
            repo: repo.to_string_lossy().into_owned(),
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
        })
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
