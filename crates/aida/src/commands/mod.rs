//! One module per top-level subcommand. Each exposes its clap arguments and
//! a `run(self, &Global) -> anyhow::Result<ExitCode>`; `main` only
//! dispatches.

pub mod admin;
pub mod dev;
pub mod task;
pub mod watch;
pub mod workers;

use clap::Args;

use crate::client::Client;

/// Options every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "AIDA_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
}

impl Global {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.url)
    }
}
