//! The `aida.aggregator.Aggregator` gRPC service: validates requests and
//! runs the blocking git work of [`crate::merge`], [`crate::stats`] and
//! [`crate::diff`] on
//! tokio's blocking pool.

use std::path::PathBuf;

use aida_core::ids::{SubtaskName, TaskId};
use aida_proto::aggregator::aggregator_server::Aggregator;
use aida_proto::aggregator::{
    CollectRequest, CollectResponse, DiffRequest, MergeRequest, MergeResponse, ReportRequest,
    TrialMergeRequest, TrialMergeResponse,
};
use aida_proto::common::{Diff, Report};
use tonic::{Request, Response, Status};

use crate::error::AggregatorError;
use crate::{diff, merge, report, stats};

/// Stateless: every request names its repository; the per-repository merge
/// locks live in [`crate::repo`].
#[derive(Debug, Clone, Default)]
pub struct AggregatorService;

#[tonic::async_trait]
impl Aggregator for AggregatorService {
    async fn collect_result(
        &self,
        request: Request<CollectRequest>,
    ) -> Result<Response<CollectResponse>, Status> {
        let req = request.into_inner();
        // Only used for logs, but a malformed value means a confused caller.
        if !req.task_id.is_empty() {
            TaskId::parse(&req.task_id).map_err(AggregatorError::from)?;
        }
        if !req.subtask.is_empty() {
            SubtaskName::parse(&req.subtask).map_err(AggregatorError::from)?;
        }
        tracing::debug!(task_id = %req.task_id, subtask = %req.subtask, "collecting result");
        let stats = blocking(move || {
            stats::diff_stats(&PathBuf::from(&req.repo), &req.start_commit, &req.commit)
        })
        .await?;
        Ok(Response::new(CollectResponse { stats: Some(stats) }))
    }

    async fn merge_results(
        &self,
        request: Request<MergeRequest>,
    ) -> Result<Response<MergeResponse>, Status> {
        let req = request.into_inner();
        if req.task_id.is_empty() {
            return Err(AggregatorError::InvalidArgument("task_id is required".into()).into());
        }
        let task_id = TaskId::parse(&req.task_id).map_err(AggregatorError::from)?;
        let response = blocking(move || {
            merge::merge_task(
                &PathBuf::from(&req.repo),
                &task_id,
                &req.base_commit,
                &req.items,
            )
        })
        .await?;
        count_merge(&response);
        Ok(Response::new(response))
    }

    async fn trial_merge(
        &self,
        request: Request<TrialMergeRequest>,
    ) -> Result<Response<TrialMergeResponse>, Status> {
        let req = request.into_inner();
        let task_id = TaskId::parse(&req.task_id).map_err(AggregatorError::from)?;
        let Some(subject) = req.subject else {
            return Err(AggregatorError::InvalidArgument("subject is required".into()).into());
        };
        let conflicts = blocking(move || {
            merge::trial_merge(&PathBuf::from(&req.repo), &task_id, &subject, &req.others)
        })
        .await?;
        Ok(Response::new(TrialMergeResponse { conflicts }))
    }

    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<Diff>, Status> {
        let req = request.into_inner();
        let diff =
            blocking(move || diff::diff(&PathBuf::from(&req.repo), &req.from, &req.to, &req.path))
                .await?;
        Ok(Response::new(diff))
    }

    async fn generate_report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<Report>, Status> {
        let Some(task) = request.into_inner().task else {
            return Err(AggregatorError::InvalidArgument("task is required".into()).into());
        };
        TaskId::parse(&task.id).map_err(AggregatorError::from)?;
        Ok(Response::new(report::build(&task)))
    }
}

/// Runs git work off the async threads; libgit2 calls block.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AggregatorError> + Send + 'static,
) -> Result<T, AggregatorError> {
    // The git work is part of the call's span (and its trace).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| {
            AggregatorError::Internal(anyhow::Error::new(e).context("git work panicked"))
        })?
}

/// `aida_merges_total{outcome}` for a task's merge (clean, or with
/// conflicts), and `aida_merge_conflicts_total` for each result that met
/// one.
fn count_merge(response: &MergeResponse) {
    use aida_core::metrics::names;
    let conflicts = response
        .outcomes
        .iter()
        .filter(|o| !o.conflict_files.is_empty())
        .count() as u64;
    let outcome = if conflicts == 0 { "clean" } else { "conflicts" };
    metrics::counter!(names::MERGES, "outcome" => outcome).increment(1);
    metrics::counter!(names::MERGE_CONFLICTS).increment(conflicts);
}
