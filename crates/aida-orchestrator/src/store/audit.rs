//! The audit trail's rows: one per audited action, never updated.

use chrono::{DateTime, Utc};

use super::Store;
use crate::error::Result;

/// One audit line as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub username: String,
    pub role: String,
    pub client_addr: String,
    pub action: String,
    pub object: String,
    pub result: String,
    /// A JSON object.
    pub detail: String,
}

/// Which lines to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub username: Option<String>,
    /// An exact action (`auth.login`), or a family with a trailing `.`
    /// (`auth.`).
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
}

impl Store {
    /// Stores lines in one transaction; returns them with their ids.
    pub async fn insert_audit_batch(&self, rows: &[AuditRow]) -> Result<Vec<AuditRow>> {
        let mut tx = self.pool.begin().await?;
        let mut stored = Vec::with_capacity(rows.len());
        for row in rows {
            stored.push(
                sqlx::query_as(
                    "INSERT INTO audit_log (at, username, role, client_addr, action, object, result, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                )
                .bind(row.at)
                .bind(&row.username)
                .bind(&row.role)
                .bind(&row.client_addr)
                .bind(&row.action)
                .bind(&row.object)
                .bind(&row.result)
                .bind(&row.detail)
                .fetch_one(&mut *tx)
                .await?,
            );
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Lines matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        let (action, family) = match filter.action.as_deref() {
            Some(a) if a.ends_with('.') => (None, Some(format!("{a}%"))),
            Some(a) => (Some(a.to_owned()), None),
            None => (None, None),
        };
        Ok(sqlx::query_as(
            "SELECT * FROM audit_log
             WHERE ($1 IS NULL OR username = $1)
               AND ($2 IS NULL OR action = $2)
               AND ($3 IS NULL OR action LIKE $3)
               AND ($4 IS NULL OR at >= $4)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(&filter.username)
        .bind(action)
        .bind(family)
        .bind(filter.since)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
