//! The end of a task: merge its succeeded subtasks into the result branch
//! (in dependency order, leaving out what verification excluded, taking the
//! resolver's merge commits for branches that conflicted; see
//! `resolution`), check the result when the task asks (see
//! `verification`), then write the report, deliver, and set the final
//! status.

use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::proto::aggregator::{MergeItem, MergeRequest, MergeResponse};
use aida_core::proto::common::{Conflict, SubtaskStatus, Task, TaskStatus};
use aida_core::status::StatusLabel;
use chrono::Utc;
use serde_json::json;

use crate::engine::{Engine, dependency_order, status_of, task_status_of};
use crate::error::Result;
use crate::store::NewEvent;

impl Engine {
    /// Merges the succeeded subtasks and either starts verifying the result
    /// or finishes the task: `failed` if a subtask failed, `conflicted` if
    /// a branch could not be merged, `succeeded` otherwise. Safe to run
    /// again after a crash: the aggregator rebuilds the result branch, and a
    /// verification under way goes on where it stood.
    pub(crate) async fn merge_and_finish(self: &Arc<Self>, task_id: &str) -> Result<()> {
        let task = self.task(task_id).await?;
        if task_status_of(&task) != TaskStatus::Merging {
            return Ok(());
        }
        // A span of the task's trace, whichever request led here.
        let span = tracing::info_span!(
            "merge",
            otel.kind = "internal",
            task_id = %task.id,
            trace_id = tracing::field::Empty,
        );
        aida_core::telemetry::adopt(&span, Some(&task.traceparent));
        tracing::Instrument::instrument(self.merge_and_finish_now(task), span).await
    }

    async fn merge_and_finish_now(self: &Arc<Self>, task: Task) -> Result<()> {
        let task_id = task.id.as_str();
        match self.store.verification(task_id).await? {
            // Its runs drive the task from here (the dispatcher hands them
            // out); after a restart too.
            Some(v) if v.status == "running" => {
                self.wake.notify_one();
                return Ok(());
            }
            // It ended before a crash: the result it left stands.
            Some(v) if v.status == "passed" || v.status == "failed" => {
                return self.finish_merged(task_id, None).await;
            }
            _ => {}
        }
        // A resolver's run is queued or under way; after a restart too.
        if crate::resolution::current(&task).is_some() {
            self.wake.notify_one();
            return Ok(());
        }
        match self.merge_subtasks(&task, &[]).await? {
            Err(reason) => {
                self.finish_merged(task_id, Some((TaskStatus::Failed, reason)))
                    .await
            }
            Ok(merged) => {
                if self.start_resolving(task_id, &merged).await? {
                    return Ok(());
                }
                if self
                    .start_verification(task_id, &merged, Default::default())
                    .await?
                {
                    return Ok(());
                }
                self.finish_merged(task_id, None).await
            }
        }
    }

    /// Merges the task's succeeded subtasks but `excluded` into its result
    /// branch and records the outcome; the error is the task's when the
    /// merge could not be done.
    pub(crate) async fn merge_subtasks(
        &self,
        task: &Task,
        excluded: &[String],
    ) -> Result<std::result::Result<MergeResponse, String>> {
        let items: Vec<MergeItem> = dependency_order(task)
            .into_iter()
            .map(|i| &task.subtasks[i])
            .filter(|s| status_of(s) == SubtaskStatus::Succeeded && !s.commit.is_empty())
            .filter(|s| !excluded.contains(&s.name))
            .map(|s| MergeItem {
                subtask: s.name.clone(),
                branch: s.branch.clone(),
                commit: s.commit.clone(),
                resolution: crate::resolution::resolution_of(task, &s.name),
            })
            .collect();
        // One merge per repository at a time, across orchestrators too. The
        // lock outlives the aggregator's deadline only briefly, so a crash
        // mid-merge frees it soon; the merge itself is redone on recovery.
        let resource = format!("repo:{}", task.repo);
        let owner = format!("task:{}", task.id);
        let ttl = self.settings.aggregator_timeout + std::time::Duration::from_secs(30);
        self.lock(&resource, &owner, ttl).await?;
        let mut client = self.aggregator.clone();
        let request = tonic::Request::new(MergeRequest {
            task_id: task.id.clone(),
            repo: task.repo.clone(),
            base_commit: task.base_commit.clone(),
            items,
        });
        let merged = match tokio::time::timeout(
            self.settings.aggregator_timeout,
            client.merge_results(request),
        )
        .await
        {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!("merge failed: {}", status.message())),
            Err(_) => Err("merge failed: the aggregator did not answer in time".to_owned()),
        };
        self.unlock(&resource, &owner).await?;
        let Ok(resp) = merged else {
            return Ok(merged);
        };
        let merged_names: Vec<String> = resp
            .outcomes
            .iter()
            .filter(|o| o.merged)
            .map(|o| o.subtask.clone())
            .collect();
        let conflicts: Vec<Conflict> = resp
            .outcomes
            .iter()
            .filter(|o| !o.merged)
            .map(|o| Conflict {
                subtask: o.subtask.clone(),
                files: o.conflict_files.clone(),
            })
            .collect();
        self.store
            .record_merge(
                &task.id,
                &resp.branch,
                &resp.commit,
                &merged_names,
                &conflicts,
            )
            .await?;
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::TASK_MERGED,
                task_id: Some(task.id.clone()),
                subtask: None,
                worker_id: None,
                data: json!({
                    "branch": resp.branch,
                    "commit": resp.commit,
                    "merged": merged_names,
                    "excluded": excluded,
                    "conflicts": conflicts.iter().map(|c| json!({"subtask": c.subtask, "files": c.files})).collect::<Vec<_>>(),
                }),
            })
            .await?;
        Ok(Ok(resp))
    }

    /// Writes the report, delivers, and ends the merged task: with `forced`
    /// status and reason, or with what its subtasks, conflicts and
    /// verification say.
    pub(crate) async fn finish_merged(
        self: &Arc<Self>,
        task_id: &str,
        forced: Option<(TaskStatus, String)>,
    ) -> Result<()> {
        let mut task = self.task(task_id).await?;
        let (final_status, error) = match forced {
            Some((status, reason)) => (status, Some(reason)),
            None => crate::verification::verdict(&task),
        };
        // The report is written before the final status is announced, so a
        // client that sees the task end can fetch it at once.
        task.status = final_status as i32;
        if let Some(e) = &error {
            task.error = e.clone();
        }
        self.write_report(&task).await;
        // Delivery comes before the status too: a task that ends
        // `succeeded` has its result on the remote (and its pull request
        // open) when that was asked for. A failed delivery fails the task,
        // with the merged result still in the mirror.
        let (final_status, error) = match self.deliver(&task, final_status).await {
            Some(Err(reason)) => {
                let reason = format!("the result was merged but not delivered: {reason}");
                task.status = TaskStatus::Failed as i32;
                task.error = reason.clone();
                self.write_report(&task).await;
                (TaskStatus::Failed, Some(reason))
            }
            _ => (final_status, error),
        };
        if self
            .store
            .transition_task(
                task_id,
                &[TaskStatus::Merging],
                final_status,
                error.as_deref(),
                Utc::now(),
            )
            .await?
        {
            self.task_status_event(task_id, final_status, error.as_deref())
                .await?;
            tracing::info!(task_id, status = final_status.label(), "task finished");
            if task.origin.is_some() {
                self.spawn_issue_outcome(task_id.to_owned());
            }
        }
        Ok(())
    }
}
