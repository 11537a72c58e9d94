//! The dispatch queue: unfinished tasks in the order their subtasks start,
//! read from its head a page at a time through the index `tasks_queue`
//! (priority, age). A dispatch pass reads only as far as it hands work out,
//! so its cost does not grow with the number of tasks waiting.
//!
//! Order: the highest effective priority first, where waiting raises a
//! task's priority by one every `aging` (so a stream of urgent tasks cannot
//! starve an old one); first come first served within a priority. Within a
//! priority level the oldest task is also the most aged, so the walk merges
//! the levels' heads: one index seek per level and page.

use std::collections::VecDeque;
use std::time::Duration;

use aida_core::proto::common::Task;
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, task_from_row};
use crate::error::Result;

/// Tasks read in a level's first page: a pass usually needs only a few.
const FIRST: u32 = 4;
/// The most read in one page: pages double up to it as a walk goes on.
const MOST: u32 = 128;

/// The next priority level below `$1` that has unfinished tasks.
pub const LEVEL_BELOW: &str = "SELECT MAX(priority) FROM tasks
     WHERE status IN ('planning', 'queued', 'running', 'merging') AND priority < $1";
/// A level's first page.
pub const FIRST_PAGE: &str = "SELECT * FROM tasks
     WHERE status IN ('planning', 'queued', 'running', 'merging') AND priority = $1
     ORDER BY created_at, id LIMIT $2";
/// A level's page after the cursor ($2, $3).
pub const NEXT_PAGE: &str = "SELECT * FROM tasks
     WHERE status IN ('planning', 'queued', 'running', 'merging') AND priority = $1
       AND (created_at, id) > ($2, $3)
     ORDER BY created_at, id LIMIT $4";
/// Unfinished tasks (not one awaiting approval, say) with a pending
/// subtask whose current agent's kind is not in the JSON list `$1`.
pub const PENDING_OF_OTHER_KINDS: &str = "SELECT DISTINCT subtasks.task_id FROM subtasks
     JOIN tasks ON tasks.id = subtasks.task_id
     WHERE subtasks.status = 'pending'
       AND tasks.status IN ('planning', 'queued', 'running', 'merging')
       AND COALESCE(CASE WHEN subtasks.on_fallback = 1 THEN json_extract(subtasks.fallback_json, '$.kind') END,
                    json_extract(subtasks.agent_json, '$.kind'), 'command')
           NOT IN (SELECT value FROM json_each($1))";

/// Where a level's last page ended: the next starts after it.
#[derive(Debug, Clone)]
struct Cursor {
    created_at: String,
    id: String,
}

impl Store {
    /// The priority levels that have unfinished tasks, highest first: one
    /// index seek each.
    pub async fn queue_levels(&self) -> Result<Vec<i32>> {
        let mut levels = Vec::new();
        let mut below = i64::MAX;
        loop {
            let next: Option<i32> = sqlx::query_scalar(LEVEL_BELOW)
                .bind(below)
                .fetch_one(&self.pool)
                .await?;
            let Some(level) = next else { break };
            levels.push(level);
            below = i64::from(level);
        }
        Ok(levels)
    }

    /// Ids of unfinished tasks with a pending subtask whose agent kind is
    /// not one of `kinds`: read off the pending subtasks alone.
    pub async fn pending_needing_other_kinds(
        &self,
        kinds: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>> {
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        Ok(sqlx::query_scalar(PENDING_OF_OTHER_KINDS)
            .bind(serde_json::to_string(&kinds).context("encoding agent kinds")?)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Up to `limit` unfinished tasks of priority `level`, oldest first,
    /// after `after`, with their subtasks; and where the page ended.
    async fn queue_page(
        &self,
        level: i32,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<(Vec<Task>, Option<Cursor>)> {
        let rows = match after {
            None => {
                sqlx::query(FIRST_PAGE)
                    .bind(level)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(c) => {
                sqlx::query(NEXT_PAGE)
                    .bind(level)
                    .bind(&c.created_at)
                    .bind(&c.id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let cursor = match rows.last() {
            Some(row) => Some(Cursor {
                created_at: row.try_get("created_at")?,
                id: row.try_get("id")?,
            }),
            None => None,
        };
        let mut tasks: Vec<Task> = rows.iter().map(task_from_row).collect::<Result<_>>()?;
        self.attach_subtasks(&mut tasks).await?;
        Ok((tasks, cursor))
    }
}

/// One priority level of the queue, as far as it was read.
struct Level {
    priority: i32,
    read: VecDeque<Task>,
    cursor: Option<Cursor>,
    exhausted: bool,
    /// The size of the next page.
    page: u32,
}

/// A walk over the queue in dispatch order, reading pages as it goes.
pub struct QueueWalk<'a> {
    store: &'a Store,
    aging: Duration,
    now: DateTime<Utc>,
    levels: Vec<Level>,
}

impl<'a> QueueWalk<'a> {
    /// Starts at the queue's head, ordered as of now.
    pub async fn start(store: &'a Store, aging: Duration) -> Result<Self> {
        Self::start_at(store, aging, Utc::now()).await
    }

    /// Starts at the queue's head, ordered as of `now`.
    pub async fn start_at(store: &'a Store, aging: Duration, now: DateTime<Utc>) -> Result<Self> {
        let levels = store
            .queue_levels()
            .await?
            .into_iter()
            .map(|priority| Level {
                priority,
                read: VecDeque::new(),
                cursor: None,
                exhausted: false,
                page: FIRST,
            })
            .collect();
        Ok(QueueWalk {
            store,
            aging,
            now,
            levels,
        })
    }

    /// The next task in dispatch order; `None` at the end of the queue.
    pub async fn next(&mut self) -> Result<Option<Task>> {
        for level in &mut self.levels {
            if level.read.is_empty() && !level.exhausted {
                let (tasks, cursor) = self
                    .store
                    .queue_page(level.priority, level.cursor.as_ref(), level.page)
                    .await?;
                level.exhausted = tasks.len() < level.page as usize;
                level.page = (level.page * 2).min(MOST);
                level.cursor = cursor;
                level.read.extend(tasks);
            }
        }
        // Levels run from the highest priority down, and `max_by_key` keeps
        // the last of equals: walk them reversed so a tie goes to the
        // higher priority, as it would in a single sorted list.
        let best = self
            .levels
            .iter()
            .enumerate()
            .rev()
            .filter_map(|(i, l)| l.read.front().map(|t| (i, t)))
            .max_by_key(|(_, t)| effective_priority(t, self.now, self.aging))
            .map(|(i, _)| i);
        Ok(best.and_then(|i| self.levels[i].read.pop_front()))
    }
}

/// A task's priority raised by one for every `aging` it has waited.
pub fn effective_priority(task: &Task, now: DateTime<Utc>, aging: Duration) -> i64 {
    let waited_ms = task
        .created_at
        .as_ref()
        .and_then(aida_core::time::from_proto)
        .map(|at| (now - at).num_milliseconds().max(0))
        .unwrap_or(0);
    let aging_ms = i64::try_from(aging.as_millis()).unwrap_or(i64::MAX).max(1);
    i64::from(task.priority) + waited_ms / aging_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AgentJson, NewSubtask, NewTask, SUBTASKS_OF};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/q.db", dir.path().display()))
            .await
            .unwrap();
        (dir, store)
    }

    async fn queue(store: &Store, id: &str, priority: i32, at: DateTime<Utc>) {
        let agent = AgentJson {
            kind: "command".into(),
            command: vec!["true".into()],
            ..Default::default()
        };
        let task = NewTask {
            id: id.into(),
            created_by: "test".into(),
            repo: "/r".into(),
            base: "main".into(),
            base_commit: "abc".into(),
            description: "d".into(),
            agent: agent.clone(),
            priority,
            subtasks: vec![NewSubtask {
                name: "only".into(),
                prompt: "p".into(),
                agent,
                branch: format!("aida/{id}/only"),
                ..Default::default()
            }],
            approve: "auto".into(),
            max_attempts: 3,
            ..Default::default()
        };
        store.insert_task(&task, at).await.unwrap();
    }

    async fn walk(store: &Store, aging: Duration, now: DateTime<Utc>) -> Vec<Task> {
        let mut walk = QueueWalk::start_at(store, aging, now).await.unwrap();
        let mut order = Vec::new();
        while let Some(task) = walk.next().await.unwrap() {
            order.push(task);
        }
        order
    }

    #[tokio::test]
    async fn a_thousand_tasks_come_out_by_priority_then_age_and_waiting_raises_priority() {
        let (_dir, store) = store().await;
        let now = Utc::now();
        // Priorities 0..=4 interleaved; task i was created i seconds after
        // the first, so the oldest come first within a level.
        let mut expected = Vec::new();
        for i in 0..1000i64 {
            let priority = (i * 7 % 5) as i32;
            let id = format!("t{i:04}");
            queue(
                &store,
                &id,
                priority,
                now - chrono::Duration::seconds(2000 - i),
            )
            .await;
            expected.push((priority, i, id));
        }
        // Without aging that matters (a level per 10 hours): priority,
        // then age, across page boundaries of every level.
        expected.sort_by_key(|(p, i, _)| (-p, *i));
        let order = walk(&store, Duration::from_secs(36_000), now).await;
        assert_eq!(order.len(), 1000);
        assert!(
            order.iter().all(|t| t.subtasks.len() == 1),
            "subtasks come along"
        );
        let ids: Vec<&str> = order.iter().map(|t| t.id.as_str()).collect();
        let want: Vec<&str> = expected.iter().map(|(_, _, id)| id.as_str()).collect();
        assert_eq!(ids, want);

        // One level per 100 s of waiting: age lifts every level, so an old
        // priority 0 (t0000: 0 + 20) now goes before a fresh priority 4
        // (t0997: 4 + 0).
        let aging = Duration::from_secs(100);
        let order = walk(&store, aging, now).await;
        let ids: Vec<&str> = order.iter().map(|t| t.id.as_str()).collect();
        expected.sort_by_key(|(p, i, _)| (-(i64::from(*p) + (2000 - i) / 100), -p, *i));
        let want: Vec<&str> = expected.iter().map(|(_, _, id)| id.as_str()).collect();
        assert_eq!(ids, want);
        let at = |id: &str| ids.iter().position(|x| *x == id).unwrap();
        assert!(at("t0000") < at("t0997"));
    }

    #[tokio::test]
    async fn finished_tasks_leave_the_queue() {
        let (_dir, store) = store().await;
        let now = Utc::now();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            queue(&store, id, 0, now + chrono::Duration::seconds(i as i64)).await;
        }
        sqlx::query("UPDATE tasks SET status = 'succeeded' WHERE id = 'b'")
            .execute(&store.pool)
            .await
            .unwrap();
        let ids: Vec<String> = walk(&store, Duration::from_secs(60), Utc::now())
            .await
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["a", "c"]);
    }

    /// The plan SQLite chose for `sql`, one line per step.
    async fn plan(store: &Store, sql: &str, binds: &[&str]) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        for b in binds {
            query = query.bind(*b);
        }
        query
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect()
    }

    #[tokio::test]
    async fn the_dispatch_queries_read_through_indexes_and_never_scan_tasks_or_subtasks() {
        let (_dir, store) = store().await;
        let now = Utc::now();
        for i in 0..200 {
            queue(&store, &format!("t{i:03}"), i % 3, now).await;
        }
        sqlx::query("ANALYZE").execute(&store.pool).await.unwrap();
        let at = now.to_rfc3339();
        let dispatch = [
            ("next level", LEVEL_BELOW, vec!["9"]),
            ("first page", FIRST_PAGE, vec!["1", "32"]),
            ("next page", NEXT_PAGE, vec!["1", at.as_str(), "t001", "32"]),
            ("their subtasks", SUBTASKS_OF, vec![r#"["t001","t002"]"#]),
        ];
        for (what, sql, binds) in dispatch {
            let steps = plan(&store, sql, &binds).await;
            for step in &steps {
                assert!(
                    !step.starts_with("SCAN tasks") && !step.starts_with("SCAN subtasks"),
                    "{what} scans a table: {steps:#?}"
                );
            }
            assert!(
                steps
                    .iter()
                    .any(|s| s.starts_with("SEARCH tasks") || s.starts_with("SEARCH subtasks")),
                "{what} searches an index: {steps:#?}"
            );
            if what.ends_with("page") {
                assert!(
                    steps.iter().any(|s| s.contains("tasks_queue")),
                    "{what} reads the queue's index: {steps:#?}"
                );
                assert!(
                    !steps.iter().any(|s| s.contains("TEMP B-TREE")),
                    "{what} sorts a whole level: {steps:#?}"
                );
            }
        }
        // The sweep for unrunnable kinds reads pending subtasks only.
        let steps = plan(&store, PENDING_OF_OTHER_KINDS, &[r#"["command"]"#]).await;
        assert!(
            steps.iter().any(|s| s.contains("subtasks_pending")),
            "{steps:#?}"
        );
        assert!(
            !steps
                .iter()
                .any(|s| s == "SCAN subtasks" || s == "SCAN tasks"),
            "{steps:#?}"
        );
    }
}
