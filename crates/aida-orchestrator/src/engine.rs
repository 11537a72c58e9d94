//! The orchestrator's state and the helpers its parts share. The
//! scheduling half lives in `scheduler.rs`, the task lifecycle (completion,
//! cancellation, merge, report) in `lifecycle.rs`; both are `impl Engine`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use aida_core::event::{Channel, kind};
use aida_core::grpc::AuthChannel;
use aida_core::proto::aggregator::aggregator_client::AggregatorClient;
use aida_core::proto::common::{Subtask, SubtaskStatus, Task, TaskStatus};
use aida_core::proto::orchestrator::WorkerCommand;
use aida_core::status::StatusLabel;
use serde_json::json;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::error::{OrchestratorError, Result};
use crate::events::EventLog;
use crate::store::{NewEvent, Store};

/// Timing knobs, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a running attempt holds its subtask without a heartbeat:
    /// past it the attempt counts as lost and the subtask is tried again.
    pub lease_timeout: Duration,
    /// The first retry's delay; each next one doubles, up to `retry_max`,
    /// with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Waiting this long raises a task's priority by one, so low priorities
    /// are never starved.
    pub priority_aging: Duration,
    /// Deadline for each call to the aggregator.
    pub aggregator_timeout: Duration,
    /// How long a ready subtask waits for a worker that can run its agent
    /// kind before it fails.
    pub agent_wait: Duration,
    /// The gateway's URL as agents reach it, without a trailing `/`.
    pub public_api_url: String,
    /// Allowed repositories and the default task timeout.
    pub policy: crate::planning::TaskPolicy,
    /// How long ended tasks' events and logs are kept.
    pub retention: crate::retention::Retention,
    /// Quarantines, anomalies and alerts.
    pub monitor: crate::monitor::MonitorSettings,
}

/// A subtask attempt: what a worker is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    pub task_id: String,
    pub subtask: String,
    pub attempt: u32,
}

/// A worker with an open `RegisterWorker` stream.
pub(crate) struct ConnectedWorker {
    /// Tells this connection apart from a later one with the same id.
    pub connection: u64,
    pub agent_kinds: Vec<String>,
    pub commands: mpsc::Sender<Result<WorkerCommand, tonic::Status>>,
    pub current: Option<RunKey>,
    /// An admin drained it: it finishes `current` and gets nothing new.
    pub draining: bool,
}

pub struct Engine {
    pub(crate) store: Store,
    pub(crate) events: EventLog,
    /// New tasks go through it: stored in groups, one commit for many.
    pub(crate) intake: crate::intake::Intake,
    pub(crate) audit: Audit,
    /// Remotes, mirrors and providers; `None` when no remote is allowed.
    pub(crate) remotes: Option<Arc<crate::remotes::Remotes>>,
    pub(crate) workers: Mutex<HashMap<String, ConnectedWorker>>,
    pub(crate) next_connection: AtomicU64,
    /// Wakes the dispatch loop: a task arrived, a worker freed up.
    pub(crate) wake: Notify,
    /// One dispatch pass at a time, so a subtask is never handed out twice.
    pub(crate) dispatch_lock: Mutex<()>,
    /// Wakes the waiters for a lock (see [`Engine::lock`]) when this
    /// orchestrator releases one.
    pub(crate) lock_released: Notify,
    /// Ready subtasks no connected worker can run, and since when.
    pub(crate) unrunnable: Mutex<HashMap<(String, String), std::time::Instant>>,
    pub(crate) aggregator: AggregatorClient<AuthChannel>,
    pub(crate) settings: Settings,
    /// Quarantined workers, run-time averages, active alerts.
    pub(crate) monitor: crate::monitor::Monitor,
    /// Cancelled at shutdown: ends the long-lived streams (worker
    /// registrations, progress followers) so the server can stop.
    pub(crate) stop: CancellationToken,
}

impl Engine {
    /// A call to the aggregator for what a subtask's result can do without
    /// (its stats, a trial merge): its answer, or `None`, logged, when it
    /// fails or does not answer within the aggregator's deadline.
    pub(crate) async fn best_effort<T>(
        &self,
        task_id: &str,
        subtask: &str,
        what: &str,
        call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.settings.aggregator_timeout, call).await {
            Ok(Ok(resp)) => Some(resp.into_inner()),
            Ok(Err(status)) => {
                tracing::warn!(task_id, subtask, error = %status.message(), "aggregator failed at {what}");
                None
            }
            Err(_) => {
                tracing::warn!(
                    task_id,
                    subtask,
                    "aggregator did not answer in time at {what}"
                );
                None
            }
        }
    }

    pub fn new(
        store: Store,
        events: EventLog,
        audit: Audit,
        remotes: Option<Arc<crate::remotes::Remotes>>,
        aggregator: AggregatorClient<AuthChannel>,
        settings: Settings,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            intake: crate::intake::Intake::start(events.clone()),
            events,
            audit,
            remotes,
            workers: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            wake: Notify::new(),
            dispatch_lock: Mutex::new(()),
            lock_released: Notify::new(),
            unrunnable: Mutex::new(HashMap::new()),
            aggregator,
            monitor: crate::monitor::Monitor::new(settings.monitor.clone()),
            settings,
            stop,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    pub(crate) async fn task(&self, task_id: &str) -> Result<Task> {
        self.store
            .get_task(task_id)
            .await?
            .ok_or_else(|| OrchestratorError::task_not_found(&task_id))
    }

    pub(crate) async fn task_status_event(
        &self,
        task_id: &str,
        status: TaskStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::TASK_STATUS,
                task_id: Some(task_id.to_owned()),
                subtask: None,
                worker_id: None,
                data: json!({ "status": status.label(), "error": error }),
            })
            .await?;
        if status.is_terminal() {
            let created_at = self.store.task_created_at(task_id).await?;
            crate::measure::task_ended(status, created_at);
        }
        Ok(())
    }

    pub(crate) fn subtask_status_event(
        task_id: &str,
        subtask: &str,
        status: SubtaskStatus,
        data: serde_json::Value,
    ) -> NewEvent {
        let mut data = data;
        if let Some(map) = data.as_object_mut() {
            map.insert("status".into(), json!(status.label()));
        }
        NewEvent {
            channel: Channel::Task,
            kind: kind::SUBTASK_STATUS,
            task_id: Some(task_id.to_owned()),
            subtask: Some(subtask.to_owned()),
            worker_id: data
                .get("worker")
                .and_then(|w| w.as_str())
                .map(str::to_owned),
            data,
        }
    }
}

pub(crate) fn status_of(s: &Subtask) -> SubtaskStatus {
    SubtaskStatus::try_from(s.status).unwrap_or(SubtaskStatus::Unspecified)
}

pub(crate) fn task_status_of(t: &Task) -> TaskStatus {
    TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unspecified)
}

/// Indices of a task's subtasks in dependency order.
pub(crate) fn dependency_order(task: &Task) -> Vec<usize> {
    let nodes: Vec<(&str, &[String])> = task
        .subtasks
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    crate::planning::topological_order(&nodes)
}
