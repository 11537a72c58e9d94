//! Human-readable renderings of tasks, workers, events, users, API tokens
//! and audit lines, and writing to
//! stdout without panicking when the reader went away (`aida task list |
//! head`).

use std::fmt::Write as _;
use std::io::{self, Write};

use aida_core::event::kind;
use aida_gateway::api::{
    ApiToken, AuditEntry, Event, Subtask, SystemStatus, Task, TaskLine, User, Worker,
};
use chrono::{DateTime, Local, Utc};
use serde::Serialize;

/// Writes `text` to stdout; a closed pipe is not an error worth reporting.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// Pretty JSON plus a newline.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}

fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

pub fn local(at: DateTime<Utc>) -> String {
    at.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A task with its subtasks, a few lines.
pub fn task(task: &Task) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "task {} {}", task.id, task.status.label());
    if let Some(description) = &task.description {
        let _ = writeln!(out, "  description: {}", first_line(description, 100));
    }
    let _ = write!(out, "  repo: {}", task.repo);
    match (&task.base, &task.base_commit) {
        (Some(base), Some(commit)) => {
            let _ = write!(out, " (base {base} @ {})", short(commit));
        }
        (Some(base), None) => {
            let _ = write!(out, " (base {base})");
        }
        _ => {}
    }
    out.push('\n');
    match (task.created_at, &task.created_by) {
        (Some(at), Some(by)) => {
            let _ = writeln!(out, "  created: {} by {by}", local(at));
        }
        (Some(at), None) => {
            let _ = writeln!(out, "  created: {}", local(at));
        }
        (None, Some(by)) => {
            let _ = writeln!(out, "  created by: {by}");
        }
        (None, None) => {}
    }
    if let Some(branch) = &task.result_branch {
        let commit = task.result_commit.as_deref().map(short).unwrap_or("-");
        let _ = writeln!(out, "  result: {branch} @ {commit}");
    }
    if let Some(error) = &task.error {
        let _ = writeln!(out, "  error: {error}");
    }
    if !task.subtasks.is_empty() {
        let _ = writeln!(out, "  subtasks:");
        let width = task
            .subtasks
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        for subtask in &task.subtasks {
            let _ = writeln!(
                out,
                "    {:width$}  {}",
                subtask.name,
                subtask_line(subtask)
            );
        }
    }
    for conflict in &task.conflicts {
        let _ = writeln!(
            out,
            "  conflict: {}: {}",
            conflict.subtask,
            conflict.files.join(", ")
        );
    }
    for c in &task.candidates {
        let chosen = task
            .subtasks
            .iter()
            .any(|s| s.chosen.as_deref() == Some(c.name.as_str()));
        let _ = writeln!(
            out,
            "  candidate {}: {}{}",
            c.name,
            subtask_line(c),
            if chosen { "  (chosen)" } else { "" }
        );
    }
    for p in &task.predicted_conflicts {
        let _ = writeln!(
            out,
            "  conflict seen coming: {} with {}: {}{}",
            p.subtask,
            p.with,
            p.files.join(", "),
            if p.action == "rerun" {
                format!(" ({} ran again on top of {})", p.subtask, p.with)
            } else {
                String::new()
            }
        );
    }
    for r in &task.resolutions {
        let _ = writeln!(
            out,
            "  resolution: {}: {} by {} after {} run(s){}",
            r.subtask,
            r.status,
            r.agent,
            r.attempts,
            match (&r.commit, &r.error) {
                (Some(c), _) => format!(" @ {}", short(c)),
                (None, Some(e)) => format!(": {}", first_line(e, 120)),
                (None, None) => String::new(),
            }
        );
    }
    if let Some(v) = &task.verification {
        let mut line = format!("  verification: {} after {} run(s)", v.status, v.runs);
        if !v.broken_by.is_empty() {
            line.push_str(&format!(", broken by {}", v.broken_by.join(", ")));
        }
        if !v.excluded.is_empty() {
            line.push_str(&format!(", left out {}", v.excluded.join(", ")));
        }
        if let Some(label) = &v.checking_label {
            line.push_str(&format!(", checking {label}"));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

fn subtask_line(subtask: &Subtask) -> String {
    let mut parts = vec![format!("{:9}", subtask.status.label())];
    if !subtask.depends_on.is_empty() {
        parts.push(format!("after {}", subtask.depends_on.join(",")));
    }
    if let Some(worker) = &subtask.worker {
        parts.push(format!("on {worker}"));
    }
    if let Some(stats) = &subtask.stats {
        parts.push(format!(
            "{} files +{} -{}",
            stats.files_changed, stats.insertions, stats.deletions
        ));
    }
    if let Some(ms) = subtask.duration_ms {
        parts.push(format!("{:.1}s", ms as f64 / 1000.0));
    }
    if subtask.merged {
        parts.push("merged".to_owned());
    }
    if let Some(code) = subtask.exit_code.filter(|code| *code != 0) {
        parts.push(format!("exit {code}"));
    }
    if let Some(error) = &subtask.error {
        parts.push(format!("error: {}", first_line(error, 120)));
    }
    parts.join("  ")
}

/// One line per task.
pub fn task_table(tasks: &[Task]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:36}  {:10}  {:8}  {:19}  {:12}  DESCRIPTION",
        "ID", "STATUS", "SUBTASKS", "CREATED", "BY"
    );
    for task in tasks {
        let done = task
            .subtasks
            .iter()
            .filter(|s| s.status == aida_gateway::api::SubtaskStatus::Succeeded)
            .count();
        let _ = writeln!(
            out,
            "{:36}  {:10}  {:8}  {:19}  {:12}  {}",
            task.id,
            task.status.label(),
            format!("{done}/{}", task.subtasks.len()),
            task.created_at.map(local).unwrap_or_default(),
            task.created_by.as_deref().unwrap_or("-"),
            first_line(task.description.as_deref().unwrap_or(""), 60),
        );
    }
    out
}

/// One line per worker.
/// `aida status`: health, workers, queue, tasks under way, last failures.
pub fn system_status(status: &SystemStatus) -> String {
    let mut out = String::new();
    let failing = status.health.failing();
    if failing.is_empty() {
        let _ = writeln!(out, "AIDA: {}", status.health.status);
    } else {
        let _ = writeln!(
            out,
            "AIDA: {} ({} down)",
            status.health.status,
            failing.join(", ")
        );
    }
    let _ = writeln!(out, "\nWorkers:");
    if status.workers.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        for line in worker_table(&status.workers).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "\nQueue:");
    if status.queue.is_empty() {
        let _ = writeln!(out, "  empty");
    }
    for q in &status.queue {
        let _ = writeln!(
            out,
            "  priority {:>3}: {} subtask(s) waiting in {} task(s)",
            q.priority, q.pending, q.tasks
        );
    }
    let line = |t: &TaskLine| {
        format!(
            "  {}  {:<9} {}/{} done, {} running  {}  {}",
            t.id,
            t.status.label(),
            t.succeeded,
            t.subtasks,
            t.running,
            first_line(&t.description, 60),
            t.repo
        )
    };
    let _ = writeln!(out, "\nUnder way:");
    if status.active.is_empty() {
        let _ = writeln!(out, "  nothing");
    }
    for t in &status.active {
        let _ = writeln!(out, "{}", line(t));
    }
    let _ = writeln!(out, "\nLast failures:");
    if status.failures.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for t in &status.failures {
        let _ = writeln!(
            out,
            "  {}  {}  {}",
            t.id,
            t.finished_at.map(local).unwrap_or_default(),
            first_line(t.error.as_deref().unwrap_or("no reason given"), 100)
        );
    }
    out
}

pub fn worker_table(workers: &[Worker]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:24}  {:20}  {:9}  {:>9}  {:20}  WORKING ON",
        "WORKER", "STATE", "COMPLETED", "DISK MB", "AGENTS"
    );
    for worker in workers {
        let working_on = match (&worker.task_id, &worker.subtask) {
            (Some(task), Some(subtask)) => format!("{task}/{subtask}"),
            (Some(task), None) => task.clone(),
            _ => String::new(),
        };
        // What the scheduler makes of it besides its state.
        let mut state = worker.state.clone();
        if worker.draining {
            state.push_str(" draining");
        }
        if worker.quarantined_until.is_some() {
            state.push_str(" quarantined");
        }
        let _ = writeln!(
            out,
            "{:24}  {:20}  {:9}  {:>9.1}  {:20}  {working_on}",
            worker.worker_id,
            state,
            worker.completed,
            worker.disk_usage_bytes as f64 / 1e6,
            worker.agent_kinds.join(","),
        );
    }
    out
}

/// Rows under a header, each column as wide as its widest cell; the last
/// column is not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn when(at: Option<DateTime<Utc>>) -> String {
    at.map(local).unwrap_or_else(|| "-".to_owned())
}

/// One line per API token; its state as of `now`.
pub fn token_table(tokens: &[ApiToken], now: DateTime<Utc>) -> String {
    let rows: Vec<[String; 7]> = tokens
        .iter()
        .map(|t| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.is_some_and(|at| at <= now) {
                "expired"
            } else {
                "active"
            };
            [
                t.id.clone(),
                t.name.clone(),
                t.role.clone(),
                t.owner.clone(),
                state.to_owned(),
                when(t.expires_at),
                when(t.last_used_at),
            ]
        })
        .collect();
    table(
        [
            "ID",
            "NAME",
            "ROLE",
            "OWNER",
            "STATE",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    )
}

/// One line per user.
pub fn user_table(users: &[User]) -> String {
    let rows: Vec<[String; 6]> = users
        .iter()
        .map(|u| {
            let state = if u.disabled {
                "disabled".to_owned()
            } else if let Some(until) = u.locked_until {
                format!("locked until {}", local(until))
            } else {
                "active".to_owned()
            };
            [
                u.name.clone(),
                u.role.clone(),
                state,
                when(u.last_login_at),
                when(u.created_at),
                u.created_by.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(
        [
            "NAME",
            "ROLE",
            "STATE",
            "LAST LOGIN",
            "CREATED",
            "CREATED BY",
        ],
        &rows,
    )
}

/// One line per audit entry, its details as compact JSON.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let detail = match &e.detail {
                serde_json::Value::Null => String::new(),
                serde_json::Value::Object(map) if map.is_empty() => String::new(),
                other => other.to_string(),
            };
            [
                when(e.at),
                e.user.clone(),
                e.role.clone(),
                e.client_addr.clone(),
                e.action.clone(),
                e.object.clone(),
                e.result.clone(),
                first_line(&detail, 120),
            ]
        })
        .collect();
    table(
        [
            "TIME", "USER", "ROLE", "FROM", "ACTION", "OBJECT", "RESULT", "DETAIL",
        ],
        &rows,
    )
}

/// One line for one event: time, kind, subtask and worker, then the log
/// line or the status it reports.
pub fn event_line(event: &Event) -> String {
    let time = event.at.with_timezone(&Local).format("%H:%M:%S");
    let who = match (&event.subtask, &event.worker_id) {
        (Some(subtask), Some(worker)) => format!("{subtask}@{worker}"),
        (Some(subtask), None) => subtask.clone(),
        (None, Some(worker)) => worker.clone(),
        (None, None) => "-".to_owned(),
    };
    format!(
        "{time} {:15} {:12} {}\n",
        event.kind,
        who,
        event_text(event)
    )
}

fn event_text(event: &Event) -> String {
    let data = &event.data;
    let text = |key: &str| data.get(key).and_then(|v| v.as_str());
    if let Some(line) = text("line") {
        return match text("stream") {
            Some("stdout") | None => line.to_owned(),
            Some(stream) => format!("[{stream}] {line}"),
        };
    }
    if event.kind == kind::TASK_CREATED {
        let names = |key: &str| -> Vec<String> {
            data.get(key)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let base = text("base").unwrap_or("HEAD");
        let subtasks = names("subtasks");
        return format!(
            "{} @ {base}, subtasks {}",
            text("repo").unwrap_or("?"),
            subtasks.join(", ")
        );
    }
    if event.kind == kind::VERIFY_STARTED {
        return format!(
            "run {}: checking {} @ {}",
            data.get("run").and_then(|v| v.as_u64()).unwrap_or_default(),
            text("label").unwrap_or("?"),
            short(text("commit").unwrap_or("?"))
        );
    }
    if event.kind == kind::VERIFY_FINISHED {
        let passed = data.get("passed").and_then(|v| v.as_bool()) == Some(true);
        return format!(
            "run {}: {} {}{}",
            data.get("run").and_then(|v| v.as_u64()).unwrap_or_default(),
            text("label").unwrap_or("?"),
            if passed { "passed" } else { "failed" },
            text("error")
                .map(|e| format!(": {}", first_line(e, 120)))
                .unwrap_or_default()
        );
    }
    if event.kind == kind::CONFLICT_PREDICTED {
        let files = data
            .get("files")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return format!(
            "conflicts with {} in {files}{}",
            text("with").unwrap_or("?"),
            if text("action") == Some("rerun") {
                ": runs again on top of it"
            } else {
                ""
            }
        );
    }
    if event.kind == kind::CANDIDATE_CHOSEN {
        let all: Vec<String> = data
            .get("candidates")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|c| {
                        format!(
                            "{} {}{}",
                            c["name"].as_str().unwrap_or("?"),
                            c["status"].as_str().unwrap_or("?"),
                            c["lines_changed"]
                                .as_u64()
                                .map(|n| format!(" ({n} lines)"))
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        return format!(
            "chose {} of [{}]",
            text("chosen").unwrap_or("none"),
            all.join(", ")
        );
    }
    if event.kind == kind::CONFLICT_RESOLVED {
        let resolved = data.get("resolved").and_then(|v| v.as_bool()) == Some(true);
        return if resolved {
            format!(
                "resolved by {} @ {}",
                text("agent").unwrap_or("?"),
                short(text("commit").unwrap_or("?"))
            )
        } else {
            format!(
                "not resolved, left out: {}",
                first_line(text("error").unwrap_or("?"), 120)
            )
        };
    }
    if event.kind == kind::TASK_MERGED {
        let merged: Vec<&str> = data
            .get("merged")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let conflicts = data
            .get("conflicts")
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len);
        return format!(
            "{} @ {}, merged [{}], {conflicts} conflict(s)",
            text("branch").unwrap_or("?"),
            short(text("commit").unwrap_or("?")),
            merged.join(", ")
        );
    }
    if let Some(status) = text("status") {
        return match text("error").filter(|e| !e.is_empty()) {
            Some(error) => format!("{status}: {error}"),
            None => status.to_owned(),
        };
    }
    match data {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(map) if map.is_empty() => String::new(),
        other => other.to_string(),
    }
}

fn first_line(text: &str, max_chars: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max_chars || text.lines().nth(1).is_some() {
        let cut: String = line.chars().take(max_chars).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_their_widest_cell() {
        let text = table(
            ["A", "LONG HEADER", "LAST"],
            &[
                ["wide cell".into(), "x".into(), "end".into()],
                ["b".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(
            text,
            "A          LONG HEADER  LAST\nwide cell  x            end\nb\n"
        );
    }

    #[test]
    fn token_states_follow_revocation_and_expiry() {
        let now = Utc::now();
        let token = |revoked: bool, expired: bool| ApiToken {
            id: "abc".into(),
            name: "ci".into(),
            role: "operator".into(),
            owner: "alice".into(),
            created_at: Some(now),
            expires_at: Some(if expired {
                now - chrono::Duration::days(1)
            } else {
                now + chrono::Duration::days(1)
            }),
            last_used_at: None,
            revoked_at: revoked.then_some(now),
        };
        let text = token_table(
            &[token(true, false), token(false, true), token(false, false)],
            now,
        );
        let states: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(4).unwrap())
            .collect();
        assert_eq!(states, ["revoked", "expired", "active"]);
    }

    #[test]
    fn log_events_show_their_line_and_status_events_their_status() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": 3, "channel": "log", "kind": "log.line", "task_id": "t", "subtask": "api",
            "worker_id": "w1", "at": "2024-01-01T00:00:00Z", "data": {"stream": "stderr", "line": "boom"}
        }))
        .unwrap();
        let line = event_line(&event);
        assert!(
            line.contains("log.line")
                && line.contains("api@w1")
                && line.ends_with("[stderr] boom\n")
        );

        let event: Event = serde_json::from_value(serde_json::json!({
            "id": 4, "channel": "task", "kind": "task.status", "task_id": "t",
            "at": "2024-01-01T00:00:00Z", "data": {"status": "failed", "error": "api failed"}
        }))
        .unwrap();
        assert!(event_line(&event).ends_with("failed: api failed\n"));

        let event: Event = serde_json::from_value(serde_json::json!({
            "id": 5, "channel": "task", "kind": "task.merged", "task_id": "t", "at": "2024-01-01T00:00:00Z",
            "data": {"branch": "aida/t/result", "commit": "b94ef02d8d10698af", "conflicts": [], "merged": ["api", "ui"]}
        }))
        .unwrap();
        assert!(
            event_line(&event)
                .ends_with("aida/t/result @ b94ef02d8d, merged [api, ui], 0 conflict(s)\n")
        );

        let event: Event = serde_json::from_value(serde_json::json!({
            "id": 6, "channel": "task", "kind": "conflict.predicted", "task_id": "t", "subtask": "b",
            "at": "2024-01-01T00:00:00Z",
            "data": {"with": "a", "files": ["x.rs", "y.rs"], "action": "rerun"}
        }))
        .unwrap();
        assert!(
            event_line(&event)
                .ends_with("conflicts with a in x.rs, y.rs: runs again on top of it\n"),
            "{}",
            event_line(&event)
        );
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": 7, "channel": "task", "kind": "conflict.resolved", "task_id": "t", "subtask": "b",
            "at": "2024-01-01T00:00:00Z",
            "data": {"resolved": true, "agent": "command", "commit": "0123456789abcdef"}
        }))
        .unwrap();
        assert!(event_line(&event).ends_with("resolved by command @ 0123456789\n"));
    }
}
