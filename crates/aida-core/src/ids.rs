//! Validated identifiers. Parsing happens once at the boundary, so an
//! invalid task id or subtask name cannot travel further in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("task id {0:?} is not a valid task id (a UUID)")]
    TaskId(String),
    #[error("subtask name {0:?} is not valid: {1}")]
    SubtaskName(String, &'static str),
}

/// The last component of a task's result branch; no subtask may use it.
pub const RESULT_BRANCH_LEAF: &str = "result";

/// A task's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        Uuid::parse_str(raw.trim())
            .map(Self)
            .map_err(|_| IdError::TaskId(raw.to_owned()))
    }

    /// The branch the aggregator merges this task's subtasks into. It sits
    /// beside the subtask branches (`aida/<task>/<subtask>`): git cannot
    /// keep a branch `aida/<task>` and branches below it at once.
    pub fn result_branch(&self) -> String {
        format!("aida/{self}/{RESULT_BRANCH_LEAF}")
    }

    /// The branch a subtask's worktree works on.
    pub fn subtask_branch(&self, subtask: &SubtaskName) -> String {
        format!("aida/{self}/{subtask}")
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A subtask's name: one component of the branch `aida/<task>/<name>`, so it
/// must be a valid git ref component and must not contain `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubtaskName(String);

impl SubtaskName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let bad = |why| Err(IdError::SubtaskName(raw.to_owned(), why));
        if raw.is_empty() {
            return bad("it is empty");
        }
        if raw.len() > Self::MAX_LEN {
            return bad("it is longer than 100 bytes");
        }
        if raw == RESULT_BRANCH_LEAF {
            return bad("it is reserved for the task's result branch");
        }
        if raw.starts_with('_') {
            return bad("names starting with '_' are reserved for AIDA's own runs");
        }
        if raw.contains('/') {
            return bad("it contains '/'");
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("it contains whitespace or control characters");
        }
        // git's own rules (`..`, `@{`, trailing `.lock`, leading `.`, ...).
        if !git2::Reference::is_valid_name(&format!("refs/heads/aida/t/{raw}")) {
            return bad("it is not a valid git ref component");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubtaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SubtaskName {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SubtaskName> for String {
    fn from(value: SubtaskName) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_and_reject_garbage() {
        let id = TaskId::new();
        assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
        assert!(TaskId::parse("not-a-uuid").is_err());
        assert_eq!(id.result_branch(), format!("aida/{id}/result"));
    }

    #[test]
    fn subtask_names_follow_git_ref_rules() {
        for good in ["api", "db-schema", "ui_v2", "step.1"] {
            assert!(SubtaskName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a/b", "a b", "..", "a..b", "x.lock", ".hidden", "a~1", "a^", "a:b", "a?", "a*",
            "a[", "a\\b", "@{x", "result",
        ] {
            assert!(
                SubtaskName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(SubtaskName::parse(&"a".repeat(101)).is_err());
    }
}
