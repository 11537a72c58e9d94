//! `aida audit`: the audit trail, newest first (admin).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;

use super::Global;
use crate::client::AuditFilter;
use crate::output;

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only this user's lines.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this action (`auth.login`), or a family (`auth.`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only lines at or after this time (RFC 3339, `2024-05-01T12:00:00Z`).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many lines (100 by default).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2024-05-01T12:00:00Z"))
}

impl AuditArgs {
    pub async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let entries = global
            .client()?
            .audit(&AuditFilter {
                user: self.user,
                action: self.action,
                since: self.since,
                limit: self.limit,
            })
            .await?;
        if self.json {
            output::print_json(&entries)?;
        } else {
            output::print(&output::audit_table(&entries))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_any_offset() {
        assert_eq!(
            parse_time("2024-05-01T14:00:00+02:00").unwrap(),
            parse_time("2024-05-01T12:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").is_err());
    }
}
