//! Starts runs in the background for both entry points (the gRPC service and
//! the orchestrator session), enforcing one run at a time and letting
//! shutdown wait for runs to clean up.

use std::sync::Arc;

use aida_proto::common::{LogLine, RunResult, SubtaskRun};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::executor::{self, ExecContext};
use crate::state::{CurrentRun, WorkerState};

/// Log lines buffered between the agent and whoever forwards them. Lines
/// may be 64 KiB long: this bounds what a slow reader makes the worker hold.
const LOG_BUFFER: usize = 128;

#[derive(Debug, Clone)]
pub struct Runner {
    pub state: Arc<WorkerState>,
    pub ctx: Arc<ExecContext>,
    /// The agent kinds this worker runs, found at start-up.
    pub agent_kinds: Arc<[String]>,
    /// Every run and every task forwarding a run's output; shutdown waits
    /// for them.
    pub tracker: TaskTracker,
}

/// A run started in the background.
pub struct StartedRun {
    /// Closes once the run has finished.
    pub logs: mpsc::Receiver<LogLine>,
    pub result: JoinHandle<RunResult>,
    /// The run's span, in the task's trace: reporting its logs and result
    /// belongs to it too.
    pub span: tracing::Span,
}

impl Runner {
    /// Starts `run` unless another run is in progress (returned instead).
    pub fn start(&self, run: SubtaskRun) -> Result<StartedRun, CurrentRun> {
        let slot = self.state.try_start(&run)?;
        let (tx, rx) = mpsc::channel(LOG_BUFFER);
        let ctx = Arc::clone(&self.ctx);
        let state = Arc::clone(&self.state);
        let agent = run
            .agent
            .as_ref()
            .map(|a| a.kind.clone())
            .unwrap_or_else(|| "command".into());
        let span = tracing::info_span!(
            "agent run",
            otel.kind = "internal",
            task_id = %run.task_id,
            subtask = %run.subtask,
            attempt = run.attempt,
            agent = %agent,
            trace_id = tracing::field::Empty,
        );
        aida_core::telemetry::adopt(&span, Some(&run.traceparent));
        span.in_scope(|| tracing::info!("assignment received"));
        let run_span = span.clone();
        let result = self.tracker.spawn(tracing::Instrument::instrument(
            async move {
                let cancel = slot.cancel.clone();
                let mut result = executor::run_subtask(run, &ctx, tx, cancel).await;
                drop(slot);
                // Say why the run stopped: the orchestrator retries it elsewhere,
                // and the attempt's history should tell the operator.
                if !result.success && state.shutting_down() && result.error == "cancelled" {
                    result.error = format!("worker {} shut down while running it", ctx.worker_id);
                }
                result
            },
            run_span,
        ));
        Ok(StartedRun {
            logs: rx,
            result,
            span,
        })
    }

    /// Finishes a started run's result, turning a panicked run into a failure.
    pub async fn finish(result: JoinHandle<RunResult>) -> RunResult {
        result.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "subtask run panicked");
            RunResult {
                success: false,
                error: "worker run failed unexpectedly".into(),
                ..Default::default()
            }
        })
    }
}
