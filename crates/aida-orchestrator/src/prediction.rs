//! Conflicts seen coming. When a subtask succeeds, its branch is merged in
//! memory (by the aggregator, writing nothing) with every other branch of
//! the task that succeeded before; each conflict is recorded on the task
//! and announced at once (`conflict.predicted`), while the others still
//! run. With `merge_policy: "rerun"` the subtask is instead run again on
//! top of the ones it conflicts with (they become its dependencies, and its
//! prompt says what changed), so the conflict never reaches the merge.
//!
//! Successes of one task are taken one at a time (a lock per task), so of
//! two subtasks that conflict, the one that succeeded later sees the other.

use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::proto::aggregator::{MergeItem, TrialMergeRequest};
use aida_core::proto::common::{Conflict, Subtask, SubtaskStatus, Task};
use chrono::Utc;
use serde_json::json;

use crate::engine::{Engine, status_of};
use crate::error::{OrchestratorError, Result};
use crate::store::{NewEvent, PredictedJson, SubtaskOutcome};

pub const POLICY_MERGE: &str = "merge";
pub const POLICY_RERUN: &str = "rerun";

/// Checks a task's `merge_policy`; the default is "merge".
pub fn check_policy(policy: &str) -> Result<String> {
    match policy.trim() {
        "" | POLICY_MERGE => Ok(POLICY_MERGE.into()),
        POLICY_RERUN => Ok(POLICY_RERUN.into()),
        other => Err(OrchestratorError::invalid(format!(
            "\"merge_policy\" is \"merge\" or \"rerun\", not {other:?}"
        ))),
    }
}

impl Engine {
    /// Records a work subtask's successful attempt, after trial-merging its
    /// commit with the task's other succeeded branches: conflicts are
    /// announced, or (with `merge_policy: "rerun"`) the subtask is queued
    /// again on top of the branches it conflicts with instead. False when
    /// the attempt no longer holds the subtask.
    pub(crate) async fn finish_success(
        self: &Arc<Self>,
        worker_id: &str,
        task_id: &str,
        subtask: &str,
        attempt: u32,
        outcome: SubtaskOutcome,
    ) -> Result<bool> {
        let resource = format!("trial-merge:{task_id}");
        let owner = format!("{subtask}#{attempt}");
        let ttl = self.settings.aggregator_timeout + std::time::Duration::from_secs(30);
        self.lock(&resource, &owner, ttl).await?;
        let finished = self
            .finish_success_locked(worker_id, task_id, subtask, attempt, outcome)
            .await;
        self.unlock(&resource, &owner).await?;
        finished
    }

    async fn finish_success_locked(
        self: &Arc<Self>,
        worker_id: &str,
        task_id: &str,
        subtask: &str,
        attempt: u32,
        outcome: SubtaskOutcome,
    ) -> Result<bool> {
        let task = self.task(task_id).await?;
        let Some(st) = task.subtasks.iter().find(|s| s.name == subtask) else {
            return Ok(false);
        };
        let conflicts = self.trial_merge(&task, st, &outcome.commit).await;
        if conflicts.is_empty() {
            return self
                .finish_attempt(worker_id, task_id, subtask, attempt, outcome)
                .await;
        }
        // A follow-up builds on the subtask's own work, so it is never
        // started over; nor is a subtask run on top of one that builds on it.
        let dependents = crate::lifecycle::dependents_of(&task, subtask);
        let rerun = task.merge_policy == POLICY_RERUN
            && !st.follow_up_pending
            && conflicts.iter().all(|c| !dependents.contains(&c.subtask));
        let now = Utc::now();
        let action = if rerun { "rerun" } else { "predicted" };
        let found: Vec<PredictedJson> = conflicts
            .iter()
            .map(|c| PredictedJson {
                subtask: subtask.to_owned(),
                with: c.subtask.clone(),
                files: c.files.clone(),
                action: action.into(),
                at: Some(now),
            })
            .collect();
        let events: Vec<NewEvent> = found
            .iter()
            .map(|p| NewEvent {
                channel: Channel::Task,
                kind: kind::CONFLICT_PREDICTED,
                task_id: Some(task_id.to_owned()),
                subtask: Some(subtask.to_owned()),
                worker_id: Some(worker_id.to_owned()),
                data: json!({
                    "with": p.with,
                    "files": p.files,
                    "action": p.action,
                    "commit": outcome.commit,
                }),
            })
            .collect();
        tracing::warn!(task_id, subtask, with = ?conflicts.iter().map(|c| &c.subtask).collect::<Vec<_>>(), action, "conflict seen coming");
        if !rerun {
            self.store.add_predicted(task_id, &found).await?;
            self.events.record_all(events).await?;
            return self
                .finish_attempt(worker_id, task_id, subtask, attempt, outcome)
                .await;
        }
        let mut depends_on = st.depends_on.clone();
        for c in &conflicts {
            if !depends_on.contains(&c.subtask) {
                depends_on.push(c.subtask.clone());
            }
        }
        if !self
            .store
            .rerun_on_top(
                task_id,
                subtask,
                worker_id,
                attempt,
                &outcome,
                &depends_on,
                now,
            )
            .await?
        {
            return Ok(false);
        }
        self.store.add_predicted(task_id, &found).await?;
        self.store.count_completed(worker_id).await?;
        let mut events = events;
        events.push(Self::subtask_status_event(
            task_id,
            subtask,
            SubtaskStatus::Pending,
            json!({
                "worker": worker_id,
                "attempt": attempt,
                "attempt_status": "superseded",
                "commit": outcome.commit,
                "depends_on": depends_on,
            }),
        ));
        self.events.record_all(events).await?;
        self.wake.notify_one();
        Ok(true)
    }

    /// The task's succeeded branches `commit` conflicts with. Best effort:
    /// a prediction that cannot be made must not lose the result.
    async fn trial_merge(&self, task: &Task, st: &Subtask, commit: &str) -> Vec<Conflict> {
        let others: Vec<MergeItem> = task
            .subtasks
            .iter()
            .filter(|o| o.name != st.name)
            .filter(|o| status_of(o) == SubtaskStatus::Succeeded && !o.commit.is_empty())
            .map(|o| MergeItem {
                subtask: o.name.clone(),
                branch: o.branch.clone(),
                commit: o.commit.clone(),
                resolution: String::new(),
            })
            .collect();
        if others.is_empty() || commit.is_empty() {
            return Vec::new();
        }
        let mut client = self.aggregator.clone();
        let request = tonic::Request::new(TrialMergeRequest {
            repo: task.repo.clone(),
            task_id: task.id.clone(),
            subject: Some(MergeItem {
                subtask: st.name.clone(),
                branch: st.branch.clone(),
                commit: commit.to_owned(),
                resolution: String::new(),
            }),
            others,
        });
        self.best_effort(
            &task.id,
            &st.name,
            "the trial merge",
            client.trial_merge(request),
        )
        .await
        .map(|r| r.conflicts)
        .unwrap_or_default()
    }
}

/// What a subtask run again on top of others is told: which of its earlier
/// attempts' files conflicted with whom. `None` when it was not.
pub(crate) fn rerun_note(task: &Task, st: &Subtask) -> Option<String> {
    let reruns: Vec<_> = task
        .predicted_conflicts
        .iter()
        .filter(|p| p.subtask == st.name && p.action == POLICY_RERUN)
        .collect();
    if reruns.is_empty() {
        return None;
    }
    let mut out = String::from(
        "\n---\nYour earlier work on this subtask conflicted with work that is now merged into your working tree:\n",
    );
    for p in reruns {
        out.push_str(&format!(
            "- {} (conflicting files: {})\n",
            p.with,
            p.files.join(", ")
        ));
    }
    out.push_str(
        "Do this subtask again on top of it: keep their changes and add yours, so both are in the result.\n",
    );
    Some(out)
}
