//! Persistence: tasks, subtasks, events and workers in SQLite through sqlx;
//! users, tokens and webhook deliveries in [`auth`], the audit trail in
//! [`audit`].
//! Every status change is a guarded `UPDATE ... WHERE status = ...`, so two
//! racing writers cannot both win and a stale report cannot overwrite a newer
//! state. All SQL lives here, so a PostgreSQL backend replaces this module
//! alone; what it would translate is SQLite's `json_each` (lists passed as
//! JSON), `IS NOT` as a null-safe comparison (`IS DISTINCT FROM`) and
//! `AUTOINCREMENT` ids.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use aida_core::event::{Channel, Event};
use aida_core::proto::common::{
    AgentSpec, AgentUsage, Attempt, Conflict, ContextEntry, DeliverSpec, DiffStats, ResolveSpec,
    RunResult, Subtask, SubtaskStatus, Task, TaskOrigin, TaskStatus, VerifySpec, WorktreeSetup,
};
use aida_core::proto::orchestrator::Lock;
use aida_core::sparse::SparsePaths;
use aida_core::status::StatusLabel;
use aida_core::time::to_proto;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::error::Result;

pub mod audit;
pub mod auth;
mod delivery;
mod follow_ups;
mod merge_quality;
mod observe;
pub mod queue;
mod retention;
pub use follow_ups::FollowUpRefused;
pub use observe::RunningAttempt;
pub use retention::EndedTask;
mod verification;
pub use merge_quality::{PredictedJson, ResolutionJson, ResolveJson};
pub use verification::VerificationJson;
pub mod workflows;

/// The subtasks (every role) of the tasks whose ids are the JSON list
/// `$1`, in request order.
pub const SUBTASKS_OF: &str = "SELECT * FROM subtasks WHERE task_id IN (SELECT value FROM json_each($1)) ORDER BY task_id, position";

pub use audit::{AuditFilter, AuditRow};
pub use auth::{ApiTokenRow, ContextTokenRow, RefreshRow, UserChange, UserRow};
pub use delivery::DeliveryJson;
pub use workflows::WorkflowRow;

/// A validated task, ready to be stored.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub id: String,
    /// Who creates it: a user's name, or `webhook:<source>`.
    pub created_by: String,
    pub repo: String,
    pub base: String,
    pub base_commit: String,
    pub description: String,
    pub agent: AgentJson,
    pub priority: i32,
    pub subtasks: Vec<NewSubtask>,
    /// The planner's run, when an agent is to split the task: the task then
    /// starts `planning` with no subtasks.
    pub planner: Option<NewSubtask>,
    /// "auto" or "manual".
    pub approve: String,
    pub max_attempts: u32,
    pub timeout_secs: u32,
    /// "" for none.
    pub idempotency_key: String,
    /// The webhook event that creates it, recorded with it so that a second
    /// delivery of the event creates nothing; "" for none.
    pub webhook_delivery: String,
    /// The remote `repo` mirrors, when the task is on one.
    pub remote: Option<String>,
    pub deliver: Option<DeliverSpec>,
    pub setup: Option<WorktreeSetup>,
    /// The issue that started it.
    pub origin: Option<TaskOrigin>,
    /// The workflow its subtasks were made from; "" for none.
    pub workflow: String,
    /// Best of N: the candidates of the subtasks that give them, and the
    /// judges of those that give one.
    pub candidates: Vec<NewSubtask>,
    pub judges: Vec<NewSubtask>,
    /// How the work is checked; its runs are attempts of `verifier`.
    pub verify: Option<VerifySpec>,
    pub verifier: Option<NewSubtask>,
    /// "merge" or "rerun".
    pub merge_policy: String,
    /// The resolver of textual conflicts; its runs are attempts of
    /// `resolver`.
    pub resolve: Option<ResolveSpec>,
    pub resolver: Option<NewSubtask>,
    /// The W3C trace context of the request that creates it.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewSubtask {
    pub name: String,
    pub prompt: String,
    pub depends_on: Vec<String>,
    pub agent: AgentJson,
    pub branch: String,
    /// Takes over when `agent`'s attempts are used up.
    pub fallback: Option<AgentJson>,
    /// A best-of-N candidate: the subtask it is one for; "" otherwise.
    pub candidate_of: String,
    /// The directories its worktree holds; empty: the whole repository.
    pub paths: SparsePaths,
}

/// An agent spec as stored: JSON, so new adapter options need no migration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentJson {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::HashMap::is_empty")]
    pub options: std::collections::HashMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout_secs: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_turns: u32,
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub max_budget_usd: f64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

impl From<AgentSpec> for AgentJson {
    fn from(a: AgentSpec) -> Self {
        Self {
            kind: a.kind,
            command: a.command,
            options: a.options,
            model: a.model,
            timeout_secs: a.timeout_secs,
            max_turns: a.max_turns,
            max_budget_usd: a.max_budget_usd,
        }
    }
}

impl From<AgentJson> for AgentSpec {
    fn from(a: AgentJson) -> Self {
        Self {
            kind: a.kind,
            command: a.command,
            options: a.options,
            model: a.model,
            timeout_secs: a.timeout_secs,
            max_turns: a.max_turns,
            max_budget_usd: a.max_budget_usd,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UsageJson {
    #[serde(default)]
    session_id: String,
    #[serde(default)]
    turns: u32,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cost_usd: f64,
}

impl From<&AgentUsage> for UsageJson {
    fn from(u: &AgentUsage) -> Self {
        Self {
            session_id: u.session_id.clone(),
            turns: u.turns,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

impl From<UsageJson> for AgentUsage {
    fn from(u: UsageJson) -> Self {
        Self {
            session_id: u.session_id,
            turns: u.turns,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

/// A task's usage: its subtasks' summed.
fn total_usage(subtasks: &[Subtask]) -> Option<AgentUsage> {
    let mut total = AgentUsage::default();
    for u in subtasks.iter().filter_map(|s| s.usage.as_ref()) {
        total.turns += u.turns;
        total.input_tokens += u.input_tokens;
        total.output_tokens += u.output_tokens;
        total.cost_usd += u.cost_usd;
    }
    (total != AgentUsage::default()).then_some(total)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StatsJson {
    files_changed: u32,
    insertions: u32,
    deletions: u32,
    files: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConflictJson {
    subtask: String,
    files: Vec<String>,
}

/// How a subtask run ended, as the store records it.
#[derive(Debug, Clone, Default)]
pub struct SubtaskOutcome {
    pub status: Option<SubtaskStatus>,
    pub commit: String,
    pub start_commit: String,
    pub error: String,
    pub exit_code: i32,
    pub summary: String,
    pub stats: Option<DiffStats>,
    pub usage: Option<AgentUsage>,
    /// What a read-only run printed.
    pub output: String,
}

impl SubtaskOutcome {
    /// What a worker reported, as recorded: succeeded or failed, with
    /// `failure` as the error when a failed run gave none.
    pub fn of_run(result: &RunResult, failure: &str) -> Self {
        let error = match (result.success, result.error.is_empty()) {
            (true, _) => String::new(),
            (false, true) => failure.to_owned(),
            (false, false) => result.error.clone(),
        };
        SubtaskOutcome {
            status: Some(if result.success {
                SubtaskStatus::Succeeded
            } else {
                SubtaskStatus::Failed
            }),
            commit: result.commit.clone(),
            start_commit: result.start_commit.clone(),
            error,
            exit_code: result.exit_code,
            summary: result.summary.clone(),
            stats: None,
            usage: result.usage.clone(),
            output: result.output.clone(),
        }
    }
}

/// An event before the database gave it an id.
/// A new attempt at a subtask: who runs it, its number (the fencing
/// token), when, how long its lease holds, and its agent's context token
/// (id and hash).
#[derive(Debug, Clone, Copy)]
pub struct AttemptStart<'a> {
    pub worker_id: &'a str,
    pub attempt: u32,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub context_token: Option<(&'a str, &'a str)>,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub channel: Channel,
    pub kind: &'static str,
    pub task_id: Option<String>,
    pub subtask: Option<String>,
    pub worker_id: Option<String>,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub worker_id: String,
    pub address: String,
    pub agent_kinds: Vec<String>,
    pub state: String,
    pub completed: u64,
    pub connected_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub draining: bool,
    /// Bytes its worktree root takes, as it last reported.
    pub disk_usage_bytes: u64,
    /// Where it serves metrics and health; empty for nowhere.
    pub metrics_address: String,
}

/// Rows per multi-row INSERT of events: 7 bound values each stays far under
/// SQLite's limit on variables per statement.
const EVENTS_PER_STATEMENT: usize = 256;

/// What one group commit stored (see [`Store::insert_tasks_with_events`]).
#[derive(Debug)]
pub struct StoredBatch {
    /// Each task's outcome, in the batch's order.
    pub outcomes: Vec<Result<()>>,
    /// The tasks stored, as stored.
    pub tasks: Vec<Task>,
    /// Their `task.created` events, as stored.
    pub events: Vec<Event>,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(raw: Option<String>) -> T {
    raw.and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_default()
}

fn opt(s: Option<String>) -> String {
    s.unwrap_or_default()
}

impl Store {
    /// Opens (creating if needed) the database and applies migrations.
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(database_url)
            .with_context(|| format!("invalid DATABASE_URL {database_url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        if let Some(dir) = Path::new(options.get_filename()).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating database directory {}", dir.display()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file: a connection does not go stale between uses, and
            // the ping sqlx sends before handing one out would double the
            // round trips of every query.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .with_context(|| format!("opening database {database_url}"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Self { pool })
    }

    pub async fn insert_task(&self, task: &NewTask, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_task_in(&mut tx, task, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores new tasks with their events in one transaction (a group
    /// commit): a task that cannot be stored (a repeated idempotency key, a
    /// webhook delivery seen before) fails alone. Returns each task's
    /// outcome, the stored tasks read back in the same transaction, and
    /// their stored events.
    ///
    /// Only a task that can be refused on its own gets a savepoint (two
    /// more statements each). Should another fail, which nothing but a
    /// broken database makes happen, the whole transaction is rolled back
    /// and the batch stored again with a savepoint for every task, so a
    /// failure is still its task's alone and nothing is half-stored.
    pub async fn insert_tasks_with_events(
        &self,
        batch: &[(NewTask, NewEvent)],
        now: DateTime<Utc>,
    ) -> Result<StoredBatch> {
        match self.insert_batch(batch, now, false).await {
            Ok(stored) => Ok(stored),
            Err(e) => {
                tracing::warn!(error = ?e, tasks = batch.len(), "a group commit failed; storing its tasks one savepoint each");
                self.insert_batch(batch, now, true).await
            }
        }
    }

    async fn insert_batch(
        &self,
        batch: &[(NewTask, NewEvent)],
        now: DateTime<Utc>,
        savepoint_every_task: bool,
    ) -> Result<StoredBatch> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut traces = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        for (task, event) in batch {
            let may_be_refused =
                !task.idempotency_key.is_empty() || !task.webhook_delivery.is_empty();
            if savepoint_every_task || may_be_refused {
                let mut savepoint = sqlx::Acquire::begin(&mut tx).await?;
                if let Err(e) = insert_task_in(&mut savepoint, task, now).await {
                    savepoint.rollback().await?;
                    outcomes.push(Err(e));
                    continue;
                }
                savepoint.commit().await?;
            } else {
                // An error here rolls the whole transaction back (the caller
                // tries again with savepoints).
                insert_task_in(&mut tx, task, now).await?;
            }
            events.push(event.clone());
            traces.push(task.traceparent.clone());
            ids.push(task.id.clone());
            outcomes.push(Ok(()));
        }
        let events = insert_events_in(&mut tx, &events, &traces, now).await?;
        // Read back on this connection, before the commit: its cache holds
        // what it just wrote, and no other connection is taken.
        let tasks = new_tasks_in(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(StoredBatch {
            outcomes,
            tasks,
            events,
        })
    }

    /// Stores a planner's subtasks and moves the task from `planning` to
    /// `to`, together. False if the task was no longer planning.
    pub async fn accept_plan(
        &self,
        task_id: &str,
        subtasks: &[NewSubtask],
        to: TaskStatus,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query("UPDATE tasks SET status = $1, started_at = COALESCE(started_at, $2) WHERE id = $3 AND status = 'planning'")
            .bind(to.label())
            .bind(now)
            .bind(task_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !moved {
            return Ok(false);
        }
        insert_subtasks(&mut tx, task_id, subtasks, "work").await?;
        tx.commit().await?;
        Ok(true)
    }

    /// What a read-only run printed (the planner's plan).
    pub async fn subtask_output(&self, task_id: &str, name: &str) -> Result<String> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT output FROM subtasks WHERE task_id = $1 AND name = $2",
        )
        .bind(task_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .flatten()
        .unwrap_or_default())
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<Task>> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        // Every role's subtasks in one query, in order.
        let rows = sqlx::query("SELECT * FROM subtasks WHERE task_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        let mut task = assemble_task(&row, &rows)?;
        let mut history = self.attempts_of(id).await?;
        for st in task
            .subtasks
            .iter_mut()
            .chain(task.candidates.iter_mut())
            .chain(task.judges.iter_mut())
            .chain(task.planner.as_mut())
            .chain(task.verifier.as_mut())
            .chain(task.resolver.as_mut())
        {
            st.history = history.remove(&st.name).unwrap_or_default();
        }
        task.context = self.context(id, None, false).await?;
        Ok(Some(task))
    }

    /// Newest first.
    pub async fn list_tasks(&self, limit: u32) -> Result<Vec<Task>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM tasks ORDER BY created_at DESC, id DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        self.tasks_by_ids(&ids).await
    }

    /// Tasks whose subtasks may still be scheduled, in scheduling order:
    /// higher priority first, then first come first served. The dispatcher
    /// reads this on every pass, so it is two queries in all, and leaves
    /// out what scheduling does not need (attempt history, context, usage).
    pub async fn schedulable_tasks(&self) -> Result<Vec<Task>> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE status IN ('planning', 'queued', 'running', 'merging') ORDER BY priority DESC, created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut tasks: Vec<Task> = rows.iter().map(task_from_row).collect::<Result<_>>()?;
        self.attach_subtasks(&mut tasks).await?;
        Ok(tasks)
    }

    /// Reads the subtasks (of every role) of `tasks` in one query ([`SUBTASKS_OF`]), in
    /// request order, leaving out what scheduling does not need.
    pub(crate) async fn attach_subtasks(&self, tasks: &mut [Task]) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        let rows = sqlx::query(SUBTASKS_OF)
            .bind(serde_json::to_string(&ids).context("encoding task ids")?)
            .fetch_all(&self.pool)
            .await?;
        let index: HashMap<String, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        for row in &rows {
            let task_id: String = row.try_get("task_id")?;
            let role: String = row.try_get("role")?;
            let Some(&i) = index.get(&task_id) else {
                continue;
            };
            let subtask = subtask_from_row(row)?;
            match role.as_str() {
                "plan" => tasks[i].planner = Some(subtask),
                "verify" => tasks[i].verifier = Some(subtask),
                "resolve" => tasks[i].resolver = Some(subtask),
                "candidate" => tasks[i].candidates.push(subtask),
                "judge" => tasks[i].judges.push(subtask),
                _ => tasks[i].subtasks.push(subtask),
            }
        }
        Ok(())
    }

    /// Ids of tasks in a given status.
    pub async fn task_ids_with_status(&self, status: TaskStatus) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM tasks WHERE status = $1 ORDER BY created_at")
                .bind(status.label())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The newest event's id; 0 when there is none.
    pub async fn last_event_id(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The last `limit` tasks that ended with `status`, newest first.
    pub async fn recent_with_status(&self, status: TaskStatus, limit: u32) -> Result<Vec<Task>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE status = $1 ORDER BY finished_at DESC, id DESC LIMIT $2",
        )
        .bind(status.label())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.tasks_by_ids(&ids).await
    }

    async fn tasks_by_ids(&self, ids: &[String]) -> Result<Vec<Task>> {
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(t) = self.get_task(id).await? {
                tasks.push(t);
            }
        }
        Ok(tasks)
    }

    /// Moves a task from one of `from` to `to`. False if it was in no such
    /// status (someone else moved it first).
    pub async fn transition_task(
        &self,
        id: &str,
        from: &[TaskStatus],
        to: TaskStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.label()).collect();
        let from_json = serde_json::to_string(&from).context("encoding statuses")?;
        let result = sqlx::query(
            "UPDATE tasks SET status = $1,
                 error = COALESCE($2, error),
                 started_at = CASE WHEN $1 = 'running' AND started_at IS NULL THEN $3 ELSE started_at END,
                 finished_at = CASE WHEN $4 THEN $3 ELSE finished_at END
             WHERE id = $5 AND status IN (SELECT value FROM json_each($6))",
        )
        .bind(to.label())
        .bind(error)
        .bind(now)
        .bind(to.is_terminal())
        .bind(id)
        .bind(from_json)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Marks a pending subtask running on `worker_id` as attempt `attempt`.
    /// Marks a pending subtask (whose retry time, if any, has come) as
    /// running attempt `attempt` on `worker_id`, leased until `lease_until`,
    /// and records the attempt.
    pub async fn start_subtask(
        &self,
        task_id: &str,
        name: &str,
        start: &AttemptStart<'_>,
    ) -> Result<bool> {
        let AttemptStart {
            worker_id,
            attempt,
            now,
            lease_until,
            context_token,
        } = *start;
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE subtasks SET status = 'running', worker_id = $1, attempts = $2, started_at = $3,
                 finished_at = NULL, error = NULL, exit_code = NULL, lease_expires_at = $6, retry_at = NULL
             WHERE task_id = $4 AND name = $5 AND status = 'pending' AND (retry_at IS NULL OR retry_at <= $3)",
        )
        .bind(worker_id)
        .bind(attempt)
        .bind(now)
        .bind(task_id)
        .bind(name)
        .bind(lease_until)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO attempts (task_id, name, number, worker_id, status, started_at)
             VALUES ($1, $2, $3, $4, 'running', $5)",
        )
        .bind(task_id)
        .bind(name)
        .bind(attempt)
        .bind(worker_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The attempt's context token, in the same commit: one write less
        // on every assignment.
        if let Some((id, secret_hash)) = context_token {
            auth::insert_context_token(&mut *tx, id, task_id, name, attempt, secret_hash, now)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Extends the lease of a running attempt. False when that attempt no
    /// longer holds the subtask.
    pub async fn renew_lease(
        &self,
        task_id: &str,
        name: &str,
        worker_id: &str,
        attempt: u32,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE subtasks SET lease_expires_at = $1
             WHERE task_id = $2 AND name = $3 AND status = 'running' AND worker_id = $4 AND attempts = $5",
        )
        .bind(until)
        .bind(task_id)
        .bind(name)
        .bind(worker_id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Running attempts whose lease ran out, as (task, subtask, worker,
    /// attempt).
    pub async fn expired_leases(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String, String, u32)>> {
        let rows = sqlx::query(
            "SELECT task_id, name, worker_id, attempts FROM subtasks
             WHERE status = 'running' AND lease_expires_at IS NOT NULL AND lease_expires_at < $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("task_id")?,
                    r.try_get("name")?,
                    r.try_get::<Option<String>, _>("worker_id")?
                        .unwrap_or_default(),
                    r.try_get::<i64, _>("attempts")? as u32,
                ))
            })
            .collect()
    }

    /// Ends a running attempt that will be tried again: the subtask goes
    /// back to pending until `retry_at`; the attempt keeps `attempt_status`
    /// ("failed", or "lost" when its lease expired).
    #[allow(clippy::too_many_arguments)]
    pub async fn retry_subtask(
        &self,
        task_id: &str,
        name: &str,
        worker_id: &str,
        attempt: u32,
        outcome: &SubtaskOutcome,
        attempt_status: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE subtasks SET status = 'pending', error = NULLIF($1, ''), exit_code = $2, lease_expires_at = NULL,
                 retry_at = $3
             WHERE task_id = $4 AND name = $5 AND status = 'running' AND worker_id = $6 AND attempts = $7",
        )
        .bind(&outcome.error)
        .bind(outcome.exit_code)
        .bind(retry_at)
        .bind(task_id)
        .bind(name)
        .bind(worker_id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        close_attempt(
            &mut tx,
            task_id,
            name,
            attempt,
            attempt_status,
            outcome,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sets or clears the note a pending subtask shows while it waits (in
    /// its `error` field). True when that changed the note.
    pub async fn note_pending(
        &self,
        task_id: &str,
        name: &str,
        note: Option<&str>,
    ) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE subtasks SET error = $1
             WHERE task_id = $2 AND name = $3 AND status = 'pending' AND error IS NOT $1",
        )
        .bind(note)
        .bind(task_id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Puts a subtask that could not be handed to its worker back in the queue.
    pub async fn unstart_subtask(&self, task_id: &str, name: &str, attempt: u32) -> Result<()> {
        sqlx::query("DELETE FROM attempts WHERE task_id = $1 AND name = $2 AND number = $3")
            .bind(task_id)
            .bind(name)
            .bind(attempt)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "UPDATE subtasks SET status = 'pending', worker_id = NULL, attempts = attempts - 1, started_at = NULL
             WHERE task_id = $1 AND name = $2 AND status = 'running' AND attempts = $3",
        )
        .bind(task_id)
        .bind(name)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the end of a running attempt. False when the subtask is no
    /// longer running that attempt on that worker (cancelled, or a newer
    /// attempt): the report is stale and changes nothing.
    pub async fn finish_subtask(
        &self,
        task_id: &str,
        name: &str,
        worker_id: &str,
        attempt: u32,
        outcome: &SubtaskOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let status = outcome.status.unwrap_or(SubtaskStatus::Failed);
        let stats = outcome
            .stats
            .as_ref()
            .map(|s| {
                serde_json::to_string(&StatsJson {
                    files_changed: s.files_changed,
                    insertions: s.insertions,
                    deletions: s.deletions,
                    files: s.files.clone(),
                })
            })
            .transpose()
            .context("encoding stats")?;
        let usage = outcome
            .usage
            .as_ref()
            .map(|u| serde_json::to_string(&UsageJson::from(u)))
            .transpose()
            .context("encoding usage")?;
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE subtasks SET status = $1, commit_sha = NULLIF($2, ''), start_commit = NULLIF($3, ''),
                 error = NULLIF($4, ''), exit_code = $5, summary = NULLIF($6, ''), stats_json = $7, finished_at = $8,
                 usage_json = $13, output = NULLIF($14, ''), lease_expires_at = NULL, retry_at = NULL,
                 follow_up_pending = 0
             WHERE task_id = $9 AND name = $10 AND status = 'running' AND worker_id = $11 AND attempts = $12",
        )
        .bind(status.label())
        .bind(&outcome.commit)
        .bind(&outcome.start_commit)
        .bind(&outcome.error)
        .bind(outcome.exit_code)
        .bind(&outcome.summary)
        .bind(stats)
        .bind(now)
        .bind(task_id)
        .bind(name)
        .bind(worker_id)
        .bind(attempt)
        .bind(usage)
        .bind(&outcome.output)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        close_attempt(
            &mut tx,
            task_id,
            name,
            attempt,
            status.label(),
            outcome,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends subtasks that have not finished (pending or running) with
    /// `status`; returns the names it changed.
    pub async fn end_unfinished_subtasks(
        &self,
        task_id: &str,
        names: Option<&[String]>,
        status: SubtaskStatus,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let names_json = names
            .map(serde_json::to_string)
            .transpose()
            .context("encoding names")?;
        let mut tx = self.pool.begin().await?;
        let changed: Vec<String> = sqlx::query_scalar(
            "UPDATE subtasks SET status = $1, error = $2, finished_at = $3, lease_expires_at = NULL, retry_at = NULL
             WHERE task_id = $4 AND status IN ('pending', 'running')
               AND ($5 IS NULL OR name IN (SELECT value FROM json_each($5)))
             RETURNING name",
        )
        .bind(status.label())
        .bind(reason)
        .bind(now)
        .bind(task_id)
        .bind(&names_json)
        .fetch_all(&mut *tx)
        .await?;
        // Attempts that were running end the same way.
        sqlx::query(
            "UPDATE attempts SET status = $1, error = $2, finished_at = $3
             WHERE task_id = $4 AND status = 'running' AND name IN (SELECT value FROM json_each($5))",
        )
        .bind(status.label())
        .bind(reason)
        .bind(now)
        .bind(task_id)
        .bind(serde_json::to_string(&changed).context("encoding names")?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Subtasks running on a worker, as (task id, name, attempt).
    pub async fn running_on_worker(&self, worker_id: &str) -> Result<Vec<(String, String, u32)>> {
        let rows = sqlx::query(
            "SELECT task_id, name, attempts FROM subtasks WHERE worker_id = $1 AND status = 'running'",
        )
        .bind(worker_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("task_id")?,
                    r.try_get("name")?,
                    r.try_get::<i64, _>("attempts")? as u32,
                ))
            })
            .collect()
    }

    /// Whether `worker_id` holds attempt `attempt` of the subtask (it is
    /// running it).
    pub async fn holds_attempt(
        &self,
        worker_id: &str,
        task_id: &str,
        subtask: &str,
        attempt: u32,
    ) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM subtasks WHERE task_id = $1 AND name = $2 AND worker_id = $3
                 AND attempts = $4 AND status = 'running'",
        )
        .bind(task_id)
        .bind(subtask)
        .bind(worker_id)
        .bind(attempt)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub async fn record_merge(
        &self,
        task_id: &str,
        branch: &str,
        commit: &str,
        merged: &[String],
        conflicts: &[Conflict],
    ) -> Result<()> {
        let conflicts: Vec<ConflictJson> = conflicts
            .iter()
            .map(|c| ConflictJson {
                subtask: c.subtask.clone(),
                files: c.files.clone(),
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE tasks SET result_branch = $1, result_commit = $2, conflicts_json = $3 WHERE id = $4",
        )
        .bind(branch)
        .bind(commit)
        .bind(serde_json::to_string(&conflicts).context("encoding conflicts")?)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE subtasks SET merged = (name IN (SELECT value FROM json_each($1))) WHERE task_id = $2",
        )
        .bind(serde_json::to_string(merged).context("encoding names")?)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_report(&self, task_id: &str, markdown: &str, json: &str) -> Result<()> {
        sqlx::query("UPDATE tasks SET report_markdown = $1, report_json = $2 WHERE id = $3")
            .bind(markdown)
            .bind(json)
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The stored report, if the task finished and one was written.
    pub async fn report(&self, task_id: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT report_markdown, report_json FROM tasks WHERE id = $1 AND report_markdown IS NOT NULL",
        )
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("report_markdown")?, r.try_get("report_json")?)),
            None => None,
        })
    }

    /// Every attempt of a task's subtasks, by subtask name, oldest first.
    async fn attempts_of(&self, task_id: &str) -> Result<HashMap<String, Vec<Attempt>>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE task_id = $1 ORDER BY name, number")
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?;
        let mut by_name: HashMap<String, Vec<Attempt>> = HashMap::new();
        for r in &rows {
            let name: String = r.try_get("name")?;
            by_name.entry(name).or_default().push(Attempt {
                number: r.try_get::<i64, _>("number")? as u32,
                worker_id: r.try_get("worker_id")?,
                status: r.try_get("status")?,
                error: opt(r.try_get("error")?),
                commit: opt(r.try_get("commit_sha")?),
                exit_code: r
                    .try_get::<Option<i64>, _>("exit_code")?
                    .unwrap_or_default() as i32,
                started_at: Some(to_proto(r.try_get("started_at")?)),
                finished_at: r
                    .try_get::<Option<DateTime<Utc>>, _>("finished_at")?
                    .map(to_proto),
            });
        }
        Ok(by_name)
    }

    /// The task created with this idempotency key, if any.
    pub async fn task_by_idempotency_key(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM tasks WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Unfinished tasks with a wall-clock limit, as (id, created_at, limit).
    pub async fn tasks_with_timeouts(&self) -> Result<Vec<(String, DateTime<Utc>, u32)>> {
        let rows = sqlx::query(
            "SELECT id, created_at, timeout_secs FROM tasks
             WHERE timeout_secs > 0 AND status IN ('planning', 'awaiting_approval', 'queued', 'running')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("created_at")?,
                    r.try_get::<i64, _>("timeout_secs")? as u32,
                ))
            })
            .collect()
    }

    // --- locks ---

    /// Takes `resource` for `owner` until `expires_at`. Succeeds when it is
    /// free, expired, or already `owner`'s (which renews it).
    pub async fn acquire_lock(
        &self,
        resource: &str,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let result = sqlx::query(
            "INSERT INTO locks (resource, owner, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (resource) DO UPDATE SET owner = excluded.owner, acquired_at = excluded.acquired_at,
                 expires_at = excluded.expires_at
             WHERE locks.expires_at < $3 OR locks.owner = excluded.owner",
        )
        .bind(resource)
        .bind(owner)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn release_lock(&self, resource: &str, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM locks WHERE resource = $1 AND owner = $2")
            .bind(resource)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Locks that have not expired.
    pub async fn locks(&self, now: DateTime<Utc>) -> Result<Vec<Lock>> {
        let rows = sqlx::query("SELECT * FROM locks WHERE expires_at >= $1 ORDER BY resource")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Lock {
                    resource: r.try_get("resource")?,
                    owner: r.try_get("owner")?,
                    acquired_at: Some(to_proto(r.try_get("acquired_at")?)),
                    expires_at: Some(to_proto(r.try_get("expires_at")?)),
                })
            })
            .collect()
    }

    // --- shared context ---

    /// A task's context entries, of one key or all: the latest value of
    /// each key, or with `history` every value, by key then version.
    pub async fn context(
        &self,
        task_id: &str,
        key: Option<&str>,
        history: bool,
    ) -> Result<Vec<ContextEntry>> {
        let rows = sqlx::query(
            "SELECT key, version, value, author, updated_at FROM task_context c
             WHERE task_id = $1 AND ($2 IS NULL OR key = $2)
               AND ($3 OR version = (SELECT MAX(version) FROM task_context m WHERE m.task_id = c.task_id AND m.key = c.key))
             ORDER BY key, version",
        )
        .bind(task_id)
        .bind(key)
        .bind(history)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ContextEntry {
                    key: r.try_get("key")?,
                    version: r.try_get::<i64, _>("version")? as u32,
                    value: r.try_get("value")?,
                    author: r.try_get("author")?,
                    updated_at: Some(to_proto(r.try_get("updated_at")?)),
                })
            })
            .collect()
    }

    /// Adds the next value of a key and returns it.
    pub async fn put_context(
        &self,
        task_id: &str,
        key: &str,
        value: &str,
        author: &str,
        now: DateTime<Utc>,
    ) -> Result<ContextEntry> {
        // One statement, so two writers of a key cannot take one version.
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO task_context (task_id, key, version, value, author, updated_at)
             SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5 FROM task_context WHERE task_id = $1 AND key = $2
             RETURNING version",
        )
        .bind(task_id)
        .bind(key)
        .bind(value)
        .bind(author)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(ContextEntry {
            key: key.to_owned(),
            value: value.to_owned(),
            version: version as u32,
            author: author.to_owned(),
            updated_at: Some(to_proto(now)),
        })
    }

    // --- events ---

    /// Stores `events`, each with the trace context of the same index
    /// (`traces` may be shorter: the rest have none).
    pub async fn insert_events(
        &self,
        events: &[NewEvent],
        traces: &[Option<String>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>> {
        let mut tx = self.pool.begin().await?;
        let stored = insert_events_in(&mut tx, events, traces, now).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Events after `after_id`, oldest first, of one task or of all.
    pub async fn events_after(
        &self,
        task_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT * FROM events WHERE id > $1 AND ($2 IS NULL OR task_id = $2) ORDER BY id LIMIT $3",
        )
        .bind(after_id)
        .bind(task_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The id of the newest stored event; 0 when there is none.
    pub async fn latest_event_id(&self) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    /// The oldest events not yet on Redis.
    pub async fn unpublished_events(&self, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT * FROM events WHERE published = 0 ORDER BY id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn mark_published(&self, up_to_id: i64) -> Result<()> {
        sqlx::query("UPDATE events SET published = 1 WHERE published = 0 AND id <= $1")
            .bind(up_to_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- workers ---

    /// Records a worker's connection; returns whether it is draining (a
    /// drain outlives reconnects).
    pub async fn upsert_worker(
        &self,
        worker_id: &str,
        address: &str,
        agent_kinds: &[String],
        hostname: &str,
        metrics_address: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let draining: i64 = sqlx::query_scalar(
            "INSERT INTO workers (worker_id, address, agent_kinds, hostname, state, connected_at, last_seen_at, metrics_address)
             VALUES ($1, $2, $3, $4, 'idle', $5, $5, $6)
             ON CONFLICT (worker_id) DO UPDATE SET address = excluded.address, agent_kinds = excluded.agent_kinds,
                 hostname = excluded.hostname, state = 'idle', connected_at = excluded.connected_at,
                 last_seen_at = excluded.last_seen_at, metrics_address = excluded.metrics_address
             RETURNING draining",
        )
        .bind(worker_id)
        .bind(address)
        .bind(serde_json::to_string(agent_kinds).context("encoding agent kinds")?)
        .bind(hostname)
        .bind(now)
        .bind(metrics_address)
        .fetch_one(&self.pool)
        .await?;
        Ok(draining != 0)
    }

    /// Drains or resumes a worker; false if no worker has that id.
    pub async fn set_worker_draining(&self, worker_id: &str, draining: bool) -> Result<bool> {
        let changed = sqlx::query("UPDATE workers SET draining = $2 WHERE worker_id = $1")
            .bind(worker_id)
            .bind(draining)
            .execute(&self.pool)
            .await?;
        Ok(changed.rows_affected() == 1)
    }

    pub async fn set_worker_state(
        &self,
        worker_id: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("UPDATE workers SET state = $1, last_seen_at = $2 WHERE worker_id = $3")
            .bind(state)
            .bind(now)
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_completed(&self, worker_id: &str) -> Result<()> {
        sqlx::query("UPDATE workers SET completed = completed + 1 WHERE worker_id = $1")
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records how much disk a worker's worktree root takes; false for a
    /// worker never seen.
    pub async fn set_worker_disk_usage(&self, worker_id: &str, bytes: u64) -> Result<bool> {
        let done = sqlx::query("UPDATE workers SET disk_usage_bytes = $1 WHERE worker_id = $2")
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerRow>> {
        let rows = sqlx::query("SELECT * FROM workers ORDER BY worker_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkerRow {
                    worker_id: r.try_get("worker_id")?,
                    address: r.try_get("address")?,
                    agent_kinds: parse_json(r.try_get("agent_kinds")?),
                    state: r.try_get("state")?,
                    completed: r.try_get::<i64, _>("completed")? as u64,
                    connected_at: r.try_get("connected_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                    draining: r.try_get::<i64, _>("draining")? != 0,
                    disk_usage_bytes: u64::try_from(r.try_get::<i64, _>("disk_usage_bytes")?)
                        .unwrap_or(0),
                    metrics_address: r.try_get("metrics_address")?,
                })
            })
            .collect()
    }
}

/// Inserts `events` in `tx`, stamped `now`; returns them with their ids.
async fn insert_events_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[NewEvent],
    traces: &[Option<String>],
    now: DateTime<Utc>,
) -> Result<Vec<Event>> {
    let mut stored = Vec::with_capacity(events.len());
    let trace_of = |i: usize| traces.get(i).cloned().flatten();
    // One statement per chunk rather than per event: a worker reports
    // log lines in batches, and this is the orchestrator's hottest path.
    for (c, chunk) in events.chunks(EVENTS_PER_STATEMENT).enumerate() {
        let first = c * EVENTS_PER_STATEMENT;
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (channel, kind, task_id, subtask, worker_id, at, data, traceparent) ",
        );
        insert.push_values(chunk.iter().enumerate(), |mut row, (i, e)| {
            row.push_bind(e.channel.as_str())
                .push_bind(e.kind)
                .push_bind(&e.task_id)
                .push_bind(&e.subtask)
                .push_bind(&e.worker_id)
                .push_bind(now)
                .push_bind(e.data.to_string())
                .push_bind(trace_of(first + i));
        });
        insert.push(" RETURNING id");
        let mut ids: Vec<i64> = insert.build_query_scalar().fetch_all(&mut **tx).await?;
        // Rows get increasing ids in VALUES order; RETURNING promises no
        // order, so sort rather than trust it.
        ids.sort_unstable();
        for (i, (id, e)) in ids.into_iter().zip(chunk).enumerate() {
            stored.push(Event {
                id,
                channel: e.channel,
                kind: e.kind.to_owned(),
                task_id: e.task_id.clone(),
                subtask: e.subtask.clone(),
                worker_id: e.worker_id.clone(),
                at: now,
                data: e.data.clone(),
                traceparent: trace_of(first + i),
            });
        }
    }
    Ok(stored)
}

/// Inserts a new task and its subtasks in `tx`.
/// Tasks just stored, in the order of `ids`, read in two queries however
/// many there are: what [`Store::get_task`] answers for each, as long as
/// none has run an attempt or had context written (true of a task just
/// created). Tasks not found are left out.
async fn new_tasks_in(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<Task>> {
    let ids_json = serde_json::to_string(ids).context("encoding task ids")?;
    let rows = sqlx::query("SELECT * FROM tasks WHERE id IN (SELECT value FROM json_each($1))")
        .bind(&ids_json)
        .fetch_all(&mut *conn)
        .await?;
    let subtask_rows = sqlx::query(
        "SELECT * FROM subtasks WHERE task_id IN (SELECT value FROM json_each($1))
         ORDER BY task_id, position",
    )
    .bind(&ids_json)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_task: HashMap<String, Vec<sqlx::sqlite::SqliteRow>> = HashMap::new();
    for row in subtask_rows {
        by_task
            .entry(row.try_get("task_id")?)
            .or_default()
            .push(row);
    }
    let mut by_id: HashMap<String, sqlx::sqlite::SqliteRow> = HashMap::new();
    for row in rows {
        by_id.insert(row.try_get("id")?, row);
    }
    ids.iter()
        .filter_map(|id| by_id.get(id))
        .map(|row| {
            let id: String = row.try_get("id")?;
            assemble_task(row, by_task.get(&id).map_or(&[][..], Vec::as_slice))
        })
        .collect()
}

async fn insert_task_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    task: &NewTask,
    now: DateTime<Utc>,
) -> Result<()> {
    let status = if task.planner.is_some() {
        TaskStatus::Planning
    } else {
        TaskStatus::Queued
    };
    if !task.webhook_delivery.is_empty() {
        auth::claim_delivery(&mut **tx, &task.webhook_delivery, "task.create", now).await?;
    }
    sqlx::query(
            "INSERT INTO tasks (id, status, repo, base, base_commit, description, agent_json, priority, created_at,
                 created_by, approve, max_attempts, timeout_secs, idempotency_key, remote, deliver_json, setup_json,
                 origin_json, workflow, verify_json, merge_policy, resolve_json, traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULLIF($14, ''), $15, $16, $17, $18,
                 NULLIF($19, ''), $20, $21, $22, $23)",
        )
        .bind(&task.id)
        .bind(status.label())
        .bind(&task.repo)
        .bind(&task.base)
        .bind(&task.base_commit)
        .bind(&task.description)
        .bind(serde_json::to_string(&task.agent).context("encoding agent")?)
        .bind(task.priority)
        .bind(now)
        .bind(&task.created_by)
        .bind(&task.approve)
        .bind(task.max_attempts)
        .bind(task.timeout_secs)
        .bind(&task.idempotency_key)
        .bind(&task.remote)
        .bind(
            task.deliver
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .context("encoding deliver")?,
        )
        .bind(
            task.setup
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .context("encoding setup")?,
        )
        .bind(
            task.origin
                .as_ref()
                .map(|o| serde_json::to_string(&OriginJson::from(o)))
                .transpose()
                .context("encoding origin")?,
        )
        .bind(&task.workflow)
        .bind(
            task.verify
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .context("encoding verify")?,
        )
        .bind(&task.merge_policy)
        .bind(
            task.resolve
                .as_ref()
                .map(|r| serde_json::to_string(&ResolveJson::from(r)))
                .transpose()
                .context("encoding resolve")?,
        )
        .bind(&task.traceparent)
        .execute(&mut **tx)
        .await?;
    insert_subtasks(tx, &task.id, &task.subtasks, "work").await?;
    insert_subtasks(tx, &task.id, &task.candidates, "candidate").await?;
    insert_subtasks(tx, &task.id, &task.judges, "judge").await?;
    if let Some(planner) = &task.planner {
        insert_subtasks(tx, &task.id, std::slice::from_ref(planner), "plan").await?;
    }
    if let Some(verifier) = &task.verifier {
        insert_subtasks(tx, &task.id, std::slice::from_ref(verifier), "verify").await?;
    }
    if let Some(resolver) = &task.resolver {
        insert_subtasks(tx, &task.id, std::slice::from_ref(resolver), "resolve").await?;
    }
    Ok(())
}

/// Records how a running attempt ended.
async fn close_attempt(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    task_id: &str,
    name: &str,
    attempt: u32,
    status: &str,
    outcome: &SubtaskOutcome,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE attempts SET status = $1, error = NULLIF($2, ''), commit_sha = NULLIF($3, ''), exit_code = $4,
             finished_at = $5
         WHERE task_id = $6 AND name = $7 AND number = $8",
    )
    .bind(status)
    .bind(&outcome.error)
    .bind(&outcome.commit)
    .bind(outcome.exit_code)
    .bind(now)
    .bind(task_id)
    .bind(name)
    .bind(attempt)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_subtasks(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    task_id: &str,
    subtasks: &[NewSubtask],
    role: &str,
) -> Result<()> {
    for (position, s) in subtasks.iter().enumerate() {
        sqlx::query(
            "INSERT INTO subtasks (task_id, name, position, prompt, depends_on_json, agent_json, status, branch, role,
                 fallback_json, candidate_of, paths_json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULLIF($11, ''), $12)",
        )
        .bind(task_id)
        .bind(&s.name)
        .bind(position as i64)
        .bind(&s.prompt)
        .bind(serde_json::to_string(&s.depends_on).context("encoding depends_on")?)
        .bind(serde_json::to_string(&s.agent).context("encoding agent")?)
        .bind(SubtaskStatus::Pending.label())
        .bind(&s.branch)
        .bind(role)
        .bind(
            s.fallback
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .context("encoding fallback")?,
        )
        .bind(&s.candidate_of)
        .bind(serde_json::to_string(&s.paths).context("encoding paths")?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A task from its row and its subtasks' rows (any order of roles, each
/// role in position order), with its usage; history and context are the
/// caller's.
fn assemble_task(
    row: &sqlx::sqlite::SqliteRow,
    subtask_rows: &[sqlx::sqlite::SqliteRow],
) -> Result<Task> {
    let mut task = task_from_row(row)?;
    for row in subtask_rows {
        let subtask = subtask_from_row(row)?;
        match row.try_get::<String, _>("role")?.as_str() {
            "work" => task.subtasks.push(subtask),
            "plan" => task.planner = Some(subtask),
            "verify" => task.verifier = Some(subtask),
            "resolve" => task.resolver = Some(subtask),
            "candidate" => task.candidates.push(subtask),
            "judge" => task.judges.push(subtask),
            other => tracing::warn!(
                task_id = task.id,
                role = other,
                "a subtask of an unknown role, left out"
            ),
        }
    }
    let mut runs: Vec<Subtask> = task.subtasks.clone();
    runs.extend(task.planner.clone());
    runs.extend(task.candidates.clone());
    task.usage = total_usage(&runs);
    Ok(task)
}

fn task_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Task> {
    let status: String = row.try_get("status")?;
    let agent: AgentJson = parse_json(row.try_get("agent_json")?);
    let conflicts: Vec<ConflictJson> = parse_json(row.try_get("conflicts_json")?);
    Ok(Task {
        id: row.try_get("id")?,
        status: TaskStatus::from_label(&status).unwrap_or(TaskStatus::Unspecified) as i32,
        repo: row.try_get("repo")?,
        base: row.try_get("base")?,
        base_commit: row.try_get("base_commit")?,
        description: row.try_get("description")?,
        agent: Some(agent.into()),
        priority: row.try_get("priority")?,
        subtasks: Vec::new(),
        result_branch: opt(row.try_get("result_branch")?),
        result_commit: opt(row.try_get("result_commit")?),
        conflicts: conflicts
            .into_iter()
            .map(|c| Conflict {
                subtask: c.subtask,
                files: c.files,
            })
            .collect(),
        error: opt(row.try_get("error")?),
        created_at: Some(to_proto(row.try_get("created_at")?)),
        started_at: row
            .try_get::<Option<DateTime<Utc>>, _>("started_at")?
            .map(to_proto),
        finished_at: row
            .try_get::<Option<DateTime<Utc>>, _>("finished_at")?
            .map(to_proto),
        usage: None,
        context: Vec::new(),
        planner: None,
        approve: row.try_get("approve")?,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        timeout_secs: row.try_get::<i64, _>("timeout_secs")? as u32,
        created_by: row.try_get("created_by")?,
        remote: opt(row.try_get("remote")?),
        deliver: row
            .try_get::<Option<String>, _>("deliver_json")?
            .and_then(|s| serde_json::from_str(&s).ok()),
        delivery: row
            .try_get::<Option<String>, _>("delivery_json")?
            .and_then(|s| serde_json::from_str::<DeliveryJson>(&s).ok())
            .map(Into::into),
        setup: row
            .try_get::<Option<String>, _>("setup_json")?
            .and_then(|s| serde_json::from_str(&s).ok()),
        origin: row
            .try_get::<Option<String>, _>("origin_json")?
            .and_then(|s| serde_json::from_str::<OriginJson>(&s).ok())
            .map(Into::into),
        workflow: opt(row.try_get("workflow")?),
        verify: row
            .try_get::<Option<String>, _>("verify_json")?
            .and_then(|s| serde_json::from_str(&s).ok()),
        verification: row
            .try_get::<Option<String>, _>("verification_json")?
            .and_then(|s| serde_json::from_str::<VerificationJson>(&s).ok())
            .map(Into::into),
        verifier: None,
        merge_policy: row.try_get("merge_policy")?,
        predicted_conflicts: parse_json::<Vec<PredictedJson>>(row.try_get("predicted_json")?)
            .into_iter()
            .map(Into::into)
            .collect(),
        resolve: row
            .try_get::<Option<String>, _>("resolve_json")?
            .and_then(|s| serde_json::from_str::<ResolveJson>(&s).ok())
            .map(Into::into),
        resolutions: parse_json::<Vec<ResolutionJson>>(row.try_get("resolutions_json")?)
            .into_iter()
            .map(Into::into)
            .collect(),
        resolver: None,
        candidates: Vec::new(),
        judges: Vec::new(),
        traceparent: row
            .try_get::<Option<String>, _>("traceparent")?
            .unwrap_or_default(),
    })
}

/// An issue that started a task, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OriginJson {
    kind: String,
    repository: String,
    number: u32,
    #[serde(default)]
    url: String,
    #[serde(default)]
    title: String,
}

impl From<&TaskOrigin> for OriginJson {
    fn from(o: &TaskOrigin) -> Self {
        OriginJson {
            kind: o.kind.clone(),
            repository: o.repository.clone(),
            number: o.number,
            url: o.url.clone(),
            title: o.title.clone(),
        }
    }
}

impl From<OriginJson> for TaskOrigin {
    fn from(o: OriginJson) -> Self {
        TaskOrigin {
            kind: o.kind,
            repository: o.repository,
            number: o.number,
            url: o.url,
            title: o.title,
        }
    }
}

fn subtask_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Subtask> {
    let status: String = row.try_get("status")?;
    let agent: AgentJson = parse_json(row.try_get("agent_json")?);
    let stats: Option<StatsJson> = row
        .try_get::<Option<String>, _>("stats_json")?
        .and_then(|s| serde_json::from_str(&s).ok());
    Ok(Subtask {
        name: row.try_get("name")?,
        prompt: row.try_get("prompt")?,
        depends_on: parse_json(row.try_get("depends_on_json")?),
        agent: Some(agent.into()),
        status: SubtaskStatus::from_label(&status).unwrap_or(SubtaskStatus::Unspecified) as i32,
        branch: row.try_get("branch")?,
        commit: opt(row.try_get("commit_sha")?),
        start_commit: opt(row.try_get("start_commit")?),
        worker_id: opt(row.try_get("worker_id")?),
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        error: opt(row.try_get("error")?),
        started_at: row
            .try_get::<Option<DateTime<Utc>>, _>("started_at")?
            .map(to_proto),
        finished_at: row
            .try_get::<Option<DateTime<Utc>>, _>("finished_at")?
            .map(to_proto),
        stats: stats.map(|s| DiffStats {
            files_changed: s.files_changed,
            insertions: s.insertions,
            deletions: s.deletions,
            files: s.files,
        }),
        merged: row.try_get::<i64, _>("merged")? != 0,
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")?
            .unwrap_or_default() as i32,
        usage: row
            .try_get::<Option<String>, _>("usage_json")?
            .and_then(|s| serde_json::from_str::<UsageJson>(&s).ok())
            .map(Into::into),
        summary: opt(row.try_get("summary")?),
        history: Vec::new(),
        retry_at: row
            .try_get::<Option<DateTime<Utc>>, _>("retry_at")?
            .map(to_proto),
        fallback: row
            .try_get::<Option<String>, _>("fallback_json")?
            .and_then(|s| serde_json::from_str::<AgentJson>(&s).ok())
            .map(Into::into),
        follow_ups: parse_json(row.try_get("follow_ups_json")?),
        attempt_floor: row.try_get::<i64, _>("attempt_floor")? as u32,
        on_fallback: row.try_get::<i64, _>("on_fallback")? != 0,
        follow_up_pending: row.try_get::<i64, _>("follow_up_pending")? != 0,
        candidate_of: opt(row.try_get("candidate_of")?),
        chosen: opt(row.try_get("chosen")?),
        paths: parse_json(row.try_get("paths_json")?),
    })
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Event> {
    let channel: String = row.try_get("channel")?;
    let data: String = row.try_get("data")?;
    Ok(Event {
        id: row.try_get("id")?,
        channel: channel.parse().map_err(anyhow::Error::msg)?,
        kind: row.try_get("kind")?,
        task_id: row.try_get("task_id")?,
        subtask: row.try_get("subtask")?,
        worker_id: row.try_get("worker_id")?,
        at: row.try_get("at")?,
        data: serde_json::from_str(&data).context("decoding event data")?,
        traceparent: row.try_get("traceparent")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_task() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let agent = AgentJson {
            kind: "command".into(),
            command: vec!["true".into()],
            ..Default::default()
        };
        let task = NewTask {
            id: "t1".into(),
            created_by: "alice".into(),
            repo: "/r".into(),
            base: "main".into(),
            base_commit: "abc".into(),
            description: "d".into(),
            agent: agent.clone(),
            priority: 0,
            subtasks: vec![NewSubtask {
                name: "a".into(),
                prompt: "p".into(),
                depends_on: vec![],
                agent,
                branch: "aida/t1/a".into(),
                ..Default::default()
            }],
            planner: None,
            approve: "auto".into(),
            max_attempts: 3,
            timeout_secs: 0,
            ..Default::default()
        };
        store.insert_task(&task, Utc::now()).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn new_tasks_read_together_are_what_get_task_answers() {
        let (_dir, store) = store_with_task().await;
        let sub = |name: &str| NewSubtask {
            name: name.into(),
            prompt: format!("do {name}"),
            branch: format!("aida/t2/{name}"),
            agent: AgentJson {
                kind: "command".into(),
                command: vec!["true".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let rich = NewTask {
            id: "t2".into(),
            created_by: "bob".into(),
            repo: "/r".into(),
            base: "main".into(),
            base_commit: "abc".into(),
            description: "several roles".into(),
            priority: 3,
            subtasks: vec![sub("x"), sub("y")],
            planner: Some(sub("_plan")),
            verifier: Some(sub("_verify")),
            candidates: vec![sub("x~1"), sub("x~2")],
            judges: vec![sub("_judge-x")],
            approve: "manual".into(),
            max_attempts: 2,
            ..Default::default()
        };
        store.insert_task(&rich, Utc::now()).await.unwrap();
        let ids = ["t2".to_owned(), "missing".to_owned(), "t1".to_owned()];
        let mut conn = store.pool.acquire().await.unwrap();
        let read = new_tasks_in(&mut conn, &ids).await.unwrap();
        drop(conn);
        let one_by_one = vec![
            store.get_task("t2").await.unwrap().unwrap(),
            store.get_task("t1").await.unwrap().unwrap(),
        ];
        assert_eq!(read, one_by_one);
        assert_eq!(read[0].subtasks.len(), 2);
        assert_eq!(read[0].candidates.len(), 2);
        assert!(read[0].planner.is_some() && read[0].verifier.is_some());
    }

    /// A group commit where one task fails for a reason nobody expects (here
    /// two subtasks with one name, which planning never lets through): the
    /// others are stored with their events, the failing one fails alone,
    /// and nothing of it is left half-stored.
    #[tokio::test]
    async fn a_task_failing_in_a_group_commit_fails_alone_and_leaves_nothing() {
        let (_dir, store) = store_with_task().await;
        let task = |id: &str, subtasks: &[&str], key: &str| {
            let new = NewTask {
                id: id.into(),
                repo: "/r".into(),
                base: "main".into(),
                base_commit: "abc".into(),
                subtasks: subtasks
                    .iter()
                    .map(|name| NewSubtask {
                        name: (*name).into(),
                        prompt: "p".into(),
                        ..Default::default()
                    })
                    .collect(),
                idempotency_key: key.into(),
                approve: "auto".into(),
                max_attempts: 1,
                ..Default::default()
            };
            let event = NewEvent {
                channel: Channel::Task,
                kind: aida_core::event::kind::TASK_CREATED,
                task_id: Some(id.into()),
                subtask: None,
                worker_id: None,
                data: serde_json::json!({}),
            };
            (new, event)
        };
        let batch = [
            task("a", &["x"], ""),
            task("broken", &["x", "x"], ""),
            task("b", &["y"], "key-1"),
            task("again", &["z"], "key-1"),
            task("c", &["z"], ""),
        ];
        let stored = store
            .insert_tasks_with_events(&batch, Utc::now())
            .await
            .unwrap();
        let ok: Vec<bool> = stored.outcomes.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, false, true]);
        let ids: Vec<&str> = stored.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let evented: Vec<Option<&str>> =
            stored.events.iter().map(|e| e.task_id.as_deref()).collect();
        assert_eq!(evented, [Some("a"), Some("b"), Some("c")]);
        for id in ["a", "b", "c"] {
            assert_eq!(
                store.get_task(id).await.unwrap().as_ref(),
                stored.tasks.iter().find(|t| t.id == id),
                "{id} as stored is what the batch answered"
            );
        }
        for id in ["broken", "again"] {
            assert!(
                store.get_task(id).await.unwrap().is_none(),
                "{id} left nothing"
            );
            let subtasks: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM subtasks WHERE task_id = $1")
                    .bind(id)
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(subtasks, 0, "{id} left no subtasks");
        }
    }

    fn succeeded() -> SubtaskOutcome {
        SubtaskOutcome {
            status: Some(SubtaskStatus::Succeeded),
            commit: "c1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn only_the_current_attempt_on_its_worker_can_finish_a_subtask() {
        let (_dir, store) = store_with_task().await;
        let now = Utc::now();
        let lease = now + chrono::Duration::seconds(15);
        assert!(
            store
                .start_subtask(
                    "t1",
                    "a",
                    &AttemptStart {
                        worker_id: "w1",
                        attempt: 1,
                        now,
                        lease_until: lease,
                        context_token: None
                    }
                )
                .await
                .unwrap()
        );
        // Already running: a second start loses.
        assert!(
            !store
                .start_subtask(
                    "t1",
                    "a",
                    &AttemptStart {
                        worker_id: "w2",
                        attempt: 1,
                        now,
                        lease_until: lease,
                        context_token: None
                    }
                )
                .await
                .unwrap()
        );
        // Wrong worker, wrong attempt: refused.
        assert!(
            !store
                .finish_subtask("t1", "a", "w2", 1, &succeeded(), now)
                .await
                .unwrap()
        );
        assert!(
            !store
                .finish_subtask("t1", "a", "w1", 2, &succeeded(), now)
                .await
                .unwrap()
        );
        assert!(
            store
                .finish_subtask("t1", "a", "w1", 1, &succeeded(), now)
                .await
                .unwrap()
        );
        // Once finished, a repeated report changes nothing.
        assert!(
            !store
                .finish_subtask("t1", "a", "w1", 1, &SubtaskOutcome::default(), now)
                .await
                .unwrap()
        );
        let task = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(task.subtasks[0].status, SubtaskStatus::Succeeded as i32);
        assert_eq!(task.subtasks[0].commit, "c1");
        assert_eq!(task.subtasks[0].attempts, 1);
    }

    #[tokio::test]
    async fn task_transitions_are_guarded_and_stamp_times() {
        let (_dir, store) = store_with_task().await;
        let now = Utc::now();
        assert!(
            !store
                .transition_task("t1", &[TaskStatus::Running], TaskStatus::Merging, None, now)
                .await
                .unwrap()
        );
        assert!(
            store
                .transition_task("t1", &[TaskStatus::Queued], TaskStatus::Running, None, now)
                .await
                .unwrap()
        );
        assert!(
            store
                .transition_task(
                    "t1",
                    &[TaskStatus::Running],
                    TaskStatus::Failed,
                    Some("boom"),
                    now
                )
                .await
                .unwrap()
        );
        let task = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Failed as i32);
        assert_eq!(task.error, "boom");
        assert!(task.started_at.is_some() && task.finished_at.is_some());
    }

    #[tokio::test]
    async fn events_keep_their_order_and_outbox_state() {
        let (_dir, store) = store_with_task().await;
        let new = |kind| NewEvent {
            channel: Channel::Task,
            kind,
            task_id: Some("t1".into()),
            subtask: None,
            worker_id: None,
            data: serde_json::json!({}),
        };
        let stored = store
            .insert_events(&[new("task.created"), new("task.status")], &[], Utc::now())
            .await
            .unwrap();
        assert!(stored[0].id < stored[1].id);
        assert_eq!(
            store
                .events_after(Some("t1"), stored[0].id, 10)
                .await
                .unwrap(),
            vec![stored[1].clone()]
        );
        assert_eq!(store.unpublished_events(10).await.unwrap().len(), 2);
        store.mark_published(stored[0].id).await.unwrap();
        assert_eq!(
            store.unpublished_events(10).await.unwrap(),
            vec![stored[1].clone()]
        );
    }

    #[tokio::test]
    async fn leases_expire_and_retries_wait_for_their_time() {
        let (_dir, store) = store_with_task().await;
        let now = Utc::now();
        let secs = chrono::Duration::seconds;
        assert!(
            store
                .start_subtask(
                    "t1",
                    "a",
                    &AttemptStart {
                        worker_id: "w1",
                        attempt: 1,
                        now,
                        lease_until: now + secs(15),
                        context_token: None
                    }
                )
                .await
                .unwrap()
        );
        assert!(store.expired_leases(now).await.unwrap().is_empty());
        // Heartbeats renew only the attempt that holds the subtask.
        assert!(
            !store
                .renew_lease("t1", "a", "w1", 2, now + secs(30))
                .await
                .unwrap()
        );
        assert!(
            store
                .renew_lease("t1", "a", "w1", 1, now + secs(30))
                .await
                .unwrap()
        );
        let later = now + secs(31);
        assert_eq!(
            store.expired_leases(later).await.unwrap(),
            vec![("t1".into(), "a".into(), "w1".into(), 1)]
        );

        // The attempt is lost and retried from `retry_at` on, not before.
        let lost = SubtaskOutcome {
            error: "lease expired".into(),
            exit_code: -1,
            ..Default::default()
        };
        assert!(
            store
                .retry_subtask("t1", "a", "w1", 1, &lost, "lost", later + secs(5), later)
                .await
                .unwrap()
        );
        assert!(
            !store
                .start_subtask(
                    "t1",
                    "a",
                    &AttemptStart {
                        worker_id: "w2",
                        attempt: 2,
                        now: later,
                        lease_until: later + secs(15),
                        context_token: None
                    }
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .start_subtask(
                    "t1",
                    "a",
                    &AttemptStart {
                        worker_id: "w2",
                        attempt: 2,
                        now: later + secs(5),
                        lease_until: later + secs(20),
                        context_token: None
                    }
                )
                .await
                .unwrap()
        );
        // The first worker's late report is refused: its epoch is gone.
        assert!(
            !store
                .finish_subtask("t1", "a", "w1", 1, &succeeded(), later)
                .await
                .unwrap()
        );
        assert!(
            store
                .finish_subtask("t1", "a", "w2", 2, &succeeded(), later + secs(6))
                .await
                .unwrap()
        );

        let task = store.get_task("t1").await.unwrap().unwrap();
        let history: Vec<(u32, &str, &str)> = task.subtasks[0]
            .history
            .iter()
            .map(|a| (a.number, a.worker_id.as_str(), a.status.as_str()))
            .collect();
        assert_eq!(history, [(1, "w1", "lost"), (2, "w2", "succeeded")]);
    }

    #[tokio::test]
    async fn a_lock_has_one_owner_until_it_expires_or_is_released() {
        let (_dir, store) = store_with_task().await;
        let now = Utc::now();
        let secs = chrono::Duration::seconds;
        assert!(
            store
                .acquire_lock("repo:/r", "task:1", now, now + secs(10))
                .await
                .unwrap()
        );
        assert!(
            !store
                .acquire_lock("repo:/r", "task:2", now, now + secs(10))
                .await
                .unwrap()
        );
        // Its owner may take it again (after a restart, say).
        assert!(
            store
                .acquire_lock("repo:/r", "task:1", now, now + secs(20))
                .await
                .unwrap()
        );
        assert_eq!(store.locks(now).await.unwrap()[0].owner, "task:1");
        // An expired lock is free: a crashed owner cannot hold it forever.
        assert!(
            store
                .acquire_lock("repo:/r", "task:2", now + secs(21), now + secs(30))
                .await
                .unwrap()
        );
        store.release_lock("repo:/r", "task:1").await.unwrap();
        assert_eq!(
            store.locks(now + secs(22)).await.unwrap().len(),
            1,
            "only the owner releases"
        );
        store.release_lock("repo:/r", "task:2").await.unwrap();
        assert!(store.locks(now + secs(22)).await.unwrap().is_empty());
    }
}
