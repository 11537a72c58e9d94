//! Merge quality, as stored on the task: the conflicts trial merges saw
//! coming (`predicted_json`) and what the resolver agent did at the merge
//! (`resolutions_json`), as JSON lists; a subtask run again on top of the
//! one it conflicted with; the resolver's runs, attempts of the task's
//! `_resolve` pseudo-subtask (role 'resolve'); best of N, a subtask ended
//! with the candidate chosen (candidates are subtasks of role 'candidate').

use aida_core::proto::common::{
    PredictedConflict, Resolution, ResolveSpec, Subtask, SubtaskStatus,
};
use aida_core::status::StatusLabel;
use aida_core::time::to_proto;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AgentJson, Store, SubtaskOutcome, close_attempt};
use crate::error::Result;

/// The resolver, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResolveJson {
    pub agent: Option<AgentJson>,
    pub max_attempts: u32,
}

impl From<&ResolveSpec> for ResolveJson {
    fn from(r: &ResolveSpec) -> Self {
        ResolveJson {
            agent: r.agent.clone().map(Into::into),
            max_attempts: r.max_attempts,
        }
    }
}

impl From<ResolveJson> for ResolveSpec {
    fn from(r: ResolveJson) -> Self {
        ResolveSpec {
            agent: r.agent.map(Into::into),
            max_attempts: r.max_attempts,
        }
    }
}

/// A conflict seen coming, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PredictedJson {
    pub subtask: String,
    pub with: String,
    pub files: Vec<String>,
    /// `predicted` or `rerun`.
    pub action: String,
    pub at: Option<DateTime<Utc>>,
}

impl From<PredictedJson> for PredictedConflict {
    fn from(p: PredictedJson) -> Self {
        PredictedConflict {
            subtask: p.subtask,
            with: p.with,
            files: p.files,
            action: p.action,
            at: p.at.map(to_proto),
        }
    }
}

/// What the resolver did for one conflicting subtask, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResolutionJson {
    pub subtask: String,
    /// `running`, `resolved` or `refused`.
    pub status: String,
    pub files: Vec<String>,
    /// The subtask's commit the resolution merges.
    pub theirs: String,
    /// The result so far it was made on, and the merge commit it made.
    pub onto: String,
    pub commit: String,
    pub agent: String,
    pub attempts: u32,
    pub error: String,
}

impl From<ResolutionJson> for Resolution {
    fn from(r: ResolutionJson) -> Self {
        Resolution {
            subtask: r.subtask,
            status: r.status,
            files: r.files,
            commit: r.commit,
            onto: r.onto,
            agent: r.agent,
            attempts: r.attempts,
            error: r.error,
        }
    }
}

impl Store {
    /// Adds conflicts seen coming to the task's list.
    pub async fn add_predicted(&self, task_id: &str, found: &[PredictedJson]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let raw: Option<String> =
            sqlx::query_scalar("SELECT predicted_json FROM tasks WHERE id = $1")
                .bind(task_id)
                .fetch_optional(&mut *tx)
                .await?;
        let mut all: Vec<PredictedJson> = raw
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        all.extend(found.iter().cloned());
        sqlx::query("UPDATE tasks SET predicted_json = $1 WHERE id = $2")
            .bind(serde_json::to_string(&all).context("encoding predicted conflicts")?)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets aside running attempt `attempt`, whose work conflicts with
    /// subtasks that succeeded before it, and queues the subtask again on
    /// top of them: they join its dependencies, it gets a fresh budget of
    /// attempts, and the attempt is kept in its history as `superseded`
    /// with its commit. False when that attempt no longer holds the
    /// subtask.
    #[allow(clippy::too_many_arguments)]
    pub async fn rerun_on_top(
        &self,
        task_id: &str,
        name: &str,
        worker_id: &str,
        attempt: u32,
        outcome: &SubtaskOutcome,
        depends_on: &[String],
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE subtasks SET status = 'pending', depends_on_json = $1, attempt_floor = attempts,
                 error = NULL, exit_code = NULL, lease_expires_at = NULL, retry_at = NULL
             WHERE task_id = $2 AND name = $3 AND status = 'running' AND worker_id = $4 AND attempts = $5",
        )
        .bind(serde_json::to_string(depends_on).context("encoding dependencies")?)
        .bind(task_id)
        .bind(name)
        .bind(worker_id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        close_attempt(&mut tx, task_id, name, attempt, "superseded", outcome, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// What the resolver did so far.
    pub async fn resolutions(&self, task_id: &str) -> Result<Vec<ResolutionJson>> {
        let raw: Option<String> =
            sqlx::query_scalar("SELECT resolutions_json FROM tasks WHERE id = $1")
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(raw
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    /// Records what the resolver did; with `queue`, also queues its next
    /// run (with `prompt`, when it changes), together, while the task is
    /// merging. False when it no longer is.
    pub async fn record_resolutions(
        &self,
        task_id: &str,
        resolutions: &[ResolutionJson],
        queue: bool,
        prompt: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(
            "UPDATE tasks SET resolutions_json = $1 WHERE id = $2 AND status = 'merging'",
        )
        .bind(serde_json::to_string(resolutions).context("encoding resolutions")?)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() != 1 {
            return Ok(false);
        }
        if queue {
            sqlx::query(
                "UPDATE subtasks SET status = 'pending', attempt_floor = attempts, error = NULL, exit_code = NULL,
                     retry_at = NULL, lease_expires_at = NULL, started_at = NULL, finished_at = NULL,
                     prompt = COALESCE($2, prompt)
                 WHERE task_id = $1 AND role = 'resolve' AND status != 'running'",
            )
            .bind(task_id)
            .bind(prompt)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Ends best-of-N subtask `name` with the candidate chosen (its commit,
    /// start, stats and summary become the subtask's), or failed with
    /// `error` when none can be. False when it had ended already.
    pub async fn choose_candidate(
        &self,
        task_id: &str,
        name: &str,
        winner: Option<&Subtask>,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let status = if winner.is_some() {
            SubtaskStatus::Succeeded
        } else {
            SubtaskStatus::Failed
        };
        let stats = winner
            .and_then(|w| w.stats.as_ref())
            .map(|s| {
                serde_json::to_string(&super::StatsJson {
                    files_changed: s.files_changed,
                    insertions: s.insertions,
                    deletions: s.deletions,
                    files: s.files.clone(),
                })
            })
            .transpose()
            .context("encoding stats")?;
        let ended = sqlx::query(
            "UPDATE subtasks SET status = $1, commit_sha = $2, start_commit = $3, stats_json = $4, summary = $5,
                 chosen = $6, error = NULLIF($7, ''), finished_at = $8, started_at = COALESCE(started_at, $9)
             WHERE task_id = $10 AND name = $11 AND role = 'work' AND status = 'pending'",
        )
        .bind(status.label())
        .bind(winner.map(|w| w.commit.clone()))
        .bind(winner.map(|w| w.start_commit.clone()))
        .bind(stats)
        .bind(winner.map(|w| w.summary.clone()).filter(|s| !s.is_empty()))
        .bind(winner.map(|w| w.name.clone()))
        .bind(error)
        .bind(now)
        .bind(
            winner
                .and_then(|w| w.started_at.as_ref())
                .and_then(aida_core::time::from_proto),
        )
        .bind(task_id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(ended.rows_affected() == 1)
    }
}

impl Store {
    /// Hands a best-of-N subtask's candidates to its judge: the judge's run
    /// gets `prompt` and may start. False when it was handed them already.
    pub async fn queue_judge(&self, task_id: &str, name: &str, prompt: &str) -> Result<bool> {
        let queued = sqlx::query(
            "UPDATE subtasks SET prompt = $1
             WHERE task_id = $2 AND name = $3 AND role = 'judge' AND status = 'pending' AND prompt = ''",
        )
        .bind(prompt)
        .bind(task_id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(queued.rows_affected() == 1)
    }
}
