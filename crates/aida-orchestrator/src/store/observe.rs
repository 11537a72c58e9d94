//! Reads for health checks and metrics: small, and cheap at any size.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::Store;
use crate::error::Result;

/// An attempt under way.
#[derive(Debug, Clone)]
pub struct RunningAttempt {
    pub task_id: String,
    pub subtask: String,
    pub attempt: u32,
    pub worker_id: String,
    /// The kind of the agent running it (its fallback's, once that took
    /// over).
    pub agent: String,
    pub started_at: DateTime<Utc>,
}

impl Store {
    /// Answers when the database does.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// When a task was created; `None` for an unknown task.
    pub async fn task_created_at(&self, task_id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT created_at FROM tasks WHERE id = $1")
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every attempt under way: the running subtasks.
    pub async fn running_attempts(&self) -> Result<Vec<RunningAttempt>> {
        let rows = sqlx::query(
            "SELECT task_id, name, attempts, worker_id, started_at,
                    COALESCE(CASE WHEN on_fallback = 1 THEN json_extract(fallback_json, '$.kind') END,
                             json_extract(agent_json, '$.kind'), 'command') AS agent
             FROM subtasks WHERE status = 'running' AND started_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RunningAttempt {
                    task_id: r.try_get("task_id")?,
                    subtask: r.try_get("name")?,
                    attempt: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    worker_id: r
                        .try_get::<Option<String>, _>("worker_id")?
                        .unwrap_or_default(),
                    agent: r.try_get("agent")?,
                    started_at: r.try_get("started_at")?,
                })
            })
            .collect()
    }

    /// Pending subtasks of unfinished tasks, by the task's priority.
    pub async fn queue_depth(&self) -> Result<Vec<(i32, u64)>> {
        let rows = sqlx::query(
            "SELECT tasks.priority AS priority, COUNT(*) AS pending FROM subtasks
             JOIN tasks ON tasks.id = subtasks.task_id
             WHERE subtasks.status = 'pending'
               AND tasks.status IN ('planning', 'queued', 'running', 'merging')
             GROUP BY tasks.priority",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i32, _>("priority")?,
                    u64::try_from(r.try_get::<i64, _>("pending")?).unwrap_or(0),
                ))
            })
            .collect()
    }
}
