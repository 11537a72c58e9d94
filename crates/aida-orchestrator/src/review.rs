//! What people look at: the diff of a subtask or of a task's result (the
//! aggregator computes it), and the system at a glance (the queue by
//! priority, the tasks under way, the last failures).

use aida_core::proto::aggregator::DiffRequest;
use aida_core::proto::common::{Diff, SubtaskStatus, Task, TaskStatus};
use aida_core::proto::orchestrator::{QueueLevel, SystemStatus, TaskLine};

use crate::engine::{Engine, status_of, task_status_of};
use crate::error::{OrchestratorError, Result};

/// Failed tasks `aida status` shows.
const RECENT_FAILURES: u32 = 5;

impl Engine {
    /// What `subtask` (a subtask or a best-of-N candidate) changed from
    /// where it started, or, with no subtask, the task's result against its
    /// base commit; all files or only `path`.
    pub async fn diff(&self, task_id: &str, subtask: &str, path: &str) -> Result<Diff> {
        let task = self.task(task_id).await?;
        let (from, to) = if subtask.is_empty() {
            if task.result_commit.is_empty() {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "task {task_id} has no result yet: it is {}",
                    aida_core::status::task_label(task.status)
                )));
            }
            (task.base_commit.clone(), task.result_commit.clone())
        } else {
            let st = task
                .subtasks
                .iter()
                .chain(task.candidates.iter())
                .find(|s| s.name == subtask)
                .ok_or_else(|| {
                    OrchestratorError::NotFound(format!(
                        "task {task_id} has no subtask {subtask:?}"
                    ))
                })?;
            if st.commit.is_empty() || st.start_commit.is_empty() {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "subtask {subtask:?} has no commit yet: it is {}",
                    aida_core::status::subtask_label(st.status)
                )));
            }
            (st.start_commit.clone(), st.commit.clone())
        };
        let mut client = self.aggregator.clone();
        let request = tonic::Request::new(DiffRequest {
            repo: task.repo.clone(),
            from,
            to,
            path: path.to_owned(),
        });
        match tokio::time::timeout(self.settings.aggregator_timeout, client.diff(request)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                Err(OrchestratorError::invalid(status.message().to_owned()))
            }
            Ok(Err(status)) => Err(OrchestratorError::aggregator_unavailable(format!(
                "the aggregator could not make the diff: {}",
                status.message()
            ))),
            Err(_) => Err(OrchestratorError::aggregator_unavailable(
                "the aggregator did not answer in time",
            )),
        }
    }

    /// The queue by priority, the tasks under way, the last failures.
    pub async fn system_status(&self) -> Result<SystemStatus> {
        let active = self.store.schedulable_tasks().await?;
        let mut queue: Vec<QueueLevel> = Vec::new();
        for task in &active {
            let pending = task
                .subtasks
                .iter()
                .chain(task.candidates.iter())
                .filter(|s| status_of(s) == SubtaskStatus::Pending)
                .count() as u32;
            if pending == 0 {
                continue;
            }
            match queue.iter_mut().find(|l| l.priority == task.priority) {
                Some(level) => {
                    level.pending += pending;
                    level.tasks += 1;
                }
                None => queue.push(QueueLevel {
                    priority: task.priority,
                    pending,
                    tasks: 1,
                }),
            }
        }
        queue.sort_by_key(|l| std::cmp::Reverse(l.priority));
        let mut lines: Vec<TaskLine> = active.iter().map(line).collect();
        lines.sort_by(|a, b| {
            let at = |l: &TaskLine| l.created_at.as_ref().map(|t| (t.seconds, t.nanos));
            at(a).cmp(&at(b))
        });
        let failures = self
            .store
            .recent_with_status(TaskStatus::Failed, RECENT_FAILURES)
            .await?;
        Ok(SystemStatus {
            queue,
            active: lines,
            failures: failures.iter().map(line).collect(),
            last_event_id: self.store.last_event_id().await?,
        })
    }
}

fn line(task: &Task) -> TaskLine {
    let count = |status: SubtaskStatus| {
        task.subtasks
            .iter()
            .filter(|s| status_of(s) == status)
            .count() as u32
    };
    TaskLine {
        id: task.id.clone(),
        status: task_status_of(task) as i32,
        description: task
            .description
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        repo: if task.remote.is_empty() {
            task.repo.clone()
        } else {
            task.remote.clone()
        },
        priority: task.priority,
        subtasks: task.subtasks.len() as u32,
        succeeded: count(SubtaskStatus::Succeeded),
        running: count(SubtaskStatus::Running),
        error: task.error.clone(),
        created_at: task.created_at,
        finished_at: task.finished_at,
    }
}
