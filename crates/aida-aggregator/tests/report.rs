//! Reports built from a task as the orchestrator passes it.

use aida_aggregator::report::{TaskReport, build, format_duration};
use aida_core::ids::TaskId;
use aida_core::time::to_proto;
use aida_proto::common::{Conflict, DiffStats, Subtask, SubtaskStatus, Task, TaskStatus};
use chrono::{Duration, TimeZone, Utc};

fn task() -> Task {
    let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
    let at = |ms: i64| Some(to_proto(t0 + Duration::milliseconds(ms)));
    Task {
        id: TaskId::new().to_string(),
        status: TaskStatus::Conflicted as i32,
        repo: "/srv/repos/shop".into(),
        base: "main".into(),
        base_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        description: "Add a cart API\nand its UI".into(),
        subtasks: vec![
            Subtask {
                name: "api".into(),
                status: SubtaskStatus::Succeeded as i32,
                worker_id: "worker-1".into(),
                attempts: 1,
                commit: "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd".into(),
                started_at: at(0),
                finished_at: at(12_300),
                stats: Some(DiffStats {
                    files_changed: 2,
                    insertions: 40,
                    deletions: 3,
                    files: vec!["src/api.rs".into(), "src/lib.rs".into()],
                }),
                merged: true,
                ..Default::default()
            },
            Subtask {
                name: "ui".into(),
                status: SubtaskStatus::Succeeded as i32,
                depends_on: vec!["api".into()],
                worker_id: "worker-2".into(),
                attempts: 2,
                commit: "eeeeeeeeeeffffffffff00000000001111111111".into(),
                started_at: at(13_000),
                finished_at: at(13_000 + 125_000),
                stats: Some(DiffStats {
                    files_changed: 1,
                    insertions: 5,
                    deletions: 1,
                    files: vec!["src/lib.rs".into()],
                }),
                merged: false,
                ..Default::default()
            },
            Subtask {
                name: "docs".into(),
                status: SubtaskStatus::Failed as i32,
                attempts: 3,
                error: "agent exited with status 2".into(),
                exit_code: 2,
                ..Default::default()
            },
        ],
        result_branch: "aida/x".into(),
        result_commit: "9999999999888888888877777777776666666666".into(),
        conflicts: vec![Conflict {
            subtask: "ui".into(),
            files: vec!["src/lib.rs".into()],
        }],
        created_at: at(-1000),
        started_at: at(0),
        finished_at: at(140_000),
        ..Default::default()
    }
}

#[test]
fn markdown_names_subtasks_statuses_stats_and_conflicts() {
    let task = task();
    let report = build(&task);
    let md = &report.markdown;
    assert_eq!(report.task_id, task.id);

    assert!(
        md.starts_with(&format!("# AIDA task {}: conflicted\n", task.id)),
        "{md}"
    );
    assert!(md.contains("> Add a cart API\n> and its UI\n"), "{md}");
    assert!(md.contains("`aida/x` at `9999999999`"), "{md}");
    assert!(md.contains("`main` at `0123456789`"), "{md}");
    assert!(
        md.contains(
            "| api | succeeded | worker-1 | 12.3s | `aaaaaaaaaa` | 2 | +40 / -3 | 1 | yes |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| ui | succeeded | worker-2 | 2m 05s | `eeeeeeeeee` | 1 | +5 / -1 | 2 | no |"),
        "{md}"
    );
    assert!(
        md.contains("| docs | failed | — | — | — | — | — | 3 | no |"),
        "{md}"
    );
    assert!(
        md.contains("Total: 3 files changed, +45 / -4 lines."),
        "{md}"
    );
    assert!(
        md.contains("## Conflicts\n\n- **ui**: `src/lib.rs`\n"),
        "{md}"
    );
    assert!(
        md.contains("## Errors\n\n- **docs**: agent exited with status 2\n"),
        "{md}"
    );
}

#[test]
fn json_holds_the_same_facts() {
    let task = task();
    let report = build(&task);
    let doc: TaskReport = serde_json::from_str(&report.json).unwrap();
    assert_eq!(doc.task_id, task.id);
    assert_eq!(doc.status, "conflicted");
    assert_eq!(doc.duration_ms, Some(140_000));
    assert_eq!(doc.totals.insertions, 45);
    let names: Vec<&str> = doc.subtasks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "ui", "docs"]);
    let api = &doc.subtasks[0];
    assert_eq!(api.status, "succeeded");
    assert_eq!(api.duration_ms, Some(12_300));
    assert_eq!(
        api.stats.as_ref().unwrap().files,
        ["src/api.rs", "src/lib.rs"]
    );
    assert!(api.merged);
    assert_eq!(doc.subtasks[2].status, "failed");
    assert_eq!(
        doc.subtasks[2].error.as_deref(),
        Some("agent exited with status 2")
    );
    assert_eq!(doc.conflicts.len(), 1);
    assert_eq!(doc.conflicts[0].subtask, "ui");

    // Timestamps are RFC 3339 strings in the raw JSON.
    let raw: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    assert_eq!(raw["started_at"], "2025-03-01T12:00:00Z");
    assert_eq!(
        raw["subtasks"][0]["finished_at"],
        "2025-03-01T12:00:12.300Z"
    );
    assert_eq!(raw["subtasks"][2]["started_at"], serde_json::Value::Null);
}

#[test]
fn a_clean_task_says_no_conflicts() {
    let mut task = task();
    task.status = TaskStatus::Succeeded as i32;
    task.conflicts.clear();
    task.subtasks.truncate(1);
    let md = build(&task).markdown;
    assert!(md.contains("## Conflicts\n\nNo conflicts.\n"), "{md}");
    assert!(!md.contains("## Errors"), "{md}");
}

#[test]
fn durations_read_naturally() {
    assert_eq!(format_duration(840), "0.8s");
    assert_eq!(format_duration(12_345), "12.3s");
    assert_eq!(format_duration(245_000), "4m 05s");
    assert_eq!(format_duration(3_720_000), "1h 02m");
}

#[test]
fn usage_and_shared_context_are_reported() {
    use aida_proto::common::{AgentUsage, ContextEntry};
    let mut task = task();
    task.subtasks[0].usage = Some(AgentUsage {
        session_id: "sess-1".into(),
        turns: 3,
        input_tokens: 1200,
        output_tokens: 300,
        cost_usd: 0.0125,
    });
    task.subtasks[0].summary = "Added the cart API".into();
    task.usage = Some(AgentUsage {
        turns: 3,
        input_tokens: 1200,
        output_tokens: 300,
        cost_usd: 0.0125,
        ..Default::default()
    });
    task.context = vec![ContextEntry {
        key: "api-url".into(),
        value: "http://localhost:3000\n/cart".into(),
        version: 2,
        author: "api".into(),
        updated_at: None,
    }];
    let report = build(&task);
    assert!(
        report
            .markdown
            .contains("## Agent usage\n\n3 turns, 1200 input and 300 output tokens, $0.0125."),
        "{}",
        report.markdown
    );
    assert!(
        report
            .markdown
            .contains("- **api**: 3 turns, 1200 in / 300 out tokens, $0.0125, session `sess-1`"),
        "{}",
        report.markdown
    );
    assert!(
        report.markdown.contains(
            "## Shared context\n\n- **api-url** (v2, by api): http://localhost:3000 /cart"
        ),
        "{}",
        report.markdown
    );
    let doc: TaskReport = serde_json::from_str(&report.json).unwrap();
    assert_eq!(doc.usage.as_ref().map(|u| u.turns), Some(3));
    assert_eq!(
        doc.subtasks[0].summary.as_deref(),
        Some("Added the cart API")
    );
    assert_eq!(
        doc.subtasks[0]
            .usage
            .as_ref()
            .and_then(|u| u.session_id.as_deref()),
        Some("sess-1")
    );
    assert_eq!(doc.context[0].key, "api-url");
    // A task without usage or context says nothing about them.
    let plain = build(&self::task());
    assert!(!plain.markdown.contains("Agent usage") && !plain.markdown.contains("Shared context"));
}
