//! `aida workers`: the workers the orchestrator knows.

use std::process::ExitCode;

use clap::Args;

use super::Global;
use crate::output;

#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl WorkersArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let workers = global.client()?.workers().await?;
        if self.json {
            output::print_json(&workers)?;
        } else {
            output::print(&output::worker_table(&workers))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
