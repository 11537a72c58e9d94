//! Delivering a merged task to its remote: push `aida/<task>/result` (and,
//! when asked, the subtask branches) from the mirror, then open the pull
//! (merge) request with the report as its body. Nothing is ever forced over
//! someone else's work: each branch is pushed with a lease on the commit
//! AIDA last left there (or on its absence), so a branch that moved on the
//! remote is reported as a rejected push and left as it is. Network
//! failures are retried a few times; refusals are not.

use std::sync::Arc;
use std::time::Duration;

use aida_core::event::{Channel, kind};
use aida_core::proto::common::{SubtaskStatus, Task, TaskStatus};
use aida_core::status::StatusLabel;
use chrono::Utc;
use serde_json::json;

use crate::engine::{Engine, status_of};
use crate::remotes::{PullRequestRequest, RefUpdate, RemoteError, RemoteUrl, Remotes};
use crate::store::{DeliveryJson, NewEvent};

/// Tries of one push or pull-request call when the network fails.
const TRIES: u32 = 3;
/// GitHub refuses bodies over 65,536 characters; GitLab's limit is larger.
const MAX_BODY_CHARS: usize = 60_000;

impl Engine {
    /// Delivers `task` (merged, ending `status`) as its `deliver` asks and
    /// records what happened; `None` when it asks for nothing. The error is
    /// for the task when delivery failed.
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        task: &Task,
        status: TaskStatus,
    ) -> Option<Result<DeliveryJson, String>> {
        let spec = task.deliver.clone().filter(|d| d.push)?;
        let mut delivery = match self.store.delivery(&task.id).await {
            Ok(previous) => previous.unwrap_or_default(),
            Err(e) => {
                tracing::error!(task_id = %task.id, error = ?e, "cannot read the delivery record");
                DeliveryJson::default()
            }
        };
        delivery.error.clear();
        let outcome = match self.remotes.as_ref() {
            _ if status != TaskStatus::Succeeded => Skipped(format!(
                "the task ended {}: only a task that succeeded is delivered",
                status.label()
            )),
            None => Failed("remotes are off on this orchestrator (AIDA_ALLOWED_REMOTES)".into()),
            Some(remotes) => {
                self.push_and_open(remotes, task, &spec, &mut delivery)
                    .await
            }
        };
        let result = match outcome {
            Done => {
                delivery.delivered_at = Some(Utc::now());
                Ok(())
            }
            Skipped(reason) => {
                delivery.status = "skipped".into();
                delivery.error = reason;
                Ok(())
            }
            Failed(reason) => {
                delivery.status = "failed".into();
                delivery.error = reason.clone();
                Err(reason)
            }
        };
        if let Err(e) = self.store.record_delivery(&task.id, &delivery).await {
            tracing::error!(task_id = %task.id, error = ?e, "cannot record the delivery");
        }
        let event_kind = if result.is_ok() {
            kind::TASK_DELIVERED
        } else {
            kind::TASK_DELIVERY_FAILED
        };
        let recorded = self
            .events
            .record(NewEvent {
                channel: Channel::Task,
                kind: event_kind,
                task_id: Some(task.id.clone()),
                subtask: None,
                worker_id: None,
                data: json!({
                    "status": delivery.status,
                    "remote": task.remote,
                    "branch": delivery.branch,
                    "commit": delivery.commit,
                    "pull_request_url": (!delivery.pull_request_url.is_empty()).then_some(&delivery.pull_request_url),
                    "pull_request_number": (delivery.pull_request_number > 0).then_some(delivery.pull_request_number),
                    "error": (!delivery.error.is_empty()).then_some(&delivery.error),
                    "attempts": delivery.attempts,
                }),
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(task_id = %task.id, error = ?e, "cannot record the delivery event");
        }
        tracing::info!(task_id = %task.id, status = %delivery.status, error = %delivery.error, "delivery done");
        Some(result.map(|()| delivery))
    }

    async fn push_and_open(
        &self,
        remotes: &Remotes,
        task: &Task,
        spec: &aida_core::proto::common::DeliverSpec,
        delivery: &mut DeliveryJson,
    ) -> Outcome {
        let url = match RemoteUrl::parse(&task.remote) {
            Ok(url) => url,
            Err(e) => return Failed(e.to_string()),
        };
        if task.result_branch.is_empty() || task.result_commit.is_empty() {
            return Failed("there is no merged result to deliver".into());
        }
        let mut wanted = vec![(task.result_branch.clone(), task.result_commit.clone())];
        if spec.push_subtasks {
            wanted.extend(
                task.subtasks
                    .iter()
                    .filter(|s| status_of(s) == SubtaskStatus::Succeeded && !s.commit.is_empty())
                    .map(|s| (s.branch.clone(), s.commit.clone())),
            );
        }
        delivery.branch = task.result_branch.clone();
        delivery.commit = task.result_commit.clone();
        let git = remotes.mirrors.git();
        let mirror = std::path::Path::new(&task.repo);
        let prefix = format!("aida/{}/", task.id);

        // What the remote holds now decides what is left to push: a branch
        // already at our commit (a delivery redone after a crash) is done.
        let remote_now = match retry(delivery, || git.remote_branches(mirror, &url, &prefix)).await
        {
            Ok(now) => now,
            Err(e) => return Failed(push_failure(&e)),
        };
        let updates: Vec<RefUpdate> = wanted
            .iter()
            .filter(|(branch, commit)| remote_now.get(branch) != Some(commit))
            .map(|(branch, commit)| RefUpdate {
                branch: branch.clone(),
                commit: commit.clone(),
                expected: delivery.pushed.get(branch).cloned(),
            })
            .collect();
        if !updates.is_empty()
            && let Err(e) = retry(delivery, || git.push(mirror, &url, &updates)).await
        {
            return Failed(push_failure(&e));
        }
        for (branch, commit) in wanted {
            delivery.pushed.insert(branch, commit);
        }
        delivery.status = "pushed".into();

        let Some(pr) = &spec.pull_request else {
            return Done;
        };
        let Some(login) = remotes.credentials().login_for(&url) else {
            return Failed(format!(
                "pushed {}, but cannot open the pull request: AIDA_GIT_CREDENTIALS holds no token for {}",
                task.result_branch,
                url.host()
            ));
        };
        let title = if pr.title.trim().is_empty() {
            task.description
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("AIDA task")
                .trim()
                .chars()
                .take(256)
                .collect()
        } else {
            pr.title.clone()
        };
        let body = self.pull_request_body(task, &pr.closes).await;
        let request = PullRequestRequest {
            title: &title,
            head: &task.result_branch,
            base: &task.base,
            body: &body,
            draft: pr.draft,
        };
        let mut tries = 0;
        let opened = loop {
            tries += 1;
            match remotes
                .providers
                .open_pull_request(&url, &login.token, &request)
                .await
            {
                Err(e) if e.is_transient() && tries < TRIES => {
                    tokio::time::sleep(backoff(tries)).await;
                }
                other => break other,
            }
        };
        match opened {
            Ok(opened) => {
                delivery.pull_request_number = opened.number;
                delivery.pull_request_url = opened.url;
                delivery.status = "opened".into();
                Done
            }
            Err(e) => Failed(format!(
                "pushed {}, but the pull request could not be opened: {e}",
                task.result_branch
            )),
        }
    }

    /// The report, the issues it closes, and where the task is.
    async fn pull_request_body(&self, task: &Task, closes: &[u32]) -> String {
        let report = match self.report(&task.id).await {
            Ok(report) => report.markdown,
            Err(e) => {
                tracing::warn!(task_id = %task.id, error = %e, "no report for the pull request");
                format!("AIDA task {}: {}", task.id, task.description)
            }
        };
        let mut body = String::new();
        for number in closes {
            body.push_str(&format!("Closes #{number}\n"));
        }
        if !closes.is_empty() {
            body.push('\n');
        }
        body.push_str(&report);
        body.push_str(&format!(
            "\n\n---\nOpened by AIDA for task `{}` ({}/api/tasks/{}).\n",
            task.id, self.settings.public_api_url, task.id
        ));
        if body.chars().count() > MAX_BODY_CHARS {
            body = body.chars().take(MAX_BODY_CHARS).collect();
            body.push_str("\n\n(The report was cut; the whole report is in AIDA.)\n");
        }
        body
    }
}

enum Outcome {
    Done,
    Skipped(String),
    Failed(String),
}
use Outcome::{Done, Failed, Skipped};

/// Runs `call` until it succeeds, fails for good, or ran [`TRIES`] times;
/// counts the tries in the delivery.
async fn retry<T, F, Fut>(delivery: &mut DeliveryJson, mut call: F) -> Result<T, RemoteError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RemoteError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        delivery.attempts += 1;
        match call().await {
            Err(e) if e.is_transient() && tries < TRIES => tokio::time::sleep(backoff(tries)).await,
            other => return other,
        }
    }
}

fn backoff(tries: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(tries.min(6)))
}

/// What the user reads when a push failed.
fn push_failure(e: &RemoteError) -> String {
    match e {
        RemoteError::Rejected { .. } => format!(
            "{e}; AIDA forces nothing: the remote branch moved since AIDA last pushed it, or the remote protects it"
        ),
        _ => e.to_string(),
    }
}
