//! Workflows: named, reusable task templates (the Aurora seed's workflows:
//! steps, parallel groups, a fallback), written in TOML and stored through
//! the API or kept in a repository's `.aida/workflows/NAME.toml`. Running
//! one with parameters makes an ordinary task: each step a subtask, each
//! step depending on the one before (all of a parallel group), an agent per
//! step, and a `fallback` agent that takes a step over when the first
//! agent's attempts are used up.
//!
//! ```toml
//! name = "feature"
//! description = "Build {{feature}}"
//! agent = { kind = "claude-code" }
//!
//! [params.feature]
//! description = "what to build"
//! required = true
//!
//! [[steps]]
//! name = "api"
//! prompt = "Build the API of {{feature}}."
//! fallback = { kind = "codex-cli" }
//!
//! [[steps]]
//! parallel = [
//!   { name = "ui", prompt = "Build the UI of {{feature}}." },
//!   { name = "docs", prompt = "Document {{feature}}.", agent = { kind = "gemini-cli" } },
//! ]
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use aida_core::ids::SubtaskName;
use aida_core::proto::common::AgentSpec;
use aida_core::proto::orchestrator::{SubtaskSpec, Workflow, WorkflowParam};
use serde::Deserialize;

use crate::error::{OrchestratorError, Result};

/// Where a repository keeps its workflows.
pub const REPO_DIR: &str = ".aida/workflows";

/// Workflow names: what a file name and a URL segment can carry.
const MAX_NAME: usize = 64;
const MAX_SOURCE: usize = 64 * 1024;
const MAX_STEPS: usize = 100;

/// A workflow as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Every step's agent unless the step names its own; the run may give
    /// one instead.
    #[serde(default)]
    pub agent: Option<AgentDef>,
    /// Attempts each step's agent may take.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamDef>,
    pub steps: Vec<StepDef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
}

/// One step: a single subtask, or a group that runs in parallel.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StepDef {
    Parallel(ParallelDef),
    Single(Box<SingleDef>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelDef {
    pub parallel: Vec<SingleDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingleDef {
    pub name: String,
    pub prompt: String,
    #[serde(default)]
    pub agent: Option<AgentDef>,
    /// Takes the step over when `agent` used up its attempts.
    #[serde(default)]
    pub fallback: Option<AgentDef>,
    /// Instead of the step before: the steps it needs.
    #[serde(default)]
    pub depends_on: Option<Vec<String>>,
    /// The directories the step works in: its worktree holds only them.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// An agent as a workflow names it (the fields of the API's agent).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    pub kind: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub options: HashMap<String, String>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub timeout_secs: u32,
    #[serde(default)]
    pub max_turns: u32,
    #[serde(default)]
    pub max_budget_usd: f64,
}

impl From<AgentDef> for AgentSpec {
    fn from(a: AgentDef) -> Self {
        AgentSpec {
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

/// What running a workflow makes: the parts of a task request.
#[derive(Debug, Clone)]
pub struct Expanded {
    pub description: String,
    pub agent: Option<AgentSpec>,
    pub subtasks: Vec<SubtaskSpec>,
    pub max_attempts: u32,
}

/// Checks a workflow name: lowercase letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(OrchestratorError::invalid(format!(
            "workflow name {name:?} must be 1 to {MAX_NAME} lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

impl Definition {
    /// Parses and checks a workflow; `origin` names it in errors (the API,
    /// or a repository file).
    pub fn parse(source: &str, origin: &str) -> Result<Self> {
        if source.len() > MAX_SOURCE {
            return Err(OrchestratorError::invalid(format!(
                "{origin}: a workflow is at most {MAX_SOURCE} bytes"
            )));
        }
        let def: Definition = toml::from_str(source).map_err(|e| {
            OrchestratorError::invalid(format!("{origin} is not a valid workflow: {}", e.message()))
        })?;
        check_name(&def.name)?;
        if def.steps.is_empty() || def.steps.len() > MAX_STEPS {
            return Err(OrchestratorError::invalid(format!(
                "{origin}: a workflow has 1 to {MAX_STEPS} steps"
            )));
        }
        for name in def.params.keys() {
            let plain = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !plain {
                return Err(OrchestratorError::invalid(format!(
                    "{origin}: parameter name {name:?} may hold letters, digits, '_' and '-' only"
                )));
            }
        }
        let mut seen = HashSet::new();
        for single in def.singles() {
            SubtaskName::parse(&single.name).map_err(|e| {
                OrchestratorError::invalid(format!("{origin}: step {:?}: {e}", single.name))
            })?;
            if !seen.insert(single.name.as_str()) {
                return Err(OrchestratorError::invalid(format!(
                    "{origin}: two steps are named {:?}",
                    single.name
                )));
            }
        }
        for step in &def.steps {
            if let StepDef::Parallel(group) = step
                && group.parallel.is_empty()
            {
                return Err(OrchestratorError::invalid(format!(
                    "{origin}: a parallel group needs at least one step"
                )));
            }
        }
        // Placeholders must name declared parameters, so a typo is caught
        // when the workflow is saved, not when it runs.
        let declared: HashSet<&str> = def.params.keys().map(String::as_str).collect();
        let texts = std::iter::once(def.description.as_str())
            .chain(def.singles().map(|s| s.prompt.as_str()));
        for text in texts {
            for placeholder in placeholders(text) {
                if !declared.contains(placeholder) {
                    return Err(OrchestratorError::invalid(format!(
                        "{origin}: {{{{{placeholder}}}}} names no parameter (declare it under [params.{placeholder}])"
                    )));
                }
            }
        }
        Ok(def)
    }

    fn singles(&self) -> impl Iterator<Item = &SingleDef> {
        self.steps.iter().flat_map(|step| match step {
            StepDef::Single(s) => std::slice::from_ref(s.as_ref()).iter(),
            StepDef::Parallel(p) => p.parallel.iter(),
        })
    }

    /// The workflow as the API shows it.
    pub fn summary(&self, source: &str, origin: &str) -> Workflow {
        Workflow {
            name: self.name.clone(),
            description: self.description.clone(),
            source: source.to_owned(),
            origin: origin.to_owned(),
            params: self
                .params
                .iter()
                .map(|(name, p)| WorkflowParam {
                    name: name.clone(),
                    description: p.description.clone(),
                    required: p.required,
                    default: p.default.clone().unwrap_or_default(),
                })
                .collect(),
            steps: self
                .steps
                .iter()
                .map(|step| match step {
                    StepDef::Single(s) => s.name.clone(),
                    StepDef::Parallel(p) => p
                        .parallel
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join("|"),
                })
                .collect(),
            updated_at: None,
            updated_by: String::new(),
        }
    }

    /// The task a run makes: parameters filled in, each step a subtask that
    /// depends on the step before (every member of a parallel group).
    pub fn expand(&self, params: &HashMap<String, String>) -> Result<Expanded> {
        for given in params.keys() {
            if !self.params.contains_key(given) {
                return Err(OrchestratorError::invalid(format!(
                    "workflow {:?} has no parameter {given:?} (it has: {})",
                    self.name,
                    self.param_list()
                )));
            }
        }
        let mut values: HashMap<&str, &str> = HashMap::new();
        for (name, def) in &self.params {
            match params
                .get(name)
                .map(String::as_str)
                .or(def.default.as_deref())
            {
                Some(value) => {
                    values.insert(name, value);
                }
                None if def.required => {
                    return Err(OrchestratorError::invalid(format!(
                        "workflow {:?} needs parameter {name:?}{}",
                        self.name,
                        if def.description.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", def.description)
                        }
                    )));
                }
                None => {
                    values.insert(name, "");
                }
            }
        }
        let fill = |text: &str| fill(text, &values);
        let mut subtasks = Vec::new();
        let mut previous: Vec<String> = Vec::new();
        for step in &self.steps {
            let members: Vec<&SingleDef> = match step {
                StepDef::Single(s) => vec![s.as_ref()],
                StepDef::Parallel(p) => p.parallel.iter().collect(),
            };
            let mut names = Vec::new();
            for single in members {
                subtasks.push(SubtaskSpec {
                    name: single.name.clone(),
                    prompt: fill(&single.prompt),
                    depends_on: single
                        .depends_on
                        .clone()
                        .unwrap_or_else(|| previous.clone()),
                    agent: single.agent.clone().map(Into::into),
                    fallback: single.fallback.clone().map(Into::into),
                    paths: single.paths.clone(),
                    ..Default::default()
                });
                names.push(single.name.clone());
            }
            previous = names;
        }
        let description = if self.description.trim().is_empty() {
            format!("workflow {}", self.name)
        } else {
            fill(&self.description)
        };
        Ok(Expanded {
            description,
            agent: self.agent.clone().map(Into::into),
            subtasks,
            max_attempts: self.max_attempts.unwrap_or_default(),
        })
    }

    fn param_list(&self) -> String {
        if self.params.is_empty() {
            "none".into()
        } else {
            self.params.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// The `{{name}}` placeholders of `text`.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// `text` with each `{{name}}` replaced by its value. Values are inserted
/// as they are, once: a value holding `{{x}}` is not expanded again.
fn fill(text: &str, values: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEATURE: &str = r#"
name = "feature"
description = "Build {{feature}}"
agent = { kind = "command", command = ["true"] }

[params.feature]
description = "what to build"
required = true

[params.lang]
default = "rust"

[[steps]]
name = "api"
prompt = "Build the API of {{feature}} in {{ lang }}."
fallback = { kind = "command", command = ["sh", "-c", "true"] }

[[steps]]
parallel = [
  { name = "ui", prompt = "UI of {{feature}}" },
  { name = "docs", prompt = "Docs", agent = { kind = "gemini-cli" } },
]

[[steps]]
name = "review"
prompt = "Review"
"#;

    #[test]
    fn steps_become_subtasks_that_wait_for_the_step_before() {
        let def = Definition::parse(FEATURE, "test").unwrap();
        let params = HashMap::from([("feature".to_owned(), "search".to_owned())]);
        let x = def.expand(&params).unwrap();
        assert_eq!(x.description, "Build search");
        let deps: Vec<(&str, Vec<String>)> = x
            .subtasks
            .iter()
            .map(|s| (s.name.as_str(), s.depends_on.clone()))
            .collect();
        assert_eq!(
            deps,
            vec![
                ("api", vec![]),
                ("ui", vec!["api".to_owned()]),
                ("docs", vec!["api".to_owned()]),
                ("review", vec!["ui".to_owned(), "docs".to_owned()]),
            ]
        );
        assert_eq!(x.subtasks[0].prompt, "Build the API of search in rust.");
        assert!(x.subtasks[0].fallback.is_some());
        assert_eq!(x.subtasks[2].agent.as_ref().unwrap().kind, "gemini-cli");
        let summary = def.summary(FEATURE, "stored");
        assert_eq!(summary.steps, vec!["api", "ui|docs", "review"]);
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let def = Definition::parse(FEATURE, "test").unwrap();
        let err = def.expand(&HashMap::new()).unwrap_err().to_string();
        assert!(
            err.contains("needs parameter \"feature\" (what to build)"),
            "{err}"
        );
        let params = HashMap::from([
            ("feature".to_owned(), "x".to_owned()),
            ("colour".to_owned(), "red".to_owned()),
        ]);
        let err = def.expand(&params).unwrap_err().to_string();
        assert!(
            err.contains("no parameter \"colour\" (it has: feature, lang)"),
            "{err}"
        );
        // A value is inserted once, not expanded again.
        let params = HashMap::from([("feature".to_owned(), "{{lang}}".to_owned())]);
        assert_eq!(def.expand(&params).unwrap().description, "Build {{lang}}");
    }

    #[test]
    fn bad_workflows_are_refused_with_the_reason() {
        for (source, why) in [
            (
                "name = \"Bad Name\"\n[[steps]]\nname=\"a\"\nprompt=\"p\"",
                "workflow name",
            ),
            ("name = \"w\"\nsteps = []", "1 to 100 steps"),
            (
                "name = \"w\"\n[[steps]]\nname=\"a\"\nprompt=\"{{x}}\"",
                "{{x}} names no parameter",
            ),
            (
                "name = \"w\"\n[[steps]]\nname=\"a\"\nprompt=\"p\"\n[[steps]]\nname=\"a\"\nprompt=\"q\"",
                "two steps are named \"a\"",
            ),
            (
                "name = \"w\"\n[[steps]]\nname=\"a\"\nprompt=\"p\"\nbogus=1",
                "not a valid workflow",
            ),
            (
                "name = \"w\"\n[[steps]]\nname=\"a b\"\nprompt=\"p\"",
                "step \"a b\"",
            ),
            ("name = \"w\"\n[[steps]]\nparallel=[]", "at least one step"),
        ] {
            let err = Definition::parse(source, "w.toml").unwrap_err().to_string();
            assert!(err.contains(why), "{source}: {err}");
        }
    }
}
