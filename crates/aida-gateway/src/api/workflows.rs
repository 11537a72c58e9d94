//! The JSON documents of workflows (reusable task templates) and of
//! follow-ups.

use std::collections::BTreeMap;

use aida_proto::orchestrator as orch;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AgentSpec, DeliverSpec, non_empty, timestamp};

/// The body of `POST /api/tasks/{id}/subtasks/{name}/follow-up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    /// The new instruction for the subtask's agent.
    #[schema(example = "The tests fail on an empty cart: handle it and add a test.")]
    pub prompt: String,
}

/// The body of `POST /api/workflows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutWorkflow {
    /// The workflow in TOML: `name`, `description`, `agent`, `[params.X]`,
    /// `[[steps]]` (each a `name` and `prompt`, or a `parallel` group;
    /// optional `agent`, `fallback`, `depends_on`).
    pub source: String,
}

/// A workflow parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowParam {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A workflow: a reusable task template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Workflow {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `stored`, or the repository file it comes from.
    pub origin: String,
    pub params: Vec<WorkflowParam>,
    /// The steps in order; a parallel group's names joined with `|`.
    pub steps: Vec<String>,
    /// The definition as written (TOML).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<Workflow>,
}

/// Query of `GET /api/workflows` and `GET /api/workflows/{name}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowQuery {
    /// Also this repository's workflows (`.aida/workflows/*.toml`): a
    /// path or an allowed remote.
    pub repo: Option<String>,
    /// The branch to read them from; the repository's HEAD branch when
    /// absent.
    pub base: Option<String>,
}

/// The body of `POST /api/workflows/{name}/run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunWorkflow {
    /// The repository the task works on, as in `POST /api/tasks`.
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The workflow's parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Instead of the workflow's default agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<DeliverSpec>,
    #[serde(default)]
    pub priority: i32,
}

impl From<orch::Workflow> for Workflow {
    fn from(w: orch::Workflow) -> Self {
        Workflow {
            name: w.name,
            description: non_empty(w.description),
            origin: w.origin,
            params: w
                .params
                .into_iter()
                .map(|p| WorkflowParam {
                    name: p.name,
                    description: non_empty(p.description),
                    required: p.required,
                    default: non_empty(p.default),
                })
                .collect(),
            steps: w.steps,
            source: w.source,
            updated_at: timestamp(w.updated_at),
            updated_by: non_empty(w.updated_by),
        }
    }
}

impl From<RunWorkflow> for orch::RunWorkflowRequest {
    fn from(r: RunWorkflow) -> Self {
        orch::RunWorkflowRequest {
            name: String::new(),
            repo: r.repo,
            base: r.base.unwrap_or_default(),
            params: r.params.into_iter().collect(),
            agent: r.agent.map(Into::into),
            deliver: r.deliver.map(Into::into),
            priority: r.priority,
            idempotency_key: String::new(),
            actor: None,
        }
    }
}
