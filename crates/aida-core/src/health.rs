//! Health as every service reports it: a [`Report`] of named components
//! (database, Redis, a peer service, the worker's session), each healthy,
//! degraded or unhealthy with how long its check took. One probe feeds
//! three views so they never disagree:
//! - `/readyz` on the service's operations port (200 unless unhealthy, the
//!   report as JSON; `/healthz` only says the process answers);
//! - the gRPC health protocol: NOT_SERVING from start until the first
//!   check passes, and again while unhealthy or draining;
//! - the `aida_up` gauge.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How one part, or the whole, is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Works.
    Healthy,
    /// Works with a part down: a task may wait or lose a feature (live
    /// events over Redis, merges), nothing is lost.
    Degraded,
    /// Cannot do its job.
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }

    /// Parses what [`Status::as_str`] wrote; anything else is unhealthy.
    pub fn parse(raw: &str) -> Status {
        match raw {
            "healthy" => Status::Healthy,
            "degraded" => Status::Degraded,
            _ => Status::Unhealthy,
        }
    }
}

/// One part's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub status: Status,
    /// How long the check took, when it reached the part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// What failed, or a figure worth showing (`2 of 3 connected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Component {
    pub fn healthy() -> Self {
        Component {
            status: Status::Healthy,
            latency_ms: None,
            detail: None,
        }
    }

    pub fn with_detail(status: Status, detail: impl Into<String>) -> Self {
        Component {
            status,
            latency_ms: None,
            detail: Some(detail.into()),
        }
    }
}

/// Runs `check` with a deadline and times it: healthy when it succeeds,
/// `failed` (with the error, or "no answer in ...") when not.
pub async fn timed<F>(deadline: Duration, failed: Status, check: F) -> Component
where
    F: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let outcome = tokio::time::timeout(deadline, check).await;
    let latency_ms = Some((start.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0);
    match outcome {
        Ok(Ok(())) => Component {
            status: Status::Healthy,
            latency_ms,
            detail: None,
        },
        Ok(Err(error)) => Component {
            status: failed,
            latency_ms,
            detail: Some(error),
        },
        Err(_) => Component {
            status: failed,
            latency_ms: None,
            detail: Some(format!("no answer in {} ms", deadline.as_millis())),
        },
    }
}

/// A service's health: the worst of its parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub status: Status,
    pub components: BTreeMap<String, Component>,
}

impl Report {
    /// The report of these parts; its status is the worst of theirs.
    pub fn of(components: impl IntoIterator<Item = (String, Component)>) -> Report {
        let components: BTreeMap<String, Component> = components.into_iter().collect();
        let status = components
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Healthy);
        Report { status, components }
    }
}

/// Checks a service's parts; called for every `/readyz` and by the loop
/// that keeps gRPC health current.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Report> + Send>> + Send + Sync>;

/// A probe from an async closure.
pub fn probe<F, Fut>(check: F) -> Probe
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Report> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

/// A service's health: its probe, and the gRPC health it keeps current.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    probe: Probe,
    reporter: HealthReporter,
    services: Vec<&'static str>,
    draining: AtomicBool,
    changed: Notify,
}

/// How often gRPC health is brought up to date between pokes.
const EVERY: Duration = Duration::from_secs(2);

impl Health {
    /// `services` are the gRPC names whose health follows the probe; they
    /// are NOT_SERVING until [`Health::run`] has checked once.
    pub async fn new(reporter: HealthReporter, services: &[&'static str], probe: Probe) -> Self {
        for name in services {
            reporter
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        Health {
            inner: Arc::new(Inner {
                probe,
                reporter,
                services: services.to_vec(),
                draining: AtomicBool::new(false),
                changed: Notify::new(),
            }),
        }
    }

    /// The service's report now. A draining service is unhealthy: it takes
    /// nothing new.
    pub async fn check(&self) -> Report {
        let mut report = (self.inner.probe)().await;
        if self.inner.draining.load(Ordering::Relaxed) {
            report.components.insert(
                "service".into(),
                Component::with_detail(Status::Unhealthy, "shutting down"),
            );
            report.status = Status::Unhealthy;
        }
        report
    }

    /// Asks for a check now, as when a session came up or went down.
    pub fn poke(&self) {
        self.inner.changed.notify_one();
    }

    /// The service is stopping: NOT_SERVING at once, for good.
    pub async fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        self.apply(Status::Unhealthy).await;
    }

    async fn apply(&self, status: Status) {
        let serving = if status == Status::Unhealthy {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        for name in &self.inner.services {
            self.inner.reporter.set_service_status(*name, serving).await;
        }
        self.inner.reporter.set_service_status("", serving).await;
        metrics::gauge!(crate::metrics::names::UP).set(if serving == ServingStatus::Serving {
            1.0
        } else {
            0.0
        });
    }

    /// Keeps gRPC health current until `stop`: checks every few seconds
    /// and whenever poked, and logs each change.
    pub async fn run(self, stop: CancellationToken) {
        let mut last: Option<Status> = None;
        loop {
            let report = self.check().await;
            if last != Some(report.status) {
                let failing: Vec<String> = report
                    .components
                    .iter()
                    .filter(|(_, c)| c.status != Status::Healthy)
                    .map(|(name, c)| match &c.detail {
                        Some(detail) => format!("{name}: {detail}"),
                        None => name.clone(),
                    })
                    .collect();
                if report.status == Status::Healthy {
                    tracing::info!(status = report.status.as_str(), "health");
                } else {
                    tracing::warn!(status = report.status.as_str(), failing = ?failing, "health");
                }
                last = Some(report.status);
            }
            self.apply(report.status).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.inner.changed.notified() => {}
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
        self.drain().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_is_as_bad_as_its_worst_part() {
        let report = Report::of([
            ("database".to_owned(), Component::healthy()),
            (
                "redis".to_owned(),
                Component::with_detail(Status::Degraded, "connection refused"),
            ),
        ]);
        assert_eq!(report.status, Status::Degraded);
        assert_eq!(Report::of([]).status, Status::Healthy);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["components"]["redis"]["status"], "degraded");
        assert_eq!(json["components"]["redis"]["detail"], "connection refused");
    }

    #[tokio::test]
    async fn a_check_past_its_deadline_fails_with_what_it_waited() {
        let slow = timed(Duration::from_millis(10), Status::Degraded, async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
        assert_eq!(slow.status, Status::Degraded);
        assert_eq!(slow.detail.as_deref(), Some("no answer in 10 ms"));
        let fine = timed(Duration::from_secs(1), Status::Unhealthy, async { Ok(()) }).await;
        assert_eq!(fine.status, Status::Healthy);
        assert!(fine.latency_ms.is_some());
    }
}
