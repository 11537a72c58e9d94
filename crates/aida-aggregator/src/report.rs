//! Task reports: the same facts about a finished (or running) task as
//! Markdown for people and as a JSON document for programs. Pure functions
//! of the `Task` the orchestrator passes in.

use std::fmt::Write as _;

use aida_core::status::{subtask_label, task_label};
use aida_proto::common::{AgentUsage, Conflict, ContextEntry, DiffStats, Report, Subtask, Task};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Length of the commit ids shown in Markdown.
const SHORT_COMMIT: usize = 10;

/// The JSON report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task_id: String,
    /// Lowercase status label, for example `"conflicted"`.
    pub status: String,
    pub description: String,
    pub repo: String,
    pub base: String,
    pub base_commit: String,
    pub result_branch: Option<String>,
    pub result_commit: Option<String>,
    pub error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// Sums over the subtasks' stats (files may be counted once per subtask).
    pub totals: StatsReport,
    pub subtasks: Vec<SubtaskReport>,
    pub conflicts: Vec<ConflictReport>,
    /// The subtasks' agent usage summed, where their CLIs report it.
    pub usage: Option<UsageReport>,
    /// The task's shared context: the latest value of each key.
    pub context: Vec<ContextReport>,
    /// How checking the merged result went, when the task asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationReport>,
    /// Conflicts trial merges saw coming as subtasks succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted_conflicts: Vec<PredictedReport>,
    /// Who resolved what at the merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolutions: Vec<ResolutionReport>,
    /// Best of N: every candidate, with its outcome and cost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    pub name: String,
    /// The subtask it is a candidate for.
    pub candidate_of: String,
    pub status: String,
    /// Whether it won (its commit is the subtask's).
    pub chosen: bool,
    pub branch: String,
    pub commit: Option<String>,
    /// Lines added and removed.
    pub lines_changed: Option<u32>,
    pub usage: Option<UsageReport>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedReport {
    pub subtask: String,
    pub with: String,
    pub files: Vec<String>,
    /// `predicted` or `rerun`.
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolutionReport {
    pub subtask: String,
    /// `running`, `resolved` or `refused`.
    pub status: String,
    pub files: Vec<String>,
    /// The resolver agent's kind.
    pub agent: String,
    pub attempts: u32,
    /// The merge commit it made.
    pub commit: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReport {
    /// The command, as one line.
    pub command: String,
    /// `running`, `passed`, `failed` or `skipped`.
    pub status: String,
    pub runs: u32,
    pub broken_by: Vec<String>,
    pub excluded: Vec<String>,
    pub output_tail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub session_id: Option<String>,
    pub turns: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextReport {
    pub key: String,
    pub value: String,
    pub version: u32,
    pub author: String,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskReport {
    pub name: String,
    pub status: String,
    pub depends_on: Vec<String>,
    pub worker_id: Option<String>,
    pub attempts: u32,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub start_commit: Option<String>,
    pub merged: bool,
    pub exit_code: i32,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub stats: Option<StatsReport>,
    pub usage: Option<UsageReport>,
    /// The agent's final message.
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    pub files_changed: u32,
    pub insertions: u32,
    pub deletions: u32,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictReport {
    pub subtask: String,
    pub files: Vec<String>,
}

/// Builds the Markdown and JSON report of `task`.
pub fn build(task: &Task) -> Report {
    let doc = document(task);
    let json = serde_json::to_string_pretty(&doc)
        .expect("a report of strings, numbers and timestamps always serializes");
    Report {
        task_id: task.id.clone(),
        markdown: markdown(&doc),
        json,
    }
}

/// The report's facts, as the JSON document holds them.
pub fn document(task: &Task) -> TaskReport {
    let subtasks: Vec<SubtaskReport> = task.subtasks.iter().map(subtask_report).collect();
    let mut totals = StatsReport::default();
    for stats in subtasks.iter().filter_map(|s| s.stats.as_ref()) {
        totals.files_changed += stats.files_changed;
        totals.insertions += stats.insertions;
        totals.deletions += stats.deletions;
    }
    let started_at = time(task.started_at.as_ref());
    let finished_at = time(task.finished_at.as_ref());
    TaskReport {
        task_id: task.id.clone(),
        status: task_label(task.status).to_owned(),
        description: task.description.clone(),
        repo: task.repo.clone(),
        base: task.base.clone(),
        base_commit: task.base_commit.clone(),
        result_branch: non_empty(&task.result_branch),
        result_commit: non_empty(&task.result_commit),
        error: non_empty(&task.error),
        created_at: time(task.created_at.as_ref()),
        started_at,
        finished_at,
        duration_ms: duration_ms(started_at, finished_at),
        totals,
        subtasks,
        conflicts: task.conflicts.iter().map(conflict_report).collect(),
        usage: task.usage.as_ref().and_then(usage_report),
        context: task.context.iter().map(context_report).collect(),
        verification: task.verification.as_ref().map(|v| VerificationReport {
            command: task
                .verify
                .as_ref()
                .map(|s| s.command.join(" "))
                .unwrap_or_default(),
            status: v.status.clone(),
            runs: v.runs,
            broken_by: v.broken_by.clone(),
            excluded: v.excluded.clone(),
            output_tail: non_empty(&v.output_tail),
        }),
        predicted_conflicts: task
            .predicted_conflicts
            .iter()
            .map(|p| PredictedReport {
                subtask: p.subtask.clone(),
                with: p.with.clone(),
                files: p.files.clone(),
                action: p.action.clone(),
            })
            .collect(),
        resolutions: task
            .resolutions
            .iter()
            .map(|r| ResolutionReport {
                subtask: r.subtask.clone(),
                status: r.status.clone(),
                files: r.files.clone(),
                agent: r.agent.clone(),
                attempts: r.attempts,
                commit: non_empty(&r.commit),
                error: non_empty(&r.error),
            })
            .collect(),
        candidates: task
            .candidates
            .iter()
            .map(|c| CandidateReport {
                name: c.name.clone(),
                candidate_of: c.candidate_of.clone(),
                status: subtask_label(c.status).to_owned(),
                chosen: task
                    .subtasks
                    .iter()
                    .any(|s| s.name == c.candidate_of && s.chosen == c.name),
                branch: c.branch.clone(),
                commit: non_empty(&c.commit),
                lines_changed: c.stats.as_ref().map(|s| s.insertions + s.deletions),
                usage: c.usage.as_ref().and_then(usage_report),
                error: non_empty(&c.error),
            })
            .collect(),
    }
}

/// None when the agent reported nothing (a `command` agent).
fn usage_report(u: &AgentUsage) -> Option<UsageReport> {
    if *u == AgentUsage::default() {
        return None;
    }
    Some(UsageReport {
        session_id: non_empty(&u.session_id),
        turns: u.turns,
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cost_usd: u.cost_usd,
    })
}

fn context_report(e: &ContextEntry) -> ContextReport {
    ContextReport {
        key: e.key.clone(),
        value: e.value.clone(),
        version: e.version,
        author: e.author.clone(),
        updated_at: time(e.updated_at.as_ref()),
    }
}

fn subtask_report(s: &Subtask) -> SubtaskReport {
    let started_at = time(s.started_at.as_ref());
    let finished_at = time(s.finished_at.as_ref());
    SubtaskReport {
        name: s.name.clone(),
        status: subtask_label(s.status).to_owned(),
        depends_on: s.depends_on.clone(),
        worker_id: non_empty(&s.worker_id),
        attempts: s.attempts,
        branch: non_empty(&s.branch),
        commit: non_empty(&s.commit),
        start_commit: non_empty(&s.start_commit),
        merged: s.merged,
        exit_code: s.exit_code,
        error: non_empty(&s.error),
        started_at,
        finished_at,
        duration_ms: duration_ms(started_at, finished_at),
        stats: s.stats.as_ref().map(stats_report),
        usage: s.usage.as_ref().and_then(usage_report),
        summary: non_empty(&s.summary),
    }
}

fn stats_report(s: &DiffStats) -> StatsReport {
    StatsReport {
        files_changed: s.files_changed,
        insertions: s.insertions,
        deletions: s.deletions,
        files: s.files.clone(),
    }
}

fn conflict_report(c: &Conflict) -> ConflictReport {
    ConflictReport {
        subtask: c.subtask.clone(),
        files: c.files.clone(),
    }
}

fn markdown(doc: &TaskReport) -> String {
    let mut md = String::new();
    // Writing to a String cannot fail; the results are ignored below.
    let _ = writeln!(md, "# AIDA task {}: {}\n", doc.task_id, doc.status);
    if !doc.description.trim().is_empty() {
        // Quoted, so headings or lists in the user's text stay inside it.
        for line in doc.description.trim().lines() {
            let _ = writeln!(md, "> {line}");
        }
        md.push('\n');
    }
    let _ = writeln!(md, "- **Repository:** `{}`", doc.repo);
    let _ = writeln!(
        md,
        "- **Base:** `{}` at `{}`",
        doc.base,
        short(&doc.base_commit)
    );
    match (&doc.result_branch, &doc.result_commit) {
        (Some(branch), Some(commit)) => {
            let _ = writeln!(md, "- **Result:** `{branch}` at `{}`", short(commit));
        }
        (Some(branch), None) => {
            let _ = writeln!(md, "- **Result:** `{branch}`");
        }
        _ => {
            let _ = writeln!(md, "- **Result:** no result branch yet");
        }
    }
    if let Some(ms) = doc.duration_ms {
        let _ = writeln!(md, "- **Duration:** {}", format_duration(ms));
    }
    if let Some(error) = &doc.error {
        let _ = writeln!(md, "- **Error:** {}", one_line(error));
    }

    let _ = writeln!(md, "\n## Subtasks\n");
    if doc.subtasks.is_empty() {
        let _ = writeln!(md, "No subtasks.");
    } else {
        let _ = writeln!(
            md,
            "| Subtask | Status | Worker | Duration | Commit | Files | Lines | Attempts | Merged |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---:|---|---:|---|");
        for s in &doc.subtasks {
            let dash = || "—".to_owned();
            let (files, lines) = match &s.stats {
                Some(st) => (
                    st.files_changed.to_string(),
                    format!("+{} / -{}", st.insertions, st.deletions),
                ),
                None => (dash(), dash()),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&s.name),
                s.status,
                s.worker_id.as_deref().map(cell).unwrap_or_else(dash),
                s.duration_ms.map(format_duration).unwrap_or_else(dash),
                s.commit
                    .as_deref()
                    .map(|c| format!("`{}`", short(c)))
                    .unwrap_or_else(dash),
                files,
                lines,
                s.attempts,
                if s.merged { "yes" } else { "no" },
            );
        }
        let _ = writeln!(
            md,
            "\nTotal: {} files changed, +{} / -{} lines.",
            doc.totals.files_changed, doc.totals.insertions, doc.totals.deletions
        );
    }

    let _ = writeln!(md, "\n## Conflicts\n");
    if doc.conflicts.is_empty() {
        let _ = writeln!(md, "No conflicts.");
    } else {
        for c in &doc.conflicts {
            let files: Vec<String> = c.files.iter().map(|f| format!("`{f}`")).collect();
            let _ = writeln!(md, "- **{}**: {}", c.subtask, files.join(", "));
        }
    }

    if !doc.candidates.is_empty() {
        let _ = writeln!(md, "\n## Best of N\n");
        let _ = writeln!(
            md,
            "| Candidate | Of | Status | Lines changed | Cost | Branch |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- |");
        for c in &doc.candidates {
            let _ = writeln!(
                md,
                "| {}{} | {} | {} | {} | {} | `{}` |",
                c.name,
                if c.chosen { " (chosen)" } else { "" },
                c.candidate_of,
                c.status,
                c.lines_changed.map_or("-".into(), |n| n.to_string()),
                c.usage
                    .as_ref()
                    .map_or("-".into(), |u| format!("${:.4}", u.cost_usd)),
                c.branch
            );
        }
    }

    if !doc.resolutions.is_empty() {
        let _ = writeln!(md, "\n## Resolved conflicts\n");
        for r in &doc.resolutions {
            let files: Vec<String> = r.files.iter().map(|f| format!("`{f}`")).collect();
            let runs = format!(
                "{} run{}",
                r.attempts,
                if r.attempts == 1 { "" } else { "s" }
            );
            let _ = match (&r.commit, r.status.as_str()) {
                (Some(commit), "resolved") => writeln!(
                    md,
                    "- **{}** ({}): resolved by the {} agent in {runs}, merge commit `{}`.",
                    r.subtask,
                    files.join(", "),
                    r.agent,
                    short(commit)
                ),
                _ => writeln!(
                    md,
                    "- **{}** ({}): {} by the {} agent after {runs}{}",
                    r.subtask,
                    files.join(", "),
                    if r.status == "refused" {
                        "not resolved"
                    } else {
                        r.status.as_str()
                    },
                    r.agent,
                    r.error
                        .as_ref()
                        .map(|e| format!(": {}", one_line(e)))
                        .unwrap_or_else(|| ".".into())
                ),
            };
        }
    }

    if !doc.predicted_conflicts.is_empty() {
        let _ = writeln!(md, "\n## Conflicts seen coming\n");
        for p in &doc.predicted_conflicts {
            let files: Vec<String> = p.files.iter().map(|f| format!("`{f}`")).collect();
            let then = if p.action == "rerun" {
                format!("; {} ran again on top of {}", p.subtask, p.with)
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "- **{}** with **{}**: {}{then}",
                p.subtask,
                p.with,
                files.join(", ")
            );
        }
    }

    if let Some(v) = &doc.verification {
        let _ = writeln!(md, "\n## Verification\n");
        let _ = writeln!(
            md,
            "`{}`: **{}** after {} run{}.",
            v.command,
            v.status,
            v.runs,
            if v.runs == 1 { "" } else { "s" }
        );
        if !v.broken_by.is_empty() {
            let _ = writeln!(
                md,
                "\nThe result failed its check once these were merged: {}.",
                v.broken_by.join(", ")
            );
        }
        if !v.excluded.is_empty() {
            let _ = writeln!(md, "\nLeft out of the result: {}.", v.excluded.join(", "));
        }
        if let Some(tail) = v
            .output_tail
            .as_ref()
            .filter(|_| v.status != "passed" || !v.broken_by.is_empty())
        {
            let _ = writeln!(md, "\n```\n{}\n```", tail.trim_end());
        }
    }

    if let Some(u) = &doc.usage {
        let _ = writeln!(md, "\n## Agent usage\n");
        let _ = writeln!(
            md,
            "{} turns, {} input and {} output tokens, ${:.4}.",
            u.turns, u.input_tokens, u.output_tokens, u.cost_usd
        );
        for s in &doc.subtasks {
            if let Some(u) = &s.usage {
                let session = u
                    .session_id
                    .as_deref()
                    .map(|id| format!(", session `{id}`"))
                    .unwrap_or_default();
                let _ = writeln!(
                    md,
                    "- **{}**: {} turns, {} in / {} out tokens, ${:.4}{session}",
                    s.name, u.turns, u.input_tokens, u.output_tokens, u.cost_usd
                );
            }
        }
    }

    if !doc.context.is_empty() {
        let _ = writeln!(md, "\n## Shared context\n");
        for e in &doc.context {
            let _ = writeln!(
                md,
                "- **{}** (v{}, by {}): {}",
                e.key,
                e.version,
                e.author,
                one_line(&e.value)
            );
        }
    }

    let failed: Vec<&SubtaskReport> = doc.subtasks.iter().filter(|s| s.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(md, "\n## Errors\n");
        for s in failed {
            let error = s.error.as_deref().unwrap_or_default();
            let _ = writeln!(md, "- **{}**: {}", s.name, one_line(error));
        }
    }
    md
}

fn time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(aida_core::time::from_proto)
}

fn duration_ms(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<i64> {
    match (start, end) {
        (Some(start), Some(end)) if end >= start => Some((end - start).num_milliseconds()),
        _ => None,
    }
}

/// `0.9s`, `12.3s`, `4m 05s`, `1h 02m`.
pub fn format_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let secs = ms / 1000;
    if secs < 3600 {
        return format!("{}m {:02}s", secs / 60, secs % 60);
    }
    format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
}

fn short(commit: &str) -> &str {
    commit.get(..SHORT_COMMIT).unwrap_or(commit)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table cell: pipes would end the cell, newlines the row.
fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}
