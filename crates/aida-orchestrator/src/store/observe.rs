//! Reads for health checks and metrics: small, and cheap at any size.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::Store;
use crate::error::Result;

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
