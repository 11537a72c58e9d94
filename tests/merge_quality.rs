//! Merge quality beyond git's merge: conflicts seen coming while the rest of
//! the task still runs (over SSE), subtasks run again on top of what they
//! would conflict with (`merge_policy: rerun`), and a resolver agent for
//! the textual conflicts that reach the merge; best of N.

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, subtask};
use serde_json::{Value, json};

const SHARED: &str = "one\ntwo\nthree\n";

/// `a` and `b` both rewrite the first line of `shared.txt`.
const REWRITE_LINE_ONE: &str = r#"sed -i "1s/.*/one by $AIDA_SUBTASK_NAME/" shared.txt"#;

fn repo() -> GitRepo {
    GitRepo::with_files(&[("shared.txt", SHARED)])
}

async fn events_of(system: &System, task_id: &str) -> Vec<Value> {
    system
        .get(&format!("/api/tasks/{task_id}/events?limit=1000"))
        .await
        .unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_seen_coming_while_the_last_subtask_still_runs() {
    let system = System::start_with(Options::workers(3)).await;
    let repo = repo();
    let gate = tempfile::tempdir().unwrap();
    let gate = gate.path().join("open");
    let agent = format!(
        r#"case "$AIDA_SUBTASK_NAME" in
  c) while [ ! -e '{}' ]; do sleep 0.05; done; echo c > c.txt ;;
  *) {REWRITE_LINE_ONE} ;;
esac"#,
        gate.display()
    );
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "two edits of one line, and a slow third",
            "agent": sh_agent(&agent),
            "subtasks": [
                {"name": "a", "prompt": "rewrite line one"},
                {"name": "b", "prompt": "rewrite line one too"},
                {"name": "c", "prompt": "add c.txt, slowly"}
            ]
        }))
        .await;

    let events = system
        .read_sse_until(&format!("/api/events?task={task_id}"), |e| {
            e["kind"] == "conflict.predicted"
        })
        .await;
    let predicted = events.last().unwrap();
    let (later, earlier) = (
        predicted["subtask"].as_str().unwrap(),
        predicted["data"]["with"].as_str().unwrap(),
    );
    let mut pair = [later, earlier];
    pair.sort();
    assert_eq!(pair, ["a", "b"], "{predicted:#}");
    assert_eq!(predicted["data"]["files"], json!(["shared.txt"]));
    assert_eq!(predicted["data"]["action"], "predicted");
    // It came while c still runs, and the task shows it.
    let task = system.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    let c_status = subtask(&task, "c")["status"].as_str().unwrap().to_owned();
    assert!(
        c_status == "running" || c_status == "pending",
        "c is {c_status}"
    );
    assert_eq!(
        task["predicted_conflicts"],
        json!([{
            "subtask": later, "with": earlier, "files": ["shared.txt"], "action": "predicted",
            "at": task["predicted_conflicts"][0]["at"]
        }])
    );

    std::fs::write(&gate, "").unwrap();
    let task = system.wait_finished(&task_id).await;
    // Nothing resolves it: the branch merged second stays out, as the
    // prediction said.
    assert_eq!(task["status"], "conflicted", "{task:#}");
    assert_eq!(task["conflicts"][0]["subtask"], "b");
    let events = events_of(&system, &task_id).await;
    let id_of = |pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| pred(e))
            .map(|e| e["id"].as_i64().unwrap())
    };
    let predicted_at = id_of(&|e| e["kind"] == "conflict.predicted").unwrap();
    let c_done_at = id_of(&|e| {
        e["kind"] == "subtask.status" && e["subtask"] == "c" && e["data"]["status"] == "succeeded"
    })
    .unwrap();
    assert!(predicted_at < c_done_at);
    let report = system.report(&task_id).await;
    assert!(report.contains("## Conflicts seen coming"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_merge_policy_rerun_both_edits_of_one_line_reach_the_result() {
    let system = System::start_with(Options::workers(2)).await;
    let repo = repo();
    // Each appends its name to the first line: the same line, so their
    // branches conflict unless one runs on top of the other.
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "two edits of one line",
            "agent": sh_agent(r#"sed -i "1s/\$/ $AIDA_SUBTASK_NAME/" shared.txt"#),
            "subtasks": [{"name": "a", "prompt": "sign line one"}, {"name": "b", "prompt": "sign line one too"}],
            "merge_policy": "rerun",
            // No conflict reaches the merge: the resolver has nothing to do.
            "resolve": {"agent": sh_agent("exit 9")}
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["conflicts"], json!([]));
    assert_eq!(task["merge_policy"], "rerun");
    let result = repo
        .show(task["result_commit"].as_str().unwrap(), "shared.txt")
        .unwrap();
    let first = result.lines().next().unwrap();
    assert!(
        first == "one a b" || first == "one b a",
        "both signatures on line one: {result:?}"
    );

    let predicted = task["predicted_conflicts"].as_array().unwrap();
    assert_eq!(predicted.len(), 1, "{predicted:#?}");
    assert_eq!(predicted[0]["action"], "rerun");
    let (rerun, with) = (
        predicted[0]["subtask"].as_str().unwrap(),
        predicted[0]["with"].as_str().unwrap(),
    );
    let st = subtask(&task, rerun);
    assert_eq!(st["depends_on"], json!([with]));
    let history: Vec<&str> = st["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["superseded", "succeeded"]);
    // Its second run started on top of the other's work.
    let start = st["start_commit"].as_str().unwrap();
    let other = subtask(&task, with)["commit"].as_str().unwrap();
    repo.git(&["merge-base", "--is-ancestor", other, start]);

    let report = system.report(&task_id).await;
    assert!(
        report.contains(&format!("{rerun} ran again on top of {with}")),
        "{report}"
    );
    assert!(task.get("resolutions").is_none(), "{task:#}");
    assert_eq!(task["resolver"]["attempts"], 0, "{task:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_best_of_n_subtask_stops_its_candidates() {
    let system = System::start_with(Options::workers(2)).await;
    let repo = repo();
    let gate = tempfile::tempdir().unwrap();
    let started = gate.path().to_str().unwrap().to_owned();
    // Each candidate says it started, then waits for a gate that never opens.
    let agent = sh_agent(&format!(
        "touch '{started}/'\"$AIDA_SUBTASK_NAME\"; while true; do sleep 0.05; done"
    ));
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "two slow candidates",
            "agent": agent,
            "subtasks": [{"name": "feat", "prompt": "x", "candidates": 2}]
        }))
        .await;
    aida_tests::eventually("both candidates running", || async {
        (std::path::Path::new(&started).join("feat.1").exists()
            && std::path::Path::new(&started).join("feat.2").exists())
        .then_some(())
    })
    .await;
    let (status, answer) = system
        .post(
            &format!("/api/tasks/{task_id}/subtasks/feat/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "cancelled", "{task:#}");
    for c in task["candidates"].as_array().unwrap() {
        assert_eq!(c["status"], "cancelled", "{c:#}");
    }
    // The workers are free again: both come back idle.
    aida_tests::eventually("the workers idle", || async {
        let workers = system.get("/api/workers").await.unwrap();
        workers["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["state"] == "idle")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_agent_resolves_a_textual_conflict_and_one_that_leaves_markers_is_refused() {
    let system = System::start_with(Options::workers(2)).await;
    let repo = repo();
    let body = |resolver: &str| {
        json!({
            "repo": repo.path_str(),
            "description": "two edits of one line",
            "agent": sh_agent(REWRITE_LINE_ONE),
            "subtasks": [{"name": "a", "prompt": "rewrite line one"}, {"name": "b", "prompt": "rewrite line one too"}],
            "resolve": {"agent": sh_agent(resolver), "max_attempts": 1}
        })
    };

    // Keeps both sides: deletes the marker lines of the files it is given.
    let keep_both = r#"printf '%s\n' "$AIDA_CONFLICT_FILES" | while read -r f; do
  sed -i -e '/^<<<<<<< /d' -e '/^=======$/d' -e '/^>>>>>>> /d' "$f"
done"#;
    let task_id = system.create_task(&body(keep_both)).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["conflicts"], json!([]));
    let resolutions = task["resolutions"].as_array().unwrap();
    assert_eq!(resolutions.len(), 1, "{resolutions:#?}");
    let r = &resolutions[0];
    assert_eq!(
        (
            r["subtask"].as_str(),
            r["status"].as_str(),
            r["agent"].as_str()
        ),
        (Some("b"), Some("resolved"), Some("command"))
    );
    assert_eq!(r["files"], json!(["shared.txt"]));
    let merge = r["commit"].as_str().unwrap();
    // A merge commit with both parents: the result before b, and b.
    let parents = repo.git(&["rev-list", "--parents", "-n", "1", merge]);
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    assert_eq!(
        parents,
        [
            r["onto"].as_str().unwrap(),
            subtask(&task, "b")["commit"].as_str().unwrap()
        ]
    );
    let result_commit = task["result_commit"].as_str().unwrap();
    repo.git(&["merge-base", "--is-ancestor", merge, result_commit]);
    let text = repo.show(result_commit, "shared.txt").unwrap();
    assert_eq!(text, "one by a\none by b\ntwo\nthree\n");
    let events = events_of(&system, &task_id).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "conflict.resolved" && e["data"]["resolved"] == true),
        "{events:#?}"
    );
    let report = system.report(&task_id).await;
    assert!(report.contains("resolved by the command agent"), "{report}");

    // A resolver that leaves the markers: refused, and b stays out.
    let task_id = system.create_task(&body("true")).await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "conflicted", "{task:#}");
    assert_eq!(task["conflicts"][0]["subtask"], "b");
    let r = &task["resolutions"][0];
    assert_eq!(r["status"], "refused", "{r:#}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("conflict markers are left in shared.txt"),
        "{r:#}"
    );
    let text = repo
        .show(task["result_commit"].as_str().unwrap(), "shared.txt")
        .unwrap();
    assert_eq!(text, "one by a\ntwo\nthree\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_of_three_merges_the_smaller_passing_candidate_and_reports_all() {
    let system = System::start_with(Options::workers(3)).await;
    let repo = repo();
    let lines = |n: usize| sh_agent(&format!("seq {n} > feature.txt"));
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "a feature, three ways",
            "agent": sh_agent("wc -l < feature.txt | tr -d ' ' > count.txt"),
            "max_attempts": 1,
            "subtasks": [
                {"name": "feat", "prompt": "write the feature",
                 "candidates": [sh_agent("echo no way >&2; exit 1"), lines(10), lines(2)]},
                {"name": "count", "prompt": "count its lines", "depends_on": ["feat"]}
            ]
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let feat = subtask(&task, "feat");
    assert_eq!(feat["chosen"], "feat.3", "{feat:#}");
    let candidates = task["candidates"].as_array().unwrap();
    let outcome: Vec<(&str, &str)> = candidates
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcome,
        [
            ("feat.1", "failed"),
            ("feat.2", "succeeded"),
            ("feat.3", "succeeded")
        ]
    );
    assert_eq!(feat["commit"], candidates[2]["commit"]);
    // The winner is merged, and what depends on the subtask built on it.
    let result = task["result_commit"].as_str().unwrap();
    assert_eq!(repo.show(result, "feature.txt").unwrap(), "1\n2\n");
    assert_eq!(repo.show(result, "count.txt").unwrap(), "2\n");
    // Every candidate keeps its branch; the subtask's branch is the winner's.
    let branches = repo.branches();
    for c in ["feat.1", "feat.2", "feat.3"] {
        let branch = format!("aida/{task_id}/{c}");
        assert!(branches.contains(&branch), "{branch} in {branches:?}");
    }
    assert_eq!(
        repo.rev_parse(&format!("aida/{task_id}/feat")),
        candidates[2]["commit"].as_str().unwrap()
    );
    let chosen = events_of(&system, &task_id)
        .await
        .into_iter()
        .find(|e| e["kind"] == "candidate.chosen")
        .expect("a candidate.chosen event");
    assert_eq!(chosen["data"]["chosen"], "feat.3");
    assert_eq!(chosen["data"]["candidates"].as_array().unwrap().len(), 3);
    let report = system.report(&task_id).await;
    assert!(report.contains("## Best of N"), "{report}");
    for row in [
        "| feat.1 | feat | failed |",
        "| feat.2 | feat | succeeded | 10 |",
        "| feat.3 (chosen) | feat | succeeded | 2 |",
    ] {
        assert!(report.contains(row), "{row} in {report}");
    }

    // With a judge, its choice wins over the smaller diff; it read both
    // passing candidates' diffs.
    let judge = sh_agent(
        r#"case "$AIDA_PROMPT" in *"Candidate feat.2"*"Candidate feat.3"*) ;; *) exit 3 ;; esac
echo '{"chosen": "feat.2", "why": "it counts further"}'"#,
    );
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "a feature, three ways, judged",
            "agent": sh_agent("true"),
            "max_attempts": 1,
            "subtasks": [{"name": "feat", "prompt": "write the feature",
                 "candidates": [sh_agent("exit 1"), lines(10), lines(2)], "judge": judge}]
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(subtask(&task, "feat")["chosen"], "feat.2", "{task:#}");
    assert_eq!(task["judges"][0]["status"], "succeeded", "{task:#}");
    let result = task["result_commit"].as_str().unwrap();
    assert_eq!(
        repo.show(result, "feature.txt").unwrap().lines().count(),
        10
    );
    let chosen = events_of(&system, &task_id)
        .await
        .into_iter()
        .find(|e| e["kind"] == "candidate.chosen")
        .expect("a candidate.chosen event");
    assert_eq!(
        (
            chosen["data"]["by"].as_str(),
            chosen["data"]["why"].as_str()
        ),
        (Some("the judge"), Some("it counts further"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_merge_settings_are_refused_with_what_is_wrong() {
    let system = System::start_with(Options::workers(1)).await;
    let repo = repo();
    let base = json!({
        "repo": repo.path_str(),
        "description": "x",
        "agent": sh_agent("true"),
        "subtasks": [{"name": "a", "prompt": "x"}]
    });
    for (extra, names) in [
        (json!({"merge_policy": "sometimes"}), "merge_policy"),
        (
            json!({"resolve": {"max_attempts": 9}}),
            "resolve.max_attempts",
        ),
        (json!({"resolve": {"agnet": {"kind": "command"}}}), "agnet"),
        (
            json!({"subtasks": [{"name": "a", "prompt": "x", "judge": sh_agent("true")}]}),
            "a \\\"judge\\\" chooses among \\\"candidates\\\"",
        ),
    ] {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = system.post("/api/tasks", &body).await;
        assert_eq!(status, 400, "{extra} -> {answer}");
        assert!(answer.to_string().contains(names), "{extra} -> {answer}");
    }
    for (candidates, names) in [
        (json!(9), "2 to 8 candidates, not 9"),
        (json!([sh_agent("true")]), "2 to 8 candidates, not 1"),
    ] {
        let mut body = base.clone();
        body["subtasks"][0]["candidates"] = candidates.clone();
        let (status, answer) = system.post("/api/tasks", &body).await;
        assert_eq!(status, 400, "{candidates} -> {answer}");
        assert!(
            answer.to_string().contains(names),
            "{candidates} -> {answer}"
        );
    }
    let tasks = system.get("/api/tasks").await.unwrap();
    assert_eq!(tasks["tasks"], json!([]), "nothing was created");
}
