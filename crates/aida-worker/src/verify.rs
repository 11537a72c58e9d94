//! Verification: the task's `verify` command (`cargo test`, `npm test`,
//! ...) run on a subtask's worktree after its work is committed (`on`
//! "subtasks" or "both"), or on a read-only snapshot of a merged result
//! (the orchestrator's `_verify` runs). It runs like the set-up command:
//! its argv directly, in its own process group, with the command agent's
//! environment, its output logged on the "verify" stream, killed at its
//! timeout; exit code 0 passes.

use std::time::Duration;

use aida_proto::common::{LogLine, VerifySpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::Invocation;
use crate::executor::ExecContext;
use crate::setup::{self, SetupError, SetupRun};

/// What the command is called in logs and errors.
pub const WHAT: &str = "verify command";
/// The stream name of its output lines.
pub const STREAM: &str = "verify";
/// How long one run may take when the task says nothing.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// The spec, when it asks for the subtasks' branches to be checked.
pub fn on_subtasks(spec: Option<&VerifySpec>) -> Option<&VerifySpec> {
    spec.filter(|s| !s.command.is_empty() && matches!(s.on.as_str(), "subtasks" | "both"))
}

/// Runs the command in `inv.worktree`; `Ok` when it exited with code 0.
pub async fn run(
    spec: &VerifySpec,
    inv: &Invocation,
    ctx: &ExecContext,
    logs: &mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> Result<(), SetupError> {
    let timeout = match spec.timeout_secs {
        0 => DEFAULT_TIMEOUT,
        secs => Duration::from_secs(u64::from(secs)),
    };
    let _ = logs
        .send(crate::agent::log_line(
            "aida",
            format!("running {WHAT}: {}", setup::display(&spec.command)),
        ))
        .await;
    let ran = setup::run(
        SetupRun {
            what: WHAT,
            stream: STREAM,
            command: &spec.command,
            inv,
            allow: &ctx.agents.env,
            timeout,
            log_quota_bytes: ctx.agents.log_quota_bytes,
        },
        logs.clone(),
        cancel,
    )
    .await;
    let verdict = match &ran {
        Ok(()) => "verification passed".to_owned(),
        Err(e) => format!("verification failed: {e}"),
    };
    let _ = logs.send(crate::agent::log_line("aida", verdict)).await;
    ran
}
