//! What the orchestrator measures for Prometheus (names in
//! `aida_core::metrics::names`): tasks and attempts as they end, and the
//! gauges sampled from its state (queue depth by priority, workers by
//! state) every few seconds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aida_core::metrics::names;
use aida_core::proto::common::{RunResult, TaskStatus};
use aida_core::status::StatusLabel;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// How often the gauges are sampled: well under a scrape interval.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// A task ended with `status`.
pub(crate) fn task_ended(status: TaskStatus, created_at: Option<DateTime<Utc>>) {
    let status = status.label();
    metrics::counter!(names::TASKS, "status" => status).increment(1);
    if let Some(created_at) = created_at {
        metrics::histogram!(names::TASK_DURATION, "status" => status)
            .record(seconds_since(created_at));
    }
}

/// A worker's report of an attempt was applied; `ran_for` since the
/// attempt started, when known.
pub(crate) fn attempt_ended(agent: &str, result: &RunResult, ran_for: Option<Duration>) {
    let agent = agent.to_owned();
    let status = if result.success {
        "succeeded"
    } else {
        "failed"
    };
    metrics::counter!(names::SUBTASKS, "agent" => agent.clone(), "status" => status).increment(1);
    if let Some(ran_for) = ran_for {
        metrics::histogram!(names::SUBTASK_DURATION, "agent" => agent.clone())
            .record(ran_for.as_secs_f64());
    }
    if let Some(cost) = result.usage.as_ref().map(|u| u.cost_usd)
        && cost.is_finite()
        && cost > 0.0
    {
        // `metrics` counters count integers; dollars add up in a gauge that
        // only ever grows.
        metrics::gauge!(names::AGENT_COST_USD, "agent" => agent).increment(cost);
    }
}

fn seconds_since(at: DateTime<Utc>) -> f64 {
    (Utc::now() - at).to_std().unwrap_or_default().as_secs_f64()
}

/// Samples the gauges until `stop`.
pub(crate) async fn run_gauges(engine: Arc<Engine>, stop: CancellationToken) {
    let mut levels_seen: BTreeSet<i32> = BTreeSet::new();
    loop {
        if let Err(e) = sample(&engine, &mut levels_seen).await {
            tracing::debug!(error = %e, "sampling the gauges failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

async fn sample(engine: &Engine, levels_seen: &mut BTreeSet<i32>) -> crate::error::Result<()> {
    let depth = engine.store().queue_depth().await?;
    // A level that emptied reads 0, not its last figure.
    for level in levels_seen.iter() {
        if !depth.iter().any(|(p, _)| p == level) {
            metrics::gauge!(names::TASK_QUEUE_DEPTH, "priority" => level.to_string()).set(0.0);
        }
    }
    for (priority, pending) in &depth {
        metrics::gauge!(names::TASK_QUEUE_DEPTH, "priority" => priority.to_string())
            .set(*pending as f64);
        levels_seen.insert(*priority);
    }
    let counts = engine.worker_states().await?;
    for (state, n) in counts {
        metrics::gauge!(names::WORKERS, "state" => state).set(n as f64);
    }
    Ok(())
}
