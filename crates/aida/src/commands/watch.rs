//! `aida watch ID`: follows a task's events until it finished, one line per
//! event, and exits 0 only if the task succeeded.

use std::process::ExitCode;
use std::time::Duration;

use aida_gateway::api::TaskStatus;
use clap::Args;
use futures::StreamExt;

use super::Global;
use crate::output;

/// Reconnects after a dropped stream before giving up.
const MAX_RECONNECTS: u32 = 5;

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The task's id.
    pub id: String,
}

impl WatchArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.client()?;
        let mut last_id = None;
        let mut reconnects = 0;
        loop {
            let mut events = client.follow(&self.id, last_id).await?;
            let mut dropped = false;
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        last_id = Some(event.id);
                        reconnects = 0;
                        output::print(&output::event_line(&event))?;
                    }
                    Err(err) => {
                        eprintln!("aida: {err:#}");
                        dropped = true;
                        break;
                    }
                }
            }
            // The stream ends when the task finished; the task says how.
            let task = client.get_task(&self.id).await?;
            if task.status.is_terminal() {
                eprintln!("task {} {}", task.id, task.status.label());
                return Ok(if task.status == TaskStatus::Succeeded {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            reconnects += 1;
            if reconnects > MAX_RECONNECTS {
                anyhow::bail!(
                    "the event stream keeps ending while task {} is {}",
                    task.id,
                    task.status.label()
                );
            }
            if !dropped {
                eprintln!("aida: event stream ended early, reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(u64::from(reconnects))).await;
        }
    }
}
