//! A task's life after creation: subtask results come in, failures cancel
//! what depended on them, and once every subtask has ended the aggregator
//! merges the succeeded branches and writes the report. Cancellation stops
//! running agents on their workers.

use std::collections::HashSet;
use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::ids::TaskId;
use aida_core::proto::aggregator::{CollectRequest, ReportRequest};
use aida_core::proto::common::{DiffStats, Report, RunResult, SubtaskStatus, Task, TaskStatus};
use aida_core::proto::orchestrator::CreateTaskRequest;
use aida_core::status::StatusLabel;
use anyhow::Context;
use chrono::Utc;
use serde_json::json;

use crate::engine::{Engine, RunKey, status_of, task_status_of};
use crate::error::{OrchestratorError, Result};
use crate::planning::PLANNER;
use crate::remotes::RemoteUrl;
use crate::resolution::RESOLVER;
use crate::store::{NewEvent, SubtaskOutcome};
use crate::verification::VERIFIER;
use tokio_util::sync::CancellationToken;

impl Engine {
    pub async fn create_task(self: &Arc<Self>, req: CreateTaskRequest) -> Result<Task> {
        let key = req.idempotency_key.trim().to_owned();
        if key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(OrchestratorError::invalid(format!(
                "an idempotency key may have at most {MAX_IDEMPOTENCY_KEY} bytes"
            )));
        }
        if !key.is_empty()
            && let Some(existing) = self.store.task_by_idempotency_key(&key).await?
        {
            return self.task(&existing).await;
        }
        let id = TaskId::new();
        let policy = self.settings.policy.clone();
        // A remote: checked, then its mirror made or brought up to date.
        let (target, freshness) = if RemoteUrl::looks_like_remote(&req.repo) {
            let remotes = self.remotes.as_ref().ok_or_else(|| {
                OrchestratorError::invalid(
                    "this AIDA takes no remotes: the operator sets AIDA_ALLOWED_REMOTES and AIDA_REPO_CACHE",
                )
            })?;
            let url = remotes.check(&req.repo)?;
            let (path, freshness) = remotes.mirror(&url).await?;
            (
                crate::planning::RepoTarget::Mirror {
                    path,
                    remote: url.to_string(),
                },
                Some(freshness),
            )
        } else {
            (crate::planning::RepoTarget::Local, None)
        };
        // git2 is blocking; the repository may be on a slow volume.
        let mut new =
            tokio::task::spawn_blocking(move || crate::planning::plan(req, id, &policy, target))
                .await
                .context("planning task panicked")??;
        // Its work, wherever it runs, continues the trace of this request.
        new.traceparent = aida_core::telemetry::current_traceparent();
        let created = NewEvent {
            channel: Channel::Task,
            kind: kind::TASK_CREATED,
            task_id: Some(new.id.clone()),
            subtask: None,
            worker_id: None,
            data: json!({
                "repo": new.repo,
                "base": new.base,
                "base_commit": new.base_commit,
                "priority": new.priority,
                "created_by": new.created_by,
                "remote": new.remote,
                "mirror": freshness.map(|f| f.label()),
                "subtasks": new.subtasks.iter().map(|s| &s.name).collect::<Vec<_>>(),
            }),
        };
        let (id, subtasks) = (new.id.clone(), new.subtasks.len());
        let stored = match self.intake.store(new, created).await {
            Ok(stored) => stored,
            Err(e) => {
                // Two requests with one key raced: the other one won; its
                // task is the answer to both.
                if !key.is_empty()
                    && let Some(existing) = self.store.task_by_idempotency_key(&key).await?
                {
                    return self.task(&existing).await;
                }
                return Err(e);
            }
        };
        tracing::info!(task_id = %id, subtasks, "task created");
        metrics::counter!(aida_core::metrics::names::TASKS_CREATED).increment(1);
        self.wake.notify_one();
        match stored {
            Some(task) => Ok(task),
            None => self.task(&id).await,
        }
    }

    /// A worker's report of how an attempt ended. Returns whether it was
    /// accepted; a report for an attempt that is no longer current (the task
    /// was cancelled, or the worker was given up on) is refused.
    pub async fn complete(
        self: &Arc<Self>,
        worker_id: &str,
        task_id: &str,
        subtask: &str,
        attempt: u32,
        result: RunResult,
    ) -> Result<std::result::Result<(), String>> {
        let key = RunKey {
            task_id: task_id.to_owned(),
            subtask: subtask.to_owned(),
            attempt,
        };
        let task = self.task(task_id).await?;
        let Some(st) = task
            .subtasks
            .iter()
            .chain(task.planner.iter())
            .chain(task.verifier.iter())
            .chain(task.resolver.iter())
            .chain(task.candidates.iter())
            .chain(task.judges.iter())
            .find(|s| s.name == subtask)
        else {
            return Err(OrchestratorError::NotFound(format!(
                "task {task_id} has no subtask {subtask:?}"
            )));
        };
        // A forged report changes nothing, not even the worker's state.
        if let Err(reason) = self.verify_result(&task, st, &result).await {
            tracing::warn!(
                task_id,
                subtask,
                worker_id,
                attempt,
                reason,
                "refusing a result that does not check out"
            );
            return Ok(Err(format!("result refused: {reason}")));
        }
        self.release_worker(worker_id, &key).await?;
        if status_of(st) != SubtaskStatus::Running
            || st.worker_id != worker_id
            || st.attempts != attempt
        {
            return Ok(Err(format!(
                "subtask {subtask:?} of task {task_id} is not running attempt {attempt} on worker {worker_id} (it is {}, attempt {} on {:?})",
                status_of(st).label(),
                st.attempts,
                st.worker_id
            )));
        }
        if st.name == RESOLVER {
            return Ok(
                if self
                    .resolution_ended(task_id, worker_id, attempt, result)
                    .await?
                {
                    Ok(())
                } else {
                    Err(format!(
                        "the resolver's run of task {task_id} changed meanwhile; result not applied"
                    ))
                },
            );
        }
        if st.name == VERIFIER {
            return Ok(
                if self
                    .verification_ended(task_id, worker_id, attempt, result)
                    .await?
                {
                    Ok(())
                } else {
                    Err(format!(
                        "the verification run of task {task_id} changed meanwhile; result not applied"
                    ))
                },
            );
        }
        // AIDA's own runs (the planner, a judge: names starting with '_')
        // change nothing to measure.
        let stats = if result.success && !result.commit.is_empty() && !subtask.starts_with('_') {
            self.collect_stats(&task, subtask, &result).await
        } else {
            None
        };
        let outcome = SubtaskOutcome {
            stats,
            ..SubtaskOutcome::of_run(&result, "the agent failed")
        };
        let next = if result.success {
            AfterAttempt::Finish
        } else {
            after_failure(&task, st, attempt, result.permanent)
        };
        let agent = crate::scheduler::current_agent(st)
            .map(|a| a.kind.clone())
            .unwrap_or_else(|| "command".into());
        let started_at = st.started_at.as_ref().and_then(aida_core::time::from_proto);
        let applied = match next {
            AfterAttempt::Retry => {
                self.retry_attempt(worker_id, task_id, subtask, attempt, outcome, "failed")
                    .await?
            }
            AfterAttempt::Fallback => {
                self.fall_back(worker_id, task_id, st, attempt, outcome)
                    .await?
            }
            AfterAttempt::Finish
                if result.success && st.name != PLANNER && st.candidate_of.is_empty() =>
            {
                self.finish_success(worker_id, task_id, subtask, attempt, outcome)
                    .await?
            }
            AfterAttempt::Finish => {
                self.finish_attempt(worker_id, task_id, subtask, attempt, outcome)
                    .await?
            }
        };
        if applied {
            let ran_for = started_at.and_then(|t| (Utc::now() - t).to_std().ok());
            crate::measure::attempt_ended(&agent, &result, ran_for);
            // The result is applied: the monitor failing must not undo that.
            if let Err(e) = self
                .observe_run(
                    worker_id,
                    (task_id, subtask),
                    &agent,
                    result.success,
                    ran_for,
                )
                .await
            {
                tracing::warn!(worker_id, error = %e, "the monitor could not record a run");
            }
            Ok(Ok(()))
        } else {
            Ok(Err(format!(
                "subtask {subtask:?} of task {task_id} changed meanwhile; result not applied"
            )))
        }
    }

    /// Checks a reported commit against the repository (see `verify`).
    /// Read-only runs (the planner) report the base commit and no branch.
    async fn verify_result(
        &self,
        task: &Task,
        st: &aida_core::proto::common::Subtask,
        result: &RunResult,
    ) -> std::result::Result<(), String> {
        if result.commit.is_empty() {
            return Ok(());
        }
        if st.name == PLANNER || st.name.starts_with(crate::candidates::JUDGE_PREFIX) {
            return if result.commit == task.base_commit {
                Ok(())
            } else {
                Err("a read-only run reports the base commit only".into())
            };
        }
        if st.name == RESOLVER {
            return crate::resolution::check_claim(task, result).await;
        }
        if st.name == VERIFIER {
            let checking = task
                .verification
                .as_ref()
                .map(|v| v.checking.as_str())
                .unwrap_or_default();
            return if result.commit == checking {
                Ok(())
            } else {
                Err("a verification run reports the commit it checked only".into())
            };
        }
        // A follow-up builds on the subtask's own last commit (which holds
        // its dependencies as they were then).
        let dependencies: Vec<String> = if st.follow_up_pending {
            vec![st.commit.clone()]
        } else {
            task.subtasks
                .iter()
                .filter(|d| st.depends_on.contains(&d.name))
                .map(|d| d.commit.clone())
                .collect()
        };
        let (repo, branch, base) = (
            task.repo.clone(),
            st.branch.clone(),
            task.base_commit.clone(),
        );
        let (start, commit) = (result.start_commit.clone(), result.commit.clone());
        tokio::task::spawn_blocking(move || {
            crate::verify::check(&crate::verify::Claim {
                repo: &repo,
                branch: &branch,
                base_commit: &base,
                dependencies: dependencies.iter().map(String::as_str).collect(),
                start_commit: &start,
                commit: &commit,
            })
        })
        .await
        .unwrap_or_else(|e| Err(format!("checking the result failed: {e}")))
    }

    /// Measures a subtask's change. Best effort: the stats are for the
    /// report, and a missing aggregator must not lose the result itself.
    async fn collect_stats(
        &self,
        task: &Task,
        subtask: &str,
        result: &RunResult,
    ) -> Option<DiffStats> {
        let mut client = self.aggregator.clone();
        let request = tonic::Request::new(CollectRequest {
            repo: task.repo.clone(),
            task_id: task.id.clone(),
            subtask: subtask.to_owned(),
            start_commit: result.start_commit.clone(),
            commit: result.commit.clone(),
        });
        self.best_effort(
            &task.id,
            subtask,
            "measuring the change",
            client.collect_result(request),
        )
        .await
        .and_then(|r| r.stats)
    }

    /// Records how running attempt `attempt` ended and counts it for its
    /// worker. False when that attempt no longer holds the run (a stale
    /// report).
    pub(crate) async fn end_run(
        &self,
        task_id: &str,
        name: &str,
        worker_id: &str,
        attempt: u32,
        outcome: &SubtaskOutcome,
    ) -> Result<bool> {
        if !self
            .store
            .finish_subtask(task_id, name, worker_id, attempt, outcome, Utc::now())
            .await?
        {
            return Ok(false);
        }
        self.store.count_completed(worker_id).await?;
        Ok(true)
    }

    /// Records the end of an attempt, cancels what depended on a failed
    /// subtask, and finishes the task when nothing is left to run.
    pub(crate) async fn finish_attempt(
        self: &Arc<Self>,
        worker_id: &str,
        task_id: &str,
        subtask: &str,
        attempt: u32,
        outcome: SubtaskOutcome,
    ) -> Result<bool> {
        if !self
            .end_run(task_id, subtask, worker_id, attempt, &outcome)
            .await?
        {
            return Ok(false);
        }
        let status = outcome.status.unwrap_or(SubtaskStatus::Failed);
        let event = Self::subtask_status_event(
            task_id,
            subtask,
            status,
            json!({
                "worker": worker_id,
                "attempt": attempt,
                "commit": outcome.commit,
                "error": (!outcome.error.is_empty()).then_some(&outcome.error),
                "exit_code": outcome.exit_code,
            }),
        );
        tracing::info!(
            task_id,
            subtask,
            worker_id,
            status = status.label(),
            "subtask finished"
        );
        self.subtask_ended(task_id, subtask, status, vec![event])
            .await?;
        Ok(true)
    }

    /// Ends an attempt that will be tried again after a backoff.
    pub(crate) async fn retry_attempt(
        self: &Arc<Self>,
        worker_id: &str,
        task_id: &str,
        subtask: &str,
        attempt: u32,
        outcome: SubtaskOutcome,
        attempt_status: &str,
    ) -> Result<bool> {
        let now = Utc::now();
        let delay = backoff(attempt, self.settings.retry_base, self.settings.retry_max);
        let retry_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
        if !self
            .store
            .retry_subtask(
                task_id,
                subtask,
                worker_id,
                attempt,
                &outcome,
                attempt_status,
                retry_at,
                now,
            )
            .await?
        {
            return Ok(false);
        }
        tracing::warn!(task_id, subtask, worker_id, attempt, delay_ms = delay.as_millis() as u64, error = %outcome.error, "attempt failed, retrying");
        self.events
            .record(Self::subtask_status_event(
                task_id,
                subtask,
                SubtaskStatus::Pending,
                json!({
                    "worker": worker_id,
                    "attempt": attempt,
                    "attempt_status": attempt_status,
                    "error": outcome.error,
                    "retry_at": retry_at,
                }),
            ))
            .await?;
        // The dispatcher also looks every few seconds; this makes the retry
        // start on time.
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            engine.wake.notify_one();
        });
        Ok(true)
    }

    /// Ends an attempt whose agent has used up its attempts and hands the
    /// subtask to its fallback agent, which starts with a fresh budget.
    pub(crate) async fn fall_back(
        self: &Arc<Self>,
        worker_id: &str,
        task_id: &str,
        st: &aida_core::proto::common::Subtask,
        attempt: u32,
        outcome: SubtaskOutcome,
    ) -> Result<bool> {
        let now = Utc::now();
        if !self
            .store
            .switch_to_fallback(task_id, &st.name, worker_id, attempt, &outcome, now)
            .await?
        {
            return Ok(false);
        }
        let fallback_kind = st
            .fallback
            .as_ref()
            .map(|a| a.kind.clone())
            .unwrap_or_default();
        tracing::warn!(task_id, subtask = %st.name, attempt, fallback = %fallback_kind, error = %outcome.error, "agent used up its attempts; the fallback agent takes over");
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::SUBTASK_FALLBACK,
                task_id: Some(task_id.to_owned()),
                subtask: Some(st.name.clone()),
                worker_id: Some(worker_id.to_owned()),
                data: json!({
                    "agent": fallback_kind,
                    "after_attempts": attempt,
                    "error": outcome.error,
                }),
            })
            .await?;
        self.wake.notify_one();
        Ok(true)
    }

    /// Runs the periodic checks until `stop`: attempts whose lease expired
    /// (their worker stopped sending heartbeats) go to another worker, and
    /// tasks past their wall-clock limit stop.
    pub async fn run_reaper(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.reap_once().await {
                tracing::error!(error = ?e, "reaper pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(REAPER_INTERVAL) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn reap_once(self: &Arc<Self>) -> Result<()> {
        let now = Utc::now();
        for (task_id, subtask, worker_id, attempt) in self.store.expired_leases(now).await? {
            let key = RunKey {
                task_id: task_id.clone(),
                subtask: subtask.clone(),
                attempt,
            };
            // Whatever that worker still does for it is of no use now.
            self.send_cancel(&worker_id, &key).await;
            self.release_worker(&worker_id, &key).await?;
            let task = self.task(&task_id).await?;
            let Some(st) = task
                .subtasks
                .iter()
                .chain(task.planner.iter())
                .chain(task.verifier.iter())
                .chain(task.resolver.iter())
                .chain(task.candidates.iter())
                .chain(task.judges.iter())
                .find(|s| s.name == subtask)
            else {
                continue;
            };
            if subtask == RESOLVER {
                // The resolver counts its runs per conflict itself.
                let result = RunResult {
                    success: false,
                    error: format!(
                        "worker {worker_id} stopped sending heartbeats during the resolver's run"
                    ),
                    exit_code: -1,
                    ..Default::default()
                };
                self.resolution_ended(&task_id, &worker_id, attempt, result)
                    .await?;
                continue;
            }
            let next = after_failure(&task, st, attempt, false);
            let outcome = SubtaskOutcome {
                status: Some(SubtaskStatus::Failed),
                error: format!(
                    "worker {worker_id} stopped sending heartbeats: its lease of {}s expired",
                    self.settings.lease_timeout.as_secs()
                ),
                exit_code: -1,
                ..Default::default()
            };
            match next {
                AfterAttempt::Retry => {
                    self.retry_attempt(&worker_id, &task_id, &subtask, attempt, outcome, "lost")
                        .await?;
                }
                AfterAttempt::Fallback => {
                    self.fall_back(&worker_id, &task_id, st, attempt, outcome)
                        .await?;
                }
                AfterAttempt::Finish if subtask == VERIFIER => {
                    // The check could not be run: the result is not known
                    // to pass, so it counts as failing.
                    let result = RunResult {
                        success: false,
                        error: format!("the verification could not run: {}", outcome.error),
                        exit_code: -1,
                        ..Default::default()
                    };
                    self.verification_ended(&task_id, &worker_id, attempt, result)
                        .await?;
                }
                AfterAttempt::Finish => {
                    self.finish_attempt(&worker_id, &task_id, &subtask, attempt, outcome)
                        .await?;
                }
            }
        }
        for (task_id, created_at, limit) in self.store.tasks_with_timeouts().await? {
            if now - created_at > chrono::Duration::seconds(i64::from(limit)) {
                let reason = format!("the task timed out after {limit}s");
                match self.stop_task(&task_id, TaskStatus::Failed, &reason).await {
                    Ok(_) | Err(OrchestratorError::FailedPrecondition(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Waits until `owner` holds `resource` (for `ttl`). A holder in this
    /// process wakes the waiters as it lets go ([`Engine::unlock`]); one
    /// in another orchestrator, or one whose lease ran out, is seen at the
    /// next try, every `LOCK_RETRY`.
    pub(crate) async fn lock(
        &self,
        resource: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<()> {
        let mut waited = false;
        let asked = std::time::Instant::now();
        loop {
            // Registered before the try, so a release between the try and
            // the wait still wakes this waiter.
            let released = self.lock_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(ttl).unwrap_or_default();
            if self.store.acquire_lock(resource, owner, now, until).await? {
                metrics::histogram!(aida_core::metrics::names::LOCK_WAIT_DURATION)
                    .record(asked.elapsed().as_secs_f64());
                if waited {
                    tracing::info!(resource, owner, "lock acquired after waiting");
                }
                return Ok(());
            }
            if !waited {
                tracing::info!(resource, owner, "waiting for a lock");
                waited = true;
            }
            tokio::select! {
                () = &mut released => {}
                () = tokio::time::sleep(LOCK_RETRY) => {}
            }
        }
    }

    /// Lets go of `resource` held by `owner`, and wakes whoever in this
    /// process waits for a lock.
    pub(crate) async fn unlock(&self, resource: &str, owner: &str) -> Result<()> {
        self.store.release_lock(resource, owner).await?;
        self.lock_released.notify_waiters();
        Ok(())
    }

    /// Fails a subtask that never started.
    pub(crate) async fn fail_pending(
        self: &Arc<Self>,
        task_id: &str,
        subtask: &str,
        reason: &str,
    ) -> Result<()> {
        let names = [subtask.to_owned()];
        let ended = self
            .store
            .end_unfinished_subtasks(
                task_id,
                Some(&names),
                SubtaskStatus::Failed,
                reason,
                Utc::now(),
            )
            .await?;
        if ended.is_empty() {
            return Ok(());
        }
        tracing::warn!(task_id, subtask, reason, "subtask failed before it started");
        let event = Self::subtask_status_event(
            task_id,
            subtask,
            SubtaskStatus::Failed,
            json!({ "error": reason }),
        );
        self.subtask_ended(task_id, subtask, SubtaskStatus::Failed, vec![event])
            .await
    }

    /// After a subtask ended: cancels what depended on it if it did not
    /// succeed, records `events`, and finishes the task when nothing is left.
    async fn subtask_ended(
        self: &Arc<Self>,
        task_id: &str,
        subtask: &str,
        status: SubtaskStatus,
        mut events: Vec<NewEvent>,
    ) -> Result<()> {
        if subtask == PLANNER {
            self.events.record_all(events).await?;
            return self.planner_ended(task_id, status).await;
        }
        let (subtask, status) = if subtask.contains('.') {
            // Perhaps a best-of-N candidate: its subtask ends with the last.
            match self.candidate_ended(task_id, subtask).await? {
                Some((parent, status)) => {
                    events.push(Self::subtask_status_event(
                        task_id,
                        &parent,
                        status,
                        json!({}),
                    ));
                    (parent, status)
                }
                None if crate::candidates::is_candidate(&self.task(task_id).await?, subtask) => {
                    self.events.record_all(events).await?;
                    self.wake.notify_one();
                    return Ok(());
                }
                None => (subtask.to_owned(), status),
            }
        } else {
            (subtask.to_owned(), status)
        };
        let subtask = subtask.as_str();
        if status != SubtaskStatus::Succeeded {
            let task = self.task(task_id).await?;
            let dependents = dependents_of(&task, subtask);
            if !dependents.is_empty() {
                let reason = format!("dependency {subtask:?} did not succeed");
                let cancelled = self
                    .store
                    .end_unfinished_subtasks(
                        task_id,
                        Some(&dependents),
                        SubtaskStatus::Cancelled,
                        &reason,
                        Utc::now(),
                    )
                    .await?;
                for name in cancelled {
                    events.push(Self::subtask_status_event(
                        task_id,
                        &name,
                        SubtaskStatus::Cancelled,
                        json!({ "error": reason }),
                    ));
                }
            }
        }
        self.events.record_all(events).await?;
        self.wake.notify_one();
        self.finish_task_if_done(task_id).await
    }

    /// The planner's run ended: its plan becomes the task's subtasks (queued,
    /// or waiting for approval), or the task fails with the reason.
    async fn planner_ended(self: &Arc<Self>, task_id: &str, status: SubtaskStatus) -> Result<()> {
        let task = self.task(task_id).await?;
        if task_status_of(&task) != TaskStatus::Planning {
            // Cancelled meanwhile.
            return Ok(());
        }
        if status != SubtaskStatus::Succeeded {
            let error = task
                .planner
                .as_ref()
                .map(|p| p.error.as_str())
                .unwrap_or_default();
            let reason = format!(
                "the planner failed: {}",
                non_empty_or(error.to_owned(), "no reason given")
            );
            return self.fail_task(task_id, TaskStatus::Planning, &reason).await;
        }
        let output = self.store.subtask_output(task_id, PLANNER).await?;
        let id = TaskId::parse(task_id)?;
        let agent = task.agent.clone().unwrap_or_default();
        let subtasks = match crate::planning::subtasks_from_plan(&output, &id, &agent) {
            Ok(subtasks) => subtasks,
            Err(e) => {
                let reason = format!("the plan is invalid: {e}");
                return self.fail_task(task_id, TaskStatus::Planning, &reason).await;
            }
        };
        let to = if task.approve == "manual" {
            TaskStatus::AwaitingApproval
        } else {
            TaskStatus::Queued
        };
        if !self
            .store
            .accept_plan(task_id, &subtasks, to, Utc::now())
            .await?
        {
            return Ok(());
        }
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::TASK_PLANNED,
                task_id: Some(task_id.to_owned()),
                subtask: None,
                worker_id: None,
                data: json!({
                    "subtasks": subtasks.iter().map(|s| json!({"name": s.name, "depends_on": s.depends_on})).collect::<Vec<_>>(),
                    "approve": task.approve,
                }),
            })
            .await?;
        self.task_status_event(task_id, to, None).await?;
        tracing::info!(
            task_id,
            subtasks = subtasks.len(),
            status = to.label(),
            "plan accepted"
        );
        self.wake.notify_one();
        Ok(())
    }

    /// Lets a task whose plan waits for approval run.
    pub async fn approve_task(self: &Arc<Self>, task_id: &str) -> Result<Task> {
        let moved = self
            .store
            .transition_task(
                task_id,
                &[TaskStatus::AwaitingApproval],
                TaskStatus::Queued,
                None,
                Utc::now(),
            )
            .await?;
        if !moved {
            let task = self.task(task_id).await?;
            return Err(OrchestratorError::FailedPrecondition(format!(
                "task {task_id} is {}: only a task whose plan waits for approval can be approved",
                task_status_of(&task).label()
            )));
        }
        self.task_status_event(task_id, TaskStatus::Queued, None)
            .await?;
        tracing::info!(task_id, "plan approved");
        self.wake.notify_one();
        self.task(task_id).await
    }

    /// Ends a task that cannot go on, with the reason, and writes its report.
    async fn fail_task(
        self: &Arc<Self>,
        task_id: &str,
        from: TaskStatus,
        reason: &str,
    ) -> Result<()> {
        if !self
            .store
            .transition_task(
                task_id,
                &[from],
                TaskStatus::Failed,
                Some(reason),
                Utc::now(),
            )
            .await?
        {
            return Ok(());
        }
        tracing::warn!(task_id, reason, "task failed");
        let task = self.task(task_id).await?;
        self.write_report(&task).await;
        self.task_status_event(task_id, TaskStatus::Failed, Some(reason))
            .await
    }

    /// Moves a task whose subtasks have all ended to `merging`, and merges
    /// in the background.
    async fn finish_task_if_done(self: &Arc<Self>, task_id: &str) -> Result<()> {
        let task = self.task(task_id).await?;
        if task.subtasks.iter().any(|s| !status_of(s).is_terminal()) {
            return Ok(());
        }
        let moved = self
            .store
            .transition_task(
                task_id,
                &[TaskStatus::Queued, TaskStatus::Running],
                TaskStatus::Merging,
                None,
                Utc::now(),
            )
            .await?;
        if !moved {
            return Ok(());
        }
        // Each merge is checked afresh (after a follow-up too).
        self.store.record_verification(task_id, None).await?;
        self.task_status_event(task_id, TaskStatus::Merging, None)
            .await?;
        self.spawn_merge(task_id.to_owned());
        Ok(())
    }

    pub(crate) fn spawn_merge(self: &Arc<Self>, task_id: String) {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = engine.merge_and_finish(&task_id).await {
                tracing::error!(task_id, error = ?e, "finishing task failed");
                let reason = "internal error while merging; see the orchestrator's log";
                if let Ok(true) = engine
                    .store
                    .transition_task(
                        &task_id,
                        &[TaskStatus::Merging],
                        TaskStatus::Failed,
                        Some(reason),
                        Utc::now(),
                    )
                    .await
                {
                    let _ = engine
                        .task_status_event(&task_id, TaskStatus::Failed, Some(reason))
                        .await;
                }
            }
        });
    }

    async fn generate_report(&self, task: &Task) -> Result<Report> {
        let mut client = self.aggregator.clone();
        let request = tonic::Request::new(ReportRequest {
            task: Some(task.clone()),
        });
        match tokio::time::timeout(
            self.settings.aggregator_timeout,
            client.generate_report(request),
        )
        .await
        {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(OrchestratorError::aggregator_unavailable(format!(
                "the aggregator could not write the report: {}",
                status.message()
            ))),
            Err(_) => Err(OrchestratorError::aggregator_unavailable(
                "the aggregator did not answer in time",
            )),
        }
    }

    pub(crate) async fn write_report(&self, task: &Task) {
        match self.generate_report(task).await {
            Ok(report) => {
                if let Err(e) = self
                    .store
                    .record_report(&task.id, &report.markdown, &report.json)
                    .await
                {
                    tracing::error!(task_id = %task.id, error = ?e, "cannot store report");
                }
            }
            // The report endpoint regenerates on demand.
            Err(e) => tracing::warn!(task_id = %task.id, error = %e, "report not written"),
        }
    }

    /// The stored report of a finished task, or a fresh one.
    pub async fn report(&self, task_id: &str) -> Result<Report> {
        if let Some((markdown, json)) = self.store.report(task_id).await? {
            return Ok(Report {
                task_id: task_id.to_owned(),
                markdown,
                json,
            });
        }
        let task = self.task(task_id).await?;
        self.generate_report(&task).await
    }

    /// Cancels a task: pending subtasks end at once, running agents are told
    /// to stop, and their late results are refused.
    /// Cancels one subtask that has not ended, and the subtasks that depend
    /// on it; the others go on, and the task ends `cancelled` unless
    /// something failed.
    pub async fn stop_subtask(self: &Arc<Self>, task_id: &str, subtask: &str) -> Result<Task> {
        let task = self.task(task_id).await?;
        if !matches!(
            task_status_of(&task),
            TaskStatus::Queued | TaskStatus::Running
        ) {
            return Err(OrchestratorError::FailedPrecondition(format!(
                "task {task_id} is {}: its subtasks can no longer be cancelled",
                task_status_of(&task).label()
            )));
        }
        let st = task
            .subtasks
            .iter()
            .find(|s| s.name == subtask)
            .ok_or_else(|| {
                OrchestratorError::NotFound(format!("task {task_id} has no subtask {subtask:?}"))
            })?;
        match status_of(st) {
            SubtaskStatus::Cancelled => return Ok(task),
            SubtaskStatus::Pending | SubtaskStatus::Running => {}
            other => {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "subtask {subtask:?} is {} and can no longer be cancelled",
                    other.label()
                )));
            }
        }
        let reason = "cancelled by request";
        // A best-of-N subtask's candidates and judge go with it.
        let runs: Vec<&aida_core::proto::common::Subtask> = task
            .candidates
            .iter()
            .chain(task.judges.iter())
            .filter(|c| c.candidate_of == subtask)
            .collect();
        let names: Vec<String> = std::iter::once(subtask.to_owned())
            .chain(runs.iter().map(|c| c.name.clone()))
            .collect();
        let ended = self
            .store
            .end_unfinished_subtasks(
                task_id,
                Some(&names),
                SubtaskStatus::Cancelled,
                reason,
                Utc::now(),
            )
            .await?;
        if !ended.contains(&subtask.to_owned()) {
            return self.task(task_id).await;
        }
        for run in std::iter::once(st).chain(runs) {
            if status_of(run) == SubtaskStatus::Running && ended.contains(&run.name) {
                let key = RunKey {
                    task_id: task_id.to_owned(),
                    subtask: run.name.clone(),
                    attempt: run.attempts,
                };
                self.send_cancel(&run.worker_id, &key).await;
            }
        }
        tracing::info!(task_id, subtask, "subtask cancelled");
        let event = Self::subtask_status_event(
            task_id,
            subtask,
            SubtaskStatus::Cancelled,
            json!({ "error": reason }),
        );
        self.subtask_ended(task_id, subtask, SubtaskStatus::Cancelled, vec![event])
            .await?;
        self.task(task_id).await
    }

    pub async fn cancel_task(self: &Arc<Self>, task_id: &str) -> Result<Task> {
        self.stop_task(task_id, TaskStatus::Cancelled, "cancelled by request")
            .await
    }

    /// Stops a task that has not finished: running agents are told to stop,
    /// unfinished subtasks are cancelled, and the task ends as `to`.
    async fn stop_task(
        self: &Arc<Self>,
        task_id: &str,
        to: TaskStatus,
        reason: &str,
    ) -> Result<Task> {
        let task = self.task(task_id).await?;
        let status = task_status_of(&task);
        match status {
            TaskStatus::Cancelled if to == TaskStatus::Cancelled => return Ok(task),
            TaskStatus::Queued
            | TaskStatus::Running
            | TaskStatus::Planning
            | TaskStatus::AwaitingApproval => {}
            other => {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "task {task_id} is {} and can no longer be stopped",
                    other.label()
                )));
            }
        }
        let now = Utc::now();
        if !self
            .store
            .transition_task(
                task_id,
                &[
                    TaskStatus::Queued,
                    TaskStatus::Running,
                    TaskStatus::Planning,
                    TaskStatus::AwaitingApproval,
                ],
                to,
                Some(reason),
                now,
            )
            .await?
        {
            return Err(OrchestratorError::FailedPrecondition(format!(
                "task {task_id} changed meanwhile; try again"
            )));
        }
        for st in task
            .subtasks
            .iter()
            .chain(task.planner.iter())
            .chain(task.verifier.iter())
            .chain(task.resolver.iter())
            .chain(task.candidates.iter())
            .chain(task.judges.iter())
            .filter(|s| status_of(s) == SubtaskStatus::Running)
        {
            let key = RunKey {
                task_id: task_id.to_owned(),
                subtask: st.name.clone(),
                attempt: st.attempts,
            };
            self.send_cancel(&st.worker_id, &key).await;
        }
        let ended = self
            .store
            .end_unfinished_subtasks(task_id, None, SubtaskStatus::Cancelled, reason, now)
            .await?;
        let events = ended
            .iter()
            .map(|name| {
                Self::subtask_status_event(
                    task_id,
                    name,
                    SubtaskStatus::Cancelled,
                    json!({ "error": reason }),
                )
            })
            .collect();
        self.events.record_all(events).await?;
        let task = self.task(task_id).await?;
        self.write_report(&task).await;
        self.task_status_event(task_id, to, Some(reason)).await?;
        tracing::info!(task_id, status = to.label(), reason, "task stopped");
        Ok(task)
    }

    /// After a restart: finish merges that were cut short. Running attempts
    /// keep their leases: their workers reconnect and go on, or the leases
    /// expire and the subtasks go to other workers.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        for task_id in self.store.task_ids_with_status(TaskStatus::Merging).await? {
            tracing::info!(task_id, "resuming an interrupted merge");
            self.spawn_merge(task_id);
        }
        // A best-of-N subtask whose last candidate ended just before a
        // crash: its choice is made now.
        for task_id in self.store.task_ids_with_status(TaskStatus::Running).await? {
            let task = self.task(&task_id).await?;
            for st in task.subtasks.iter().filter(|s| {
                status_of(s) == SubtaskStatus::Pending
                    && crate::candidates::has_candidates(&task, &s.name)
            }) {
                if let Some(c) = task.candidates.iter().find(|c| c.candidate_of == st.name) {
                    tracing::info!(task_id, subtask = %st.name, "looking again at a best-of-N choice");
                    self.subtask_ended(&task_id, &c.name, status_of(c), Vec::new())
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// How often leases and task deadlines are checked.
const REAPER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// How often a merge waiting for its repository's lock tries again.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// The delay before attempt `attempt + 1`: `base` doubled per failed
/// attempt, at most `max`, times a random factor in [0.5, 1.5) so that
/// subtasks failing together do not retry together.
/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterAttempt {
    /// Another attempt of the same agent, after a backoff.
    Retry,
    /// The fallback agent takes over.
    Fallback,
    /// The subtask ends with this attempt's outcome.
    Finish,
}

/// After a failed attempt: a failure another attempt may cure is retried
/// while the budget lasts (counted from `attempt_floor`: a fallback or a
/// follow-up starts a new one); bad input or a missing agent is not. Once
/// the agent is done for, a fallback agent takes over if there is one.
fn after_failure(
    task: &Task,
    st: &aida_core::proto::common::Subtask,
    attempt: u32,
    permanent: bool,
) -> AfterAttempt {
    let used = attempt.saturating_sub(st.attempt_floor);
    if !permanent && used < task.max_attempts.max(1) {
        AfterAttempt::Retry
    } else if st.fallback.is_some() && !st.on_fallback {
        AfterAttempt::Fallback
    } else {
        AfterAttempt::Finish
    }
}

fn backoff(
    attempt: u32,
    base: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    use rand::Rng;
    let exponential = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    exponential.mul_f64(rand::rng().random_range(0.5..1.5))
}

fn non_empty_or(s: String, fallback: &str) -> String {
    if s.trim().is_empty() {
        fallback.to_owned()
    } else {
        s
    }
}

/// Every subtask that depends on `name`, directly or not.
pub(crate) fn dependents_of(task: &Task, name: &str) -> Vec<String> {
    let mut found: HashSet<String> = HashSet::new();
    let mut frontier = vec![name.to_owned()];
    while let Some(current) = frontier.pop() {
        for s in &task.subtasks {
            if s.depends_on.contains(&current) && found.insert(s.name.clone()) {
                frontier.push(s.name.clone());
            }
        }
    }
    task.subtasks
        .iter()
        .filter(|s| found.contains(&s.name))
        .map(|s| s.name.clone())
        .collect()
}

/// The final status of a merged task and the reason when it is not a
/// success.
pub(crate) fn final_verdict(task: &Task) -> (TaskStatus, Option<String>) {
    let failed: Vec<&str> = task
        .subtasks
        .iter()
        .filter(|s| status_of(s) == SubtaskStatus::Failed)
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        return (
            TaskStatus::Failed,
            Some(format!("subtasks failed: {}", failed.join(", "))),
        );
    }
    let cancelled: Vec<&str> = task
        .subtasks
        .iter()
        .filter(|s| status_of(s) == SubtaskStatus::Cancelled)
        .map(|s| s.name.as_str())
        .collect();
    if !cancelled.is_empty() {
        // What was done is merged; the task as asked was not.
        return (
            TaskStatus::Cancelled,
            Some(format!("subtasks cancelled: {}", cancelled.join(", "))),
        );
    }
    if !task.conflicts.is_empty() {
        let detail: Vec<String> = task
            .conflicts
            .iter()
            .map(|c| format!("{} ({})", c.subtask, c.files.join(", ")))
            .collect();
        return (
            TaskStatus::Conflicted,
            Some(format!("merge conflicts: {}", detail.join("; "))),
        );
    }
    (TaskStatus::Succeeded, None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::backoff;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            let first = backoff(1, base, max);
            assert!(
                first >= Duration::from_millis(50) && first < Duration::from_millis(150),
                "{first:?}"
            );
            let third = backoff(3, base, max);
            assert!(
                third >= Duration::from_millis(200) && third < Duration::from_millis(600),
                "{third:?}"
            );
            assert!(backoff(30, base, max) < Duration::from_millis(1500));
        }
    }
}
