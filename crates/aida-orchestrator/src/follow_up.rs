//! Follow-ups: an ended subtask's agent runs again on its own branch with a
//! new instruction (resuming its session where the CLI can), and the task
//! merges and delivers again. The instruction comes from a user
//! (`POST /api/tasks/{id}/subtasks/{name}/follow-up`) or from a review of
//! the task's pull request.

use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::proto::common::{SubtaskStatus, Task, TaskStatus};
use aida_core::status::StatusLabel;
use chrono::Utc;
use serde_json::json;

use crate::engine::{Engine, task_status_of};
use crate::error::{OrchestratorError, Result};
use crate::store::{FollowUpRefused, NewEvent};

/// The longest follow-up instruction.
const MAX_PROMPT: usize = 64 * 1024;

impl Engine {
    /// Queues `prompt` as a follow-up of subtask `name` of an ended task.
    pub async fn follow_up(
        self: &Arc<Self>,
        task_id: &str,
        name: &str,
        prompt: &str,
        by: &str,
    ) -> Result<Task> {
        let prompt = prompt.trim();
        if prompt.is_empty() {
            return Err(OrchestratorError::invalid(
                "\"prompt\" is required: the new instruction for the agent",
            ));
        }
        if prompt.len() > MAX_PROMPT {
            return Err(OrchestratorError::invalid(format!(
                "\"prompt\" is at most {MAX_PROMPT} bytes"
            )));
        }
        let task = self.task(task_id).await?;
        let Some(st) = task.subtasks.iter().find(|s| s.name == name) else {
            return Err(OrchestratorError::NotFound(format!(
                "task {task_id} has no subtask {name:?}"
            )));
        };
        let status = task_status_of(&task);
        if !status.is_terminal() {
            return Err(OrchestratorError::FailedPrecondition(format!(
                "task {task_id} is {}: follow up once it has ended",
                status.label()
            )));
        }
        if st.commit.is_empty() {
            return Err(OrchestratorError::FailedPrecondition(format!(
                "subtask {name:?} has no work on its branch to follow up on"
            )));
        }
        match self
            .store
            .request_follow_up(task_id, name, prompt, Utc::now())
            .await?
        {
            Ok(()) => {}
            Err(FollowUpRefused::TaskNotEnded) => {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "task {task_id} is no longer ended: follow up once it has ended"
                )));
            }
            Err(FollowUpRefused::SubtaskNotEnded) => {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "subtask {name:?} is not ended with work on its branch"
                )));
            }
        }
        tracing::info!(task_id, subtask = name, by, "follow-up queued");
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::SUBTASK_FOLLOW_UP,
                task_id: Some(task_id.to_owned()),
                subtask: Some(name.to_owned()),
                worker_id: None,
                data: json!({ "prompt": prompt, "by": by, "from_commit": st.commit }),
            })
            .await?;
        self.task_status_event(task_id, TaskStatus::Running, None)
            .await?;
        self.events
            .record(Self::subtask_status_event(
                task_id,
                name,
                SubtaskStatus::Pending,
                json!({ "follow_up": true }),
            ))
            .await?;
        self.wake.notify_one();
        self.task(task_id).await
    }
}
