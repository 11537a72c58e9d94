//! Where a task's result went: the delivery record (pushed branches and
//! their commits, the pull request), kept as JSON on the task.

use std::collections::BTreeMap;

use aida_core::proto::common::Delivery;
use aida_core::time::to_proto;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::Result;

/// A delivery as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJson {
    /// `pending`, `pushed`, `opened`, `failed` or `skipped`.
    pub status: String,
    /// The result branch on the remote.
    #[serde(default)]
    pub branch: String,
    /// The result commit pushed.
    #[serde(default)]
    pub commit: String,
    /// Every branch AIDA pushed and the commit it left there: the next push
    /// of a branch may replace exactly that commit and nothing else.
    #[serde(default)]
    pub pushed: BTreeMap<String, String>,
    #[serde(default)]
    pub pull_request_url: String,
    #[serde(default)]
    pub pull_request_number: u32,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryJson> for Delivery {
    fn from(d: DeliveryJson) -> Self {
        Delivery {
            status: d.status,
            branch: d.branch,
            commit: d.commit,
            pull_request_url: d.pull_request_url,
            pull_request_number: d.pull_request_number,
            error: d.error,
            attempts: d.attempts,
            delivered_at: d.delivered_at.map(to_proto),
        }
    }
}

impl Store {
    /// The task's delivery record, if it has one.
    pub async fn delivery(&self, task_id: &str) -> Result<Option<DeliveryJson>> {
        let raw: Option<Option<String>> =
            sqlx::query_scalar("SELECT delivery_json FROM tasks WHERE id = $1")
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(raw
            .flatten()
            .and_then(|s| serde_json::from_str::<DeliveryJson>(&s).ok()))
    }

    pub async fn record_delivery(&self, task_id: &str, delivery: &DeliveryJson) -> Result<()> {
        sqlx::query("UPDATE tasks SET delivery_json = $1 WHERE id = $2")
            .bind(serde_json::to_string(delivery).context("encoding delivery")?)
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
