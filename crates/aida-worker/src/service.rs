//! The `aida.worker.Worker` gRPC service: run a subtask here and now
//! (`Execute`), report status, stop the running agent.

use aida_proto::worker::worker_server::Worker;
use aida_proto::worker::{
    ExecuteRequest, ExecutionLog, StatusRequest, StopRequest, StopResponse, WorkerStatus,
    execution_log,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::WorkerError;
use crate::executor;
use crate::runner::Runner;

pub struct WorkerService {
    runner: Runner,
}

impl WorkerService {
    pub fn new(runner: Runner) -> Self {
        Self { runner }
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    type ExecuteStream = ReceiverStream<Result<ExecutionLog, Status>>;

    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let run = request
            .into_inner()
            .run
            .ok_or_else(|| WorkerError::InvalidArgument("run is required".into()))?;
        executor::validate(&run, &self.runner.ctx).map_err(WorkerError::InvalidArgument)?;
        let started = self.runner.start(run).map_err(|busy| WorkerError::Busy {
            task_id: busy.task_id,
            subtask: busy.subtask,
        })?;

        // Lines may be 64 KiB long: a slow caller holds at most a few MiB.
        let (tx, rx) = mpsc::channel(64);
        // The run goes on if the caller hangs up; `Stop` ends it.
        self.runner.tracker.spawn(async move {
            let mut logs = started.logs;
            while let Some(line) = logs.recv().await {
                let entry = execution_log::Entry::Line(line);
                let _ = tx.send(Ok(ExecutionLog { entry: Some(entry) })).await;
            }
            let result = Runner::finish(started.result).await;
            let entry = execution_log::Entry::Result(result);
            let _ = tx.send(Ok(ExecutionLog { entry: Some(entry) })).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<WorkerStatus>, Status> {
        let state = &self.runner.state;
        let current = state.current();
        Ok(Response::new(WorkerStatus {
            worker_id: state.worker_id.clone(),
            state: if current.is_some() { "busy" } else { "idle" }.into(),
            task_id: current
                .as_ref()
                .map(|c| c.task_id.clone())
                .unwrap_or_default(),
            subtask: current
                .as_ref()
                .map(|c| c.subtask.clone())
                .unwrap_or_default(),
            agent_kinds: self.runner.agent_kinds.to_vec(),
            completed: state.completed(),
            connected: state.connected(),
        }))
    }

    async fn stop(&self, request: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        let req = request.into_inner();
        let stopped = self
            .runner
            .state
            .cancel_matching(&req.task_id, &req.subtask, 0);
        tracing::info!(task_id = %req.task_id, subtask = %req.subtask, stopped, "stop requested");
        Ok(Response::new(StopResponse { stopped }))
    }
}
