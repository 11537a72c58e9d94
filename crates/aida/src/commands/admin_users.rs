//! `aida admin create-user` and `aida admin reset-password`: work directly
//! on the orchestrator's database (`DATABASE_URL`), like `aida admin
//! backup`, so the first admin can be made before anything runs and a
//! locked-out admin can get back in. Passwords come from stdin
//! (`--password-stdin`) or a prompt, never from the command line.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use aida_core::proto::common::Actor;
use aida_orchestrator::audit::Audit;
use aida_orchestrator::store::Store;
use anyhow::{Context, bail};
use clap::Args;
use zeroize::Zeroizing;

use super::admin::DEFAULT_DATABASE_URL;
use crate::output;

#[derive(Debug, Clone, Args)]
pub struct CreateUserArgs {
    /// The new user's name: lowercase letters, digits, '.', '_', '-'.
    pub name: String,
    /// admin, operator or viewer.
    #[arg(long)]
    pub role: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// The orchestrator's database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ResetPasswordArgs {
    /// The user whose password to replace; a lockout is lifted and their
    /// sessions end.
    pub name: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// The orchestrator's database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// Who the audit trail names for these commands: the operating-system user
/// running them.
pub fn local_actor() -> Actor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    Actor {
        username: format!("os:{user}"),
        role: "admin".into(),
        client_addr: "local".into(),
        via: "cli".into(),
    }
}

/// The password from stdin's first line, or typed twice at a prompt.
pub fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let password = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
        if password.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(password);
    }
    let password =
        Zeroizing::new(rpassword::prompt_password("password: ").context("reading the password")?);
    if confirm {
        let again =
            Zeroizing::new(rpassword::prompt_password("again: ").context("reading the password")?);
        if *again != *password {
            bail!("the two passwords differ");
        }
    }
    Ok(password)
}

async fn open(database_url: &str) -> anyhow::Result<(Store, Audit)> {
    let store = Store::connect(database_url).await?;
    // The file audit log (AIDA_AUDIT_LOG) is the orchestrator's; these
    // lines go to the database's audit trail, which admins read.
    let audit = Audit::new(store.clone(), None)?;
    Ok((store, audit))
}

pub async fn create_user(args: &CreateUserArgs) -> anyhow::Result<ExitCode> {
    let password = read_password(args.password_stdin, true)?;
    let (store, audit) = open(&args.database_url).await?;
    let user = aida_orchestrator::auth::create_user(
        &store,
        &audit,
        &args.name,
        &args.role,
        &password,
        Some(&local_actor()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    output::print(&format!("created user {} ({})\n", user.name, user.role))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn reset_password(args: &ResetPasswordArgs) -> anyhow::Result<ExitCode> {
    let password = read_password(args.password_stdin, true)?;
    let (store, audit) = open(&args.database_url).await?;
    let user = aida_orchestrator::auth::reset_password(
        &store,
        &audit,
        &args.name,
        &password,
        Some(&local_actor()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    output::print(&format!(
        "new password set for {}; any lockout is lifted and their sessions ended\n",
        user.name
    ))?;
    Ok(ExitCode::SUCCESS)
}
