//! `aida mcp`: serve AIDA's tools to an MCP client over stdio, with the
//! credentials every other command uses (see `crate::mcp`).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::Global;

#[derive(Debug, Clone, Args)]
pub struct McpArgs {}

impl McpArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        init_logs();
        let client = global.client()?;
        let cwd = std::env::current_dir().context("reading the working directory")?;
        tracing::debug!(gateway = client.base(), "serving mcp on stdio");
        crate::mcp::serve_stdio(client, cwd).await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Logs to stderr (stdout is the protocol's), warnings only unless
/// `RUST_LOG` says otherwise, and without colours: the client keeps them
/// in a log file, not on a terminal.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
