//! Stored workflows: the TOML as written, by name.

use chrono::{DateTime, Utc};

use super::Store;
use crate::error::Result;

/// One stored workflow.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WorkflowRow {
    pub name: String,
    pub description: String,
    pub source: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

impl Store {
    /// Creates or replaces a workflow.
    pub async fn put_workflow(&self, row: &WorkflowRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO workflows (name, description, source, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, source = excluded.source,
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(&row.name)
        .bind(&row.description)
        .bind(&row.source)
        .bind(row.updated_at)
        .bind(&row.updated_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn workflow(&self, name: &str) -> Result<Option<WorkflowRow>> {
        Ok(sqlx::query_as("SELECT * FROM workflows WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn workflows(&self) -> Result<Vec<WorkflowRow>> {
        Ok(sqlx::query_as("SELECT * FROM workflows ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Removes a workflow; the removed row, if there was one.
    pub async fn delete_workflow(&self, name: &str) -> Result<Option<WorkflowRow>> {
        Ok(
            sqlx::query_as("DELETE FROM workflows WHERE name = $1 RETURNING *")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
