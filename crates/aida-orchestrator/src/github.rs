//! Work that starts on GitHub: an issue labeled with the configured label
//! (or commented on with `/aida` by someone with write access) on a mapped
//! repository becomes a task planned by an agent from the issue's title and
//! body, delivered as a pull request that closes the issue; AIDA comments on
//! the issue with the task and, at the end, the outcome. A review of that
//! pull request can be sent back to the agent as a follow-up.
//!
//! The gateway verifies the webhook's signature; this module decides what an
//! event means. Which repositories take part, and how, is the operator's
//! file `AIDA_GITHUB_CONFIG` (TOML):
//!
//! ```toml
//! [[repository]]
//! name = "acme/shop"                           # repository.full_name in the events
//! remote = "https://github.com/acme/shop.git"  # allowed by AIDA_ALLOWED_REMOTES
//! base = "main"                                # optional: the remote's default
//! label = "aida"                               # the default
//! command = "/aida"                            # the default
//! planner = { kind = "claude-code" }           # plans the task, runs its subtasks
//! approve = "auto"                             # or "manual"
//! draft = false
//! review_follow_ups = false
//! ```

use std::path::Path;
use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::proto::common::{
    Actor, AgentSpec, DeliverSpec, PullRequestSpec, Task, TaskOrigin, TaskStatus,
};
use aida_core::proto::orchestrator::{CreateTaskRequest, GitHubEventOutcome, PlanSpec};
use aida_core::status::StatusLabel;
use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{Engine, task_status_of};
use crate::error::{OrchestratorError, Result};
use crate::remotes::RemoteUrl;
use crate::store::NewEvent;
use crate::workflows::AgentDef;

/// Who may start work with a comment: people with write access.
const TRUSTED: &[&str] = &["OWNER", "MEMBER", "COLLABORATOR"];
/// How much of an issue's body goes into the task.
const MAX_ISSUE_BODY: usize = 32 * 1024;

/// The operator's mapping of GitHub repositories to AIDA.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    #[serde(default, rename = "repository")]
    pub repositories: Vec<RepositoryConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `owner/name`, as the events' `repository.full_name`.
    pub name: String,
    /// The remote tasks work on.
    pub remote: String,
    #[serde(default)]
    pub base: String,
    #[serde(default = "default_label")]
    pub label: String,
    #[serde(default = "default_command")]
    pub command: String,
    /// Plans each task, and runs its subtasks.
    pub planner: AgentDef,
    #[serde(default = "default_approve")]
    pub approve: String,
    #[serde(default)]
    pub draft: bool,
    /// A review of AIDA's pull request becomes a follow-up.
    #[serde(default)]
    pub review_follow_ups: bool,
}

fn default_label() -> String {
    "aida".into()
}

fn default_command() -> String {
    "/aida".into()
}

fn default_approve() -> String {
    "auto".into()
}

impl GitHubConfig {
    /// Reads and checks `AIDA_GITHUB_CONFIG`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading AIDA_GITHUB_CONFIG {}", path.display()))?;
        let config: GitHubConfig = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("AIDA_GITHUB_CONFIG {}: {}", path.display(), e.message())
        })?;
        for repo in &config.repositories {
            anyhow::ensure!(
                repo.name.split('/').count() == 2 && !repo.name.contains(char::is_whitespace),
                "AIDA_GITHUB_CONFIG: repository name {:?} is not owner/name",
                repo.name
            );
            RemoteUrl::parse(&repo.remote).map_err(|e| {
                anyhow::anyhow!("AIDA_GITHUB_CONFIG: repository {}: {e}", repo.name)
            })?;
            anyhow::ensure!(
                matches!(repo.approve.as_str(), "auto" | "manual"),
                "AIDA_GITHUB_CONFIG: repository {}: approve is \"auto\" or \"manual\"",
                repo.name
            );
            anyhow::ensure!(
                !repo.command.trim().is_empty() && !repo.label.trim().is_empty(),
                "AIDA_GITHUB_CONFIG: repository {}: label and command must not be empty",
                repo.name
            );
        }
        Ok(config)
    }

    fn repository(&self, full_name: &str) -> Option<&RepositoryConfig> {
        self.repositories
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(full_name))
    }
}

fn ignored(message: impl Into<String>) -> GitHubEventOutcome {
    GitHubEventOutcome {
        outcome: "ignored".into(),
        task_id: String::new(),
        message: message.into(),
    }
}

impl Engine {
    /// Acts on one verified GitHub delivery, at most once per delivery id:
    /// a second delivery is refused with `AlreadyExists`. A task is created
    /// in the same transaction that records the delivery.
    pub async fn handle_github_event(
        self: &Arc<Self>,
        event: &str,
        delivery: &str,
        payload: &[u8],
        actor: Actor,
    ) -> Result<GitHubEventOutcome> {
        let payload: Value = serde_json::from_slice(payload).map_err(|e| {
            OrchestratorError::invalid(format!("the GitHub payload is not JSON: {e}"))
        })?;
        let action = payload["action"].as_str().unwrap_or_default();
        let key = format!("github:{delivery}");
        let may_create = matches!(
            (event, action),
            ("issues", "labeled") | ("issue_comment", "created")
        );
        if !may_create {
            self.store
                .claim_webhook_delivery(&key, event, chrono::Utc::now())
                .await?;
        }
        let outcome = self
            .github_event(event, action, &key, &payload, actor)
            .await?;
        if may_create && outcome.outcome != "task_created" {
            self.store
                .claim_webhook_delivery(&key, event, chrono::Utc::now())
                .await?;
        }
        tracing::info!(event, delivery, outcome = %outcome.outcome, message = %outcome.message, "github event");
        Ok(outcome)
    }

    async fn github_event(
        self: &Arc<Self>,
        event: &str,
        action: &str,
        key: &str,
        payload: &Value,
        actor: Actor,
    ) -> Result<GitHubEventOutcome> {
        if event == "ping" {
            return Ok(GitHubEventOutcome {
                outcome: "pong".into(),
                ..Default::default()
            });
        }
        let Some(config) = self.remotes.as_ref().and_then(|r| r.github.as_ref()) else {
            return Ok(ignored(
                "no GitHub repository is mapped to AIDA (AIDA_GITHUB_CONFIG)",
            ));
        };
        let full_name = payload["repository"]["full_name"]
            .as_str()
            .unwrap_or_default();
        let Some(repo) = config.repository(full_name) else {
            return Ok(ignored(format!(
                "repository {full_name:?} is not mapped to AIDA (AIDA_GITHUB_CONFIG)"
            )));
        };
        match (event, action) {
            ("issues", "labeled") => {
                let label = payload["label"]["name"].as_str().unwrap_or_default();
                if label != repo.label {
                    return Ok(ignored(format!(
                        "label {label:?} is not AIDA's ({:?})",
                        repo.label
                    )));
                }
                self.task_from_issue(repo, &payload["issue"], key, actor)
                    .await
            }
            ("issue_comment", "created") => {
                let body = payload["comment"]["body"].as_str().unwrap_or_default();
                if !starts_with_command(body, &repo.command) {
                    return Ok(ignored(format!(
                        "the comment does not start with {:?}",
                        repo.command
                    )));
                }
                if !payload["issue"]["pull_request"].is_null() {
                    return Ok(ignored(
                        "comments on pull requests do not start tasks: review the pull request instead",
                    ));
                }
                let association = payload["comment"]["author_association"]
                    .as_str()
                    .unwrap_or_default();
                if !TRUSTED.contains(&association) {
                    return Ok(ignored(format!(
                        "only people with write access may start AIDA (the commenter is {association:?})"
                    )));
                }
                self.task_from_issue(repo, &payload["issue"], key, actor)
                    .await
            }
            ("pull_request_review", "submitted") => self.follow_up_from_review(repo, payload).await,
            _ => Ok(ignored(format!(
                "AIDA takes no action on GitHub {event:?} events with action {action:?}"
            ))),
        }
    }

    async fn task_from_issue(
        self: &Arc<Self>,
        repo: &RepositoryConfig,
        issue: &Value,
        delivery_key: &str,
        actor: Actor,
    ) -> Result<GitHubEventOutcome> {
        let number = issue["number"].as_u64().unwrap_or_default() as u32;
        if number == 0 {
            return Err(OrchestratorError::invalid(
                "the event names no issue number",
            ));
        }
        let title = issue["title"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let body: String = issue["body"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(MAX_ISSUE_BODY)
            .collect();
        let url = issue["html_url"].as_str().unwrap_or_default().to_owned();
        let description = format!(
            "{title}\n\n{body}\n\n(GitHub issue {}#{number}{})",
            repo.name,
            if url.is_empty() {
                String::new()
            } else {
                format!(": {url}")
            }
        );
        let planner: AgentSpec = repo.planner.clone().into();
        let request = CreateTaskRequest {
            repo: repo.remote.clone(),
            base: repo.base.clone(),
            description,
            agent: None,
            subtasks: Vec::new(),
            priority: 0,
            plan: Some(PlanSpec {
                agent: Some(planner),
                approve: repo.approve.clone(),
            }),
            max_attempts: 0,
            timeout_secs: 0,
            idempotency_key: String::new(),
            actor: Some(actor),
            webhook_delivery: delivery_key.to_owned(),
            deliver: Some(DeliverSpec {
                push: true,
                push_subtasks: false,
                pull_request: Some(PullRequestSpec {
                    title: title.chars().take(200).collect(),
                    draft: repo.draft,
                    closes: vec![number],
                }),
            }),
            setup: None,
            origin: Some(TaskOrigin {
                kind: "github_issue".into(),
                repository: repo.name.clone(),
                number,
                url,
                title,
            }),
            workflow: String::new(),
            verify: None,
            merge_policy: String::new(),
            resolve: None,
        };
        let task = self.create_task(request).await?;
        tracing::info!(task_id = %task.id, repository = %repo.name, issue = number, "task started from an issue");
        let text = format!(
            "AIDA is on it: task `{}` ({}). An agent plans the work from this issue; a pull request that closes it follows.",
            task.id,
            self.task_link(&task.id)
        );
        self.spawn_issue_comment(task.id.clone(), text);
        Ok(GitHubEventOutcome {
            outcome: "task_created".into(),
            task_id: task.id,
            message: format!("issue #{number} started a task"),
        })
    }

    async fn follow_up_from_review(
        self: &Arc<Self>,
        repo: &RepositoryConfig,
        payload: &Value,
    ) -> Result<GitHubEventOutcome> {
        if !repo.review_follow_ups {
            return Ok(ignored(format!(
                "review follow-ups are off for {} (review_follow_ups)",
                repo.name
            )));
        }
        let review = &payload["review"];
        let association = review["author_association"].as_str().unwrap_or_default();
        if !TRUSTED.contains(&association) {
            return Ok(ignored(format!(
                "only reviews by people with write access go to the agent (the reviewer is {association:?})"
            )));
        }
        let body = review["body"].as_str().unwrap_or_default().trim();
        if body.is_empty() || review["state"].as_str() == Some("approved") {
            return Ok(ignored("an approval or an empty review asks for nothing"));
        }
        let head = payload["pull_request"]["head"]["ref"]
            .as_str()
            .unwrap_or_default();
        let Some(task_id) = head
            .strip_prefix("aida/")
            .and_then(|rest| rest.strip_suffix("/result"))
        else {
            return Ok(ignored(format!(
                "pull request branch {head:?} is not one of AIDA's"
            )));
        };
        let task = match self.task(task_id).await {
            Ok(task) => task,
            Err(OrchestratorError::NotFound(_)) => {
                return Ok(ignored(format!("AIDA has no task {task_id}")));
            }
            Err(e) => return Err(e),
        };
        // `/aida <subtask> ...` names the subtask; a task of one subtask
        // needs no name.
        let (subtask, instruction) = match body
            .strip_prefix(repo.command.as_str())
            .map(str::trim_start)
            .and_then(|rest| rest.split_once(char::is_whitespace))
        {
            Some((name, rest)) if task.subtasks.iter().any(|s| s.name == name) => {
                (name.to_owned(), rest.trim().to_owned())
            }
            _ if task.subtasks.len() == 1 => (task.subtasks[0].name.clone(), body.to_owned()),
            _ => {
                return Ok(ignored(format!(
                    "name the subtask the review is for: \"{} <subtask> ...\" (one of: {})",
                    repo.command,
                    task.subtasks
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let reviewer = review["user"]["login"].as_str().unwrap_or("a reviewer");
        match self
            .follow_up(
                &task.id,
                &subtask,
                &instruction,
                &format!("github:{reviewer}"),
            )
            .await
        {
            Ok(_) => {}
            Err(
                OrchestratorError::FailedPrecondition(why)
                | OrchestratorError::InvalidArgument(why),
            ) => {
                return Ok(ignored(why));
            }
            Err(e) => return Err(e),
        }
        Ok(GitHubEventOutcome {
            outcome: "follow_up".into(),
            task_id: task.id,
            message: format!("the review goes to subtask {subtask:?}"),
        })
    }

    fn task_link(&self, task_id: &str) -> String {
        format!("{}/api/tasks/{task_id}", self.settings.public_api_url)
    }

    /// Comments on the issue that started `task_id`, in the background;
    /// recorded as an event either way.
    pub(crate) fn spawn_issue_comment(self: &Arc<Self>, task_id: String, text: String) {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = engine.comment_on_origin(&task_id, &text).await {
                tracing::error!(task_id, error = ?e, "cannot record the issue comment");
            }
        });
    }

    /// Tells the issue that started `task_id` how it ended.
    pub(crate) fn spawn_issue_outcome(self: &Arc<Self>, task_id: String) {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let text = match engine.task(&task_id).await {
                Ok(task) => outcome_text(&task, &engine.task_link(&task.id)),
                Err(e) => {
                    tracing::error!(task_id, error = ?e, "cannot read the task to report on its issue");
                    return;
                }
            };
            if let Err(e) = engine.comment_on_origin(&task_id, &text).await {
                tracing::error!(task_id, error = ?e, "cannot record the issue comment");
            }
        });
    }

    async fn comment_on_origin(&self, task_id: &str, text: &str) -> Result<()> {
        let task = self.task(task_id).await?;
        let Some(origin) = task.origin.as_ref() else {
            return Ok(());
        };
        let posted: std::result::Result<(), String> = async {
            let remotes = self
                .remotes
                .as_ref()
                .ok_or("remotes are off (AIDA_ALLOWED_REMOTES)")?;
            let url = RemoteUrl::parse(&task.remote).map_err(|e| e.to_string())?;
            let login = remotes
                .credentials()
                .login_for(&url)
                .ok_or_else(|| format!("AIDA_GIT_CREDENTIALS holds no token for {}", url.host()))?;
            remotes
                .providers
                .comment_on_issue(&url, &login.token, origin.number, text)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = &posted {
            tracing::warn!(task_id, issue = origin.number, error = %e, "cannot comment on the issue");
        }
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::TASK_ISSUE_COMMENT,
                task_id: Some(task_id.to_owned()),
                subtask: None,
                worker_id: None,
                data: json!({
                    "repository": origin.repository,
                    "issue": origin.number,
                    "posted": posted.is_ok(),
                    "error": posted.err(),
                }),
            })
            .await?;
        Ok(())
    }
}

fn starts_with_command(body: &str, command: &str) -> bool {
    let body = body.trim_start();
    body.strip_prefix(command)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// What AIDA tells the issue at the end.
fn outcome_text(task: &Task, link: &str) -> String {
    let status = task_status_of(task);
    let pr = task
        .delivery
        .as_ref()
        .filter(|d| !d.pull_request_url.is_empty())
        .map(|d| format!(" Pull request: {}", d.pull_request_url))
        .unwrap_or_default();
    match status {
        TaskStatus::Succeeded => format!("AIDA finished task `{}` ({link}).{pr}", task.id),
        other => format!(
            "AIDA task `{}` ({link}) ended {}: {}{pr}",
            task.id,
            other.label(),
            if task.error.is_empty() {
                "see the task's report"
            } else {
                &task.error
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_a_whole_word_at_the_start() {
        assert!(starts_with_command("/aida", "/aida"));
        assert!(starts_with_command("  /aida please fix", "/aida"));
        assert!(!starts_with_command("/aidax", "/aida"));
        assert!(!starts_with_command("please /aida", "/aida"));
    }

    #[test]
    fn the_config_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("github.toml");
        std::fs::write(
            &path,
            "[[repository]]\nname = \"acme/shop\"\nremote = \"https://github.com/acme/shop.git\"\nplanner = { kind = \"claude-code\" }\n",
        )
        .unwrap();
        let config = GitHubConfig::load(&path).unwrap();
        let repo = config.repository("ACME/shop").unwrap();
        assert_eq!(
            (repo.label.as_str(), repo.command.as_str()),
            ("aida", "/aida")
        );
        std::fs::write(
            &path,
            "[[repository]]\nname = \"shop\"\nremote = \"https://github.com/acme/shop.git\"\nplanner = { kind = \"claude-code\" }\n",
        )
        .unwrap();
        let err = GitHubConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("not owner/name"), "{err}");
        std::fs::write(
            &path,
            "[[repository]]\nname = \"a/b\"\nremote = \"https://x:y@github.com/a/b\"\nplanner = { kind = \"claude-code\" }\n",
        )
        .unwrap();
        let err = GitHubConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("credentials do not belong in a URL"), "{err}");
        assert!(!err.contains("x:y"), "{err}");
    }
}
