//! `aida admin gc`: removes the events and `aida/<task>/*` branches of tasks
//! that ended long ago, through the gateway (`POST /api/admin/gc`).

use std::fmt::Write as _;
use std::process::ExitCode;

use aida_gateway::api::{GcReport, GcRequest};
use clap::Args;

use super::Global;
use crate::output;

#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// Tasks that ended at least this long ago (30d, 12h, 90m); the
    /// orchestrator's AIDA_EVENT_RETENTION when left out.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Show what would be removed and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl GcArgs {
    pub async fn run(&self, global: &Global) -> anyhow::Result<ExitCode> {
        let request = GcRequest {
            older_than: self
                .older_than
                .map(|age| humantime::format_duration(age).to_string()),
            dry_run: self.dry_run,
        };
        let report = global.client()?.collect_garbage(&request).await?;
        if self.json {
            output::print_json(&report)?;
        } else {
            output::print(&render(&report))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn render(report: &GcReport) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    let before = report
        .ended_before
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} tasks ended before {before}: {verb} {} events and {} branches; {} branches kept",
        report.tasks,
        report.events_removed,
        report.branches_removed.len(),
        report.branches_kept.len()
    );
    for b in &report.branches_removed {
        let _ = writeln!(out, "  {verb} {} in {}", b.branch, b.repo);
    }
    for b in &report.branches_kept {
        let reason = b.reason.as_deref().unwrap_or_default();
        let _ = writeln!(out, "  kept {} in {}: {reason}", b.branch, b.repo);
    }
    out
}
