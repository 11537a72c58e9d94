//! The orchestrator's health: its database (without it nothing works:
//! unhealthy), Redis (live events wait in the outbox: degraded), the
//! aggregator (merges and reports wait: degraded) and its workers (none
//! connected: degraded). The same report answers `/readyz`, the gRPC
//! health check and `GetHealth`, which the gateway's `/api/health` shows.

use std::sync::Arc;
use std::time::Duration;

use aida_core::grpc::AuthChannel;
use aida_core::health::{Component, Probe, Report, Status, timed};
use aida_core::proto::orchestrator::{ComponentHealth, HealthReport};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::engine::Engine;
use crate::error::Result;

/// The longest one part's check may take.
const DEADLINE: Duration = Duration::from_secs(2);

/// What the probe checks besides the engine.
pub struct Parts {
    pub redis: Option<deadpool_redis::Pool>,
    pub aggregator: AuthChannel,
}

/// The orchestrator's probe.
pub fn probe(engine: Arc<Engine>, parts: Parts) -> Probe {
    let parts = Arc::new(parts);
    aida_core::health::probe(move || {
        let (engine, parts) = (Arc::clone(&engine), Arc::clone(&parts));
        async move { check(&engine, &parts).await }
    })
}

async fn check(engine: &Engine, parts: &Parts) -> Report {
    let database = timed(DEADLINE, Status::Unhealthy, async {
        engine.store().ping().await.map_err(|e| e.to_string())
    });
    let redis = async {
        let pool = parts.redis.as_ref()?;
        Some(
            timed(DEADLINE, Status::Degraded, async {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .await,
        )
    };
    let aggregator = timed(DEADLINE, Status::Degraded, async {
        let mut client = HealthClient::new(parts.aggregator.clone());
        let answer = client
            .check(HealthCheckRequest {
                service: aida_core::proto::service_names::AGGREGATOR.to_owned(),
            })
            .await
            .map_err(|status| format!("unreachable: {}", status.message()))?;
        match answer.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(other.as_str_name().to_lowercase()),
        }
    });
    let (database, redis, aggregator, workers) =
        tokio::join!(database, redis, aggregator, workers(engine));
    let mut parts = vec![
        ("database".to_owned(), database),
        ("aggregator".to_owned(), aggregator),
        ("workers".to_owned(), workers),
    ];
    if let Some(redis) = redis {
        parts.push(("redis".to_owned(), redis));
    }
    Report::of(parts)
}

/// Degraded with none connected: tasks wait.
async fn workers(engine: &Engine) -> Component {
    let states = engine.connected_worker_states().await;
    let connected = states.idle + states.busy + states.draining;
    if connected == 0 {
        return Component::with_detail(Status::Degraded, "no worker connected");
    }
    Component {
        status: Status::Healthy,
        latency_ms: None,
        detail: Some(format!(
            "{connected} connected: {} idle, {} busy, {} draining",
            states.idle, states.busy, states.draining
        )),
    }
}

/// Connected workers by what they do.
#[derive(Debug, Default)]
pub(crate) struct WorkerStates {
    pub idle: u64,
    pub busy: u64,
    pub draining: u64,
}

impl Engine {
    pub(crate) async fn connected_worker_states(&self) -> WorkerStates {
        let mut states = WorkerStates::default();
        for worker in self.workers.lock().await.values() {
            if worker.draining {
                states.draining += 1;
            } else if worker.current.is_some() {
                states.busy += 1;
            } else {
                states.idle += 1;
            }
        }
        states
    }

    /// Every known worker by state: the connected ones, and the offline
    /// rest.
    pub(crate) async fn worker_states(&self) -> Result<Vec<(&'static str, u64)>> {
        let known = self.store.list_workers().await?.len() as u64;
        let states = self.connected_worker_states().await;
        let connected = states.idle + states.busy + states.draining;
        Ok(vec![
            ("idle", states.idle),
            ("busy", states.busy),
            ("draining", states.draining),
            ("offline", known.saturating_sub(connected)),
            // Counted apart: a quarantined worker is also idle or busy.
            ("quarantined", self.monitor.quarantined_count()),
        ])
    }
}

/// A report on the wire.
pub fn to_proto(report: &Report) -> HealthReport {
    HealthReport {
        status: report.status.as_str().to_owned(),
        components: report
            .components
            .iter()
            .map(|(name, c)| ComponentHealth {
                name: name.clone(),
                status: c.status.as_str().to_owned(),
                latency_ms: c.latency_ms,
                detail: c.detail.clone().unwrap_or_default(),
            })
            .collect(),
    }
}
