//! Bounded growth: the events of tasks that ended long ago, and the log
//! lines of tasks that ended a while ago, are removed a batch at a time.
//! A task that has not ended keeps every event, and an event not yet on
//! Redis is never removed.

use std::sync::LazyLock;

use aida_core::event::kind;
use aida_core::proto::common::TaskStatus;
use aida_core::status::StatusLabel;
use chrono::{DateTime, Utc};

use super::Store;
use crate::error::Result;

/// Rows removed per statement, so that a large sweep never holds the
/// database's write lock for long.
const BATCH: i64 = 5_000;

/// A task that ended before a cutoff.
#[derive(Debug, Clone)]
pub struct EndedTask {
    pub id: String,
    /// The repository (or mirror) its branches are in.
    pub repo: String,
    /// The remote it came from; empty for a local repository.
    pub remote: String,
}

/// The labels of the statuses a task never leaves, as a JSON array: every
/// status `is_terminal` says so of.
fn terminal_labels() -> &'static str {
    static LABELS: LazyLock<String> = LazyLock::new(|| {
        let labels: Vec<&str> = (0..64)
            .filter_map(|n| TaskStatus::try_from(n).ok())
            .filter(|s| s.is_terminal())
            .map(|s| s.label())
            .collect();
        serde_json::to_string(&labels).unwrap_or_else(|_| "[]".into())
    });
    &LABELS
}

impl Store {
    /// Tasks that ended before `cutoff`, oldest first.
    pub async fn tasks_ended_before(&self, cutoff: DateTime<Utc>) -> Result<Vec<EndedTask>> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, repo, remote FROM tasks
             WHERE finished_at IS NOT NULL AND finished_at < $1
               AND status IN (SELECT value FROM json_each($2))
             ORDER BY finished_at",
        )
        .bind(cutoff)
        .bind(terminal_labels())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, repo, remote)| EndedTask {
                id,
                repo,
                remote: remote.unwrap_or_default(),
            })
            .collect())
    }

    /// Removes (or, with `dry_run`, counts) the events of tasks that ended
    /// before `cutoff` and the worker events older than it. With an
    /// `outbox` (Redis), an event not yet published stays.
    pub async fn expire_events(
        &self,
        cutoff: DateTime<Utc>,
        outbox: bool,
        dry_run: bool,
    ) -> Result<u64> {
        let published = published_clause(outbox);
        let selection = format!(
            "SELECT e.id FROM events e JOIN tasks t ON t.id = e.task_id
                 WHERE {published} t.finished_at IS NOT NULL AND t.finished_at < $1
                   AND t.status IN (SELECT value FROM json_each($2))
             UNION ALL
             SELECT e.id FROM events e WHERE {published} e.task_id IS NULL AND e.at < $1"
        );
        self.remove_batches(&selection, cutoff, None, dry_run).await
    }

    /// Removes (or counts) the log lines of tasks that ended before
    /// `cutoff` but the last `keep` of each subtask: what a user reads to
    /// see how a run ended stays, the bulk goes. Every other event of the
    /// task stays.
    pub async fn compact_logs(
        &self,
        cutoff: DateTime<Utc>,
        keep: u32,
        outbox: bool,
        dry_run: bool,
    ) -> Result<u64> {
        let published = published_clause(outbox);
        let selection = format!(
            "SELECT id FROM (
                 SELECT e.id, ROW_NUMBER() OVER (
                     PARTITION BY e.task_id, e.subtask ORDER BY e.id DESC) AS newest
                 FROM events e JOIN tasks t ON t.id = e.task_id
                 WHERE {published} e.kind = $3
                   AND t.finished_at IS NOT NULL AND t.finished_at < $1
                   AND t.status IN (SELECT value FROM json_each($2)))
             WHERE newest > $4"
        );
        self.remove_batches(&selection, cutoff, Some(keep), dry_run)
            .await
    }

    /// Deletes the events `selection` picks, a batch at a time, or counts
    /// them. `selection` binds the cutoff as `$1`, the terminal statuses as
    /// `$2` and, for logs, the log kind as `$3` and `keep` as `$4`.
    async fn remove_batches(
        &self,
        selection: &str,
        cutoff: DateTime<Utc>,
        keep: Option<u32>,
        dry_run: bool,
    ) -> Result<u64> {
        if dry_run {
            let sql = format!("SELECT COUNT(*) FROM ({selection})");
            let count = select(&sql, cutoff, keep).fetch_one(&self.pool).await?;
            return Ok(u64::try_from(count).unwrap_or(0));
        }
        let mut removed = 0u64;
        loop {
            let sql = format!("{selection} LIMIT {BATCH}");
            let ids = select(&sql, cutoff, keep).fetch_all(&self.pool).await?;
            if ids.is_empty() {
                return Ok(removed);
            }
            let ids_json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
            let done =
                sqlx::query("DELETE FROM events WHERE id IN (SELECT value FROM json_each($1))")
                    .bind(ids_json)
                    .execute(&self.pool)
                    .await?;
            removed += done.rows_affected();
        }
    }
}

/// With Redis, an event still in the outbox is kept until published;
/// without it nothing is ever published and the flag means nothing.
fn published_clause(outbox: bool) -> &'static str {
    if outbox { "e.published = 1 AND" } else { "" }
}

/// `sql` with its parameters bound, as [`Store::remove_batches`] describes.
fn select<'q>(
    sql: &'q str,
    cutoff: DateTime<Utc>,
    keep: Option<u32>,
) -> sqlx::query::QueryScalar<'q, sqlx::Sqlite, i64, sqlx::sqlite::SqliteArguments<'q>> {
    let query = sqlx::query_scalar(sql).bind(cutoff).bind(terminal_labels());
    match keep {
        Some(keep) => query.bind(kind::LOG_LINE).bind(i64::from(keep)),
        None => query,
    }
}
