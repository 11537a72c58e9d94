//! Prometheus metrics: every name AIDA records, described once, and the
//! process-wide recorder that `/metrics` renders.
//!
//! Code records through the `metrics` macros with the names below
//! (`metrics::counter!(names::TASKS, "status" => "succeeded")`); labels
//! stay bounded: route templates, agent kinds, statuses, never ids or raw
//! paths. Histograms ending in `_seconds` get fixed buckets so Grafana can
//! take quantiles across instances.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The metric names, one vocabulary for every service.
pub mod names {
    /// Gateway: `{method, status, route}`.
    pub const HTTP_REQUESTS: &str = "aida_http_requests_total";
    /// Gateway: `{method, route}`; to the response's head (an event stream
    /// counts until it opens).
    pub const HTTP_REQUEST_DURATION: &str = "aida_http_request_duration_seconds";
    /// Every gRPC server: `{service, method, code}`.
    pub const GRPC_REQUESTS: &str = "aida_grpc_requests_total";
    /// `{service, method}`: to the call's end (a stream's whole life).
    pub const GRPC_REQUEST_DURATION: &str = "aida_grpc_request_duration_seconds";
    /// Orchestrator: tasks accepted.
    pub const TASKS_CREATED: &str = "aida_tasks_created_total";
    /// Orchestrator: tasks that ended, `{status}`.
    pub const TASKS: &str = "aida_tasks_total";
    /// Orchestrator: from creation to end, `{status}`.
    pub const TASK_DURATION: &str = "aida_task_duration_seconds";
    /// Orchestrator: attempts that ended, `{agent, status}`.
    pub const SUBTASKS: &str = "aida_subtasks_total";
    /// Orchestrator: an attempt's run, `{agent}`.
    pub const SUBTASK_DURATION: &str = "aida_subtask_duration_seconds";
    /// Orchestrator: subtasks waiting for a worker, `{priority}`.
    pub const TASK_QUEUE_DEPTH: &str = "aida_task_queue_depth";
    /// Orchestrator: workers known, `{state}` (idle, busy, draining,
    /// offline).
    pub const WORKERS: &str = "aida_workers";
    /// Gateway: live event streams open now.
    pub const SSE_CONNECTIONS_ACTIVE: &str = "aida_sse_connections_active";
    /// Orchestrator: events published on Redis, `{channel}`.
    pub const EVENTS_PUBLISHED: &str = "aida_events_published_total";
    /// Aggregator: results that met a conflict while a task's results
    /// merged.
    pub const MERGE_CONFLICTS: &str = "aida_merge_conflicts_total";
    /// Aggregator: merges of a task's results, `{outcome}`.
    pub const MERGES: &str = "aida_merges_total";
    /// Orchestrator: what agents reported they cost, `{agent}`. Dollars are
    /// fractional, so it is exposed as a gauge that only grows (`rate()` and
    /// `increase()` work on it as on a counter).
    pub const AGENT_COST_USD: &str = "aida_agent_cost_usd_total";
    /// Orchestrator: waiting for a repository's merge lock.
    pub const LOCK_WAIT_DURATION: &str = "aida_lock_wait_duration_seconds";
    /// Gateway: webhook signatures checked, `{result}` (valid, invalid,
    /// expired, missing, replayed).
    pub const WEBHOOK_SIGNATURES: &str = "aida_webhook_signatures_verified_total";
    /// Worker: agent runs that ended, `{agent, status}`.
    pub const AGENT_RUNS: &str = "aida_agent_runs_total";
    /// Worker: an agent run from start to commit, `{agent}`.
    pub const AGENT_RUN_DURATION: &str = "aida_agent_run_duration_seconds";
    /// Worker: making a run's worktree ready, `{mode}` (fresh, reused).
    pub const WORKTREE_PREPARE_DURATION: &str = "aida_worktree_prepare_duration_seconds";
    /// Every service: 1 while it is ready (its `/readyz` is 200).
    pub const UP: &str = "aida_up";
    /// Orchestrator: what the monitor did, `{action}` (quarantine, release,
    /// anomaly, alert, alert_resolved).
    pub const MONITOR_ACTIONS: &str = "aida_monitor_actions_total";
    /// Orchestrator: alerts raised, `{alert}` (worker_quarantined,
    /// queue_depth, error_rate, anomaly).
    pub const ALERTS: &str = "aida_alerts_total";

    /// Every name above.
    pub const ALL: &[&str] = &[
        HTTP_REQUESTS,
        HTTP_REQUEST_DURATION,
        GRPC_REQUESTS,
        GRPC_REQUEST_DURATION,
        TASKS_CREATED,
        TASKS,
        TASK_DURATION,
        SUBTASKS,
        SUBTASK_DURATION,
        TASK_QUEUE_DEPTH,
        WORKERS,
        SSE_CONNECTIONS_ACTIVE,
        EVENTS_PUBLISHED,
        MERGE_CONFLICTS,
        MERGES,
        AGENT_COST_USD,
        LOCK_WAIT_DURATION,
        WEBHOOK_SIGNATURES,
        AGENT_RUNS,
        AGENT_RUN_DURATION,
        WORKTREE_PREPARE_DURATION,
        UP,
        MONITOR_ACTIONS,
        ALERTS,
    ];
}

/// Bucket bounds of the `_seconds` histograms: from a fast request to a
/// long agent run.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

struct Recorder {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls, as when `aida
/// dev` runs every service in one process, reuse it) and describes every
/// metric.
pub fn install() {
    recorder();
}

fn recorder() -> &'static Recorder {
    RECORDER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test process that
        // set its own): then this handle renders only what it recorded.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder was installed already");
        }
        describe();
        let process = metrics_process::Collector::default();
        process.describe();
        Recorder { handle, process }
    })
}

/// The Prometheus text exposition of everything recorded so far, with the
/// process's figures read now.
pub fn render() -> String {
    let recorder = recorder();
    recorder.process.collect();
    recorder.handle.render()
}

fn describe() {
    use names::*;
    describe_counter!(HTTP_REQUESTS, "REST requests answered");
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "time to answer a REST request"
    );
    describe_counter!(GRPC_REQUESTS, "gRPC calls answered");
    describe_histogram!(
        GRPC_REQUEST_DURATION,
        Unit::Seconds,
        "a gRPC call from request to its end"
    );
    describe_counter!(TASKS_CREATED, "tasks accepted");
    describe_counter!(TASKS, "tasks that ended, by final status");
    describe_histogram!(TASK_DURATION, Unit::Seconds, "a task from creation to end");
    describe_counter!(SUBTASKS, "subtask attempts that ended, by outcome");
    describe_histogram!(SUBTASK_DURATION, Unit::Seconds, "a subtask attempt's run");
    describe_gauge!(TASK_QUEUE_DEPTH, "subtasks waiting for a worker");
    describe_gauge!(WORKERS, "workers known to the orchestrator, by state");
    describe_gauge!(SSE_CONNECTIONS_ACTIVE, "live event streams open");
    describe_counter!(EVENTS_PUBLISHED, "events published on Redis");
    describe_counter!(
        MERGE_CONFLICTS,
        "results that met a conflict while a task's results merged"
    );
    describe_counter!(MERGES, "merges of a task's results, by outcome");
    describe_gauge!(
        AGENT_COST_USD,
        "what agents reported they cost (USD), only ever growing"
    );
    describe_histogram!(
        LOCK_WAIT_DURATION,
        Unit::Seconds,
        "waiting for a repository's merge lock"
    );
    describe_counter!(WEBHOOK_SIGNATURES, "webhook signatures checked");
    describe_counter!(AGENT_RUNS, "agent runs on this worker, by outcome");
    describe_histogram!(
        AGENT_RUN_DURATION,
        Unit::Seconds,
        "an agent run from start to commit"
    );
    describe_histogram!(
        WORKTREE_PREPARE_DURATION,
        Unit::Seconds,
        "making a run's worktree ready"
    );
    describe_gauge!(UP, "1 while the service is ready");
    describe_counter!(MONITOR_ACTIONS, "what the monitor did on its own");
    describe_counter!(ALERTS, "alerts raised by the monitor");
}

#[cfg(test)]
mod tests {
    #[test]
    fn recorded_values_render_with_their_labels_and_buckets() {
        super::install();
        metrics::counter!(super::names::TASKS, "status" => "succeeded").increment(2);
        metrics::histogram!(super::names::TASK_DURATION, "status" => "succeeded").record(0.02);
        let text = super::render();
        assert!(
            text.contains("aida_tasks_total{status=\"succeeded\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("aida_task_duration_seconds_bucket{status=\"succeeded\",le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(text.contains("# HELP aida_tasks_total"), "{text}");
    }
}
