//! Human-readable renderings of tasks, workers and events, and writing to
//! stdout without panicking when the reader went away (`aida task list |
//! head`).

use std::fmt::Write as _;
use std::io::{self, Write};

use aida_core::event::kind;
use aida_gateway::api::{Event, Subtask, Task, Worker};
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

fn local(at: DateTime<Utc>) -> String {
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
    if let Some(created) = task.created_at {
        let _ = writeln!(out, "  created: {}", local(created));
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
        "{:36}  {:10}  {:8}  {:19}  DESCRIPTION",
        "ID", "STATUS", "SUBTASKS", "CREATED"
    );
    for task in tasks {
        let done = task
            .subtasks
            .iter()
            .filter(|s| s.status == aida_gateway::api::SubtaskStatus::Succeeded)
            .count();
        let _ = writeln!(
            out,
            "{:36}  {:10}  {:8}  {:19}  {}",
            task.id,
            task.status.label(),
            format!("{done}/{}", task.subtasks.len()),
            task.created_at.map(local).unwrap_or_default(),
            first_line(task.description.as_deref().unwrap_or(""), 60),
        );
    }
    out
}

/// One line per worker.
pub fn worker_table(workers: &[Worker]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:24}  {:8}  {:9}  {:20}  WORKING ON",
        "WORKER", "STATE", "COMPLETED", "AGENTS"
    );
    for worker in workers {
        let working_on = match (&worker.task_id, &worker.subtask) {
            (Some(task), Some(subtask)) => format!("{task}/{subtask}"),
            (Some(task), None) => task.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:24}  {:8}  {:9}  {:20}  {working_on}",
            worker.worker_id,
            worker.state,
            worker.completed,
            worker.agent_kinds.join(","),
        );
    }
    out
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
    }
}
