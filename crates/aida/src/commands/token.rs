//! `aida token ...`: API tokens for scripts and CI (admin). A new token is
//! printed once, alone on stdout, so that `aida token create ... > file`
//! keeps it and nothing else; the gateway stores only its hash.

use std::process::ExitCode;

use aida_gateway::api::CreateApiToken;
use clap::Subcommand;

use super::Global;
use crate::output;

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is shown this once.
    Create {
        /// What the token is for (`ci`, `nightly`).
        #[arg(long)]
        name: String,
        /// viewer, operator, admin or system; at most your own role.
        #[arg(long)]
        role: String,
        /// Days until it expires (90 by default).
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
        /// Print the API's JSON, the token included.
        #[arg(long)]
        json: bool,
    },
    /// List API tokens, without their secrets.
    List {
        /// Revoked and expired tokens too.
        #[arg(long)]
        all: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token: it is refused from now on.
    Revoke {
        /// The token's id (see `aida token list`).
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

impl TokenCommand {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.client()?;
        match self {
            TokenCommand::Create {
                name,
                role,
                expires_in_days,
                json,
            } => {
                let (created, answer) = client
                    .create_token(&CreateApiToken {
                        name,
                        role,
                        expires_in_days,
                    })
                    .await?;
                if json {
                    output::print_json(&answer)?;
                } else {
                    output::print(&format!("{}\n", created.token))?;
                }
                let expires = created
                    .info
                    .expires_at
                    .map(|at| format!(", expires {}", output::local(at)))
                    .unwrap_or_default();
                eprintln!(
                    "token {} ({}, role {}{expires}) is shown only now: keep it somewhere safe",
                    created.info.id, created.info.name, created.info.role
                );
            }
            TokenCommand::List { all, json } => {
                let tokens = client.list_tokens(all).await?;
                if json {
                    output::print_json(&tokens)?;
                } else {
                    output::print(&output::token_table(&tokens, chrono::Utc::now()))?;
                }
            }
            TokenCommand::Revoke { id, json } => {
                let token = client.revoke_token(&id).await?;
                if json {
                    output::print_json(&token)?;
                } else {
                    output::print(&format!("revoked token {} ({})\n", token.id, token.name))?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
