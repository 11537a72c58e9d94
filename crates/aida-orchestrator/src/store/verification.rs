//! Verification of a task's merged result, as stored: what has been found
//! (status, runs, who broke it, what was left out) and the state of the
//! search (the merge order, each prefix's commit, the bisection's bounds),
//! as JSON on the task; each run is an attempt of the task's `_verify`
//! pseudo-subtask (role 'verify').

use aida_core::proto::common::Verification;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::Result;

/// How checking the result goes, and where the search stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerificationJson {
    /// `running`, `passed`, `failed` or `skipped`.
    pub status: String,
    pub broken_by: Vec<String>,
    pub runs: u32,
    pub output_tail: String,
    pub excluded: Vec<String>,
    /// The commit the pending or running run checks, and what it is.
    pub checking: String,
    pub checking_label: String,
    /// `result`: the whole result is checked; `bisect`: a prefix of it.
    pub phase: String,
    /// The merged subtasks in merge order, and the result's commit once
    /// each of them is merged: prefix `k` is `heads[k - 1]`.
    pub items: Vec<String>,
    pub heads: Vec<String>,
    /// Bisection bounds: the prefix of `lo` items passes, of `hi` fails.
    pub lo: usize,
    pub hi: usize,
}

impl From<VerificationJson> for Verification {
    fn from(v: VerificationJson) -> Self {
        Verification {
            status: v.status,
            broken_by: v.broken_by,
            runs: v.runs,
            output_tail: v.output_tail,
            excluded: v.excluded,
            checking: v.checking,
            checking_label: v.checking_label,
        }
    }
}

impl Store {
    /// Where verification of the task's result stands, if it started.
    pub async fn verification(&self, task_id: &str) -> Result<Option<VerificationJson>> {
        let raw: Option<Option<String>> =
            sqlx::query_scalar("SELECT verification_json FROM tasks WHERE id = $1")
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(raw
            .flatten()
            .and_then(|s| serde_json::from_str::<VerificationJson>(&s).ok()))
    }

    /// Records `state` and queues the next run of the verifier, together,
    /// while the task is merging. False when it no longer is.
    pub async fn queue_verification(
        &self,
        task_id: &str,
        state: &VerificationJson,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(
            "UPDATE tasks SET verification_json = $1 WHERE id = $2 AND status = 'merging'",
        )
        .bind(serde_json::to_string(state).context("encoding verification")?)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE subtasks SET status = 'pending', attempt_floor = attempts, error = NULL, exit_code = NULL,
                 retry_at = NULL, lease_expires_at = NULL, started_at = NULL, finished_at = NULL
             WHERE task_id = $1 AND role = 'verify' AND status != 'running'",
        )
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records how verification stands (or forgets it, with `None`: a new
    /// merge starts afresh).
    pub async fn record_verification(
        &self,
        task_id: &str,
        state: Option<&VerificationJson>,
    ) -> Result<()> {
        sqlx::query("UPDATE tasks SET verification_json = $1 WHERE id = $2")
            .bind(
                state
                    .map(serde_json::to_string)
                    .transpose()
                    .context("encoding verification")?,
            )
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
