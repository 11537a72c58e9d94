//! Verification of a task's merged result: the task's `verify` command run
//! by a worker on a read-only snapshot of the result (a run of the task's
//! `_verify` pseudo-subtask). When the result fails, AIDA finds the first
//! subtask in merge order whose addition makes it fail by bisecting over
//! the merge's prefixes (every prefix is a commit of the result branch's
//! history): at most ceil(log2(N)) runs after the first. Then, as the task
//! says, it fails, or it rebuilds the result without that subtask and what
//! depends on it and verifies again, ending `conflicted` with what was left
//! out and why.
//!
//! A subtask's own branch is checked by the worker that ran it (`on`
//! "subtasks" or "both"): a failing check fails that attempt, and its agent
//! tries again.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock, Mutex};

use aida_core::event::{Channel, kind};
use aida_core::proto::aggregator::MergeResponse;
use aida_core::proto::common::{RunResult, Task, TaskStatus, VerifySpec};
use lru::LruCache;
use serde_json::json;

use crate::engine::Engine;
use crate::error::{OrchestratorError, Result};
use crate::lifecycle::final_verdict;
use crate::store::{NewEvent, SubtaskOutcome, VerificationJson};

/// The pseudo-subtask whose attempts are the verification runs; a subtask
/// can never have this name (subtask names cannot start with `_`).
pub const VERIFIER: &str = "_verify";

/// The longest `output_tail` kept.
const TAIL_CHARS: usize = 2000;
/// The most verification runs one task may take, whatever exclusions
/// follow each other.
const MAX_RUNS: u32 = 200;

/// Whether `spec` asks for the merged result to be checked.
pub fn on_result(spec: &VerifySpec) -> bool {
    !spec.command.is_empty() && matches!(spec.on.as_str(), "" | "result" | "both")
}

/// What the next step of a search is.
enum Next {
    Passed,
    /// Check the prefix of this many merged subtasks.
    Check(usize),
    /// The prefix of this many merged subtasks is the first that fails.
    Broken(usize),
}

impl Engine {
    /// After a merge: queues a run on the result when the task asks for
    /// one. True when it did (the task then waits for it).
    pub(crate) async fn start_verification(
        &self,
        task_id: &str,
        merged: &MergeResponse,
        mut state: VerificationJson,
    ) -> Result<bool> {
        let task = self.task(task_id).await?;
        let Some(spec) = task.verify.as_ref().filter(|s| on_result(s)) else {
            return Ok(false);
        };
        if task.verifier.is_none() {
            return Ok(false);
        }
        let outcomes: Vec<_> = merged.outcomes.iter().filter(|o| o.merged).collect();
        let skipped = if outcomes.is_empty() {
            Some("nothing was merged")
        } else if final_verdict(&task).0 == TaskStatus::Failed {
            Some("a subtask failed, so the task fails whatever the check says")
        } else {
            None
        };
        if let Some(why) = skipped {
            state.status = "skipped".into();
            state.output_tail = why.into();
            self.store
                .record_verification(task_id, Some(&state))
                .await?;
            return Ok(false);
        }
        state.status = "running".into();
        state.phase = "result".into();
        state.items = outcomes.iter().map(|o| o.subtask.clone()).collect();
        state.heads = outcomes.iter().map(|o| o.head.clone()).collect();
        state.lo = 0;
        state.hi = state.items.len();
        state.checking = merged.commit.clone();
        state.checking_label = if state.excluded.is_empty() {
            "the merged result".into()
        } else {
            format!("the merged result without {}", state.excluded.join(", "))
        };
        tracing::info!(task_id, command = ?spec.command, "verifying the merged result");
        self.queue_run(task_id, &state).await
    }

    /// Queues the verifier's next run on `state.checking`.
    async fn queue_run(&self, task_id: &str, state: &VerificationJson) -> Result<bool> {
        if !self.store.queue_verification(task_id, state).await? {
            return Ok(false);
        }
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::VERIFY_STARTED,
                task_id: Some(task_id.to_owned()),
                subtask: Some(VERIFIER.to_owned()),
                worker_id: None,
                data: json!({
                    "commit": state.checking,
                    "label": state.checking_label,
                    "run": state.runs + 1,
                }),
            })
            .await?;
        self.wake.notify_one();
        Ok(true)
    }

    /// A verification run ended: records it, and takes the next step of
    /// the search, or ends the task. False when the report was stale.
    pub(crate) async fn verification_ended(
        self: &Arc<Self>,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        result: RunResult,
    ) -> Result<bool> {
        let passed = result.success;
        let outcome = SubtaskOutcome::of_run(&result, "the verify command failed");
        if !self
            .end_run(task_id, VERIFIER, worker_id, attempt, &outcome)
            .await?
        {
            return Ok(false);
        }
        let Some(mut state) = self.store.verification(task_id).await? else {
            return Ok(true);
        };
        if state.status != "running" {
            return Ok(true);
        }
        state.runs += 1;
        if !passed {
            state.output_tail = tail(&outcome.error);
        }
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::VERIFY_FINISHED,
                task_id: Some(task_id.to_owned()),
                subtask: Some(VERIFIER.to_owned()),
                worker_id: Some(worker_id.to_owned()),
                data: json!({
                    "commit": state.checking,
                    "label": state.checking_label,
                    "passed": passed,
                    "run": state.runs,
                    "error": (!passed).then_some(&outcome.error),
                }),
            })
            .await?;
        tracing::info!(task_id, passed, run = state.runs, label = %state.checking_label, "verification run ended");
        let next = next_step(&mut state, passed);
        self.take(task_id, state, next).await?;
        Ok(true)
    }

    /// Takes `next`, with `state` as it now stands.
    async fn take(
        self: &Arc<Self>,
        task_id: &str,
        mut state: VerificationJson,
        next: Next,
    ) -> Result<()> {
        match next {
            Next::Passed => {
                state.status = "passed".into();
                state.checking.clear();
                state.checking_label.clear();
                self.store
                    .record_verification(task_id, Some(&state))
                    .await?;
                self.finish_merged(task_id, None).await
            }
            Next::Check(k) => {
                let n = state.items.len();
                state.phase = "bisect".into();
                state.checking = state.heads[k - 1].clone();
                state.checking_label = format!(
                    "the first {k} of {n} merged subtasks (up to {})",
                    state.items[k - 1]
                );
                if state.runs >= MAX_RUNS {
                    return self
                        .verification_failed(task_id, state, "it took too many runs")
                        .await;
                }
                self.queue_run(task_id, &state).await.map(|_| ())
            }
            Next::Broken(k) => {
                let culprit = state.items[k - 1].clone();
                state.broken_by.push(culprit.clone());
                let task = self.task(task_id).await?;
                let exclude = task
                    .verify
                    .as_ref()
                    .is_some_and(|s| s.on_failure == "exclude");
                if !exclude {
                    let why = format!("the result fails it once {culprit} is merged");
                    return self.verification_failed(task_id, state, &why).await;
                }
                for name in with_dependents(&task, &culprit) {
                    if !state.excluded.contains(&name) {
                        state.excluded.push(name);
                    }
                }
                tracing::warn!(task_id, culprit, excluded = ?state.excluded, "rebuilding the result without what broke it");
                match self.merge_subtasks(&task, &state.excluded).await? {
                    Err(reason) => {
                        self.finish_merged(task_id, Some((TaskStatus::Failed, reason)))
                            .await
                    }
                    Ok(merged) => {
                        let left = merged.outcomes.iter().any(|o| o.merged);
                        if !left {
                            let why = format!(
                                "nothing is left once {} are left out",
                                state.excluded.join(", ")
                            );
                            return self.verification_failed(task_id, state, &why).await;
                        }
                        if self.start_verification(task_id, &merged, state).await? {
                            Ok(())
                        } else {
                            self.finish_merged(task_id, None).await
                        }
                    }
                }
            }
        }
    }

    async fn verification_failed(
        self: &Arc<Self>,
        task_id: &str,
        mut state: VerificationJson,
        why: &str,
    ) -> Result<()> {
        state.status = "failed".into();
        state.checking.clear();
        state.checking_label.clear();
        self.store
            .record_verification(task_id, Some(&state))
            .await?;
        let reason = format!("verification failed: {why}");
        self.finish_merged(task_id, Some((TaskStatus::Failed, reason)))
            .await
    }
}

/// The next step of the search after a run of `state.checking` that
/// `passed` or not; moves the bisection's bounds.
fn next_step(state: &mut VerificationJson, passed: bool) -> Next {
    if state.phase == "bisect" {
        // The prefix just checked: the midpoint of the bounds it was
        // chosen from.
        let mid = (state.lo + state.hi) / 2;
        if passed {
            state.lo = mid;
        } else {
            state.hi = mid;
        }
    } else if passed {
        return Next::Passed;
    } else {
        state.lo = 0;
        state.hi = state.items.len();
    }
    if state.hi - state.lo <= 1 {
        Next::Broken(state.hi.max(1))
    } else {
        Next::Check((state.lo + state.hi) / 2)
    }
}

/// The search on `n` merged subtasks where every prefix of `broken`
/// subtasks or more fails: the culprit it names and the verification runs
/// it takes (the result's included). For tests and benchmarks.
pub fn simulate(n: usize, broken: usize) -> (usize, u32) {
    let mut state = VerificationJson {
        items: (1..=n).map(|i| format!("s{i}")).collect(),
        heads: (1..=n).map(|i| format!("c{i}")).collect(),
        phase: "result".into(),
        ..Default::default()
    };
    let mut checking = n;
    let mut runs = 0;
    loop {
        runs += 1;
        match next_step(&mut state, checking < broken) {
            Next::Passed => return (0, runs),
            Next::Check(k) => {
                state.phase = "bisect".into();
                checking = k;
            }
            Next::Broken(k) => return (k, runs),
        }
    }
}

/// `name` and every subtask that depends on it, directly or not.
fn with_dependents(task: &Task, name: &str) -> Vec<String> {
    let mut out = vec![name.to_owned()];
    let mut seen: HashSet<String> = out.iter().cloned().collect();
    let mut i = 0;
    while i < out.len() {
        let current = out[i].clone();
        for s in &task.subtasks {
            if s.depends_on.contains(&current) && seen.insert(s.name.clone()) {
                out.push(s.name.clone());
            }
        }
        i += 1;
    }
    out
}

fn tail(text: &str) -> String {
    let count = text.chars().count();
    text.chars()
        .skip(count.saturating_sub(TAIL_CHARS))
        .collect()
}

/// How a merged task ends, verification included: what its subtasks and
/// conflicts say, but `conflicted` when verification left subtasks out.
pub(crate) fn verdict(task: &Task) -> (TaskStatus, Option<String>) {
    let (status, error) = final_verdict(task);
    let Some(v) = task.verification.as_ref() else {
        return (status, error);
    };
    if v.status == "failed" {
        return (
            TaskStatus::Failed,
            Some(format!("verification failed: {}", v.output_tail)),
        );
    }
    if v.excluded.is_empty() || matches!(status, TaskStatus::Failed | TaskStatus::Cancelled) {
        return (status, error);
    }
    let left_out = format!(
        "left out after verification: {} (the result failed its check with {})",
        v.excluded.join(", "),
        v.broken_by.join(", ")
    );
    let reason = match error {
        Some(e) => format!("{e}; {left_out}"),
        None => left_out,
    };
    (TaskStatus::Conflicted, Some(reason))
}

/// What `.aida/config.toml` says at the commits of recent tasks. A commit
/// never changes, so neither does its file: most tasks start from a commit
/// an earlier one read.
static REPO_SPECS: LazyLock<Mutex<LruCache<String, Option<VerifySpec>>>> =
    LazyLock::new(|| Mutex::new(LruCache::new(NonZeroUsize::new(1024).expect("not zero"))));

/// The `[verify]` section of the repository's `.aida/config.toml` at
/// `commit`, when it has one: the check of a task that gives none.
/// Blocking (git2) the first time a commit is asked for.
pub fn repo_spec(repo: &str, commit: &str) -> Result<Option<VerifySpec>> {
    if let Some(spec) = REPO_SPECS
        .lock()
        .ok()
        .and_then(|mut specs| specs.get(commit).cloned())
    {
        return Ok(spec);
    }
    let spec = read_repo_spec(repo, commit)?;
    if let Ok(mut specs) = REPO_SPECS.lock() {
        specs.put(commit.to_owned(), spec.clone());
    }
    Ok(spec)
}

fn read_repo_spec(repo: &str, commit: &str) -> Result<Option<VerifySpec>> {
    #[derive(serde::Deserialize)]
    struct File {
        verify: Option<Section>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        command: Vec<String>,
        timeout_secs: Option<u32>,
        on: Option<String>,
        on_failure: Option<String>,
    }
    let invalid = |why: String| {
        OrchestratorError::invalid(format!("the repository's .aida/config.toml: {why}"))
    };
    let text = (|| -> std::result::Result<Option<Vec<u8>>, git2::Error> {
        let repo = git2::Repository::open(repo)?;
        let tree = repo.find_commit(git2::Oid::from_str(commit)?)?.tree()?;
        let Ok(entry) = tree.get_path(std::path::Path::new(".aida/config.toml")) else {
            return Ok(None);
        };
        let blob = entry.to_object(&repo)?.peel_to_blob()?;
        Ok(Some(blob.content().to_vec()))
    })()
    .map_err(|e| invalid(format!("cannot read it: {}", e.message())))?;
    let Some(text) = text else {
        return Ok(None);
    };
    let text = String::from_utf8(text).map_err(|_| invalid("it is not UTF-8".into()))?;
    let file: File = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
    let Some(v) = file.verify else {
        return Ok(None);
    };
    if v.timeout_secs == Some(0) {
        return Err(invalid("verify.timeout_secs is at least 1".into()));
    }
    check_spec(Some(VerifySpec {
        command: v.command,
        timeout_secs: v.timeout_secs.unwrap_or_default(),
        on: v.on.unwrap_or_default(),
        on_failure: v.on_failure.unwrap_or_default(),
    }))
    .map_err(|e| invalid(e.to_string()))
}

/// Checks a task's `verify`: an argv, a timeout if given, known values.
pub fn check_spec(spec: Option<VerifySpec>) -> Result<Option<VerifySpec>> {
    let Some(mut spec) = spec else {
        return Ok(None);
    };
    if spec.command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(OrchestratorError::invalid(
            "\"verify.command\" is an argv whose first word names a program, e.g. [\"cargo\", \"test\"]",
        ));
    }
    spec.on = match spec.on.trim() {
        "" => "result".into(),
        on @ ("result" | "subtasks" | "both") => on.into(),
        other => {
            return Err(OrchestratorError::invalid(format!(
                "\"verify.on\" is \"result\", \"subtasks\" or \"both\", not {other:?}"
            )));
        }
    };
    spec.on_failure = match spec.on_failure.trim() {
        "" => "fail".into(),
        f @ ("fail" | "exclude") => f.into(),
        other => {
            return Err(OrchestratorError::invalid(format!(
                "\"verify.on_failure\" is \"fail\" or \"exclude\", not {other:?}"
            )));
        }
    };
    if spec.timeout_secs > 24 * 3600 {
        return Err(OrchestratorError::invalid(
            "\"verify.timeout_secs\" is at most 86400",
        ));
    }
    Ok(Some(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::simulate as search;

    #[test]
    fn bisection_names_the_first_breaking_subtask_in_log2_runs() {
        for n in [1usize, 2, 3, 5, 16, 64, 100] {
            let bound = (n as f64).log2().ceil() as u32 + 1;
            for broken in 1..=n {
                let (culprit, runs) = search(n, broken);
                assert_eq!(culprit, broken, "n={n}");
                assert!(
                    runs <= bound,
                    "n={n} broken={broken}: {runs} runs > {bound}"
                );
            }
        }
        assert_eq!(search(16, 11), (11, 5));
    }

    #[test]
    fn specs_are_checked_and_defaulted() {
        let spec = |command: &[&str], on: &str, on_failure: &str| VerifySpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout_secs: 0,
            on: on.into(),
            on_failure: on_failure.into(),
        };
        let ok = check_spec(Some(spec(&["cargo", "test"], "", "")))
            .unwrap()
            .unwrap();
        assert_eq!((ok.on.as_str(), ok.on_failure.as_str()), ("result", "fail"));
        for (bad, why) in [
            (spec(&[], "", ""), "argv"),
            (spec(&[" "], "", ""), "argv"),
            (spec(&["x"], "merged", ""), "verify.on"),
            (spec(&["x"], "", "retry"), "verify.on_failure"),
        ] {
            let err = check_spec(Some(bad)).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
