//! One module per top-level subcommand. Each exposes its clap arguments and
//! a `run(self, &Global) -> anyhow::Result<ExitCode>`; `main` only
//! dispatches.

pub mod admin;
pub mod admin_users;
pub mod audit;
pub mod dev;
pub mod gc;
pub mod login;
pub mod mcp;
pub mod status;
pub mod task;
pub mod token;
pub mod user;
pub mod watch;
pub mod workers;
pub mod workflow;

use clap::Args;

use crate::client::Client;
use crate::credentials::{self, Credential};

/// Options every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The gateway's base URL.
    #[arg(
        long,
        env = "AIDA_URL",
        default_value = credentials::DEFAULT_URL,
        global = true
    )]
    pub url: String,
}

impl Global {
    /// A client for the gateway whose requests carry the token found for
    /// it (`AIDA_TOKEN`, the stored login, or `aida dev`'s token).
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.url, Credential::resolve(&self.url)?)
    }
}
