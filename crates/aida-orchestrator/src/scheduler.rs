//! Workers and assignment: workers dial in with `RegisterWorker` and hold a
//! stream open; the dispatch loop hands each ready subtask (pending, every
//! dependency succeeded) to an idle worker that can run its agent, highest
//! task priority first, first come first served within a priority.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aida_core::event::{Channel, kind};
use aida_core::proto::common::{
    AgentSpec, DependencyCommit, Subtask, SubtaskRun, SubtaskStatus, Task, TaskStatus,
};
use aida_core::proto::orchestrator::{
    Assignment, CancelSubtask, RegisterWorkerRequest, WorkerCommand, worker_command,
};
use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::{ConnectedWorker, Engine, RunKey, dependency_order, status_of, task_status_of};
use crate::error::{OrchestratorError, Result};
use crate::store::queue::QueueWalk;
use crate::store::{AttemptStart, NewEvent};

/// How often subtasks no connected worker can run are looked for (and the
/// longest a wake-up that raced a dispatch pass waits).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

impl Engine {
    /// Registers a worker's connection; assignments go out on the returned
    /// receiver for as long as the worker keeps the stream open.
    pub async fn register_worker(
        self: &Arc<Self>,
        req: RegisterWorkerRequest,
    ) -> Result<mpsc::Receiver<Result<WorkerCommand, tonic::Status>>> {
        let worker_id = req.worker_id.trim().to_owned();
        if worker_id.is_empty() {
            return Err(OrchestratorError::invalid("worker_id is required"));
        }
        let (tx, rx) = mpsc::channel(16);
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        // After a reconnect or an orchestrator restart the worker may still
        // be running what it was given: it stays busy with that.
        let current = self
            .store
            .running_on_worker(&worker_id)
            .await?
            .into_iter()
            .next()
            .map(|(task_id, subtask, attempt)| RunKey {
                task_id,
                subtask,
                attempt,
            });
        let busy = current.is_some();
        let now = Utc::now();
        let draining = self
            .store
            .upsert_worker(
                &worker_id,
                &req.address,
                &req.agent_kinds,
                &req.hostname,
                &req.metrics_address,
                now,
            )
            .await?;
        if busy {
            self.store.set_worker_state(&worker_id, "busy", now).await?;
        }
        self.workers.lock().await.insert(
            worker_id.clone(),
            ConnectedWorker {
                connection,
                agent_kinds: req.agent_kinds.clone(),
                commands: tx.clone(),
                current,
                draining,
            },
        );
        self.events
            .record(NewEvent {
                channel: Channel::Worker,
                kind: kind::WORKER_CONNECTED,
                task_id: None,
                subtask: None,
                worker_id: Some(worker_id.clone()),
                data: json!({ "address": req.address, "agent_kinds": req.agent_kinds, "hostname": req.hostname }),
            })
            .await?;
        tracing::info!(worker_id, address = %req.address, "worker connected");

        let engine = Arc::clone(self);
        tokio::spawn(async move {
            tx.closed().await;
            if let Err(e) = engine.worker_gone(&worker_id, connection).await {
                tracing::error!(worker_id, error = ?e, "handling a worker disconnect failed");
            }
        });
        self.wake.notify_one();
        Ok(rx)
    }

    async fn worker_gone(self: &Arc<Self>, worker_id: &str, connection: u64) -> Result<()> {
        {
            let mut workers = self.workers.lock().await;
            match workers.get(worker_id) {
                Some(w) if w.connection == connection => {
                    workers.remove(worker_id);
                }
                // A newer connection replaced this one: nothing is lost.
                _ => return Ok(()),
            }
        }
        self.store
            .set_worker_state(worker_id, "offline", Utc::now())
            .await?;
        self.events
            .record(NewEvent {
                channel: Channel::Worker,
                kind: kind::WORKER_DISCONNECTED,
                task_id: None,
                subtask: None,
                worker_id: Some(worker_id.to_owned()),
                data: json!({}),
            })
            .await?;
        // Its running attempt keeps its lease: a worker that reconnects in
        // time carries on; otherwise the lease expires and another takes it.
        tracing::info!(worker_id, "worker disconnected");
        Ok(())
    }

    /// Runs dispatch passes whenever something changes, until `stop`; and
    /// every [`SWEEP_EVERY`] a sweep for subtasks no worker can run.
    pub async fn run_dispatcher(self: Arc<Self>, stop: CancellationToken) {
        let mut swept = Instant::now();
        loop {
            if let Err(e) = self.dispatch_once().await {
                tracing::error!(error = ?e, "dispatch pass failed");
            }
            if swept.elapsed() >= SWEEP_EVERY {
                swept = Instant::now();
                if let Err(e) = self.sweep_unrunnable().await {
                    tracing::error!(error = ?e, "sweep for subtasks no worker can run failed");
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                // Also look periodically, in case a wake-up raced a pass.
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Hands ready subtasks to idle workers, walking the queue from its
    /// head only as far as there are idle workers to fill: the pass costs
    /// what it hands out, however many tasks wait behind.
    async fn dispatch_once(self: &Arc<Self>) -> Result<()> {
        let _pass = self.dispatch_lock.lock().await;
        let mut idle = self.idle_workers().await;
        if idle.is_empty() {
            return Ok(());
        }
        let mut queue = QueueWalk::start(&self.store, self.settings.priority_aging).await?;
        while !idle.is_empty() {
            let Some(task) = queue.next().await? else {
                break;
            };
            for st in startable(&task) {
                let kind = agent_kind(st);
                let Some(pos) = idle
                    .iter()
                    .position(|(_, kinds)| kinds.iter().any(|k| k == kind))
                else {
                    // None idle can run it (or none connected can: the
                    // sweep says so, and fails it in time).
                    continue;
                };
                let (worker_id, _) = idle.remove(pos);
                if !self.assign(&task, st, &worker_id).await? {
                    // Not handed out (taken meanwhile, or the worker left):
                    // look again at who is idle.
                    idle = self.idle_workers().await;
                }
                if idle.is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Ready subtasks whose agent kind no connected worker can run: each
    /// says so while it waits, and fails once the wait is over. Reads only
    /// the pending subtasks of such kinds (an index on pending subtasks).
    async fn sweep_unrunnable(self: &Arc<Self>) -> Result<()> {
        let _pass = self.dispatch_lock.lock().await;
        // Drained workers count here: a subtask waits for them rather than
        // failing for want of a worker while an admin drains one.
        let runnable: HashSet<String> = self
            .workers
            .lock()
            .await
            .values()
            .flat_map(|w| w.agent_kinds.iter().cloned())
            .collect();
        let task_ids = self.store.pending_needing_other_kinds(&runnable).await?;
        let mut waiting = HashSet::new();
        for id in task_ids {
            let Some(task) = self.store.get_task(&id).await? else {
                continue;
            };
            for st in startable(&task) {
                if runnable.contains(agent_kind(st)) {
                    continue;
                }
                waiting.insert((task.id.clone(), st.name.clone()));
                self.no_worker_for(&task, st, &runnable).await?;
            }
        }
        // A subtask a worker can run again starts its wait afresh next time.
        self.unrunnable
            .lock()
            .await
            .retain(|key, _| waiting.contains(key));
        Ok(())
    }

    /// A ready subtask whose agent kind no connected worker can run: it
    /// says so while it waits, and fails once the wait is over, so a task
    /// never waits forever for a worker that does not exist.
    async fn no_worker_for(
        self: &Arc<Self>,
        task: &Task,
        st: &Subtask,
        runnable: &HashSet<String>,
    ) -> Result<()> {
        let kind = agent_kind(st);
        let mut kinds: Vec<&str> = runnable.iter().map(String::as_str).collect();
        kinds.sort_unstable();
        let reason = format!(
            "no connected worker can run agent kind {kind:?} (connected workers run: {})",
            if kinds.is_empty() {
                "nothing, no worker is connected".to_owned()
            } else {
                kinds.join(", ")
            }
        );
        let key = (task.id.clone(), st.name.clone());
        let since = *self
            .unrunnable
            .lock()
            .await
            .entry(key)
            .or_insert_with(Instant::now);
        if since.elapsed() >= self.settings.agent_wait {
            let reason = format!("{reason} for {}s", self.settings.agent_wait.as_secs());
            self.fail_pending(&task.id, &st.name, &reason).await?;
            return Ok(());
        }
        if self
            .store
            .note_pending(&task.id, &st.name, Some(&reason))
            .await?
        {
            self.events
                .record(Self::subtask_status_event(
                    &task.id,
                    &st.name,
                    SubtaskStatus::Pending,
                    json!({ "error": reason }),
                ))
                .await?;
        }
        Ok(())
    }

    /// Workers that may be given work now: connected, not busy, not
    /// drained, not quarantined.
    async fn idle_workers(&self) -> Vec<(String, Vec<String>)> {
        let workers = self.workers.lock().await;
        let mut idle: Vec<_> = workers
            .iter()
            .filter(|(id, w)| {
                w.current.is_none() && !w.draining && !self.monitor.is_quarantined(id)
            })
            .map(|(id, w)| (id.clone(), w.agent_kinds.clone()))
            .collect();
        idle.sort();
        idle
    }

    /// Assigns one ready subtask now to a given idle worker (the
    /// `AssignTask` RPC), ahead of the dispatch loop.
    pub async fn assign_now(
        self: &Arc<Self>,
        task_id: &str,
        subtask: &str,
        worker_id: &str,
    ) -> Result<Assignment> {
        let _pass = self.dispatch_lock.lock().await;
        let task = self.task(task_id).await?;
        let st = task
            .subtasks
            .iter()
            .chain(task.planner.iter())
            .chain(task.verifier.iter())
            .chain(task.resolver.iter())
            .chain(task.candidates.iter())
            .chain(task.judges.iter())
            .find(|s| s.name == subtask)
            .ok_or_else(|| {
                OrchestratorError::NotFound(format!("task {task_id} has no subtask {subtask:?}"))
            })?;
        if !startable(&task).iter().any(|s| s.name == subtask) {
            return Err(OrchestratorError::FailedPrecondition(format!(
                "subtask {subtask:?} is not ready: it must be pending with every dependency succeeded"
            )));
        }
        {
            let workers = self.workers.lock().await;
            let w = workers.get(worker_id).ok_or_else(|| {
                OrchestratorError::FailedPrecondition(format!(
                    "worker {worker_id:?} is not connected"
                ))
            })?;
            if w.current.is_some() {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "worker {worker_id:?} is busy"
                )));
            }
            if w.draining {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "worker {worker_id:?} is draining: resume it first"
                )));
            }
            if let Some(until) = self.monitor.quarantined_until(worker_id) {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "worker {worker_id:?} is quarantined until {until}: its runs kept failing"
                )));
            }
            if !w.agent_kinds.iter().any(|k| k == agent_kind(st)) {
                return Err(OrchestratorError::FailedPrecondition(format!(
                    "worker {worker_id:?} cannot run agent kind {:?}",
                    agent_kind(st)
                )));
            }
        }
        if !self.assign(&task, st, worker_id).await? {
            return Err(OrchestratorError::FailedPrecondition(format!(
                "subtask {subtask:?} could not be handed to worker {worker_id:?}"
            )));
        }
        Ok(Assignment {
            worker_id: worker_id.to_owned(),
            // The agent's environment holds the task's token: only the
            // worker gets it.
            run: Some(subtask_run(&task, st, st.attempts + 1, HashMap::new())),
        })
    }

    /// Marks the subtask running and sends it to the worker. False when the
    /// subtask was taken meanwhile or the worker's stream is gone.
    async fn assign(self: &Arc<Self>, task: &Task, st: &Subtask, worker_id: &str) -> Result<bool> {
        // A span of the task's trace: the dispatcher serves every task.
        let span = tracing::info_span!(
            "assign",
            otel.kind = "internal",
            task_id = %task.id,
            subtask = %st.name,
            worker_id,
            trace_id = tracing::field::Empty,
        );
        aida_core::telemetry::adopt(&span, Some(&task.traceparent));
        tracing::Instrument::instrument(self.start_attempt(task, st, worker_id), span).await
    }

    async fn start_attempt(
        self: &Arc<Self>,
        task: &Task,
        st: &Subtask,
        worker_id: &str,
    ) -> Result<bool> {
        let attempt = st.attempts + 1;
        let now = Utc::now();
        // The attempt's own context token, stored (hashed) with its start.
        let token = aida_core::token::generate(aida_core::token::TokenKind::Context);
        if !self
            .store
            .start_subtask(
                &task.id,
                &st.name,
                &AttemptStart {
                    worker_id,
                    attempt,
                    now,
                    lease_until: now + self.settings.lease_timeout,
                    context_token: Some((&token.id, &token.secret_hash)),
                },
            )
            .await?
        {
            return Ok(false);
        }
        let key = RunKey {
            task_id: task.id.clone(),
            subtask: st.name.clone(),
            attempt,
        };
        let env = self.agent_env(&task.id, &token.token);
        let command = WorkerCommand {
            command: Some(worker_command::Command::Assign(Assignment {
                worker_id: worker_id.to_owned(),
                run: Some(subtask_run(task, st, attempt, env)),
            })),
        };
        let sent = {
            let mut workers = self.workers.lock().await;
            match workers.get_mut(worker_id) {
                Some(w)
                    if w.current.is_none()
                        && !w.draining
                        && !self.monitor.is_quarantined(worker_id)
                        && w.commands.try_send(Ok(command)).is_ok() =>
                {
                    w.current = Some(key);
                    true
                }
                _ => false,
            }
        };
        if !sent {
            self.store
                .unstart_subtask(&task.id, &st.name, attempt)
                .await?;
            return Ok(false);
        }
        self.store.set_worker_state(worker_id, "busy", now).await?;
        if task_status_of(task) == TaskStatus::Queued
            && self
                .store
                .transition_task(
                    &task.id,
                    &[TaskStatus::Queued],
                    TaskStatus::Running,
                    None,
                    now,
                )
                .await?
        {
            self.task_status_event(&task.id, TaskStatus::Running, None)
                .await?;
        }
        self.events
            .record(Self::subtask_status_event(
                &task.id,
                &st.name,
                SubtaskStatus::Running,
                json!({ "worker": worker_id, "attempt": attempt, "branch": st.branch }),
            ))
            .await?;
        tracing::info!(task_id = %task.id, subtask = %st.name, worker_id, attempt, "subtask assigned");
        Ok(true)
    }

    /// Where and how an attempt's agent reaches its task's shared context:
    /// with a token of the attempt's own, which works while it runs.
    fn agent_env(
        &self,
        task_id: &str,
        token: &aida_core::secret::SecretString,
    ) -> HashMap<String, String> {
        use aida_core::secret::ExposeSecret;
        HashMap::from([
            (
                "AIDA_CONTEXT_URL".to_owned(),
                format!(
                    "{}/api/tasks/{task_id}/context",
                    self.settings.public_api_url
                ),
            ),
            (
                "AIDA_CONTEXT_TOKEN".to_owned(),
                token.expose_secret().to_owned(),
            ),
        ])
    }

    /// A worker's heartbeat for the attempt it runs: renews its lease, or
    /// tells it the attempt is no longer its own.
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        task_id: &str,
        subtask: &str,
        attempt: u32,
    ) -> Result<Option<String>> {
        let until = Utc::now() + self.settings.lease_timeout;
        if self
            .store
            .renew_lease(task_id, subtask, worker_id, attempt, until)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(format!(
            "attempt {attempt} of subtask {subtask:?} of task {task_id} is no longer held by worker {worker_id} \
             (cancelled, or its lease expired and it was given to another worker)"
        )))
    }

    /// Whether `worker_id` runs attempt `key` now: from memory, and from
    /// the database for a worker that has not reconnected since a restart.
    pub(crate) async fn holds(&self, worker_id: &str, key: &RunKey) -> Result<bool> {
        let in_memory = self
            .workers
            .lock()
            .await
            .get(worker_id)
            .is_some_and(|w| w.current.as_ref() == Some(key));
        if in_memory {
            return Ok(true);
        }
        self.store
            .holds_attempt(worker_id, &key.task_id, &key.subtask, key.attempt)
            .await
    }

    /// Frees the worker if it was running exactly this attempt.
    pub(crate) async fn release_worker(&self, worker_id: &str, key: &RunKey) -> Result<()> {
        let released = {
            let mut workers = self.workers.lock().await;
            match workers.get_mut(worker_id) {
                Some(w) if w.current.as_ref() == Some(key) => {
                    w.current = None;
                    true
                }
                _ => false,
            }
        };
        if released {
            self.store
                .set_worker_state(worker_id, "idle", Utc::now())
                .await?;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Asks the worker running `key` to stop it. Best effort: a worker that
    /// is gone has nothing to stop.
    pub(crate) async fn send_cancel(&self, worker_id: &str, key: &RunKey) {
        let workers = self.workers.lock().await;
        if let Some(w) = workers.get(worker_id) {
            let cancel = WorkerCommand {
                command: Some(worker_command::Command::Cancel(CancelSubtask {
                    task_id: key.task_id.clone(),
                    subtask: key.subtask.clone(),
                    attempt: key.attempt,
                })),
            };
            if w.commands.try_send(Ok(cancel)).is_err() {
                tracing::warn!(worker_id, task_id = %key.task_id, subtask = %key.subtask, "could not send cancel to worker");
            }
        }
    }

    /// Drains a worker (it finishes what it runs and is given nothing new)
    /// or resumes it; the drain survives its reconnects.
    pub async fn set_drain(self: &Arc<Self>, worker_id: &str, drain: bool) -> Result<()> {
        if !self.store.set_worker_draining(worker_id, drain).await? {
            return Err(OrchestratorError::NotFound(format!(
                "worker {worker_id:?} not found"
            )));
        }
        if let Some(w) = self.workers.lock().await.get_mut(worker_id) {
            w.draining = drain;
        }
        tracing::info!(worker_id, drain, "worker drain changed");
        // A resumed worker may take work now.
        self.wake.notify_one();
        Ok(())
    }

    /// Current assignment per connected worker, for `ListWorkers`.
    pub(crate) async fn connected_workers(&self) -> HashMap<String, Option<RunKey>> {
        self.workers
            .lock()
            .await
            .iter()
            .map(|(id, w)| (id.clone(), w.current.clone()))
            .collect()
    }
}

/// Pending subtasks whose dependencies all succeeded and whose retry time,
/// if any, has come, in request order.
fn ready_subtasks(task: &Task) -> Vec<usize> {
    let status: HashMap<&str, SubtaskStatus> = task
        .subtasks
        .iter()
        .map(|s| (s.name.as_str(), status_of(s)))
        .collect();
    task.subtasks
        .iter()
        .enumerate()
        .filter(|(_, s)| status_of(s) == SubtaskStatus::Pending)
        .filter(|(_, s)| {
            s.retry_at
                .as_ref()
                .and_then(aida_core::time::from_proto)
                .is_none_or(|at| at <= Utc::now())
        })
        .filter(|(_, s)| {
            s.depends_on
                .iter()
                .all(|d| status.get(d.as_str()) == Some(&SubtaskStatus::Succeeded))
        })
        .map(|(i, _)| i)
        .collect()
}

/// What may start now: the planner of a task being planned, or the ready
/// subtasks of a task that runs.
fn startable(task: &Task) -> Vec<&Subtask> {
    if task_status_of(task) == TaskStatus::Planning {
        return task
            .planner
            .iter()
            .filter(|p| status_of(p) == SubtaskStatus::Pending)
            .collect();
    }
    if task_status_of(task) == TaskStatus::Merging {
        // A queued verification run of the merged result, or a queued run
        // of the resolver.
        let verifying = task
            .verification
            .as_ref()
            .is_some_and(|v| v.status == "running" && !v.checking.is_empty());
        let resolving = crate::resolution::current(task).is_some();
        return task
            .verifier
            .iter()
            .filter(|_| verifying)
            .chain(task.resolver.iter().filter(|_| resolving))
            .filter(|v| status_of(v) == SubtaskStatus::Pending)
            .filter(|v| {
                v.retry_at
                    .as_ref()
                    .and_then(aida_core::time::from_proto)
                    .is_none_or(|at| at <= Utc::now())
            })
            .collect();
    }
    // A judge handed its candidates (its prompt is then written).
    let mut ready: Vec<&Subtask> = task
        .judges
        .iter()
        .filter(|j| status_of(j) == SubtaskStatus::Pending && !j.prompt.is_empty())
        .collect();
    for st in ready_subtasks(task).into_iter().map(|i| &task.subtasks[i]) {
        if !crate::candidates::has_candidates(task, &st.name) {
            ready.push(st);
            continue;
        }
        // A best-of-N subtask runs as its candidates, ready when it is.
        ready.extend(
            task.candidates
                .iter()
                .filter(|c| c.candidate_of == st.name && status_of(c) == SubtaskStatus::Pending)
                .filter(|c| {
                    c.retry_at
                        .as_ref()
                        .and_then(aida_core::time::from_proto)
                        .is_none_or(|at| at <= Utc::now())
                }),
        );
    }
    ready
}

fn agent_kind(st: &Subtask) -> &str {
    current_agent(st)
        .map(|a| a.kind.as_str())
        .unwrap_or("command")
}

/// The agent that runs the subtask now: its fallback once that took over.
pub(crate) fn current_agent(st: &Subtask) -> Option<&AgentSpec> {
    if st.on_fallback {
        st.fallback.as_ref().or(st.agent.as_ref())
    } else {
        st.agent.as_ref()
    }
}

/// What a worker needs to run subtask `index`: its dependencies' commits
/// come in the task's dependency order, so shared ancestors merge first.
fn subtask_run(
    task: &Task,
    st: &Subtask,
    attempt: u32,
    env: HashMap<String, String>,
) -> SubtaskRun {
    if st.name == crate::resolution::RESOLVER {
        return crate::resolution::resolver_run(task, st, attempt, env);
    }
    // The planner reads the base commit in a detached worktree; the
    // verifier the commit it checks.
    let verifier = st.name == crate::verification::VERIFIER;
    let read_only = st.name == crate::planning::PLANNER
        || verifier
        || st.name.starts_with(crate::candidates::JUDGE_PREFIX);
    let deps: Vec<&Subtask> = dependency_order(task)
        .into_iter()
        .map(|i| &task.subtasks[i])
        .filter(|d| st.depends_on.contains(&d.name))
        .collect();
    let dependencies = deps
        .iter()
        .map(|d| DependencyCommit {
            subtask: d.name.clone(),
            branch: d.branch.clone(),
            commit: d.commit.clone(),
        })
        .collect();
    let mut env = env;
    // A follow-up continues the subtask's own branch from its last commit,
    // in the agent's earlier session where its CLI can resume one.
    let follow_up = st.follow_up_pending.then(|| st.follow_ups.last()).flatten();
    let (prompt, continue_from, resume_session) = match follow_up {
        Some(instruction) => {
            env.insert("AIDA_FOLLOW_UP".to_owned(), instruction.clone());
            (
                follow_up_prompt(&st.prompt, instruction),
                st.commit.clone(),
                st.usage
                    .as_ref()
                    .map(|u| u.session_id.clone())
                    .unwrap_or_default(),
            )
        }
        None => (
            prompt_with_context(&st.prompt, &deps)
                + &crate::prediction::rerun_note(task, st).unwrap_or_default(),
            String::new(),
            String::new(),
        ),
    };
    SubtaskRun {
        traceparent: task.traceparent.clone(),
        task_id: task.id.clone(),
        subtask: st.name.clone(),
        attempt,
        repo: task.repo.clone(),
        base_commit: if verifier {
            task.verification
                .as_ref()
                .map(|v| v.checking.clone())
                .unwrap_or_default()
        } else {
            task.base_commit.clone()
        },
        branch: st.branch.clone(),
        dependencies,
        prompt: if verifier {
            task.verification
                .as_ref()
                .map(|v| format!("verify {}", v.checking_label))
                .unwrap_or(prompt)
        } else {
            prompt
        },
        agent: current_agent(st).cloned(),
        env,
        read_only,
        continue_from,
        resume_session,
        setup: task.setup.clone(),
        verify: task.verify.clone(),
        resolve: None,
        // A read-only run sees the whole commit it reads.
        paths: if read_only {
            Vec::new()
        } else {
            st.paths.clone()
        },
    }
}

/// What the agent is told on a follow-up: the new instruction first, then
/// what the subtask was about (an agent that cannot resume its session
/// starts from this alone; the branch holds its earlier work).
fn follow_up_prompt(prompt: &str, instruction: &str) -> String {
    format!(
        "{instruction}\n\n---\nThis is a follow-up on your earlier work on this task, which is already committed in this worktree. The original instruction was:\n\n{prompt}"
    )
}

/// The subtask's prompt followed by what its dependencies did (their final
/// messages and the files they changed), so the agent builds on their work
/// knowingly rather than by rediscovering it.
pub(crate) fn prompt_with_context(prompt: &str, deps: &[&Subtask]) -> String {
    if deps.is_empty() {
        return prompt.to_owned();
    }
    let mut out = format!(
        "{prompt}\n\n---\nThis subtask builds on the work of other subtasks, already merged into your working tree:\n"
    );
    for d in deps {
        out.push_str(&format!("\n### {}\n", d.name));
        let summary = d.summary.trim();
        out.push_str(&format!(
            "Summary: {}\n",
            if summary.is_empty() {
                "(the agent reported no summary)"
            } else {
                summary
            }
        ));
        match d.stats.as_ref().filter(|s| !s.files.is_empty()) {
            Some(stats) => out.push_str(&format!("Files changed: {}\n", stats.files.join(", "))),
            None => out.push_str("Files changed: none\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use aida_core::proto::common::DiffStats;

    use super::*;

    #[test]
    fn a_prompt_carries_its_dependencies_summaries_and_files() {
        let api = Subtask {
            name: "api".into(),
            summary: "Added GET /users".into(),
            stats: Some(DiffStats {
                files: vec!["src/api.rs".into(), "README.md".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let quiet = Subtask {
            name: "schema".into(),
            ..Default::default()
        };
        let prompt = prompt_with_context("write the client", &[&api, &quiet]);
        assert!(prompt.starts_with("write the client\n"));
        assert!(
            prompt.contains(
                "### api\nSummary: Added GET /users\nFiles changed: src/api.rs, README.md\n"
            ),
            "{prompt}"
        );
        assert!(
            prompt.contains(
                "### schema\nSummary: (the agent reported no summary)\nFiles changed: none\n"
            ),
            "{prompt}"
        );
        assert_eq!(prompt_with_context("alone", &[]), "alone");
    }
}
