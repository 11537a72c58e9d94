//! The monitor: the orchestrator watching its own work and healing what it
//! can, as the ORCH-Next seed's self-healing asks.
//! - A worker whose runs fail several times in a row, of more than one
//!   subtask (one subtask failing again and again is that subtask's
//!   problem), is quarantined while another worker can take the work: it
//!   is given nothing new until a cool-down has passed, then released.
//! - Each agent kind's run time feeds an exponentially weighted moving
//!   average; a run going far beyond it raises an anomaly.
//! - Queue depth and the error rate of the last runs over their thresholds
//!   raise alerts, resolved when they fall back.
//!
//! Every action is an event on the `worker` channel (`worker.quarantined`,
//! `worker.released`, `monitor.anomaly`, `monitor.alert`,
//! `monitor.alert_resolved`) and counts in `aida_monitor_actions_total`.
//! Alerts also go to a Slack-compatible incoming webhook when one is set
//! (`AIDA_ALERT_WEBHOOK_URL`), once per problem: an alert that is still
//! active is not sent again before `AIDA_ALERT_REPEAT_SECS`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aida_core::event::{Channel, kind};
use aida_core::metrics::names;
use aida_core::secret::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::Result;
use crate::store::NewEvent;

/// Outcomes the error rate is taken over.
const ERROR_WINDOW: usize = 20;
/// Fewer outcomes than this say nothing about a rate.
const ERROR_MIN_SAMPLES: usize = 10;
/// Runs of an agent kind before its average means anything.
const EWMA_MIN_SAMPLES: u32 = 5;
/// The weight of the newest run in the average.
const EWMA_ALPHA: f64 = 0.2;
/// A run is an anomaly past `factor` times the average, and never before
/// this.
const ANOMALY_FLOOR: Duration = Duration::from_secs(60);
/// How often the monitor looks at the whole.
const TICK: Duration = Duration::from_secs(1);

/// The monitor's settings, from the orchestrator's configuration. Debug
/// prints the webhook as `[REDACTED]` (a `SecretString`).
#[derive(Clone, Debug)]
pub struct MonitorSettings {
    /// `AIDA_QUARANTINE_AFTER_FAILURES`: failed runs in a row that
    /// quarantine a worker (0: never).
    pub quarantine_after: u32,
    /// `AIDA_QUARANTINE_SECS`: how long a quarantine lasts.
    pub quarantine_for: Duration,
    /// `AIDA_ANOMALY_FACTOR`: how far beyond its kind's average a run is an
    /// anomaly.
    pub anomaly_factor: f64,
    /// `AIDA_ALERT_QUEUE_DEPTH`: pending subtasks that raise an alert (0:
    /// none).
    pub queue_alert: u64,
    /// `AIDA_ALERT_ERROR_RATE`: the share of the last runs failing that
    /// raises an alert (0: none).
    pub error_rate_alert: f64,
    /// `AIDA_ALERT_REPEAT_SECS`: an active alert is sent again after this.
    pub alert_repeat: Duration,
    /// `AIDA_ALERT_WEBHOOK_URL` (or `_FILE`): a Slack-compatible incoming
    /// webhook; a secret (it is its own credential), never logged.
    pub webhook: Option<SecretString>,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            quarantine_after: 3,
            quarantine_for: Duration::from_secs(300),
            anomaly_factor: 3.0,
            queue_alert: 100,
            error_rate_alert: 0.5,
            alert_repeat: Duration::from_secs(3600),
            webhook: None,
        }
    }
}

/// An exponentially weighted moving average of run times.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    mean_secs: f64,
    samples: u32,
}

impl Ewma {
    fn add(&mut self, secs: f64) {
        self.mean_secs = if self.samples == 0 {
            secs
        } else {
            EWMA_ALPHA * secs + (1.0 - EWMA_ALPHA) * self.mean_secs
        };
        self.samples = self.samples.saturating_add(1);
    }

    /// The run time past which a run is an anomaly, once enough are known.
    fn limit(&self, factor: f64) -> Option<Duration> {
        (self.samples >= EWMA_MIN_SAMPLES)
            .then(|| Duration::from_secs_f64(self.mean_secs * factor.max(1.0)).max(ANOMALY_FLOOR))
    }
}

#[derive(Default)]
struct State {
    /// Per worker, the runs that failed since its last success: (task,
    /// subtask).
    failures_in_a_row: HashMap<String, Vec<(String, String)>>,
    /// Quarantined workers and until when.
    quarantined: HashMap<String, DateTime<Utc>>,
    ewma: HashMap<String, Ewma>,
    /// The last runs' outcomes, newest last: true for a failure.
    recent: VecDeque<bool>,
    /// Active alerts by key, and when they were last sent.
    active: HashMap<String, Instant>,
    /// Attempts already reported as anomalies.
    flagged: HashSet<(String, String, u32)>,
}

/// What the monitor knows; lives in the engine.
pub struct Monitor {
    settings: MonitorSettings,
    state: std::sync::Mutex<State>,
    http: reqwest::Client,
}

/// What an alert is about; its metric label.
#[derive(Debug, Clone, Copy)]
enum AlertKind {
    WorkerQuarantined,
    QueueDepth,
    ErrorRate,
    Anomaly,
}

impl AlertKind {
    fn label(self) -> &'static str {
        match self {
            AlertKind::WorkerQuarantined => "worker_quarantined",
            AlertKind::QueueDepth => "queue_depth",
            AlertKind::ErrorRate => "error_rate",
            AlertKind::Anomaly => "anomaly",
        }
    }
}

impl Monitor {
    pub fn new(settings: MonitorSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("aida/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Monitor {
            settings,
            state: std::sync::Mutex::new(State::default()),
            http,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until when `worker_id` is quarantined, if it is.
    pub fn quarantined_until(&self, worker_id: &str) -> Option<DateTime<Utc>> {
        self.state().quarantined.get(worker_id).copied()
    }

    pub fn is_quarantined(&self, worker_id: &str) -> bool {
        self.state().quarantined.contains_key(worker_id)
    }

    pub fn quarantined_count(&self) -> u64 {
        self.state().quarantined.len() as u64
    }
}

fn count_action(action: &'static str) {
    metrics::counter!(names::MONITOR_ACTIONS, "action" => action).increment(1);
}

impl Engine {
    /// A run's outcome, as a worker reported it: counts toward its
    /// worker's failures in a row, its kind's average and the error rate.
    pub(crate) async fn observe_run(
        &self,
        worker_id: &str,
        run: (&str, &str),
        agent: &str,
        success: bool,
        ran_for: Option<Duration>,
    ) -> Result<()> {
        let settings = &self.monitor.settings;
        // Quarantining the last worker standing would stop all work.
        let others_available = self
            .workers
            .lock()
            .await
            .iter()
            .any(|(id, w)| id != worker_id && !w.draining && !self.monitor.is_quarantined(id));
        let (quarantine, error_rate) = {
            let mut state = self.monitor.state();
            if success && let Some(ran_for) = ran_for {
                state
                    .ewma
                    .entry(agent.to_owned())
                    .or_default()
                    .add(ran_for.as_secs_f64());
            }
            state.recent.push_back(!success);
            while state.recent.len() > ERROR_WINDOW {
                state.recent.pop_front();
            }
            let failed = state.recent.iter().filter(|f| **f).count();
            let runs = state.recent.len();
            let error_rate =
                (runs >= ERROR_MIN_SAMPLES).then(|| (failed as f64 / runs as f64, runs));
            let failed = state
                .failures_in_a_row
                .entry(worker_id.to_owned())
                .or_default();
            if success {
                failed.clear();
            } else {
                failed.push((run.0.to_owned(), run.1.to_owned()));
                if failed.len() > 64 {
                    failed.remove(0);
                }
            }
            let in_a_row = failed.len() as u32;
            let subtasks = failed.iter().collect::<HashSet<_>>().len() as u32;
            let quarantine = (settings.quarantine_after > 0
                && in_a_row >= settings.quarantine_after
                && subtasks >= settings.quarantine_after.min(2)
                && others_available
                && !state.quarantined.contains_key(worker_id))
            .then(|| {
                let until = Utc::now()
                    + chrono::Duration::from_std(settings.quarantine_for).unwrap_or_default();
                state.quarantined.insert(worker_id.to_owned(), until);
                state.failures_in_a_row.remove(worker_id);
                (in_a_row, until)
            });
            (quarantine, error_rate)
        };
        if let Some((failures, until)) = quarantine {
            self.quarantine(worker_id, failures, until).await?;
        }
        if let Some((rate, runs)) = error_rate
            && settings.error_rate_alert > 0.0
        {
            let key = "error_rate".to_owned();
            if rate >= settings.error_rate_alert {
                self.raise_alert(
                    key,
                    AlertKind::ErrorRate,
                    format!(
                        "{:.0}% of the last {} runs failed (threshold {:.0}%)",
                        rate * 100.0,
                        runs,
                        settings.error_rate_alert * 100.0
                    ),
                    json!({ "error_rate": rate }),
                )
                .await?;
            } else {
                self.resolve_alert(&key, "the error rate is back under its threshold")
                    .await?;
            }
        }
        Ok(())
    }

    async fn quarantine(&self, worker_id: &str, failures: u32, until: DateTime<Utc>) -> Result<()> {
        tracing::warn!(
            worker_id,
            failures,
            until = %until,
            "worker quarantined: its runs keep failing"
        );
        count_action("quarantine");
        self.events
            .record(NewEvent {
                channel: Channel::Worker,
                kind: kind::WORKER_QUARANTINED,
                task_id: None,
                subtask: None,
                worker_id: Some(worker_id.to_owned()),
                data: json!({ "failures_in_a_row": failures, "until": until }),
            })
            .await?;
        self.raise_alert(
            format!("worker_quarantined:{worker_id}"),
            AlertKind::WorkerQuarantined,
            format!(
                "worker {worker_id} is quarantined until {}: {failures} runs in a row failed",
                until.format("%H:%M:%S UTC")
            ),
            json!({ "worker_id": worker_id, "until": until }),
        )
        .await
    }

    /// Releases quarantines whose cool-down has passed.
    async fn release_quarantines(&self) -> Result<()> {
        let now = Utc::now();
        let released: Vec<String> = {
            let mut state = self.monitor.state();
            let due: Vec<String> = state
                .quarantined
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &due {
                state.quarantined.remove(id);
            }
            due
        };
        for worker_id in released {
            tracing::info!(worker_id, "worker released from quarantine");
            count_action("release");
            self.events
                .record(NewEvent {
                    channel: Channel::Worker,
                    kind: kind::WORKER_RELEASED,
                    task_id: None,
                    subtask: None,
                    worker_id: Some(worker_id.clone()),
                    data: json!({}),
                })
                .await?;
            self.resolve_alert(
                &format!("worker_quarantined:{worker_id}"),
                &format!("worker {worker_id} is released from quarantine"),
            )
            .await?;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Runs going far beyond their kind's average.
    async fn find_anomalies(&self) -> Result<()> {
        let running = self.store.running_attempts().await?;
        let now = Utc::now();
        let factor = self.monitor.settings.anomaly_factor;
        let mut found = Vec::new();
        {
            let mut state = self.monitor.state();
            let live: HashSet<(String, String, u32)> = running
                .iter()
                .map(|r| (r.task_id.clone(), r.subtask.clone(), r.attempt))
                .collect();
            state.flagged.retain(|k| live.contains(k));
            for run in &running {
                let Some(limit) = state.ewma.get(&run.agent).and_then(|e| e.limit(factor)) else {
                    continue;
                };
                let ran_for = (now - run.started_at).to_std().unwrap_or_default();
                let key = (run.task_id.clone(), run.subtask.clone(), run.attempt);
                if ran_for > limit && state.flagged.insert(key) {
                    let mean = state.ewma[&run.agent].mean_secs;
                    found.push((run.clone(), ran_for, mean));
                }
            }
        }
        for (run, ran_for, mean) in found {
            tracing::warn!(
                task_id = %run.task_id,
                subtask = %run.subtask,
                agent = %run.agent,
                ran_for_secs = ran_for.as_secs(),
                average_secs = mean.round(),
                "a run is going far beyond its kind's average"
            );
            count_action("anomaly");
            self.events
                .record(NewEvent {
                    channel: Channel::Worker,
                    kind: kind::MONITOR_ANOMALY,
                    task_id: Some(run.task_id.clone()),
                    subtask: Some(run.subtask.clone()),
                    worker_id: Some(run.worker_id.clone()),
                    data: json!({
                        "agent": run.agent,
                        "attempt": run.attempt,
                        "ran_for_secs": ran_for.as_secs(),
                        "average_secs": mean,
                    }),
                })
                .await?;
            self.raise_alert(
                format!("anomaly:{}:{}:{}", run.task_id, run.subtask, run.attempt),
                AlertKind::Anomaly,
                format!(
                    "subtask {} of task {} ({}) has run {} s, its kind averages {:.0} s",
                    run.subtask,
                    run.task_id,
                    run.agent,
                    ran_for.as_secs(),
                    mean
                ),
                json!({ "task_id": run.task_id, "subtask": run.subtask }),
            )
            .await?;
        }
        Ok(())
    }

    async fn watch_queue(&self) -> Result<()> {
        let threshold = self.monitor.settings.queue_alert;
        if threshold == 0 {
            return Ok(());
        }
        let depth: u64 = self.store.queue_depth().await?.iter().map(|(_, n)| n).sum();
        if depth >= threshold {
            self.raise_alert(
                "queue_depth".into(),
                AlertKind::QueueDepth,
                format!("{depth} subtasks are waiting for a worker (threshold {threshold})"),
                json!({ "queue_depth": depth }),
            )
            .await
        } else {
            self.resolve_alert("queue_depth", "the queue is back under its threshold")
                .await
        }
    }

    /// Raises an alert unless it is active and was sent recently.
    async fn raise_alert(
        &self,
        key: String,
        alert: AlertKind,
        message: String,
        data: serde_json::Value,
    ) -> Result<()> {
        {
            let mut state = self.monitor.state();
            if let Some(sent) = state.active.get(&key)
                && sent.elapsed() < self.monitor.settings.alert_repeat
            {
                return Ok(());
            }
            state.active.insert(key.clone(), Instant::now());
        }
        count_action("alert");
        metrics::counter!(names::ALERTS, "alert" => alert.label()).increment(1);
        let mut data = data;
        if let Some(map) = data.as_object_mut() {
            map.insert("alert".into(), json!(alert.label()));
            map.insert("key".into(), json!(key));
            map.insert("message".into(), json!(message));
        }
        self.events
            .record(NewEvent {
                channel: Channel::Worker,
                kind: kind::MONITOR_ALERT,
                task_id: None,
                subtask: None,
                worker_id: None,
                data,
            })
            .await?;
        self.notify(format!(":rotating_light: AIDA alert: {message}"));
        Ok(())
    }

    /// Ends an active alert, telling whoever was told of it.
    async fn resolve_alert(&self, key: &str, message: &str) -> Result<()> {
        if self.monitor.state().active.remove(key).is_none() {
            return Ok(());
        }
        count_action("alert_resolved");
        self.events
            .record(NewEvent {
                channel: Channel::Worker,
                kind: kind::MONITOR_ALERT_RESOLVED,
                task_id: None,
                subtask: None,
                worker_id: None,
                data: json!({ "key": key, "message": message }),
            })
            .await?;
        self.notify(format!(":white_check_mark: AIDA resolved: {message}"));
        Ok(())
    }

    /// Posts `text` to the alert webhook, in the background.
    fn notify(&self, text: String) {
        let Some(url) = self.monitor.settings.webhook.clone() else {
            return;
        };
        let http = self.monitor.http.clone();
        tokio::spawn(async move {
            let sent = http
                .post(url.expose_secret())
                .json(&json!({ "text": text }))
                .send()
                .await
                .and_then(|r| r.error_for_status());
            if let Err(e) = sent {
                // The URL is a credential: never in the log.
                tracing::warn!(error = %e.without_url(), "the alert webhook refused or failed");
            }
        });
    }

    /// The monitor's loop, until `stop`.
    pub async fn run_monitor(self: Arc<Self>, stop: CancellationToken) {
        loop {
            for (what, outcome) in [
                ("releasing quarantines", self.release_quarantines().await),
                ("looking for anomalies", self.find_anomalies().await),
                ("watching the queue", self.watch_queue().await),
            ] {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "monitor: {what} failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_needs_samples_and_follows_recent_runs() {
        let mut e = Ewma::default();
        for _ in 0..4 {
            e.add(100.0);
        }
        assert_eq!(e.limit(3.0), None, "four runs say nothing yet");
        e.add(100.0);
        assert_eq!(e.limit(3.0), Some(Duration::from_secs(300)));
        for _ in 0..20 {
            e.add(10.0);
        }
        assert!(e.mean_secs < 12.0, "{}", e.mean_secs);
        assert_eq!(e.limit(3.0), Some(ANOMALY_FLOOR), "never under the floor");
    }
}
