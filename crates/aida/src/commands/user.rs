//! `aida user ...`: users over the REST API (admin). Passwords come from a
//! prompt or stdin (`--password-stdin`), never from the command line, where
//! other users of the machine could read them.

use std::process::ExitCode;

use aida_gateway::api::{CreateUser, UpdateUser, User};
use anyhow::bail;
use clap::Subcommand;
use zeroize::Zeroize;

use super::Global;
use super::admin_users::read_password;
use crate::output;

#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// List the users.
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a user; the password is asked for (or read from stdin).
    Create {
        /// Lowercase letters, digits, '.', '_', '-'.
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of stdin instead of
        /// prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a user's role or password, or disable or enable them.
    Update {
        name: String,
        /// The new role: admin, operator or viewer.
        #[arg(long)]
        role: Option<String>,
        /// Set a new password, asked for at a prompt; it also lifts a
        /// lockout and ends their sessions.
        #[arg(long)]
        password: bool,
        /// Set a new password read from the first line of stdin.
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// Refuse their logins and tokens until enabled again.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Let a disabled user in again.
        #[arg(long)]
        enable: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user: their sessions and tokens stop working.
    Delete {
        name: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

fn show(user: &User, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        output::print_json(user)
    } else {
        let state = if user.disabled { ", disabled" } else { "" };
        output::print(&format!(
            "{what} user {} ({}{state})\n",
            user.name, user.role
        ))
    }
}

impl UserCommand {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.client()?;
        match self {
            UserCommand::List { json } => {
                let users = client.list_users().await?;
                if json {
                    output::print_json(&users)?;
                } else {
                    output::print(&output::user_table(&users))?;
                }
            }
            UserCommand::Create {
                name,
                role,
                password_stdin,
                json,
            } => {
                let password = read_password(password_stdin, true)?;
                let mut body = CreateUser {
                    name,
                    role,
                    password: password.as_str().to_owned(),
                };
                let created = client.create_user(&body).await;
                body.password.zeroize();
                show(&created?, json, "created")?;
            }
            UserCommand::Update {
                name,
                role,
                password,
                password_stdin,
                disable,
                enable,
                json,
            } => {
                if role.is_none() && !password && !password_stdin && !disable && !enable {
                    bail!(
                        "nothing to change: give --role, --password, --password-stdin, --disable or --enable"
                    );
                }
                let new_password = if password || password_stdin {
                    Some(read_password(password_stdin, true)?)
                } else {
                    None
                };
                let mut body = UpdateUser {
                    role,
                    password: new_password.as_ref().map(|p| p.as_str().to_owned()),
                    disabled: (disable || enable).then_some(disable),
                };
                let updated = client.update_user(&name, &body).await;
                if let Some(p) = body.password.as_mut() {
                    p.zeroize();
                }
                show(&updated?, json, "updated")?;
            }
            UserCommand::Delete { name, json } => {
                show(&client.delete_user(&name).await?, json, "deleted")?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
