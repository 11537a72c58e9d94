//! Bounded growth. On its own, the orchestrator removes the events of tasks
//! that ended longer than `AIDA_EVENT_RETENTION` ago and compacts the logs
//! of tasks that ended longer than `AIDA_LOG_RETENTION` ago (the last
//! [`KEEP_LOG_LINES`] lines of each subtask stay). On request
//! (`aida admin gc`), it also removes the `aida/<task>/*` branches of such
//! tasks.
//!
//! A task that has not ended loses nothing. A branch stays when its task's
//! pull request is open, when that cannot be checked, or when git refuses
//! to delete it (it is checked out somewhere).

use std::sync::Arc;
use std::time::Duration;

use aida_core::proto::orchestrator::{GarbageReport, KeptBranch, RemovedBranch};
use aida_core::time::to_proto;
use chrono::{DateTime, Utc};
use git2::{BranchType, Repository};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::Result;
use crate::remotes::RemoteUrl;
use crate::store::EndedTask;

/// Log lines of each subtask that compaction keeps: how its runs ended.
pub const KEEP_LOG_LINES: u32 = 200;

/// How long what ended tasks leave behind is kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// `AIDA_EVENT_RETENTION`: every event of a task that ended longer ago
    /// goes, and worker events older than it; `None` keeps them.
    pub events: Option<Duration>,
    /// `AIDA_LOG_RETENTION`: the log lines of a task that ended longer ago
    /// go, but the last [`KEEP_LOG_LINES`] of each subtask.
    pub logs: Option<Duration>,
    /// Events pass through the Redis outbox: one not yet published stays.
    pub outbox: bool,
}

impl Retention {
    /// How often the sweep runs: often enough that nothing outlives its
    /// retention by much, never more than once a second or less than once
    /// an hour.
    fn interval(&self) -> Option<Duration> {
        let shortest = [self.events, self.logs].into_iter().flatten().min()?;
        Some((shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600)))
    }
}

/// `now` minus `age`, or the beginning of time when `age` is absurd.
fn cutoff(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Engine {
    /// Sweeps by the retention settings until `stop`; returns at once when
    /// nothing is ever removed.
    pub async fn run_retention(self: Arc<Self>, stop: CancellationToken) {
        let retention = self.settings.retention;
        let Some(interval) = retention.interval() else {
            return;
        };
        loop {
            if let Err(e) = self.sweep(Utc::now()).await {
                tracing::error!(error = ?e, "retention sweep failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<()> {
        let retention = self.settings.retention;
        if let Some(age) = retention.logs {
            let lines = self
                .store
                .compact_logs(cutoff(now, age), KEEP_LOG_LINES, retention.outbox, false)
                .await?;
            if lines > 0 {
                tracing::info!(lines, "compacted the logs of ended tasks");
            }
        }
        if let Some(age) = retention.events {
            let events = self
                .store
                .expire_events(cutoff(now, age), retention.outbox, false)
                .await?;
            if events > 0 {
                tracing::info!(
                    events,
                    "removed the events of tasks past AIDA_EVENT_RETENTION"
                );
            }
        }
        Ok(())
    }

    /// Removes (or with `dry_run` only lists) the events and the branches
    /// of tasks that ended more than `older_than` ago.
    pub async fn collect_garbage(
        &self,
        older_than: Duration,
        dry_run: bool,
    ) -> Result<GarbageReport> {
        let ended_before = cutoff(Utc::now(), older_than);
        let tasks = self.store.tasks_ended_before(ended_before).await?;
        let mut report = GarbageReport {
            dry_run,
            ended_before: Some(to_proto(ended_before)),
            tasks: u32::try_from(tasks.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        for task in tasks {
            let keep_all = self.why_keep_branches(&task).await?;
            let (removed, kept) =
                tokio::task::spawn_blocking(move || remove_branches(&task, keep_all, dry_run))
                    .await
                    .map_err(|e| anyhow::anyhow!("the branch removal task failed: {e}"))?;
            report.branches_removed.extend(removed);
            report.branches_kept.extend(kept);
        }
        report.events_removed = self
            .store
            .expire_events(ended_before, self.settings.retention.outbox, dry_run)
            .await?;
        Ok(report)
    }

    /// Why none of `task`'s branches may go: its pull request is open or
    /// cannot be checked. `None` when they may.
    async fn why_keep_branches(&self, task: &EndedTask) -> Result<Option<String>> {
        let Some(delivery) = self.store.delivery(&task.id).await? else {
            return Ok(None);
        };
        let number = delivery.pull_request_number;
        if number == 0 {
            return Ok(None);
        }
        let Some(remotes) = self.remotes.as_ref() else {
            return Ok(Some(format!(
                "pull request #{number} cannot be checked: remotes are off (AIDA_ALLOWED_REMOTES)"
            )));
        };
        let url = match RemoteUrl::parse(&task.remote) {
            Ok(url) => url,
            Err(e) => {
                return Ok(Some(format!(
                    "pull request #{number} cannot be checked: {e}"
                )));
            }
        };
        let Some(login) = remotes.credentials().login_for(&url) else {
            return Ok(Some(format!(
                "pull request #{number} cannot be checked: AIDA_GIT_CREDENTIALS holds no token for {}",
                url.host()
            )));
        };
        Ok(
            match remotes
                .providers
                .pull_request_open(&url, &login.token, number)
                .await
            {
                Ok(true) => Some(format!("pull request #{number} is open")),
                Ok(false) => None,
                Err(e) => Some(format!("pull request #{number} cannot be checked: {e}")),
            },
        )
    }
}

/// Removes `task`'s `aida/<task>/*` branches from its repository, unless
/// `keep_all` says why they stay; returns what went and what stayed.
fn remove_branches(
    task: &EndedTask,
    keep_all: Option<String>,
    dry_run: bool,
) -> (Vec<RemovedBranch>, Vec<KeptBranch>) {
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    let kept_for = |branch: String, reason: String| KeptBranch {
        task_id: task.id.clone(),
        repo: task.repo.clone(),
        branch,
        reason,
    };
    let repo = match Repository::open(&task.repo) {
        Ok(repo) => repo,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return (removed, kept),
        Err(e) => {
            kept.push(kept_for(
                format!("aida/{}/*", task.id),
                format!("cannot open the repository: {}", e.message()),
            ));
            return (removed, kept);
        }
    };
    let names: Vec<String> = match repo.references_glob(&format!("refs/heads/aida/{}/*", task.id)) {
        Ok(refs) => refs
            .flatten()
            .filter_map(|r| r.shorthand().map(str::to_owned))
            .collect(),
        Err(e) => {
            kept.push(kept_for(
                format!("aida/{}/*", task.id),
                format!("cannot list the branches: {}", e.message()),
            ));
            return (removed, kept);
        }
    };
    for name in names {
        if let Some(reason) = &keep_all {
            kept.push(kept_for(name, reason.clone()));
            continue;
        }
        let outcome = if dry_run {
            Ok(())
        } else {
            repo.find_branch(&name, BranchType::Local)
                .and_then(|mut branch| branch.delete())
        };
        match outcome {
            Ok(()) => removed.push(RemovedBranch {
                task_id: task.id.clone(),
                repo: task.repo.clone(),
                branch: name,
            }),
            Err(e) => kept.push(kept_for(name, e.message().to_owned())),
        }
    }
    (removed, kept)
}
