//! Workflows as the engine serves them: stored ones (`PutWorkflow`) and a
//! repository's own (`.aida/workflows/NAME.toml` at the base commit, which
//! win over a stored one of the same name when a repository is given), and
//! running one: its steps become an ordinary task. The format is in
//! [`definition`].

pub mod definition;

use std::collections::HashMap;
use std::sync::Arc;

use aida_core::proto::common::{Actor, Task};
use aida_core::proto::orchestrator::{CreateTaskRequest, RunWorkflowRequest, Workflow};
use aida_core::time::to_proto;
use chrono::Utc;

pub use definition::{AgentDef, Definition, REPO_DIR, check_name};

use crate::engine::Engine;
use crate::error::{OrchestratorError, Result};
use crate::remotes::RemoteUrl;
use crate::store::WorkflowRow;

/// A workflow found for a name, with where it came from.
struct Found {
    definition: Definition,
    summary: Workflow,
}

impl Engine {
    /// Stores (or replaces) a workflow; its `name` names it.
    pub async fn put_workflow(&self, source: &str, actor: &Actor) -> Result<Workflow> {
        let definition = Definition::parse(source, "the workflow")?;
        let now = Utc::now();
        let row = WorkflowRow {
            name: definition.name.clone(),
            description: definition.description.clone(),
            source: source.to_owned(),
            updated_at: now,
            updated_by: actor.username.clone(),
        };
        self.store.put_workflow(&row).await?;
        Ok(stored_summary(&definition, &row))
    }

    /// Stored workflows, and the repository's when one is named (they
    /// come first, and hide stored ones of the same name).
    pub async fn list_workflows(&self, repo: &str, base: &str) -> Result<Vec<Workflow>> {
        let mut workflows = if repo.trim().is_empty() {
            Vec::new()
        } else {
            self.repository_workflows(repo, base).await?
        };
        for row in self.store.workflows().await? {
            if workflows.iter().any(|w| w.name == row.name) {
                continue;
            }
            match Definition::parse(&row.source, "stored") {
                Ok(definition) => workflows.push(stored_summary(&definition, &row)),
                Err(e) => {
                    tracing::warn!(workflow = %row.name, error = %e, "a stored workflow no longer parses")
                }
            }
        }
        Ok(workflows)
    }

    pub async fn get_workflow(&self, name: &str, repo: &str, base: &str) -> Result<Workflow> {
        Ok(self.find_workflow(name, repo, base).await?.summary)
    }

    pub async fn delete_workflow(&self, name: &str) -> Result<Workflow> {
        check_name(name)?;
        let row = self.store.delete_workflow(name).await?.ok_or_else(|| {
            OrchestratorError::NotFound(format!("there is no stored workflow {name:?}"))
        })?;
        let definition = Definition::parse(&row.source, "stored")?;
        Ok(stored_summary(&definition, &row))
    }

    /// Makes a task of workflow `req.name` with its parameters.
    pub async fn run_workflow(self: &Arc<Self>, req: RunWorkflowRequest) -> Result<Task> {
        let found = self.find_workflow(&req.name, &req.repo, &req.base).await?;
        let params: HashMap<String, String> = req.params.into_iter().collect();
        let expanded = found.definition.expand(&params)?;
        let agent = req
            .agent
            .filter(|a| !a.kind.trim().is_empty())
            .or(expanded.agent);
        self.create_task(CreateTaskRequest {
            repo: req.repo,
            base: req.base,
            description: expanded.description,
            agent,
            subtasks: expanded.subtasks,
            priority: req.priority,
            plan: None,
            max_attempts: expanded.max_attempts,
            timeout_secs: 0,
            idempotency_key: req.idempotency_key,
            actor: req.actor,
            webhook_delivery: String::new(),
            deliver: req.deliver,
            setup: None,
            origin: None,
            workflow: found.summary.name,
            verify: None,
            merge_policy: String::new(),
            resolve: None,
        })
        .await
    }

    async fn find_workflow(&self, name: &str, repo: &str, base: &str) -> Result<Found> {
        check_name(name)?;
        if !repo.trim().is_empty() {
            let file = format!("{REPO_DIR}/{name}.toml");
            if let Some(source) = self.repository_file(repo, base, &file).await? {
                let definition = Definition::parse(&source, &file)?;
                if definition.name != name {
                    return Err(OrchestratorError::invalid(format!(
                        "{file} names itself {:?}: a workflow file is named after its workflow",
                        definition.name
                    )));
                }
                let summary = definition.summary(&source, &file);
                return Ok(Found {
                    definition,
                    summary,
                });
            }
        }
        let row = self.store.workflow(name).await?.ok_or_else(|| {
            OrchestratorError::NotFound(if repo.trim().is_empty() {
                format!("there is no workflow {name:?}")
            } else {
                format!("there is no workflow {name:?}, stored or in {REPO_DIR}/ of the repository")
            })
        })?;
        let definition = Definition::parse(&row.source, "stored")?;
        let summary = stored_summary(&definition, &row);
        Ok(Found {
            definition,
            summary,
        })
    }

    /// The repository's workflows at `base`.
    async fn repository_workflows(&self, repo: &str, base: &str) -> Result<Vec<Workflow>> {
        let (path, commit) = self.resolve_for_reading(repo, base).await?;
        tokio::task::spawn_blocking(move || -> Result<Vec<Workflow>> {
            let files = read_dir_at(&path, &commit, REPO_DIR)?;
            let mut workflows = Vec::new();
            for (file, source) in files {
                if !file.ends_with(".toml") {
                    continue;
                }
                let origin = format!("{REPO_DIR}/{file}");
                match Definition::parse(&source, &origin) {
                    Ok(definition) => workflows.push(definition.summary(&source, &origin)),
                    Err(e) => tracing::warn!(file = %origin, error = %e, "skipping a workflow that does not parse"),
                }
            }
            Ok(workflows)
        })
        .await
        .map_err(|e| OrchestratorError::Unexpected(anyhow::anyhow!("reading workflows: {e}")))?
    }

    /// One file of the repository at `base`, if it is there.
    async fn repository_file(&self, repo: &str, base: &str, file: &str) -> Result<Option<String>> {
        let (path, commit) = self.resolve_for_reading(repo, base).await?;
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || read_file_at(&path, &commit, &file))
            .await
            .map_err(|e| OrchestratorError::Unexpected(anyhow::anyhow!("reading {e}")))?
    }

    /// The repository (a local path under the roots, or an allowed
    /// remote's fresh mirror) and its `base` commit.
    async fn resolve_for_reading(&self, repo: &str, base: &str) -> Result<(String, String)> {
        let (repo, base) = (repo.to_owned(), base.to_owned());
        if RemoteUrl::looks_like_remote(&repo) {
            let remotes = self.remotes.as_ref().ok_or_else(|| {
                OrchestratorError::invalid("this AIDA takes no remotes (AIDA_ALLOWED_REMOTES)")
            })?;
            let url = remotes.check(&repo)?;
            let (path, _) = remotes.mirror(&url).await?;
            let remote = url.to_string();
            return tokio::task::spawn_blocking(move || {
                crate::planning::resolve_mirror(&path, &remote, &base)
                    .map(|(path, _, commit)| (path, commit))
            })
            .await
            .map_err(|e| OrchestratorError::Unexpected(anyhow::anyhow!("resolving: {e}")))?;
        }
        let roots = self.settings.policy.repo_roots.clone();
        tokio::task::spawn_blocking(move || {
            crate::planning::resolve_repo(&repo, &base, &roots)
                .map(|(path, _, commit)| (path, commit))
        })
        .await
        .map_err(|e| OrchestratorError::Unexpected(anyhow::anyhow!("resolving: {e}")))?
    }
}

fn stored_summary(definition: &Definition, row: &WorkflowRow) -> Workflow {
    Workflow {
        updated_at: Some(to_proto(row.updated_at)),
        updated_by: row.updated_by.clone(),
        ..definition.summary(&row.source, "stored")
    }
}

/// The blob at `path` in `commit`'s tree, as UTF-8; `None` when absent.
fn read_file_at(repo: &str, commit: &str, path: &str) -> Result<Option<String>> {
    let git = open(repo)?;
    let tree = tree_of(&git, commit)?;
    let Ok(entry) = tree.get_path(std::path::Path::new(path)) else {
        return Ok(None);
    };
    let Ok(blob) = git.find_blob(entry.id()) else {
        return Ok(None);
    };
    String::from_utf8(blob.content().to_vec())
        .map(Some)
        .map_err(|_| OrchestratorError::invalid(format!("{path} is not UTF-8")))
}

/// The files directly in directory `dir` of `commit`'s tree, with their
/// text (files that are not UTF-8 are left out).
fn read_dir_at(repo: &str, commit: &str, dir: &str) -> Result<Vec<(String, String)>> {
    let git = open(repo)?;
    let tree = tree_of(&git, commit)?;
    let Ok(entry) = tree.get_path(std::path::Path::new(dir)) else {
        return Ok(Vec::new());
    };
    let Ok(dir_tree) = git.find_tree(entry.id()) else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for entry in dir_tree.iter() {
        let (Some(name), Ok(blob)) = (entry.name(), git.find_blob(entry.id())) else {
            continue;
        };
        if let Ok(text) = std::str::from_utf8(blob.content()) {
            files.push((name.to_owned(), text.to_owned()));
        }
    }
    files.sort();
    Ok(files)
}

fn open(repo: &str) -> Result<git2::Repository> {
    git2::Repository::open(repo).map_err(|e| {
        OrchestratorError::Unexpected(anyhow::anyhow!("cannot open {repo}: {}", e.message()))
    })
}

fn tree_of<'r>(git: &'r git2::Repository, commit: &str) -> Result<git2::Tree<'r>> {
    git2::Oid::from_str(commit)
        .and_then(|oid| git.find_commit(oid))
        .and_then(|c| c.tree())
        .map_err(|e| {
            OrchestratorError::Unexpected(anyhow::anyhow!("reading {commit}: {}", e.message()))
        })
}
