//! `aida workflow list|show|put|delete` and `aida run WORKFLOW`: reusable
//! task templates, stored in AIDA or kept in a repository's
//! `.aida/workflows/NAME.toml`, and running one with parameters.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aida_gateway::api::{
    AgentSpec, DeliverSpec, PullRequestSpec, PutWorkflow, RunWorkflow, Workflow, WorkflowQuery,
};
use anyhow::Context;
use clap::{Args, Subcommand};

use super::Global;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// List the stored workflows, and a repository's own with --repo.
    List {
        #[command(flatten)]
        at: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one workflow: its parameters, steps and definition.
    Show {
        name: String,
        #[command(flatten)]
        at: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Store a workflow from a TOML file (`-` reads stdin); it replaces a
    /// stored one of the same name.
    Put {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored workflow.
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Which repository's workflows to include.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// A repository (a path or a remote URL): its `.aida/workflows/` too.
    #[arg(long, value_name = "URL|PATH")]
    pub repo: Option<String>,
    /// The branch to read them from.
    #[arg(long, requires = "repo")]
    pub base: Option<String>,
}

impl RepoArgs {
    fn query(&self) -> anyhow::Result<WorkflowQuery> {
        Ok(WorkflowQuery {
            repo: self.repo.as_deref().map(repo_arg).transpose()?,
            base: self.base.clone(),
        })
    }
}

/// `aida run WORKFLOW`: makes a task of a workflow.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The workflow's name.
    pub workflow: String,
    /// The repository the task works on: a remote URL or a path.
    #[arg(long, value_name = "URL|PATH")]
    pub repo: String,
    #[arg(long)]
    pub base: Option<String>,
    /// A parameter `NAME=VALUE`; repeat for several.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Instead of the workflow's agent: the `command` agent with this argv,
    /// after `--`.
    #[arg(last = true, value_name = "ARGV")]
    pub argv: Vec<String>,
    /// Push the result branch to the remote once merged.
    #[arg(long)]
    pub push: bool,
    /// Also open a pull (merge) request with this title ("" for the
    /// description's first line).
    #[arg(long, value_name = "TITLE")]
    pub pull_request: Option<String>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Follow the task until it ends (as `aida watch`).
    #[arg(long)]
    pub watch: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{raw:?} is not NAME=VALUE")),
    }
}

/// A remote goes as it is; a path is made absolute.
fn repo_arg(repo: &str) -> anyhow::Result<String> {
    if super::task::looks_like_remote(repo) {
        return Ok(repo.to_owned());
    }
    Ok(std::path::absolute(repo)
        .with_context(|| format!("resolving {repo}"))?
        .to_string_lossy()
        .into_owned())
}

impl WorkflowCommand {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.client()?;
        match self {
            WorkflowCommand::List { at, json } => {
                let workflows = client.list_workflows(&at.query()?).await?;
                if json {
                    output::print_json(&workflows)?;
                } else {
                    output::print(&table(&workflows))?;
                }
            }
            WorkflowCommand::Show { name, at, json } => {
                show(&client.get_workflow(&name, &at.query()?).await?, json)?
            }
            WorkflowCommand::Put { file, json } => {
                let source = read_source(&file)?;
                show(&client.put_workflow(&PutWorkflow { source }).await?, json)?
            }
            WorkflowCommand::Delete { name, json } => {
                show(&client.delete_workflow(&name).await?, json)?
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl RunArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.client()?;
        let deliver = (self.push || self.pull_request.is_some()).then(|| DeliverSpec {
            push: true,
            push_subtasks: false,
            pull_request: self.pull_request.as_ref().map(|title| PullRequestSpec {
                title: Some(title.clone()).filter(|t| !t.trim().is_empty()),
                draft: false,
                closes: Vec::new(),
            }),
        });
        let agent = (!self.argv.is_empty()).then(|| AgentSpec {
            kind: "command".into(),
            command: self.argv.clone(),
            ..Default::default()
        });
        let body = RunWorkflow {
            repo: repo_arg(&self.repo)?,
            base: self.base.clone(),
            params: self.params.iter().cloned().collect(),
            agent,
            deliver,
            priority: self.priority,
        };
        let task = client.run_workflow(&self.workflow, &body).await?;
        if self.json {
            output::print_json(&task)?;
        } else {
            output::print(&output::task(&task))?;
        }
        if self.watch {
            return super::watch::WatchArgs { id: task.id }.run(global).await;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn read_source(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the workflow from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn show(workflow: &Workflow, json: bool) -> anyhow::Result<()> {
    if json {
        return output::print_json(workflow);
    }
    let mut text = format!("workflow {} ({})\n", workflow.name, workflow.origin);
    if let Some(description) = &workflow.description {
        text.push_str(&format!("  {description}\n"));
    }
    for param in &workflow.params {
        text.push_str(&format!(
            "  param {}{}{}{}\n",
            param.name,
            if param.required { " (required)" } else { "" },
            param
                .default
                .as_ref()
                .map(|d| format!(" = {d:?}"))
                .unwrap_or_default(),
            param
                .description
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ));
    }
    text.push_str(&format!("  steps: {}\n", workflow.steps.join(" -> ")));
    output::print(&text)
}

fn table(workflows: &[Workflow]) -> String {
    if workflows.is_empty() {
        return "no workflows\n".into();
    }
    let width = workflows
        .iter()
        .map(|w| w.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut text = format!("{:width$}  {:28}  STEPS\n", "NAME", "ORIGIN");
    for w in workflows {
        text.push_str(&format!(
            "{:width$}  {:28}  {}\n",
            w.name,
            w.origin,
            w.steps.join(" -> ")
        ));
    }
    text
}
