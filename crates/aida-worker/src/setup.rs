//! The worktree's set-up command (`setup` in `.aida/config.toml`, or the
//! task's own): run once in each new worktree before the agent, to install
//! what the agent's work needs (`npm ci`, ...).
//!
//! It runs like an agent (see [`crate::agent::process`]): its argv directly,
//! never through a shell, in the worktree, in its own process group, with
//! the allow-listed environment of the command agent plus the run's
//! variables, the set-up env and the ports; its output lines are logged on
//! the "setup" stream; its timeout kills the group. Its failure fails the
//! attempt, and the agent does not run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aida_proto::common::LogLine;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::process::{self, Ended, Spawn, Stop};
use crate::agent::{AgentEnv, AgentKind, Exit, Finished, Invocation, StreamParser, log_line};

/// The stream name of the set-up command's output lines.
pub const STREAM: &str = "setup";
/// What the set-up command is called in logs and errors.
pub const WHAT: &str = "set-up command";
/// How long a set-up command may run when neither the repository nor the
/// task says (`SETUP_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How much of the end of its output a failure quotes, in bytes.
const TAIL_BYTES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot start {what} {command:?}: {source}")]
    Spawn {
        what: &'static str,
        command: String,
        source: std::io::Error,
    },
    #[error("{what} {command:?} exited with code {code}{}", with_output(output))]
    Exited {
        what: &'static str,
        command: String,
        code: i32,
        output: String,
    },
    #[error(
        "{what} {command:?} was killed by signal {signal}{}",
        with_output(output)
    )]
    Killed {
        what: &'static str,
        command: String,
        signal: i32,
        output: String,
    },
    #[error("{what} {command:?} timed out after {secs} s{}", with_output(output))]
    TimedOut {
        what: &'static str,
        command: String,
        secs: u32,
        output: String,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("waiting for {what} {command:?} failed: {source}")]
    Wait {
        what: &'static str,
        command: String,
        source: std::io::Error,
    },
}

fn with_output(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

impl SetupError {
    /// Trying again cannot help: the program is not there or not
    /// executable. A failing or slow command may be transient (a network
    /// download), so it is not permanent.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SetupError::Spawn { source, .. } if matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        ))
    }
}

/// What a set-up (or verify) command needs besides its argv.
pub struct SetupRun<'a> {
    /// What it is called in logs and errors: [`WHAT`] or
    /// [`crate::verify::WHAT`].
    pub what: &'static str,
    /// The stream its output lines are logged on.
    pub stream: &'static str,
    pub command: &'a [String],
    /// The run the agent will get: worktree, `AIDA_*` variables, set-up env.
    pub inv: &'a Invocation,
    /// The worker's allow-list; the command gets what the command agent
    /// would, not any CLI's credentials.
    pub allow: &'a AgentEnv,
    pub timeout: Duration,
    pub log_quota_bytes: u64,
}

/// The argv as one line, for messages.
pub fn display(command: &[String]) -> String {
    command.join(" ")
}

/// Runs the set-up command to its end; `Ok` when it exited with code 0.
pub async fn run(
    setup: SetupRun<'_>,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> Result<(), SetupError> {
    let command = display(setup.command);
    let env = process::environment(setup.allow, AgentKind::Command, setup.inv);
    let _ = logs
        .send(log_line(
            "aida",
            format!(
                "{} environment: {}",
                setup.what.trim_end_matches(" command"),
                process::names(&env)
            ),
        ))
        .await;
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (ended, _) = process::run_process(
        Spawn {
            what: setup.what,
            argv: setup.command,
            cwd: &setup.inv.worktree,
            env,
            stdin: None,
            timeout: setup.timeout,
            log_quota_bytes: setup.log_quota_bytes,
            parser: Box::new(SetupParser {
                tail: tail.clone(),
                stream: setup.stream,
            }),
            parse_stderr: true,
        },
        logs,
        cancel,
    )
    .await;
    let output = tail.lock().unwrap_or_else(|e| e.into_inner()).text();
    let what = setup.what;
    match ended {
        Ended::Exited(Exit { code: Some(0), .. }) => Ok(()),
        Ended::Exited(Exit {
            code: Some(code), ..
        }) => Err(SetupError::Exited {
            what,
            command,
            code,
            output,
        }),
        Ended::Exited(Exit { signal, .. }) => Err(SetupError::Killed {
            what,
            command,
            signal: signal.unwrap_or_default(),
            output,
        }),
        Ended::Stopped {
            stop: Stop::TimedOut(secs),
            ..
        } => Err(SetupError::TimedOut {
            what,
            command,
            secs,
            output,
        }),
        Ended::Stopped {
            stop: Stop::Cancelled,
            ..
        } => Err(SetupError::Cancelled),
        Ended::NotStarted(source) => Err(SetupError::Spawn {
            what,
            command,
            source,
        }),
        Ended::WaitFailed(source) => Err(SetupError::Wait {
            what,
            command,
            source,
        }),
    }
}

/// Logs every line of both pipes on its stream and keeps the last ones.
struct SetupParser {
    tail: Arc<Mutex<Tail>>,
    stream: &'static str,
}

impl StreamParser for SetupParser {
    fn line(&mut self, line: &str) -> Vec<(&'static str, String)> {
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        vec![(self.stream, line.to_owned())]
    }

    fn finish(&mut self, _exit: &Exit) -> Finished {
        Finished::default()
    }
}

/// The last non-empty output lines, at most [`TAIL_BYTES`] in all.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line = line.trim_end();
        if line.trim().is_empty() {
            return;
        }
        // Of a line too long on its own, its end.
        let mut start = line.len().saturating_sub(TAIL_BYTES);
        while !line.is_char_boundary(start) {
            start += 1;
        }
        let line = &line[start..];
        self.bytes += line.len() + 1;
        self.lines.push_back(line.to_owned());
        while self.bytes > TAIL_BYTES + 1 {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len() + 1;
        }
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_within_its_size() {
        let mut tail = Tail::default();
        tail.push("first");
        tail.push("");
        tail.push("second  ");
        assert_eq!(tail.text(), "first\nsecond");
        for i in 0..1000 {
            tail.push(&format!("line {i}"));
        }
        let text = tail.text();
        assert!(text.len() <= TAIL_BYTES, "{}", text.len());
        assert!(text.ends_with("line 998\nline 999"), "{text}");
        tail.push(&"é".repeat(3000));
        let text = tail.text();
        assert!(
            text.len() <= TAIL_BYTES && text.starts_with('é'),
            "{}",
            text.len()
        );
    }

    #[test]
    fn errors_quote_the_command_and_its_output() {
        let err = SetupError::Exited {
            what: WHAT,
            command: display(&["npm".into(), "ci".into()]),
            code: 1,
            output: "npm ERR! missing package.json".into(),
        };
        assert_eq!(
            err.to_string(),
            "set-up command \"npm ci\" exited with code 1: npm ERR! missing package.json"
        );
        assert!(!err.is_permanent());
        let err = SetupError::TimedOut {
            what: WHAT,
            command: "make".into(),
            secs: 5,
            output: String::new(),
        };
        assert_eq!(
            err.to_string(),
            "set-up command \"make\" timed out after 5 s"
        );
    }
}
