//! Best of N: a subtask that gives `candidates` is run by several agents
//! (or several runs of its own) in parallel, each on its own branch
//! (`aida/<task>/<subtask>.1`, `.2`, ...; git refuses `~` in branch
//! names). Once every candidate ended, the winner is the candidate that
//! succeeded (with `verify` on subtasks: passed its check) with the
//! smallest diff, the earlier one on a tie, or the one a `judge` agent
//! chooses from their diffs (a read-only run, `_judge.<subtask>`, answering
//! `{"chosen": "<candidate>", "why": "..."}`); its commit becomes the
//! subtask's, and the subtask's branch points at it. The others stay as
//! branches and are listed in the report with their outcome and cost.

use std::sync::Arc;

use aida_core::event::{Channel, kind};
use aida_core::ids::{SubtaskName, TaskId};
use aida_core::proto::common::{AgentSpec, Subtask, SubtaskStatus, Task};
use aida_core::proto::orchestrator::SubtaskSpec;
use chrono::Utc;
use serde_json::json;

use crate::engine::{Engine, status_of};
use crate::error::{OrchestratorError, Result};
use crate::store::{AgentJson, NewEvent, NewSubtask};

pub const MAX_CANDIDATES: usize = 8;

/// The agents of `spec`'s candidates (none when it gives none), checked:
/// 2 to 8 of them.
pub fn agents_of(spec: &SubtaskSpec, agent: &AgentSpec) -> Result<Vec<AgentSpec>> {
    let named = spec.candidate_agents.len();
    let count = spec.candidate_count as usize;
    let n = match (count, named) {
        (0, 0) => return Ok(Vec::new()),
        (n, 0) | (0, n) => n,
        _ => {
            return Err(OrchestratorError::invalid(format!(
                "subtask {:?}: \"candidates\" is a number or a list of agents, not both",
                spec.name
            )));
        }
    };
    if !(2..=MAX_CANDIDATES).contains(&n) {
        return Err(OrchestratorError::invalid(format!(
            "subtask {:?}: \"candidates\" gives 2 to {MAX_CANDIDATES} candidates, not {n}",
            spec.name
        )));
    }
    if named == 0 {
        return Ok(vec![agent.clone(); n]);
    }
    Ok(spec
        .candidate_agents
        .iter()
        .map(|a| {
            if a.kind.is_empty() && a.command.is_empty() {
                agent.clone()
            } else {
                a.clone()
            }
        })
        .collect())
}

/// The candidates of subtask `parent`: named `<parent>.<k>`, with its
/// prompt and dependencies and their own agents and branches.
pub fn build(parent: &NewSubtask, agents: Vec<AgentJson>, id: &TaskId) -> Result<Vec<NewSubtask>> {
    agents
        .into_iter()
        .enumerate()
        .map(|(k, agent)| {
            let name = format!("{}.{}", parent.name, k + 1);
            let parsed = SubtaskName::parse(&name)?;
            Ok(NewSubtask {
                branch: id.subtask_branch(&parsed),
                name,
                prompt: parent.prompt.clone(),
                depends_on: parent.depends_on.clone(),
                agent,
                fallback: None,
                candidate_of: parent.name.clone(),
                paths: parent.paths.clone(),
            })
        })
        .collect()
}

/// The judge's run of subtask `name`.
pub fn judge_name(name: &str) -> String {
    format!("{JUDGE_PREFIX}{name}")
}

/// Judges' runs are named `_judge.<subtask>`.
pub const JUDGE_PREFIX: &str = "_judge.";

/// Whether `name` is one of the task's candidates or judges.
pub(crate) fn is_candidate(task: &Task, name: &str) -> bool {
    task.candidates
        .iter()
        .chain(task.judges.iter())
        .any(|c| c.name == name)
}

/// The candidate a judge's answer names, if it is one of `eligible`, and
/// why: the `chosen` and `why` of the last JSON object in it, or else the
/// last eligible name it mentions.
pub fn judged<'a>(answer: &str, eligible: &[&'a Subtask]) -> Option<(&'a Subtask, String)> {
    let named = |name: &str| eligible.iter().find(|c| c.name == name).copied();
    let json = answer
        .rfind('{')
        .and_then(|start| {
            answer[start..]
                .find('}')
                .map(|end| &answer[start..=start + end])
        })
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
    if let Some(v) = json.as_ref().filter(|v| v["chosen"].is_string()) {
        let why = v["why"].as_str().unwrap_or_default().to_owned();
        return named(v["chosen"].as_str().unwrap_or_default().trim()).map(|c| (c, why));
    }
    eligible
        .iter()
        .filter_map(|c| answer.rfind(c.name.as_str()).map(|at| (at, *c)))
        .max_by_key(|(at, _)| *at)
        .map(|(_, c)| (c, String::new()))
}

/// Whether subtask `name` is run as best of N.
pub(crate) fn has_candidates(task: &Task, name: &str) -> bool {
    task.candidates.iter().any(|c| c.candidate_of == name)
}

/// The winner among ended candidates: succeeded, smallest diff, earliest.
pub fn pick<'a>(candidates: &[&'a Subtask]) -> Option<&'a Subtask> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| status_of(c) == SubtaskStatus::Succeeded && !c.commit.is_empty())
        .min_by_key(|(i, c)| (diff_size(c), *i))
        .map(|(_, c)| *c)
}

/// Lines added and removed.
pub fn diff_size(c: &Subtask) -> u64 {
    c.stats
        .as_ref()
        .map(|s| u64::from(s.insertions) + u64::from(s.deletions))
        .unwrap_or(u64::MAX)
}

impl Engine {
    /// A candidate ended: once all of its subtask's candidates have, the
    /// winner is chosen and the subtask ends with it (or fails when none
    /// succeeded). Returns the subtask's name and status when it ended.
    pub(crate) async fn candidate_ended(
        self: &Arc<Self>,
        task_id: &str,
        candidate: &str,
    ) -> Result<Option<(String, SubtaskStatus)>> {
        let task = self.task(task_id).await?;
        let Some(parent) = task
            .candidates
            .iter()
            .chain(task.judges.iter())
            .find(|c| c.name == candidate)
            .map(|c| c.candidate_of.clone())
        else {
            return Ok(None);
        };
        let all: Vec<&Subtask> = task
            .candidates
            .iter()
            .filter(|c| c.candidate_of == parent)
            .collect();
        let ended = |c: &Subtask| {
            matches!(
                status_of(c),
                SubtaskStatus::Succeeded | SubtaskStatus::Failed | SubtaskStatus::Cancelled
            )
        };
        if !all.iter().all(|c| ended(c)) {
            return Ok(None);
        }
        let passed: Vec<&Subtask> = all
            .iter()
            .copied()
            .filter(|c| status_of(c) == SubtaskStatus::Succeeded && !c.commit.is_empty())
            .collect();
        let judge = task.judges.iter().find(|j| j.candidate_of == parent);
        let mut by = "the smallest diff".to_owned();
        let mut why = String::new();
        let mut winner = pick(&all);
        if let Some(judge) = judge.filter(|_| passed.len() > 1) {
            if !ended(judge) {
                // Its run is queued or under way; once it ends, it decides.
                if judge.prompt.is_empty() {
                    let prompt = judge_prompt(&task, &parent, &passed).await;
                    self.store
                        .queue_judge(task_id, &judge.name, &prompt)
                        .await?;
                    tracing::info!(task_id, subtask = %parent, candidates = passed.len(), "the judge chooses");
                    self.wake.notify_one();
                }
                return Ok(None);
            }
            let answer = self.store.subtask_output(task_id, &judge.name).await?;
            match judged(&answer, &passed) {
                Some((choice, reason)) if status_of(judge) == SubtaskStatus::Succeeded => {
                    winner = Some(choice);
                    by = "the judge".into();
                    why = reason;
                }
                _ => {
                    by = "the smallest diff (the judge named no passing candidate)".into();
                }
            }
        }
        let error = if winner.is_none() {
            format!("none of its {} candidates succeeded", all.len())
        } else {
            String::new()
        };
        if !self
            .store
            .choose_candidate(task_id, &parent, winner, &error, Utc::now())
            .await?
        {
            return Ok(None);
        }
        if let Some(w) = winner {
            self.point_branch(&task, &parent, &w.commit).await;
        }
        // A judge with fewer than two passing candidates has nothing to do.
        if let Some(judge) = judge.filter(|j| !ended(j)) {
            let names = [judge.name.clone()];
            self.store
                .end_unfinished_subtasks(
                    task_id,
                    Some(&names),
                    SubtaskStatus::Cancelled,
                    "fewer than two candidates passed: nothing to judge",
                    Utc::now(),
                )
                .await?;
        }
        let status = if winner.is_some() {
            SubtaskStatus::Succeeded
        } else {
            SubtaskStatus::Failed
        };
        tracing::info!(task_id, subtask = %parent, chosen = ?winner.map(|w| &w.name), "best of {} chosen", all.len());
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::CANDIDATE_CHOSEN,
                task_id: Some(task_id.to_owned()),
                subtask: Some(parent.clone()),
                worker_id: None,
                data: json!({
                    "chosen": winner.map(|w| &w.name),
                    "by": winner.map(|_| &by),
                    "why": (!why.is_empty()).then_some(&why),
                    "commit": winner.map(|w| &w.commit),
                    "candidates": all.iter().map(|c| json!({
                        "name": c.name,
                        "status": aida_core::status::subtask_label(c.status),
                        "lines_changed": c.stats.as_ref().map(|_| diff_size(c)),
                        "cost_usd": c.usage.as_ref().map(|u| u.cost_usd),
                    })).collect::<Vec<_>>(),
                    "error": (!error.is_empty()).then_some(&error),
                }),
            })
            .await?;
        Ok(Some((parent, status)))
    }

    /// Points the subtask's own branch at the chosen candidate's commit, so
    /// `aida/<task>/<subtask>` holds the work as for any subtask. Best
    /// effort: the merge goes by commit, not by branch.
    async fn point_branch(&self, task: &Task, name: &str, commit: &str) {
        let Some(branch) = task
            .subtasks
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.branch.clone())
        else {
            return;
        };
        let (repo, commit) = (task.repo.clone(), commit.to_owned());
        let moved = tokio::task::spawn_blocking(move || -> std::result::Result<(), git2::Error> {
            let repo = git2::Repository::open(&repo)?;
            let id = git2::Oid::from_str(&commit)?;
            repo.reference(
                &format!("refs/heads/{branch}"),
                id,
                true,
                "aida: the chosen candidate",
            )?;
            Ok(())
        })
        .await;
        if let Ok(Err(e)) = moved {
            tracing::warn!(task_id = %task.id, subtask = name, error = %e, "cannot point the subtask's branch at the chosen candidate");
        }
    }
}

/// What a judge is told: the subtask, then each passing candidate's
/// summary and diff.
async fn judge_prompt(task: &Task, parent: &str, passed: &[&Subtask]) -> String {
    let prompt = task
        .subtasks
        .iter()
        .find(|s| s.name == parent)
        .map(|s| s.prompt.trim().to_owned())
        .unwrap_or_default();
    let names: Vec<&str> = passed.iter().map(|c| c.name.as_str()).collect();
    let mut out = format!(
        "You judge candidate solutions of one coding subtask; each was made by an agent in its own branch from the same start. Choose the one that does the subtask best: correct, complete, and no larger than it needs to be. Do not change any file.\n\nThe subtask:\n{prompt}\n\nAnswer with one JSON object and nothing else: {{\"chosen\": \"<one of {}>\", \"why\": \"<one sentence>\"}}\n",
        names.join(", ")
    );
    for c in passed {
        out.push_str(&format!(
            "\n## Candidate {} ({} lines changed)\n",
            c.name,
            diff_size(c)
        ));
        let summary = c.summary.trim();
        if !summary.is_empty() {
            out.push_str(&format!("\nSummary:\n{summary}\n"));
        }
        let diff = crate::resolution::diff_of(&task.repo, &c.start_commit, &c.commit, &[]).await;
        out.push_str(&format!("\n```diff\n{diff}```\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aida_core::proto::common::DiffStats;

    fn candidate(name: &str, status: SubtaskStatus, lines: u32) -> Subtask {
        Subtask {
            name: name.into(),
            status: status as i32,
            commit: "c".into(),
            stats: Some(DiffStats {
                insertions: lines,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_smallest_succeeded_candidate_wins_and_the_earlier_on_a_tie() {
        let a = candidate("s.1", SubtaskStatus::Failed, 1);
        let b = candidate("s.2", SubtaskStatus::Succeeded, 9);
        let c = candidate("s.3", SubtaskStatus::Succeeded, 3);
        let d = candidate("s.4", SubtaskStatus::Succeeded, 3);
        assert_eq!(pick(&[&a, &b, &c, &d]).unwrap().name, "s.3");
        assert!(pick(&[&a]).is_none());
    }

    #[test]
    fn a_judge_names_a_passing_candidate_or_nothing() {
        let b = candidate("s.2", SubtaskStatus::Succeeded, 9);
        let c = candidate("s.3", SubtaskStatus::Succeeded, 3);
        let eligible = [&b, &c];
        let name = |answer: &str| judged(answer, &eligible).map(|(s, _)| s.name.clone());
        assert_eq!(
            name("{\"chosen\": \"s.2\", \"why\": \"tests\"}").as_deref(),
            Some("s.2")
        );
        assert_eq!(
            name("thinking...\n```json\n{\"chosen\": \"s.3\"}\n```").as_deref(),
            Some("s.3")
        );
        assert_eq!(name("{\"chosen\": \"s.1\"}"), None, "s.1 did not pass");
        assert_eq!(
            name("s.3 is fine but s.2 is better: s.2").as_deref(),
            Some("s.2")
        );
        assert_eq!(name("none of them"), None);
    }
}
