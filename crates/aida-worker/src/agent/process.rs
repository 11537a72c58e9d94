//! Running an agent process in a worktree, for every kind: the program is
//! executed directly (never through a shell) in its own process group, its
//! stdout goes through the kind's parser and its stderr is streamed as is.
//! A timeout or cancellation kills the whole process group (SIGTERM, then
//! SIGKILL after a grace period).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aida_proto::common::LogLine;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Agent, AgentError, AgentKind, AgentOutput, Exit, Invocation, StreamParser, log_line};

/// How long a stopped agent gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long output readers may lag behind the process's exit, in case a
/// descendant outside the process group still holds the pipes.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

type SharedParser = Arc<Mutex<Box<dyn StreamParser>>>;

/// Why the agent was stopped before it ended by itself.
enum Stop {
    Cancelled,
    TimedOut(u32),
}

pub(super) async fn run(
    agent: &Agent,
    inv: &Invocation,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> AgentOutput {
    for note in &agent.notes {
        let _ = logs.send(log_line("aida", note.clone())).await;
    }
    let program = &agent.argv[0];
    // The command agent reads its prompt on stdin; the CLIs get it as an
    // argument, and codex would append piped stdin to it.
    let gets_stdin = agent.kind == AgentKind::Command;
    let spawned = Command::new(program)
        .args(&agent.argv[1..])
        .current_dir(&inv.worktree)
        // The run's own variables first: AIDA's fixed ones below win.
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .env("AIDA_PROMPT", &inv.prompt)
        .env("AIDA_TASK_ID", &inv.task_id)
        .env("AIDA_SUBTASK_NAME", &inv.subtask)
        .env("AIDA_BRANCH", &inv.branch)
        .env("AIDA_WORKTREE", &inv.worktree)
        .stdin(if gets_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so stopping it reaches everything it spawned.
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) => {
            return AgentOutput {
                exit_code: -1,
                error: Some(AgentError::Spawn {
                    program: program.clone(),
                    source,
                }),
                ..Default::default()
            };
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    tracing::info!(kind = agent.kind.name(), program = %program, pid = ?pgid, worktree = %inv.worktree.display(), "agent started");

    // Written from its own task: an agent that never reads stdin must not
    // block us, and a closed pipe is not an error.
    if let Some(mut stdin) = child.stdin.take() {
        let prompt = inv.prompt.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(prompt.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let parser: SharedParser = Arc::new(Mutex::new(agent.kind.parser()));
    let stderr_tail = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let sink = Sink::Parsed(parser.clone());
        readers.push(tokio::spawn(read_lines(out, sink, logs.clone())));
    }
    if let Some(err) = child.stderr.take() {
        let sink = Sink::Raw(stderr_tail.clone());
        readers.push(tokio::spawn(read_lines(err, sink, logs.clone())));
    }

    let deadline = async {
        match agent.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        status = child.wait() => Ok(status),
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        _ = deadline => Err(Stop::TimedOut(agent.timeout.map(|t| t.as_secs() as u32).unwrap_or_default())),
    };
    let status = match ended {
        Ok(status) => {
            // Whatever the agent left running in its group is killed too:
            // its worktree is about to go away and it would hold the pipes.
            kill_group(pgid);
            status
        }
        Err(stop) => {
            match &stop {
                Stop::Cancelled => tracing::info!(pid = ?pgid, "cancelling agent"),
                Stop::TimedOut(secs) => tracing::info!(pid = ?pgid, secs, "agent timed out"),
            }
            terminate(&mut child, pgid).await;
            drain(readers).await;
            let exit = Exit {
                stderr_tail: take(&stderr_tail),
                ..Default::default()
            };
            let finished = lock(&parser).finish(&exit);
            return AgentOutput {
                exit_code: -1,
                output: finished.output.unwrap_or_else(|| finished.summary.clone()),
                summary: finished.summary,
                usage: finished.usage,
                error: Some(match stop {
                    Stop::Cancelled => AgentError::Cancelled,
                    Stop::TimedOut(secs) => AgentError::TimedOut(secs),
                }),
            };
        }
    };
    drain(readers).await;

    let status = match status {
        Ok(status) => status,
        Err(e) => {
            return AgentOutput {
                exit_code: -1,
                error: Some(AgentError::Wait(e)),
                ..Default::default()
            };
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let exit = Exit {
        code: status.code(),
        signal: status.signal(),
        stderr_tail: take(&stderr_tail),
    };
    let finished = lock(&parser).finish(&exit);
    AgentOutput {
        exit_code: exit.code.unwrap_or(-1),
        output: finished.output.unwrap_or_else(|| finished.summary.clone()),
        summary: finished.summary,
        usage: finished.usage,
        error: finished.error,
    }
}

/// SIGTERM to the group, SIGKILL to whatever is left after the grace.
async fn terminate(child: &mut Child, pgid: Option<Pid>) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(pid = ?pgid, "agent ignored SIGTERM, killing it");
    }
    // Also the children that outlived their parent's SIGTERM.
    kill_group(pgid);
    let _ = child.wait().await;
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

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn take(m: &Mutex<String>) -> String {
    std::mem::take(&mut *lock(m))
}

/// Where one pipe's lines go.
enum Sink {
    /// Through the kind's parser (stdout).
    Parsed(SharedParser),
    /// As they are on "stderr", remembering the last non-empty one.
    Raw(Arc<Mutex<String>>),
}

async fn read_lines(pipe: impl AsyncRead + Unpin, sink: Sink, logs: mpsc::Sender<LogLine>) {
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
                let line = line.trim_end_matches(['\n', '\r']);
                let out = match &sink {
                    Sink::Parsed(parser) => lock(parser).line(line),
                    Sink::Raw(tail) => {
                        if !line.trim().is_empty() {
                            *lock(tail) = line.to_owned();
                        }
                        vec![("stderr", line.to_owned())]
                    }
                };
                for (stream, text) in out {
                    let _ = logs.send(log_line(stream, text)).await;
                }
            }
            Err(e) => {
                let _ = logs
                    .send(log_line("aida", format!("cannot read agent output: {e}")))
                    .await;
                break;
            }
        }
    }
}
