//! `aida status`: one screen for an operator: the services' health, the
//! workers, the queue by priority, the tasks under way, the last failures;
//! and `aida tui`, the same system to move around in.

use std::process::ExitCode;

use clap::Args;

use super::Global;
use crate::output;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the API's JSON instead.
    #[arg(long)]
    pub json: bool,
}

impl StatusArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let status = global.client()?.status().await?;
        if self.json {
            output::print_json(&status)?;
        } else {
            output::print(&output::system_status(&status))?;
        }
        // Scripts can tell a degraded system by the exit code too.
        Ok(if status.health.status == "healthy" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct TuiArgs {
    /// Select this task at start.
    #[arg(long)]
    pub task: Option<String>,
}

impl TuiArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        crate::tui::run(global.client()?, self.task).await
    }
}
