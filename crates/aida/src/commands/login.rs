//! `aida login`, `aida logout` and `aida whoami`: signing in to a gateway
//! and keeping the login in the credentials file (see `crate::credentials`).
//! The password comes from a prompt or stdin, never from the command line,
//! and neither it nor a token is ever printed.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use aida_gateway::api::Login;
use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use zeroize::Zeroize;

use super::Global;
use super::admin_users::read_password;
use crate::client::{ApiError, Client};
use crate::credentials::{self, Credential, CredentialsFile, Entry};
use crate::output;

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Who to sign in as; asked for when not given.
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password from the first line of stdin instead of prompting
    /// (without a terminal, stdin is read anyway).
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {}

#[derive(Debug, Clone, Args)]
pub struct WhoamiArgs {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

/// The username typed at a prompt; without a terminal there is no one to
/// ask, and stdin may hold the password.
fn prompt_username() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("--username is required when stdin is not a terminal");
    }
    eprint!("username: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the username")?;
    let name = line.trim().to_owned();
    if name.is_empty() {
        bail!("no username given");
    }
    Ok(name)
}

/// A password sent in the clear to another machine is worth a word.
fn warn_if_cleartext(url: &str) {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return;
    };
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() == "http" && !loopback {
        eprintln!(
            "aida: warning: {url} is plain http to another machine: the password and tokens cross the network unencrypted"
        );
    }
}

fn note_env_override() {
    if std::env::var_os(credentials::TOKEN_VAR).is_some_and(|v| !v.is_empty()) {
        eprintln!(
            "aida: note: {} is set, and commands send it instead of the stored login",
            credentials::TOKEN_VAR
        );
    }
}

impl LoginArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let key = credentials::gateway_key(&global.url)?;
        // Where the login goes is known before anyone types a password.
        let path = credentials::file_path()?;
        warn_if_cleartext(&global.url);
        let username = match self.username {
            Some(name) => name,
            None => prompt_username()?,
        };
        let password = read_password(self.password_stdin, false)?;
        let client = Client::new(&global.url, Credential::none())?;
        let mut body = Login {
            username,
            password: password.as_str().to_owned(),
        };
        let answer = client.login(&body).await;
        body.password.zeroize();
        let pair = answer?;
        let entry = Entry::from_login(&pair, Utc::now());
        credentials::update(&path, |file| {
            file.gateways.insert(key, entry);
            Ok((true, ()))
        })
        .await?;
        eprintln!(
            "logged in to {} as {} ({}); the login is kept in {}",
            client.base(),
            pair.user.name,
            pair.user.role,
            path.display()
        );
        note_env_override();
        Ok(ExitCode::SUCCESS)
    }
}

impl LogoutArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let key = credentials::gateway_key(&global.url)?;
        let path = credentials::file_path()?;
        let Some(entry) = CredentialsFile::load(&path)?.gateways.remove(&key) else {
            eprintln!("not logged in to {}", global.url);
            note_env_override();
            return Ok(ExitCode::SUCCESS);
        };
        let is_login = entry.refresh_token.is_some();
        if is_login {
            // End the session at the gateway, so that its refresh token is
            // worth nothing even where a copy of the file survives.
            let client = Client::new(
                &global.url,
                Credential::from_entry(entry, path.clone(), key.clone()),
            )?;
            match client.logout().await {
                Ok(()) => {}
                Err(err)
                    if err
                        .downcast_ref::<ApiError>()
                        .is_some_and(|e| e.status == reqwest::StatusCode::UNAUTHORIZED) =>
                {
                    // The session had ended already.
                }
                Err(err) => eprintln!(
                    "aida: warning: the gateway could not end the session ({err:#}); it is forgotten here anyway"
                ),
            }
        }
        credentials::update(&path, |file| Ok((file.gateways.remove(&key).is_some(), ()))).await?;
        if is_login {
            eprintln!("logged out of {}", global.url);
        } else {
            eprintln!(
                "forgot the API token stored for {}; the token itself stays valid until it is revoked",
                global.url
            );
        }
        note_env_override();
        Ok(ExitCode::SUCCESS)
    }
}

impl WhoamiArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let me = global.client()?.me().await?;
        if self.json {
            output::print_json(&me)?;
        } else {
            output::print(&format!("{} ({}) via {}\n", me.name, me.role, me.via))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
