//! Statuses reported from outside AIDA about a task (a CI run on its
//! result branch, through a webhook), kept as task events so that they show
//! in the task's history and live streams.

use std::sync::Arc;

use aida_core::event::{Channel, Event, kind};
use aida_core::proto::orchestrator::ExternalStatusRequest;
use chrono::Utc;
use serde_json::json;

use crate::engine::Engine;
use crate::error::{OrchestratorError, Result};
use crate::store::NewEvent;

/// The states CI systems report (GitHub's commit statuses use these).
const STATES: [&str; 4] = ["pending", "success", "failure", "error"];
const MAX_TEXT: usize = 1024;

impl Engine {
    /// Records `req` as a `task.external_status` event; with a webhook
    /// delivery id, at most once per id.
    pub async fn record_external_status(
        self: &Arc<Self>,
        task_id: &str,
        req: &ExternalStatusRequest,
    ) -> Result<Event> {
        let state = req.state.trim();
        if !STATES.contains(&state) {
            return Err(OrchestratorError::invalid(format!(
                "\"state\" must be one of {}, got {state:?}",
                STATES.join(", ")
            )));
        }
        for (name, text) in [
            ("description", &req.description),
            ("url", &req.url),
            ("context", &req.context),
        ] {
            if text.len() > MAX_TEXT {
                return Err(OrchestratorError::invalid(format!(
                    "\"{name}\" is longer than {MAX_TEXT} bytes"
                )));
            }
        }
        let url = req.url.trim();
        let web = url.starts_with("https://") || url.starts_with("http://");
        if !url.is_empty() && !web {
            return Err(OrchestratorError::invalid("\"url\" must be an http(s) URL"));
        }
        self.task(task_id).await?;
        let delivery = req.webhook_delivery.trim();
        if !delivery.is_empty() {
            self.store
                .claim_webhook_delivery(delivery, kind::TASK_EXTERNAL_STATUS, Utc::now())
                .await?;
        }
        let context = match req.context.trim() {
            "" => "external",
            c => c,
        };
        let recorded = self
            .events
            .record(NewEvent {
                channel: Channel::Task,
                kind: kind::TASK_EXTERNAL_STATUS,
                task_id: Some(task_id.to_owned()),
                subtask: None,
                worker_id: None,
                data: json!({
                    "state": state,
                    "context": context,
                    "description": req.description.trim(),
                    "url": url,
                    "by": req.actor.as_ref().map(|a| a.username.as_str()).unwrap_or("internal"),
                }),
            })
            .await;
        if recorded.is_err() && !delivery.is_empty() {
            // Let the sender's retry through: nothing was recorded.
            self.store.unclaim_webhook_delivery(delivery).await?;
        }
        recorded
    }
}
