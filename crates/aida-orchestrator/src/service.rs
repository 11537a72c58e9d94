//! The `aida.orchestrator.Orchestrator` gRPC service: request checking and
//! translation only; the work happens in the engine.

use std::pin::Pin;
use std::sync::Arc;

use aida_core::ids::TaskId;
use aida_core::proto::common::{ContextEntry, Diff, Event, Report, Task};
use aida_core::proto::orchestrator::orchestrator_server::Orchestrator;
use aida_core::proto::orchestrator::{
    ApproveTaskRequest, AssignTaskRequest, Assignment, CancelTaskRequest, CollectGarbageRequest,
    CompleteTaskRequest, CreateTaskRequest, ExternalStatusRequest, FollowUpRequest, GarbageReport,
    GetContextRequest, GetDiffRequest, GetReportRequest, GetTaskRequest, GetWorkflowRequest,
    GitHubEventOutcome, GitHubEventRequest, HeartbeatRequest, HeartbeatResponse,
    ListContextRequest, ListContextResponse, ListEventsRequest, ListEventsResponse,
    ListLocksRequest, ListLocksResponse, ListTasksRequest, ListTasksResponse, ListWorkersRequest,
    ListWorkersResponse, ListWorkflowsRequest, ListWorkflowsResponse, ProgressRequest,
    ProgressUpdate, PutContextRequest, PutWorkflowRequest, RegisterWorkerRequest, ReportLogRequest,
    ReportLogResponse, ReportUsageResponse, RunWorkflowRequest, SetWorkerDrainRequest,
    StopSubtaskRequest, SystemStatus, SystemStatusRequest, TaskResult, WorkerCommand, WorkerInfo,
    WorkerUsage, Workflow,
};
use aida_core::time::to_proto;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::audit::AuditLine;
use crate::engine::Engine;
use crate::error::OrchestratorError;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const DEFAULT_LIST_LIMIT: u32 = 50;
/// Log lines one ReportLog may carry (workers send at most 64).
const MAX_LOG_LINES_PER_CALL: usize = 4096;
/// A log line's longest stored length: the worker's cut plus its marker.
const MAX_LOG_LINE: usize = 64 * 1024 + 64;

/// Cuts `line` to [`MAX_LOG_LINE`] bytes at a character boundary.
fn cut_line(line: &mut String) {
    if line.len() > MAX_LOG_LINE {
        let mut end = MAX_LOG_LINE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str(" [cut by the orchestrator]");
    }
}
const MAX_LIST_LIMIT: u32 = 1000;
const HISTORY_PAGE: u32 = 1000;

pub struct OrchestratorService {
    engine: Arc<Engine>,
    health: aida_core::health::Health,
}

impl OrchestratorService {
    pub fn new(engine: Arc<Engine>, health: aida_core::health::Health) -> Self {
        Self { engine, health }
    }

    /// Every known worker with its state (idle, busy, offline) now.
    async fn worker_infos(&self) -> crate::error::Result<Vec<WorkerInfo>> {
        let connected = self.engine.connected_workers().await;
        Ok(self
            .engine
            .store()
            .list_workers()
            .await?
            .into_iter()
            .map(|w| {
                let (state, current) = match connected.get(&w.worker_id) {
                    Some(Some(run)) => ("busy", Some(run.clone())),
                    Some(None) => ("idle", None),
                    None => ("offline", None),
                };
                let quarantined_until = self.engine.monitor.quarantined_until(&w.worker_id);
                WorkerInfo {
                    worker_id: w.worker_id,
                    address: w.address,
                    agent_kinds: w.agent_kinds,
                    state: state.to_owned(),
                    task_id: current
                        .as_ref()
                        .map(|r| r.task_id.clone())
                        .unwrap_or_default(),
                    subtask: current.map(|r| r.subtask).unwrap_or_default(),
                    completed: w.completed,
                    connected_at: Some(to_proto(w.connected_at)),
                    last_seen_at: Some(to_proto(w.last_seen_at)),
                    draining: w.draining,
                    disk_usage_bytes: w.disk_usage_bytes,
                    metrics_address: w.metrics_address,
                    quarantined_until: quarantined_until.map(to_proto),
                }
            })
            .collect())
    }

    /// Audits how an action ended and passes its result on.
    async fn audited<T>(
        &self,
        line: AuditLine,
        outcome: crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        self.engine.audit().outcome(line, outcome).await
    }

    /// A response stream that also ends at shutdown: graceful shutdown
    /// waits for open streams, and these would otherwise never end.
    fn until_shutdown<T: Send + 'static>(
        &self,
        rx: mpsc::Receiver<Result<T, Status>>,
    ) -> BoxStream<T> {
        Box::pin(ReceiverStream::new(rx).take_until(self.engine.stop.clone().cancelled_owned()))
    }
}

/// An event filter's task: `None` for every task; a task that does not
/// exist is a 404, not an empty history.
async fn task_filter(engine: &Engine, raw: &str) -> Result<Option<String>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    let id = task_id(raw)?;
    engine.task(&id).await?;
    Ok(Some(id))
}

fn task_id(raw: &str) -> Result<String, Status> {
    Ok(TaskId::parse(raw)
        .map_err(OrchestratorError::from)?
        .to_string())
}

fn limit(raw: u32, default: u32) -> u32 {
    if raw == 0 {
        default
    } else {
        raw.min(MAX_LIST_LIMIT)
    }
}

#[tonic::async_trait]
impl Orchestrator for OrchestratorService {
    async fn create_task(
        &self,
        request: Request<CreateTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let req = request.into_inner();
        let line = AuditLine::new(req.actor.as_ref(), "task.create", "task:?")
            .with("repo", aida_core::secret::redact_url(&req.repo));
        let line = if req.webhook_delivery.is_empty() {
            line
        } else {
            line.with("webhook_delivery", &req.webhook_delivery)
        };
        let outcome = self.engine.create_task(req).await;
        let line = match &outcome {
            Ok(task) => AuditLine {
                object: format!("task:{}", task.id),
                ..line
            },
            Err(_) => line,
        };
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> Result<Response<Task>, Status> {
        let id = task_id(&request.get_ref().task_id)?;
        Ok(Response::new(self.engine.task(&id).await?))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let limit = limit(request.get_ref().limit, DEFAULT_LIST_LIMIT);
        let tasks = self.engine.store().list_tasks(limit).await?;
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let line = AuditLine::new(req.actor.as_ref(), "task.cancel", format!("task:{id}"));
        let outcome = self.engine.cancel_task(&id).await;
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn stop_subtask(
        &self,
        request: Request<StopSubtaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let line = AuditLine::new(req.actor.as_ref(), "subtask.cancel", format!("task:{id}"))
            .with("subtask", &req.subtask);
        let outcome = self.engine.stop_subtask(&id, &req.subtask).await;
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn approve_task(
        &self,
        request: Request<ApproveTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let line = AuditLine::new(req.actor.as_ref(), "task.approve", format!("task:{id}"));
        let outcome = self.engine.approve_task(&id).await;
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn get_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<Report>, Status> {
        let id = task_id(&request.get_ref().task_id)?;
        Ok(Response::new(self.engine.report(&id).await?))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let req = request.into_inner();
        let task = task_filter(&self.engine, &req.task_id).await?;
        let store = self.engine.store();
        // Read before the page: an event stored in between is on the page
        // or after this id, never lost between the two.
        let latest_event_id = store.latest_event_id().await?;
        let events = store
            .events_after(
                task.as_deref(),
                req.after_event_id,
                limit(req.limit, HISTORY_PAGE),
            )
            .await?;
        Ok(Response::new(ListEventsResponse {
            events: events.into_iter().map(Into::into).collect(),
            latest_event_id,
        }))
    }

    type GetProgressStream = BoxStream<ProgressUpdate>;

    async fn get_progress(
        &self,
        request: Request<ProgressRequest>,
    ) -> Result<Response<Self::GetProgressStream>, Status> {
        let req = request.into_inner();
        let task = task_filter(&self.engine, &req.task_id).await?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(follow(
            Arc::clone(&self.engine),
            task,
            req.after_event_id,
            tx,
        ));
        Ok(Response::new(self.until_shutdown(rx)))
    }

    async fn list_workers(
        &self,
        _: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Ok(Response::new(ListWorkersResponse {
            workers: self.worker_infos().await?,
        }))
    }

    async fn set_worker_drain(
        &self,
        request: Request<SetWorkerDrainRequest>,
    ) -> Result<Response<WorkerInfo>, Status> {
        let req = request.into_inner();
        let action = if req.drain {
            "worker.drain"
        } else {
            "worker.resume"
        };
        let line = AuditLine::new(
            req.actor.as_ref(),
            action,
            format!("worker:{}", req.worker_id),
        );
        let outcome = self.engine.set_drain(&req.worker_id, req.drain).await;
        self.audited(line, outcome).await?;
        let info = self
            .worker_infos()
            .await?
            .into_iter()
            .find(|w| w.worker_id == req.worker_id)
            .ok_or_else(|| Status::not_found(format!("worker {:?} not found", req.worker_id)))?;
        Ok(Response::new(info))
    }

    async fn list_context(
        &self,
        request: Request<ListContextRequest>,
    ) -> Result<Response<ListContextResponse>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let entries = self.engine.list_context(&id, req.history).await?;
        Ok(Response::new(ListContextResponse { entries }))
    }

    async fn get_context(
        &self,
        request: Request<GetContextRequest>,
    ) -> Result<Response<ListContextResponse>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let entries = self.engine.get_context(&id, &req.key, req.history).await?;
        Ok(Response::new(ListContextResponse { entries }))
    }

    async fn put_context(
        &self,
        request: Request<PutContextRequest>,
    ) -> Result<Response<ContextEntry>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let entry = self
            .engine
            .put_context(
                &id,
                &req.key,
                &req.value,
                &req.token,
                &req.author,
                req.actor.as_ref(),
            )
            .await?;
        Ok(Response::new(entry))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let lost = self
            .engine
            .heartbeat(&req.worker_id, &id, &req.subtask, req.attempt)
            .await?;
        Ok(Response::new(HeartbeatResponse {
            valid: lost.is_none(),
            reason: lost.unwrap_or_default(),
        }))
    }

    async fn report_usage(
        &self,
        request: Request<WorkerUsage>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        let req = request.into_inner();
        let known = self
            .engine
            .store()
            .set_worker_disk_usage(&req.worker_id, req.disk_usage_bytes)
            .await?;
        if !known {
            return Err(Status::not_found(format!(
                "worker {:?} has not registered",
                req.worker_id
            )));
        }
        Ok(Response::new(ReportUsageResponse {}))
    }

    async fn get_diff(&self, request: Request<GetDiffRequest>) -> Result<Response<Diff>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        Ok(Response::new(
            self.engine.diff(&id, req.subtask.trim(), &req.path).await?,
        ))
    }

    async fn get_system_status(
        &self,
        _: Request<SystemStatusRequest>,
    ) -> Result<Response<SystemStatus>, Status> {
        Ok(Response::new(self.engine.system_status().await?))
    }

    async fn list_locks(
        &self,
        _: Request<ListLocksRequest>,
    ) -> Result<Response<ListLocksResponse>, Status> {
        let locks = self.engine.store().locks(chrono::Utc::now()).await?;
        Ok(Response::new(ListLocksResponse { locks }))
    }

    type RegisterWorkerStream = BoxStream<WorkerCommand>;

    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<Self::RegisterWorkerStream>, Status> {
        let rx = self.engine.register_worker(request.into_inner()).await?;
        Ok(Response::new(self.until_shutdown(rx)))
    }

    async fn assign_task(
        &self,
        request: Request<AssignTaskRequest>,
    ) -> Result<Response<Assignment>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        Ok(Response::new(
            self.engine
                .assign_now(&id, &req.subtask, &req.worker_id)
                .await?,
        ))
    }

    async fn report_log(
        &self,
        request: Request<ReportLogRequest>,
    ) -> Result<Response<ReportLogResponse>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        // Only the worker running this attempt may write its log.
        let key = crate::engine::RunKey {
            task_id: id.clone(),
            subtask: req.subtask.clone(),
            attempt: req.attempt,
        };
        if !self.engine.holds(&req.worker_id, &key).await? {
            return Err(Status::failed_precondition(format!(
                "worker {} does not hold attempt {} of subtask {:?} of task {id}: log refused",
                req.worker_id, req.attempt, req.subtask
            )));
        }
        if req.lines.len() > MAX_LOG_LINES_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_LOG_LINES_PER_CALL} log lines per call"
            )));
        }
        let events = req
            .lines
            .into_iter()
            .map(|mut line| {
                // The worker cuts long lines itself; a worker that does not
                // still cannot make the log hold more.
                cut_line(&mut line.line);
                line
            })
            .map(|line| crate::store::NewEvent {
                channel: aida_core::event::Channel::Log,
                kind: aida_core::event::kind::LOG_LINE,
                task_id: Some(id.clone()),
                subtask: Some(req.subtask.clone()),
                worker_id: Some(req.worker_id.clone()),
                data: serde_json::json!({ "stream": line.stream, "line": line.line, "attempt": req.attempt }),
            })
            .collect();
        self.engine.events().record_all(events).await?;
        Ok(Response::new(ReportLogResponse {}))
    }

    async fn record_external_status(
        &self,
        request: Request<ExternalStatusRequest>,
    ) -> Result<Response<Event>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let line = AuditLine::new(
            req.actor.as_ref(),
            "task.external_status",
            format!("task:{id}"),
        )
        .with("state", &req.state);
        let outcome = self.engine.record_external_status(&id, &req).await;
        Ok(Response::new(self.audited(line, outcome).await?.into()))
    }

    async fn follow_up(&self, request: Request<FollowUpRequest>) -> Result<Response<Task>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let line = AuditLine::new(
            req.actor.as_ref(),
            "subtask.follow_up",
            format!("task:{id}"),
        )
        .with("subtask", &req.subtask);
        let by = req
            .actor
            .as_ref()
            .map(|a| a.username.clone())
            .unwrap_or_default();
        let outcome = self
            .engine
            .follow_up(&id, &req.subtask, &req.prompt, &by)
            .await;
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn handle_git_hub_event(
        &self,
        request: Request<GitHubEventRequest>,
    ) -> Result<Response<GitHubEventOutcome>, Status> {
        let req = request.into_inner();
        let actor = req.actor.unwrap_or_default();
        let line = AuditLine::new(
            Some(&actor),
            "webhook.github",
            format!("github:{}", req.delivery),
        )
        .with("event", &req.event);
        let outcome = self
            .engine
            .handle_github_event(&req.event, &req.delivery, &req.payload, actor.clone())
            .await;
        let line = match &outcome {
            Ok(o) => line
                .with("outcome", &o.outcome)
                .with("task_id", &o.task_id)
                .with("message", &o.message),
            Err(_) => line,
        };
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn put_workflow(
        &self,
        request: Request<PutWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let req = request.into_inner();
        let actor = req.actor.unwrap_or_default();
        let line = AuditLine::new(Some(&actor), "workflow.put", "workflow:?");
        let outcome = self.engine.put_workflow(&req.source, &actor).await;
        let line = match &outcome {
            Ok(w) => AuditLine {
                object: format!("workflow:{}", w.name),
                ..line
            },
            Err(_) => line,
        };
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn list_workflows(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        let req = request.into_inner();
        let workflows = self.engine.list_workflows(&req.repo, &req.base).await?;
        Ok(Response::new(ListWorkflowsResponse { workflows }))
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.engine
                .get_workflow(&req.name, &req.repo, &req.base)
                .await?,
        ))
    }

    async fn delete_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let req = request.into_inner();
        let line = AuditLine::new(
            req.actor.as_ref(),
            "workflow.delete",
            format!("workflow:{}", req.name),
        );
        let outcome = self.engine.delete_workflow(&req.name).await;
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn run_workflow(
        &self,
        request: Request<RunWorkflowRequest>,
    ) -> Result<Response<Task>, Status> {
        let req = request.into_inner();
        let line = AuditLine::new(
            req.actor.as_ref(),
            "workflow.run",
            format!("workflow:{}", req.name),
        )
        .with("repo", aida_core::secret::redact_url(&req.repo));
        let outcome = self.engine.run_workflow(req).await;
        let line = match &outcome {
            Ok(task) => line.with("task_id", &task.id),
            Err(_) => line,
        };
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn collect_garbage(
        &self,
        request: Request<CollectGarbageRequest>,
    ) -> Result<Response<GarbageReport>, Status> {
        let req = request.into_inner();
        let older_than = match req.older_than_secs {
            0 => self.engine.settings.retention.events.ok_or_else(|| {
                Status::invalid_argument(
                    "older_than_secs is required: AIDA_EVENT_RETENTION is off on this orchestrator",
                )
            })?,
            secs => std::time::Duration::from_secs(secs),
        };
        let line = AuditLine::new(req.actor.as_ref(), "system.gc", "system".to_owned())
            .with("older_than_secs", older_than.as_secs().to_string())
            .with("dry_run", req.dry_run.to_string());
        let outcome = self.engine.collect_garbage(older_than, req.dry_run).await;
        Ok(Response::new(self.audited(line, outcome).await?))
    }

    async fn get_health(
        &self,
        _: Request<aida_core::proto::orchestrator::HealthRequest>,
    ) -> Result<Response<aida_core::proto::orchestrator::HealthReport>, Status> {
        let report = self.health.check().await;
        Ok(Response::new(crate::health::to_proto(&report)))
    }

    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<TaskResult>, Status> {
        let req = request.into_inner();
        let id = task_id(&req.task_id)?;
        let result = req
            .result
            .ok_or_else(|| Status::invalid_argument("result is required"))?;
        let verdict = self
            .engine
            .complete(&req.worker_id, &id, &req.subtask, req.attempt, result)
            .await?;
        Ok(Response::new(match verdict {
            Ok(()) => TaskResult {
                accepted: true,
                reason: String::new(),
            },
            Err(reason) => {
                tracing::warn!(task_id = %id, subtask = %req.subtask, worker_id = %req.worker_id, reason, "result refused");
                TaskResult {
                    accepted: false,
                    reason,
                }
            }
        }))
    }
}

/// Sends stored events after `after`, then live ones, without gaps or
/// repeats; with a task, stops after the event that ends it.
async fn follow(
    engine: Arc<Engine>,
    task: Option<String>,
    mut after: i64,
    tx: mpsc::Sender<Result<ProgressUpdate, Status>>,
) {
    // Subscribe first: whatever is stored after this point also arrives live.
    let mut live = engine.events().subscribe();
    loop {
        // Catch up from the database (at start, and after falling behind).
        loop {
            let page = match engine
                .events()
                .store()
                .events_after(task.as_deref(), after, HISTORY_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            };
            let full = page.len() as u32 == HISTORY_PAGE;
            for event in page {
                after = event.id;
                let ends = task.is_some() && event.ends_task();
                if tx
                    .send(Ok(ProgressUpdate {
                        event: Some(event.into()),
                    }))
                    .await
                    .is_err()
                    || ends
                {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    if event.id <= after || (task.is_some() && event.task_id != task) {
                        continue;
                    }
                    after = event.id;
                    let ends = task.is_some() && event.ends_task();
                    if tx
                        .send(Ok(ProgressUpdate {
                            event: Some(event.into()),
                        }))
                        .await
                        .is_err()
                        || ends
                    {
                        return;
                    }
                }
                // Fell behind: the database has everything, read from there.
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_log_lines_are_cut_at_a_character_boundary() {
        let mut short = "fine".to_owned();
        cut_line(&mut short);
        assert_eq!(short, "fine");
        let mut long = "é".repeat(MAX_LOG_LINE);
        cut_line(&mut long);
        assert!(long.ends_with(" [cut by the orchestrator]"));
        assert!(long.len() <= MAX_LOG_LINE + 32);
    }
}
