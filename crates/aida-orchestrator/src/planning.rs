//! Turning a `CreateTaskRequest` into a validated task: the repository and
//! base branch are checked, subtasks are taken from the request or split
//! from the description, and their dependency graph is checked (unknown
//! names, duplicates, cycles). Anything wrong is an `InvalidArgument` naming
//! the problem, before anything is stored.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use aida_core::ids::{SubtaskName, TaskId};
use aida_core::proto::common::{AgentSpec, DeliverSpec, WorktreeSetup};
use aida_core::proto::orchestrator::{CreateTaskRequest, SubtaskSpec};
use aida_core::sparse::SparsePaths;

use crate::error::{OrchestratorError, Result};
use crate::repos::RepoRoots;
use crate::store::{AgentJson, NewSubtask, NewTask};

pub const MAX_SUBTASKS: usize = 100;
/// Agent kinds a task may name: a plain command and the CLI adapters.
pub const KNOWN_AGENT_KINDS: &[&str] = &["command", "claude-code", "gemini-cli", "codex-cli"];

/// Attempts a subtask may take unless the task says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// A cap on what a task may ask for.
pub const MAX_ATTEMPTS: u32 = 20;

/// The name of the planner's run; names starting with `_` are reserved.
pub const PLANNER: &str = "_plan";
/// The longest prompt a planned subtask may have.
pub const MAX_PLANNED_PROMPT: usize = 16 * 1024;

/// What the operator decided about every task.
#[derive(Debug, Clone, Default)]
pub struct TaskPolicy {
    /// Repositories must lie under these.
    pub repo_roots: RepoRoots,
    /// A task that sets no `timeout_secs` gets this one: none runs forever.
    pub default_timeout_secs: u32,
}

/// Where a task's repository is.
#[derive(Debug, Clone)]
pub enum RepoTarget {
    /// A path the request named: checked against the allowed roots.
    Local,
    /// The mirror of a remote, fetched just now.
    Mirror { path: PathBuf, remote: String },
}

/// Validates `req` and resolves its base branch. Blocking (git2).
pub fn plan(
    req: CreateTaskRequest,
    id: TaskId,
    policy: &TaskPolicy,
    target: RepoTarget,
) -> Result<NewTask> {
    let task_agent = usable(req.agent.clone());
    let approve = match req
        .plan
        .as_ref()
        .map(|p| p.approve.trim())
        .unwrap_or_default()
    {
        "" | "auto" => "auto",
        "manual" => "manual",
        other => {
            return Err(OrchestratorError::invalid(format!(
                "plan.approve must be \"auto\" or \"manual\", got {other:?}"
            )));
        }
    };

    // With a plan and no subtasks, an agent splits the task later.
    let planner = match (&req.plan, req.subtasks.is_empty()) {
        (Some(plan), true) => {
            if req.description.trim().is_empty() {
                return Err(OrchestratorError::invalid(
                    "a task to plan needs a \"description\"",
                ));
            }
            let agent = usable(plan.agent.clone())
                .or_else(|| task_agent.clone())
                .ok_or_else(|| {
                    OrchestratorError::invalid(
                        "the plan has no agent: set \"plan.agent\" or the task's \"agent\"",
                    )
                })?;
            Some(NewSubtask {
                name: PLANNER.to_owned(),
                prompt: planner_prompt(&req.description),
                depends_on: Vec::new(),
                agent: check_agent(agent, PLANNER)?,
                branch: String::new(),
                fallback: None,
                candidate_of: String::new(),
                paths: SparsePaths::default(),
            })
        }
        (Some(_), false) => {
            return Err(OrchestratorError::invalid(
                "give either \"subtasks\" or a \"plan\" that makes them, not both",
            ));
        }
        (None, _) => None,
    };
    let (subtasks, candidates, judges) = if planner.is_some() {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        let specs = if req.subtasks.is_empty() {
            split_description(&req.description)?
        } else {
            req.subtasks.clone()
        };
        build_subtasks(&specs, &id, task_agent.as_ref())?
    };

    let (repo, base, base_commit, remote) = match target {
        RepoTarget::Local => {
            let (repo, base, commit) = resolve_repo(&req.repo, &req.base, &policy.repo_roots)?;
            (repo, base, commit, None)
        }
        RepoTarget::Mirror { path, remote } => {
            let (repo, base, commit) = resolve_mirror(&path, &remote, &req.base)?;
            (repo, base, commit, Some(remote))
        }
    };
    let deliver = check_deliver(req.deliver.clone(), remote.is_some())?;
    let setup = check_setup(req.setup.clone())?;
    // The task's own check, or the repository's.
    let verify = match req.verify.clone() {
        Some(spec) => crate::verification::check_spec(Some(spec))?,
        None => crate::verification::repo_spec(&repo, &base_commit)?,
    };
    // The verification runs of the merged result: attempts of a
    // pseudo-subtask that runs the verify command.
    let verifier = verify
        .as_ref()
        .filter(|spec| crate::verification::on_result(spec))
        .map(|spec| NewSubtask {
            name: crate::verification::VERIFIER.to_owned(),
            prompt: "verify the merged result".into(),
            agent: AgentJson {
                kind: "command".into(),
                command: spec.command.clone(),
                timeout_secs: spec.timeout_secs,
                ..Default::default()
            },
            ..Default::default()
        });
    // The plan's subtasks run the task's agent, or the planner's.
    let agent = task_agent.or_else(|| planner.as_ref().map(|p| p.agent.clone().into()));
    let merge_policy = crate::prediction::check_policy(&req.merge_policy)?;
    let resolve = crate::resolution::check_spec(req.resolve.clone(), agent.as_ref())?;
    // The resolver's runs: attempts of a pseudo-subtask that runs its agent.
    let resolver = resolve.as_ref().map(|spec| NewSubtask {
        name: crate::resolution::RESOLVER.to_owned(),
        prompt: "resolve a conflict at the merge".into(),
        agent: spec.agent.clone().map(AgentJson::from).unwrap_or_default(),
        ..Default::default()
    });
    Ok(NewTask {
        id: id.to_string(),
        created_by: req
            .actor
            .as_ref()
            .map(|a| a.username.trim())
            .filter(|name| !name.is_empty())
            .unwrap_or("internal")
            .to_owned(),
        repo,
        base,
        base_commit,
        description: req.description,
        agent: agent.map(AgentJson::from).unwrap_or_default(),
        priority: req.priority,
        subtasks,
        candidates,
        judges,
        planner,
        approve: approve.to_owned(),
        max_attempts: match req.max_attempts {
            0 => DEFAULT_MAX_ATTEMPTS,
            n => n.min(MAX_ATTEMPTS),
        },
        timeout_secs: match req.timeout_secs {
            0 => policy.default_timeout_secs,
            n => n,
        },
        idempotency_key: req.idempotency_key.trim().to_owned(),
        webhook_delivery: req.webhook_delivery.trim().to_owned(),
        remote,
        deliver,
        setup,
        origin: req.origin.clone(),
        workflow: req.workflow.trim().to_owned(),
        verify,
        verifier,
        merge_policy,
        resolve,
        resolver,
        traceparent: None,
    })
}

/// An agent spec that says something (an all-empty one means "none").
fn usable(agent: Option<AgentSpec>) -> Option<AgentSpec> {
    agent.filter(|a| !a.kind.is_empty() || !a.command.is_empty())
}

/// Checks subtask specs (names, agents, dependency graph, size) and turns
/// them into subtasks of task `id`, and the candidates of those run as
/// best of N.
fn build_subtasks(
    specs: &[SubtaskSpec],
    id: &TaskId,
    task_agent: Option<&AgentSpec>,
) -> Result<(Vec<NewSubtask>, Vec<NewSubtask>, Vec<NewSubtask>)> {
    if specs.len() > MAX_SUBTASKS {
        return Err(OrchestratorError::invalid(format!(
            "a task may have at most {MAX_SUBTASKS} subtasks, this one has {}",
            specs.len()
        )));
    }
    let mut names = HashSet::new();
    let mut subtasks = Vec::with_capacity(specs.len());
    let mut candidates = Vec::new();
    let mut judges = Vec::new();
    for spec in specs {
        let name = SubtaskName::parse(&spec.name)?;
        if !names.insert(spec.name.clone()) {
            return Err(OrchestratorError::invalid(format!(
                "duplicate subtask name {:?}",
                spec.name
            )));
        }
        let agent = usable(spec.agent.clone())
            .or_else(|| task_agent.cloned())
            .ok_or_else(|| {
                OrchestratorError::invalid(format!(
                    "subtask {:?} has no agent: set \"agent\" on the task or the subtask",
                    spec.name
                ))
            })?;
        let fallback = usable(spec.fallback.clone())
            .map(|f| check_agent(f, &spec.name))
            .transpose()?;
        let runs = crate::candidates::agents_of(spec, &agent)?
            .into_iter()
            .map(|a| check_agent(a, &spec.name))
            .collect::<Result<Vec<_>>>()?;
        let subtask = NewSubtask {
            branch: id.subtask_branch(&name),
            name: spec.name.clone(),
            prompt: spec.prompt.clone(),
            depends_on: spec.depends_on.clone(),
            agent: check_agent(agent, &spec.name)?,
            fallback,
            candidate_of: String::new(),
            paths: SparsePaths::parse(&spec.paths)
                .map_err(|e| OrchestratorError::invalid(format!("subtask {:?}: {e}", spec.name)))?,
        };
        let judge = usable(spec.judge.clone());
        if judge.is_some() && runs.is_empty() {
            return Err(OrchestratorError::invalid(format!(
                "subtask {:?}: a \"judge\" chooses among \"candidates\", and it gives none",
                spec.name
            )));
        }
        if let Some(judge) = judge {
            judges.push(NewSubtask {
                name: crate::candidates::judge_name(&spec.name),
                agent: check_agent(judge, &spec.name)?,
                candidate_of: spec.name.clone(),
                ..Default::default()
            });
        }
        candidates.extend(crate::candidates::build(&subtask, runs, id)?);
        subtasks.push(subtask);
    }
    for c in &candidates {
        if !names.insert(c.name.clone()) {
            return Err(OrchestratorError::invalid(format!(
                "subtask name {:?} is taken by a candidate of {:?}",
                c.name, c.candidate_of
            )));
        }
    }
    check_dependencies(&subtasks)?;
    Ok((subtasks, candidates, judges))
}

/// What the planner is asked.
fn planner_prompt(description: &str) -> String {
    format!(
        "You are the planner of a coding task. Split it into subtasks that separate coding agents can carry out \
in parallel, each in its own git worktree of this repository; their branches are merged afterwards.\n\
Do not change any file: read the repository as you need, then answer.\n\
Answer with one JSON object and nothing else, of this form:\n\
{{\"subtasks\": [{{\"name\": \"api\", \"prompt\": \"what this subtask must do\", \"depends_on\": [], \"paths\": [\"src/api\"]}}]}}\n\
Rules: at most {MAX_SUBTASKS} subtasks; names are short lowercase words joined by '-' (they become git branch \
names); depends_on names the subtasks whose work this one needs; no cycles; prefer subtasks that change \
different files. paths is optional: the directories the subtask works in, when you are sure; its worktree \
then holds only those (and the files at the top of the repository), which starts it faster on a big repository.\n\nThe task:\n{description}\n"
    )
}

/// The JSON a planner answers with.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanDoc {
    subtasks: Vec<PlannedSubtask>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlannedSubtask {
    name: String,
    prompt: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
}

/// Turns a planner's answer into subtasks of `task`, with the same checks
/// as subtasks given by hand. The JSON object may be wrapped in prose or a
/// code fence, as agents like to do.
pub fn subtasks_from_plan(output: &str, id: &TaskId, agent: &AgentSpec) -> Result<Vec<NewSubtask>> {
    let json = match (output.find('{'), output.rfind('}')) {
        (Some(start), Some(end)) if start < end => &output[start..=end],
        _ => {
            return Err(OrchestratorError::invalid(
                "the planner's answer holds no JSON object",
            ));
        }
    };
    let doc: PlanDoc = serde_json::from_str(json).map_err(|e| {
        OrchestratorError::invalid(format!(
            "the planner's JSON does not fit the plan schema: {e}"
        ))
    })?;
    if doc.subtasks.is_empty() {
        return Err(OrchestratorError::invalid("the plan has no subtasks"));
    }
    if let Some(long) = doc
        .subtasks
        .iter()
        .find(|s| s.prompt.len() > MAX_PLANNED_PROMPT)
    {
        return Err(OrchestratorError::invalid(format!(
            "the prompt of planned subtask {:?} is longer than {MAX_PLANNED_PROMPT} bytes",
            long.name
        )));
    }
    let specs: Vec<SubtaskSpec> = doc
        .subtasks
        .into_iter()
        .map(|s| SubtaskSpec {
            fallback: None,
            name: s.name,
            prompt: s.prompt,
            depends_on: s.depends_on,
            paths: s.paths,
            agent: None,
            ..Default::default()
        })
        .collect();
    Ok(build_subtasks(&specs, id, Some(agent))?.0)
}

fn check_agent(agent: AgentSpec, subtask: &str) -> Result<AgentJson> {
    let kind = if agent.kind.is_empty() {
        "command".to_owned()
    } else {
        agent.kind.clone()
    };
    if !KNOWN_AGENT_KINDS.contains(&kind.as_str()) {
        return Err(OrchestratorError::invalid(format!(
            "subtask {subtask:?}: unknown agent kind {kind:?} (known: {})",
            KNOWN_AGENT_KINDS.join(", ")
        )));
    }
    if kind == "command" && agent.command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(OrchestratorError::invalid(format!(
            "subtask {subtask:?}: a \"command\" agent needs \"command\": [\"program\", \"arg\", ...]"
        )));
    }
    if !agent.max_budget_usd.is_finite() || agent.max_budget_usd < 0.0 {
        return Err(OrchestratorError::invalid(format!(
            "subtask {subtask:?}: max_budget_usd must be a positive number of dollars"
        )));
    }
    let agent = AgentSpec { kind, ..agent };
    Ok(AgentJson::from(agent))
}

fn check_dependencies(subtasks: &[NewSubtask]) -> Result<()> {
    let known: HashSet<&str> = subtasks.iter().map(|s| s.name.as_str()).collect();
    for s in subtasks {
        let mut seen = HashSet::new();
        for dep in &s.depends_on {
            if dep == &s.name {
                return Err(OrchestratorError::invalid(format!(
                    "subtask {:?} depends on itself",
                    s.name
                )));
            }
            if !known.contains(dep.as_str()) {
                return Err(OrchestratorError::invalid(format!(
                    "subtask {:?} depends on unknown subtask {dep:?}",
                    s.name
                )));
            }
            if !seen.insert(dep) {
                return Err(OrchestratorError::invalid(format!(
                    "subtask {:?} lists dependency {dep:?} twice",
                    s.name
                )));
            }
        }
    }
    let graph: Vec<(&str, &[String])> = subtasks
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    let order = topological_order(&graph);
    if order.len() < subtasks.len() {
        let in_order: HashSet<usize> = order.into_iter().collect();
        let cycle: BTreeSet<&str> = (0..subtasks.len())
            .filter(|i| !in_order.contains(i))
            .map(|i| subtasks[i].name.as_str())
            .collect();
        return Err(OrchestratorError::invalid(format!(
            "dependency cycle among subtasks: {}",
            cycle.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Indices of `nodes` (name, dependencies) in an order where every node
/// comes after its dependencies, ties kept in input order. Nodes on a cycle
/// (or depending on one) are left out.
pub fn topological_order(nodes: &[(&str, &[String])]) -> Vec<usize> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (*n, i))
        .collect();
    let mut remaining: Vec<usize> = nodes
        .iter()
        .map(|(_, deps)| {
            deps.iter()
                .filter(|d| index.contains_key(d.as_str()))
                .count()
        })
        .collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, (_, deps)) in nodes.iter().enumerate() {
        for d in deps.iter() {
            if let Some(&j) = index.get(d.as_str()) {
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            remaining[j] -= 1;
            if remaining[j] == 0 {
                ready.insert(j);
            }
        }
    }
    order
}

/// Without explicit subtasks: one subtask per item of a markdown list in the
/// description, or one subtask for the whole description.
pub fn split_description(description: &str) -> Result<Vec<SubtaskSpec>> {
    let description = description.trim();
    if description.is_empty() {
        return Err(OrchestratorError::invalid(
            "a task needs a \"description\" or a list of \"subtasks\"",
        ));
    }
    let items: Vec<&str> = description.lines().filter_map(list_item).collect();
    if items.is_empty() {
        return Ok(vec![SubtaskSpec {
            name: "main".into(),
            prompt: description.to_owned(),
            ..Default::default()
        }]);
    }
    let mut used = HashSet::new();
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut name = slug(item);
            if name.is_empty() || !used.insert(name.clone()) {
                name = format!("step-{}", i + 1);
                used.insert(name.clone());
            }
            SubtaskSpec {
                name,
                prompt: format!("{item}\n\nThis is one part of a larger task:\n{description}"),
                ..Default::default()
            }
        })
        .collect())
}

/// The text of a markdown list item (`- x`, `* x`, `+ x`, `1. x`, `1) x`).
fn list_item(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let rest = if let Some(rest) = line.strip_prefix(['-', '*', '+']) {
        rest
    } else {
        let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        line[digits..].strip_prefix(['.', ')'])?
    };
    let text = rest.strip_prefix(' ')?.trim();
    // Task-list checkboxes are part of the markup, not the item.
    let text = text
        .strip_prefix("[ ] ")
        .or_else(|| text.strip_prefix("[x] "))
        .unwrap_or(text)
        .trim();
    (!text.is_empty()).then_some(text)
}

/// A branch-friendly name from free text: lowercase ASCII words joined by
/// `-`, at most 40 bytes.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if out.len() + word.len() + 1 > 40 {
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    out
}

/// A delivery needs a remote to deliver to; a pull request's title is one
/// line.
fn check_deliver(deliver: Option<DeliverSpec>, on_remote: bool) -> Result<Option<DeliverSpec>> {
    let Some(mut deliver) = deliver else {
        return Ok(None);
    };
    if deliver.pull_request.is_some() {
        // A pull request needs the branch on the remote.
        deliver.push = true;
    }
    if deliver.push_subtasks {
        deliver.push = true;
    }
    if !deliver.push {
        return Ok(None);
    }
    if !on_remote {
        return Err(OrchestratorError::invalid(
            "\"deliver\" needs a task on a remote: \"repo\" must be a URL to push to",
        ));
    }
    if let Some(pr) = &mut deliver.pull_request {
        pr.title = pr.title.trim().to_owned();
        if pr.title.len() > 256 || pr.title.contains(['\n', '\r']) {
            return Err(OrchestratorError::invalid(
                "\"deliver.pull_request.title\" is one line of at most 256 bytes",
            ));
        }
        if pr.closes.len() > 20 || pr.closes.contains(&0) {
            return Err(OrchestratorError::invalid(
                "\"deliver.pull_request.closes\" lists at most 20 issue numbers",
            ));
        }
    }
    Ok(Some(deliver))
}

/// The task's worktree set-up: an argv, plain environment names (not
/// AIDA's own), a handful of ports.
fn check_setup(setup: Option<WorktreeSetup>) -> Result<Option<WorktreeSetup>> {
    let Some(setup) = setup else {
        return Ok(None);
    };
    if setup.command.first().is_some_and(|p| p.trim().is_empty()) {
        return Err(OrchestratorError::invalid(
            "\"setup.command\" is an argv whose first word names a program",
        ));
    }
    for name in setup.env.keys() {
        let plain = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let reserved =
            name.starts_with("AIDA_") || name == "DATABASE_URL" || name.starts_with("REDIS_");
        if !plain || reserved {
            return Err(OrchestratorError::invalid(format!(
                "\"setup.env\": {name:?} is not a variable a task may set (plain names, not AIDA_*, DATABASE_URL or REDIS_*)"
            )));
        }
    }
    if setup.ports > 16 {
        return Err(OrchestratorError::invalid("\"setup.ports\" is at most 16"));
    }
    Ok(Some(setup))
}

/// Opens a remote's mirror and resolves the base branch among the remote's
/// branches (`refs/remotes/origin/*`); without one, the remote's default.
pub(crate) fn resolve_mirror(
    path: &std::path::Path,
    remote: &str,
    base: &str,
) -> Result<(String, String, String)> {
    let git = git2::Repository::open_bare(path).map_err(|e| {
        OrchestratorError::Unexpected(anyhow::anyhow!(
            "cannot open the mirror {}: {}",
            path.display(),
            e.message()
        ))
    })?;
    let base = match base.trim() {
        "" => git
            .find_reference("refs/remotes/origin/HEAD")
            .ok()
            .and_then(|r| r.symbolic_target().map(str::to_owned))
            .and_then(|t| t.strip_prefix("refs/remotes/origin/").map(str::to_owned))
            .ok_or_else(|| {
                OrchestratorError::invalid(format!(
                    "{remote} names no default branch; name a \"base\" branch"
                ))
            })?,
        base => base.to_owned(),
    };
    let commit = git
        .find_reference(&format!("refs/remotes/origin/{base}"))
        .and_then(|r| r.peel_to_commit())
        .map_err(|_| {
            OrchestratorError::invalid(format!("base branch {base:?} does not exist on {remote}"))
        })?;
    let repo = path.to_str().ok_or_else(|| {
        OrchestratorError::Unexpected(anyhow::anyhow!("the mirror path is not UTF-8"))
    })?;
    Ok((repo.to_owned(), base, commit.id().to_string()))
}

/// Checks the repository against the allowed roots, opens it and resolves
/// the base branch to a commit. The task keeps the canonical path.
/// Repositories opened for earlier tasks, by canonical path: opening one
/// reads its configuration files and walks its `.git`, which would cost
/// every task. A handle is checked against the roots when opened; its
/// branches are read fresh each time.
static OPENED: LazyLock<Mutex<HashMap<PathBuf, git2::Repository>>> =
    LazyLock::new(Default::default);
/// Handles kept at most (one per repository in use).
const OPENED_MAX: usize = 64;

pub(crate) fn resolve_repo(
    repo: &str,
    base: &str,
    roots: &RepoRoots,
) -> Result<(String, String, String)> {
    if repo.trim().is_empty() {
        return Err(OrchestratorError::invalid(
            "\"repo\" is required: the path of a local git repository",
        ));
    }
    let path = roots.check(repo.trim())?;
    let repo = path.to_str().ok_or_else(|| {
        OrchestratorError::invalid(format!("\"repo\" {repo:?} is not valid UTF-8"))
    })?;
    // Taken out while in use, so the lock is never held across git calls.
    let cached = OPENED
        .lock()
        .ok()
        .and_then(|mut opened| opened.remove(&path));
    let (git, resolved) = match cached {
        Some(git) => match resolve_base(&git, repo, base) {
            Ok(resolved) => (git, resolved),
            // The repository changed under the handle (moved, re-created):
            // open it again.
            Err(_) => {
                let git = open_checked(&path, repo, roots)?;
                let resolved = resolve_base(&git, repo, base)?;
                (git, resolved)
            }
        },
        None => {
            let git = open_checked(&path, repo, roots)?;
            let resolved = resolve_base(&git, repo, base)?;
            (git, resolved)
        }
    };
    if let Ok(mut opened) = OPENED.lock() {
        if opened.len() >= OPENED_MAX {
            opened.clear();
        }
        opened.insert(path.clone(), git);
    }
    let (base, commit) = resolved;
    Ok((repo.to_owned(), base, commit))
}

/// Opens the repository at `path` and checks that its git directories lie
/// under the roots too.
fn open_checked(path: &Path, repo: &str, roots: &RepoRoots) -> Result<git2::Repository> {
    let git = git2::Repository::open(path).map_err(|e| {
        OrchestratorError::invalid(if e.code() == git2::ErrorCode::Owner {
            // git refuses repositories owned by another user unless told
            // they are safe; the plain "not a repository" would mislead.
            format!(
                "{repo:?} is owned by another user than the one AIDA runs as; \
                 mark it safe with `git config --system --add safe.directory {repo}`"
            )
        } else if !path.exists() {
            format!("{repo:?} does not exist")
        } else {
            format!("{repo:?} is not a git repository")
        })
    })?;
    // A `.git` file can point anywhere: the objects must be under a root too.
    for dir in [git.path(), git.commondir()] {
        if roots.check(&dir.to_string_lossy()).is_err() {
            return Err(OrchestratorError::invalid(crate::repos::NOT_ALLOWED));
        }
    }
    Ok(git)
}

/// The base branch (the HEAD branch when `base` is empty) and its commit.
fn resolve_base(git: &git2::Repository, repo: &str, base: &str) -> Result<(String, String)> {
    let base = if base.trim().is_empty() {
        let head = git.head().map_err(|_| {
            OrchestratorError::invalid(format!(
                "repository {repo:?} has no commits on its HEAD branch; name a \"base\" branch"
            ))
        })?;
        if !head.is_branch() {
            return Err(OrchestratorError::invalid(format!(
                "repository {repo:?} has a detached HEAD; name a \"base\" branch"
            )));
        }
        head.shorthand().unwrap_or_default().to_owned()
    } else {
        base.trim().to_owned()
    };
    let branch = git
        .find_branch(&base, git2::BranchType::Local)
        .map_err(|_| {
            OrchestratorError::invalid(format!("base branch {base:?} does not exist in {repo:?}"))
        })?;
    let commit = branch
        .get()
        .peel_to_commit()
        .map_err(|_| OrchestratorError::invalid(format!("base branch {base:?} has no commit")))?;
    Ok((base, commit.id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, deps: &[&str]) -> SubtaskSpec {
        SubtaskSpec {
            name: name.into(),
            prompt: "p".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            agent: None,
            fallback: None,
            ..Default::default()
        }
    }

    fn request(repo: &str, subtasks: Vec<SubtaskSpec>) -> CreateTaskRequest {
        CreateTaskRequest {
            repo: repo.into(),
            description: "d".into(),
            agent: Some(AgentSpec {
                kind: "command".into(),
                command: vec!["true".into()],
                ..Default::default()
            }),
            subtasks,
            ..Default::default()
        }
    }

    fn repo_with_commit() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
            .unwrap();
        dir
    }

    /// Repositories anywhere under the temporary directory are allowed.
    fn policy() -> TaskPolicy {
        TaskPolicy {
            repo_roots: RepoRoots::parse(&std::env::temp_dir().display().to_string()).unwrap(),
            default_timeout_secs: 3600,
        }
    }

    fn err(req: CreateTaskRequest) -> String {
        match plan(req, TaskId::new(), &policy(), RepoTarget::Local) {
            Err(OrchestratorError::InvalidArgument(m)) => m,
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_graphs_with_the_names() {
        let dir = repo_with_commit();
        let repo = dir.path().to_str().unwrap();
        assert!(
            err(request(repo, vec![spec("a", &["nope"])])).contains("unknown subtask \"nope\"")
        );
        assert!(
            err(request(repo, vec![spec("a", &[]), spec("a", &[])]))
                .contains("duplicate subtask name \"a\"")
        );
        let cycle = err(request(
            repo,
            vec![spec("a", &["b"]), spec("b", &["a"]), spec("c", &[])],
        ));
        assert!(
            cycle.ends_with("dependency cycle among subtasks: a, b"),
            "{cycle}"
        );
        assert!(err(request(repo, vec![spec("bad/name", &[])])).contains("bad/name"));
        assert!(err(request(repo, vec![spec("a", &["a"])])).contains("depends on itself"));
    }

    #[test]
    fn rejects_bad_repositories_and_bases() {
        let plain = tempfile::tempdir().unwrap();
        let msg = err(request(
            plain.path().to_str().unwrap(),
            vec![spec("a", &[])],
        ));
        assert!(msg.contains("is not a git repository"), "{msg}");
        let dir = repo_with_commit();
        let mut req = request(dir.path().to_str().unwrap(), vec![spec("a", &[])]);
        req.base = "no-such-branch".into();
        assert!(err(req).contains("base branch \"no-such-branch\" does not exist"));
        assert!(err(request("relative/path", vec![spec("a", &[])])).contains("absolute"));
    }

    #[test]
    fn resolves_the_head_branch_and_builds_branch_names() {
        let dir = repo_with_commit();
        let id = TaskId::new();
        let task = plan(
            request(dir.path().to_str().unwrap(), vec![spec("api", &[])]),
            id,
            &policy(),
            RepoTarget::Local,
        )
        .unwrap();
        assert_eq!(task.timeout_secs, 3600, "the default timeout applies");
        assert_eq!(task.created_by, "internal");
        let repo = git2::Repository::open(dir.path()).unwrap();
        let head = repo.head().unwrap();
        assert_eq!(task.base, head.shorthand().unwrap());
        assert_eq!(task.base_commit, head.target().unwrap().to_string());
        assert_eq!(task.subtasks[0].branch, format!("aida/{id}/api"));
    }

    #[test]
    fn splits_markdown_lists_into_subtasks() {
        let specs = split_description(
            "Build the app:\n- Add login API\n* [ ] Write UI\n1. Add login API\n",
        )
        .unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["add-login-api", "write-ui", "step-3"]);
        assert!(specs[1].prompt.starts_with("Write UI"));
        let one = split_description("Fix the bug in parser").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "main");
        assert!(split_description("  ").is_err());
    }

    #[test]
    fn topological_order_keeps_input_order_for_ties() {
        let deps_c = vec!["a".to_string()];
        let none: Vec<String> = vec![];
        let nodes = [
            ("c", deps_c.as_slice()),
            ("a", none.as_slice()),
            ("b", none.as_slice()),
        ];
        assert_eq!(topological_order(&nodes), vec![1, 0, 2]);
    }

    #[test]
    fn a_planners_answer_becomes_checked_subtasks() {
        let id = TaskId::new();
        let agent = AgentSpec {
            kind: "command".into(),
            command: vec!["true".into()],
            ..Default::default()
        };
        let answer = "Here is the plan:\n```json\n{\"subtasks\": [{\"name\": \"api\", \"prompt\": \"build it\"},\n {\"name\": \"ui\", \"prompt\": \"use it\", \"depends_on\": [\"api\"]}]}\n```";
        let subtasks = subtasks_from_plan(answer, &id, &agent).unwrap();
        assert_eq!(
            subtasks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["api", "ui"]
        );
        assert_eq!(subtasks[1].branch, format!("aida/{id}/ui"));
        assert_eq!(subtasks[1].depends_on, ["api"]);

        let bad = |answer: &str| match subtasks_from_plan(answer, &id, &agent) {
            Err(OrchestratorError::InvalidArgument(m)) => m,
            other => panic!("expected an invalid plan, got {other:?}"),
        };
        assert!(bad("no json here").contains("no JSON object"));
        assert!(bad(r#"{"subtasks": []}"#).contains("no subtasks"));
        assert!(bad(r#"{"steps": []}"#).contains("schema"));
        assert!(bad(r#"{"subtasks": [{"name": "a", "prompt": "p", "depends_on": ["b"]}, {"name": "b", "prompt": "p", "depends_on": ["a"]}]}"#).contains("cycle"));
        assert!(
            bad(r#"{"subtasks": [{"name": "a", "prompt": "p", "depends_on": ["ghost"]}]}"#)
                .contains("ghost")
        );
        assert!(bad(r#"{"subtasks": [{"name": "_plan", "prompt": "p"}]}"#).contains("reserved"));
        assert!(
            bad(r#"{"subtasks": [{"name": "a", "prompt": "p", "paths": ["../up"]}]}"#)
                .contains("paths entry \"../up\"")
        );
    }

    #[test]
    fn a_planned_subtasks_paths_are_checked_and_normalised() {
        let id = TaskId::new();
        let agent = AgentSpec {
            kind: "command".into(),
            command: vec!["true".into()],
            ..Default::default()
        };
        let answer = r#"{"subtasks": [{"name": "api", "prompt": "p", "paths": ["src/api/", "docs", "src/api"]}]}"#;
        let subtasks = subtasks_from_plan(answer, &id, &agent).unwrap();
        assert_eq!(subtasks[0].paths.as_slice(), ["docs", "src/api"]);
    }
}
