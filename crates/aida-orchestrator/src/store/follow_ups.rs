//! Follow-ups and fallbacks: a subtask that ended is given a new
//! instruction (its task runs again), and a subtask whose agent used up its
//! attempts is handed to its fallback agent. Both start a new attempt
//! budget at the attempts made so far (`attempt_floor`).

use aida_core::proto::common::SubtaskStatus;
use aida_core::status::StatusLabel;
use chrono::{DateTime, Utc};

use super::{Store, SubtaskOutcome, close_attempt};
use crate::error::Result;

/// Why a follow-up could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUpRefused {
    /// The task is not in an ended state.
    TaskNotEnded,
    /// The subtask has no ended work to build on.
    SubtaskNotEnded,
}

impl Store {
    /// Records `prompt` as a follow-up of subtask `name` and puts it and its
    /// ended task back in the queue, in one transaction: either both move or
    /// neither does.
    pub async fn request_follow_up(
        &self,
        task_id: &str,
        name: &str,
        prompt: &str,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<(), FollowUpRefused>> {
        let mut tx = self.pool.begin().await?;
        let task = sqlx::query(
            "UPDATE tasks SET status = 'running', error = NULL, finished_at = NULL
             WHERE id = $1 AND status IN ('succeeded', 'conflicted', 'failed', 'cancelled')",
        )
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        if task.rows_affected() != 1 {
            return Ok(Err(FollowUpRefused::TaskNotEnded));
        }
        let subtask = sqlx::query(
            "UPDATE subtasks SET status = $1, follow_ups_json = json_insert(follow_ups_json, '$[#]', $2),
                 follow_up_pending = 1, attempt_floor = attempts, error = NULL, exit_code = NULL,
                 retry_at = NULL, lease_expires_at = NULL, started_at = $3, finished_at = NULL
             WHERE task_id = $4 AND name = $5 AND role = 'work' AND commit_sha IS NOT NULL
                 AND status IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(SubtaskStatus::Pending.label())
        .bind(prompt)
        .bind(now)
        .bind(task_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if subtask.rows_affected() != 1 {
            return Ok(Err(FollowUpRefused::SubtaskNotEnded));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Ends running attempt `attempt` as failed and hands the subtask to its
    /// fallback agent, with a fresh budget of attempts. False when that
    /// attempt no longer holds the subtask.
    pub async fn switch_to_fallback(
        &self,
        task_id: &str,
        name: &str,
        worker_id: &str,
        attempt: u32,
        outcome: &SubtaskOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE subtasks SET status = 'pending', on_fallback = 1, attempt_floor = attempts,
                 error = NULLIF($1, ''), exit_code = $2, lease_expires_at = NULL, retry_at = NULL
             WHERE task_id = $3 AND name = $4 AND status = 'running' AND worker_id = $5 AND attempts = $6
                 AND on_fallback = 0 AND fallback_json IS NOT NULL",
        )
        .bind(&outcome.error)
        .bind(outcome.exit_code)
        .bind(task_id)
        .bind(name)
        .bind(worker_id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        close_attempt(&mut tx, task_id, name, attempt, "failed", outcome, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}
