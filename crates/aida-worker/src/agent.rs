//! Running an agent process in a worktree: the program is executed directly
//! (never through a shell) in its own process group, gets the prompt on
//! stdin and in its environment, and has its stdout and stderr streamed line
//! by line. Cancelling kills the whole process group.
//!
//! Today the only kind is "command"; the CLI adapters (claude-code,
//! gemini-cli, codex-cli) become further [`Agent`] variants that build their
//! own argv from the spec's options.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aida_proto::common::{AgentSpec, LogLine};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The agent kinds this build can run, as advertised to the orchestrator.
pub const KINDS: &[&str] = &["command"];

/// How long a cancelled agent gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long output readers may lag behind the process's exit, in case a
/// descendant outside the process group still holds the pipes.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent kind {0:?} is not supported by this worker (it runs: command)")]
    UnknownKind(String),
    #[error("the command agent needs a non-empty command (argv)")]
    EmptyCommand,
    #[error("cannot start agent program {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("agent exited with code {0}")]
    ExitCode(i32),
    #[error("agent was killed by signal {0}")]
    Signal(i32),
    #[error("cancelled")]
    Cancelled,
    #[error("waiting for the agent failed: {0}")]
    Wait(std::io::Error),
}

impl AgentError {
    /// The process's exit code, when it exited with one.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            AgentError::ExitCode(code) => Some(*code),
            _ => None,
        }
    }
}

/// An agent ready to run, validated from its [`AgentSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// Runs `argv[0]` with the remaining arguments.
    Command { argv: Vec<String> },
}

/// What the agent is told about its run.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub prompt: String,
    pub task_id: String,
    pub subtask: String,
    pub branch: String,
    pub worktree: PathBuf,
}

/// A finished agent run.
#[derive(Debug, Clone, Default)]
pub struct AgentOutput {
    pub exit_code: i32,
    /// The agent's final message, for adapters that report one.
    pub summary: String,
}

impl Agent {
    pub fn from_spec(spec: &AgentSpec) -> Result<Self, AgentError> {
        match spec.kind.as_str() {
            "command" => {
                if spec.command.first().is_none_or(|p| p.is_empty()) {
                    return Err(AgentError::EmptyCommand);
                }
                Ok(Agent::Command {
                    argv: spec.command.clone(),
                })
            }
            other => Err(AgentError::UnknownKind(other.to_owned())),
        }
    }

    fn argv(&self) -> &[String] {
        match self {
            Agent::Command { argv } => argv,
        }
    }

    /// Runs the agent to its end (or until `cancel`), sending its output
    /// lines to `logs`.
    pub async fn run(
        &self,
        inv: &Invocation,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<AgentOutput, AgentError> {
        let argv = self.argv();
        let program = &argv[0];
        let mut child = Command::new(program)
            .args(&argv[1..])
            .current_dir(&inv.worktree)
            .env("AIDA_PROMPT", &inv.prompt)
            .env("AIDA_TASK_ID", &inv.task_id)
            .env("AIDA_SUBTASK_NAME", &inv.subtask)
            .env("AIDA_BRANCH", &inv.branch)
            .env("AIDA_WORKTREE", &inv.worktree)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so cancelling reaches everything it spawned.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| AgentError::Spawn {
                program: program.clone(),
                source,
            })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        tracing::info!(program = %program, pid = ?pgid, worktree = %inv.worktree.display(), "agent started");

        // The prompt is written from its own task: an agent that never reads
        // stdin must not block us, and a closed pipe is not an error.
        if let Some(mut stdin) = child.stdin.take() {
            let prompt = inv.prompt.clone();
            tokio::spawn(async move {
                let _ = stdin.write_all(prompt.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(forward_lines(out, "stdout", logs.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(forward_lines(err, "stderr", logs.clone())));
        }
        drop(logs);

        let status = tokio::select! {
            status = child.wait() => Some(status),
            _ = cancel.cancelled() => None,
        };
        let status = match status {
            Some(status) => status,
            None => {
                tracing::info!(pid = ?pgid, "cancelling agent");
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGTERM);
                }
                if tokio::time::timeout(TERM_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(pid = ?pgid, "agent ignored SIGTERM, killing it");
                }
                kill_group(pgid);
                let _ = child.wait().await;
                drain(readers).await;
                return Err(AgentError::Cancelled);
            }
        };
        // Whatever the agent left running in its group is killed too: its
        // worktree is about to go away and it would hold the output pipes.
        kill_group(pgid);
        drain(readers).await;

        let status = status.map_err(AgentError::Wait)?;
        match status.code() {
            Some(0) => Ok(AgentOutput {
                exit_code: 0,
                summary: String::new(),
            }),
            Some(code) => Err(AgentError::ExitCode(code)),
            None => {
                use std::os::unix::process::ExitStatusExt;
                Err(AgentError::Signal(status.signal().unwrap_or_default()))
            }
        }
    }
}

fn kill_group(pgid: Option<Pid>) {
    if let Some(pgid) = pgid {
        // ESRCH (nothing left in the group) is the usual, fine outcome.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

async fn drain(readers: Vec<tokio::task::JoinHandle<()>>) {
    for mut reader in readers {
        if tokio::time::timeout(DRAIN_GRACE, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

async fn forward_lines(
    pipe: impl AsyncRead + Unpin,
    stream: &'static str,
    logs: mpsc::Sender<LogLine>,
) {
    // Bytes, not `lines()`: an agent printing invalid UTF-8 must not stop
    // the reading (a full pipe would block it).
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                let _ = logs.send(log_line(stream, line)).await;
            }
            Err(e) => {
                let _ = logs
                    .send(log_line("aida", format!("cannot read agent {stream}: {e}")))
                    .await;
                break;
            }
        }
    }
}

/// A log line stamped now.
pub fn log_line(stream: &str, line: impl Into<String>) -> LogLine {
    LogLine {
        stream: stream.to_owned(),
        line: line.into(),
        at: Some(aida_core::time::now_proto()),
    }
}
