//! The worker's session with the orchestrator: register, receive commands
//! on the RegisterWorker stream, run assignments, report their logs and
//! results. Reconnects forever (backoff capped at 2 s) until shutdown; a run
//! in progress carries on across reconnects.

use std::time::Duration;

use aida_core::grpc::AuthChannel as Channel;
use aida_proto::common::{LogLine, RunResult, SubtaskRun};
use aida_proto::orchestrator::orchestrator_client::OrchestratorClient;
use aida_proto::orchestrator::{
    CompleteTaskRequest, HeartbeatRequest, RegisterWorkerRequest, ReportLogRequest, WorkerCommand,
    WorkerUsage, worker_command,
};
use tokio_util::sync::CancellationToken;

use crate::runner::{Runner, StartedRun};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Log lines are sent in batches: at most this many per ReportLog ...
const LOG_BATCH_LINES: usize = 64;
/// ... and about this many bytes of text (lines may be 64 KiB long; 64 of
/// them would pass the 4 MiB message limit of a gRPC server) ...
const LOG_BATCH_BYTES: usize = 1024 * 1024;
/// ... and at least this often while lines are waiting.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Unary calls to the orchestrator give up after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const COMPLETE_ATTEMPTS: u32 = 5;

/// Who this worker is, as told to the orchestrator.
#[derive(Debug, Clone)]
pub struct Registration {
    pub worker_id: String,
    /// The worker's own gRPC address.
    pub address: String,
    pub hostname: String,
    /// Where it serves /metrics, /healthz and /readyz; empty for nowhere.
    pub metrics_address: String,
    /// How often a running attempt's lease is renewed.
    pub heartbeat_every: Duration,
}

/// Runs the session until `shutdown` is cancelled. `channel` is lazy: it
/// connects (and reconnects) on demand.
pub async fn run(
    channel: Channel,
    registration: Registration,
    runner: Runner,
    shutdown: CancellationToken,
) {
    let client = OrchestratorClient::new(channel);
    let mut backoff = BACKOFF_START;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => break,
            outcome = session(client.clone(), &registration, &runner, &mut backoff) => outcome,
        };
        runner.state.set_connected(false);
        match outcome {
            Ok(()) => tracing::info!("orchestrator closed the session, reconnecting"),
            // Without the right credential nothing can be taken or reported:
            // say so every time, it is a setting to fix.
            Err(status) if status.code() == tonic::Code::Unauthenticated => tracing::error!(
                error = %status.message(),
                "the orchestrator refused this worker's credential (AIDA_INTERNAL_TOKEN or its TLS certificate); retrying"
            ),
            // Loud on the first failure, quiet while the orchestrator stays down.
            Err(status) if backoff == BACKOFF_START => tracing::warn!(
                code = ?status.code(),
                error = %status.message(),
                "orchestrator session failed, reconnecting"
            ),
            Err(status) => tracing::debug!(
                code = ?status.code(),
                error = %status.message(),
                retry_in_ms = backoff.as_millis() as u64,
                "orchestrator still unreachable"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    runner.state.set_connected(false);
    tracing::info!("orchestrator session stopped");
}

/// One registration: returns when the command stream ends or fails.
async fn session(
    mut client: OrchestratorClient<Channel>,
    registration: &Registration,
    runner: &Runner,
    backoff: &mut Duration,
) -> Result<(), tonic::Status> {
    let request = RegisterWorkerRequest {
        worker_id: registration.worker_id.clone(),
        address: registration.address.clone(),
        agent_kinds: runner.agent_kinds.to_vec(),
        hostname: registration.hostname.clone(),
        metrics_address: registration.metrics_address.clone(),
    };
    let mut commands = client.register_worker(request).await?.into_inner();
    runner.state.set_connected(true);
    *backoff = BACKOFF_START;
    tracing::info!(worker_id = %registration.worker_id, "registered with the orchestrator");
    runner.tracker.spawn(report_usage(
        client.clone(),
        registration.worker_id.clone(),
        runner.ctx.worktree_root.clone(),
    ));
    while let Some(command) = commands.message().await? {
        handle(command, &client, registration, runner);
    }
    Ok(())
}

fn handle(
    command: WorkerCommand,
    client: &OrchestratorClient<Channel>,
    registration: &Registration,
    runner: &Runner,
) {
    match command.command {
        Some(worker_command::Command::Assign(assignment)) => {
            let Some(run) = assignment.run else {
                tracing::warn!("assignment without a run, ignored");
                return;
            };
            let reporter = Reporter {
                client: client.clone(),
                worker_id: registration.worker_id.clone(),
                worktree_root: runner.ctx.worktree_root.clone(),
                heartbeat_every: registration.heartbeat_every,
                state: runner.state.clone(),
                task_id: run.task_id.clone(),
                subtask: run.subtask.clone(),
                attempt: run.attempt,
            };
            start_assignment(run, reporter, runner);
        }
        Some(worker_command::Command::Cancel(cancel)) => {
            let cancelled =
                runner
                    .state
                    .cancel_matching(&cancel.task_id, &cancel.subtask, cancel.attempt);
            tracing::info!(task_id = %cancel.task_id, subtask = %cancel.subtask, attempt = cancel.attempt, cancelled, "cancel received");
        }
        None => tracing::debug!("empty worker command, ignored"),
    }
}

fn start_assignment(run: SubtaskRun, reporter: Reporter, runner: &Runner) {
    match runner.start(run) {
        Ok(started) => {
            let span = started.span.clone();
            runner.tracker.spawn(tracing::Instrument::instrument(
                reporter.follow(started),
                span,
            ));
        }
        Err(busy) => {
            tracing::warn!(busy_with = %busy.subtask, "assignment while busy, refused");
            runner.tracker.spawn(async move {
                let result = RunResult {
                    success: false,
                    error: "worker busy".into(),
                    ..Default::default()
                };
                reporter.complete(result).await;
            });
        }
    }
}

/// Sends one run's logs and result to the orchestrator.
struct Reporter {
    client: OrchestratorClient<Channel>,
    worker_id: String,
    /// Measured after the run, for the disk usage report.
    worktree_root: std::path::PathBuf,
    heartbeat_every: Duration,
    /// To stop the run when its lease is gone.
    state: std::sync::Arc<crate::state::WorkerState>,
    task_id: String,
    subtask: String,
    attempt: u32,
}

impl Reporter {
    async fn follow(self, started: StartedRun) {
        let StartedRun {
            mut logs, result, ..
        } = started;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut tick = tokio::time::interval(LOG_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                line = logs.recv() => match line {
                    Some(line) => {
                        batch_bytes += line.line.len();
                        batch.push(line);
                        if batch.len() >= LOG_BATCH_LINES || batch_bytes >= LOG_BATCH_BYTES {
                            self.report_logs(&mut batch).await;
                            batch_bytes = 0;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.report_logs(&mut batch).await;
                    batch_bytes = 0;
                }
                _ = heartbeat.tick() => self.heartbeat().await,
            }
        }
        self.report_logs(&mut batch).await;
        let result = Runner::finish(result).await;
        self.complete(result).await;
        // The run left its worktree in the pool: what the root takes now.
        report_usage(self.client, self.worker_id, self.worktree_root).await;
    }

    /// Renews the attempt's lease. When the orchestrator says the attempt
    /// is no longer ours (cancelled, or given to another worker after the
    /// lease expired), the run stops: its result would be refused anyway.
    /// An unreachable orchestrator is not an answer: the run goes on, and
    /// the lease decides.
    async fn heartbeat(&self) {
        let request = HeartbeatRequest {
            worker_id: self.worker_id.clone(),
            task_id: self.task_id.clone(),
            subtask: self.subtask.clone(),
            attempt: self.attempt,
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(request)).await {
            Ok(Ok(answer)) if !answer.get_ref().valid => {
                let reason = answer.into_inner().reason;
                tracing::warn!(task_id = %self.task_id, subtask = %self.subtask, attempt = self.attempt, reason, "lease lost, stopping the run");
                self.state
                    .cancel_matching(&self.task_id, &self.subtask, self.attempt);
            }
            Ok(Ok(_)) => {}
            Ok(Err(status)) => tracing::debug!(error = %status.message(), "heartbeat failed"),
            Err(_) => tracing::debug!("heartbeat timed out"),
        }
    }

    /// Best effort: a lost log batch is not worth holding up the run.
    async fn report_logs(&self, batch: &mut Vec<LogLine>) {
        if batch.is_empty() {
            return;
        }
        let request = ReportLogRequest {
            worker_id: self.worker_id.clone(),
            task_id: self.task_id.clone(),
            subtask: self.subtask.clone(),
            attempt: self.attempt,
            lines: std::mem::take(batch),
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(CALL_TIMEOUT, client.report_log(request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                tracing::debug!(error = %status.message(), "cannot report log lines, dropped")
            }
            Err(_) => tracing::debug!("reporting log lines timed out, dropped"),
        }
    }

    /// Retries transport failures a few times; an answer (accepted or not)
    /// ends it.
    async fn complete(&self, result: RunResult) {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=COMPLETE_ATTEMPTS {
            let request = CompleteTaskRequest {
                worker_id: self.worker_id.clone(),
                task_id: self.task_id.clone(),
                subtask: self.subtask.clone(),
                attempt: self.attempt,
                result: Some(result.clone()),
            };
            let mut client = self.client.clone();
            let error = match tokio::time::timeout(CALL_TIMEOUT, client.complete_task(request))
                .await
            {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    tracing::info!(
                        task_id = %self.task_id,
                        subtask = %self.subtask,
                        accepted = answer.accepted,
                        reason = %answer.reason,
                        "result reported"
                    );
                    return;
                }
                Ok(Err(status)) if !is_transient(&status) => {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "orchestrator refused the result");
                    return;
                }
                Ok(Err(status)) => status.message().to_owned(),
                Err(_) => "timed out".to_owned(),
            };
            tracing::warn!(attempt, error = %error, "cannot report result, retrying");
            if attempt < COMPLETE_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
        tracing::error!(task_id = %self.task_id, subtask = %self.subtask, "giving up reporting a result");
    }
}

/// Measures the worktree root and tells the orchestrator (shown in
/// `/api/workers`). Off the run's path: a failure is only logged.
async fn report_usage(
    mut client: OrchestratorClient<Channel>,
    worker_id: String,
    root: std::path::PathBuf,
) {
    let Ok(bytes) = tokio::task::spawn_blocking(move || crate::worktree::disk_usage(&root)).await
    else {
        return;
    };
    let request = WorkerUsage {
        worker_id,
        disk_usage_bytes: bytes,
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.report_usage(request)).await {
        Ok(Ok(_)) => tracing::debug!(bytes, "disk usage reported"),
        Ok(Err(status)) => {
            tracing::debug!(error = %status.message(), "cannot report disk usage")
        }
        Err(_) => tracing::debug!("reporting disk usage timed out"),
    }
}

fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
    )
}
