//! The agents a worker runs: the plain "command" agent and the adapters for
//! the coding-agent CLIs ("claude-code", "gemini-cli", "codex-cli").
//!
//! Each kind builds its own argv from the subtask's [`AgentSpec`] and the
//! worker's [`AgentConfig`], and brings a [`StreamParser`] that turns the
//! program's stdout into readable log lines and reads what the CLI reports
//! at the end (final message, session, turns, tokens, cost). Running the
//! process is shared by all of them (see [`process`]): own process group,
//! an allow-listed environment (see [`env`]), output cut into bounded lines
//! under a quota, timeout and cancellation kill the whole group.
//!
//! User text (prompts, model names, options) never stands where a CLI parses
//! options: it goes after `--` or as `--option=value`, so a prompt such as
//! `--dangerously-skip-permissions` stays a prompt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aida_proto::common::{AgentSpec, AgentUsage, LogLine};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod claude;
pub mod codex;
pub mod command;
pub mod env;
pub mod gemini;
pub(crate) mod process;

pub use env::AgentEnv;

pub const COMMAND: &str = "command";
pub const CLAUDE_CODE: &str = "claude-code";
pub const GEMINI_CLI: &str = "gemini-cli";
pub const CODEX_CLI: &str = "codex-cli";

/// Every kind this build knows, in the order they are advertised.
pub const KINDS: &[&str] = &[COMMAND, CLAUDE_CODE, GEMINI_CLI, CODEX_CLI];

/// How long a run may take when its spec sets no `timeout_secs`: a run
/// without a limit would hold the worker forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How many bytes of output lines a run may log (100 MB).
pub const DEFAULT_LOG_QUOTA_BYTES: u64 = 100_000_000;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "agent kind {0:?} is not supported by this worker (it knows: command, claude-code, gemini-cli, codex-cli)"
    )]
    UnknownKind(String),
    #[error("the command agent needs a non-empty command (argv)")]
    EmptyCommand,
    #[error(
        "{kind} asks for {mode:?}, which this worker does not allow (set ALLOW_BYPASS_PERMISSIONS=true only on isolated workers)"
    )]
    BypassNotAllowed { kind: &'static str, mode: String },
    #[error("invalid agent option {name:?}: {reason}")]
    InvalidOption { name: String, reason: String },
    #[error("cannot start agent program {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("agent exited with code {0}")]
    ExitCode(i32),
    #[error("agent was killed by signal {0}")]
    Signal(i32),
    #[error("timed out after {0} s")]
    TimedOut(u32),
    #[error("cancelled")]
    Cancelled,
    #[error("waiting for the agent failed: {0}")]
    Wait(std::io::Error),
    /// A failure the agent's CLI reported (or its exit code means), in the
    /// adapter's words.
    #[error("{0}")]
    Reported(String),
}

impl AgentError {
    /// Trying again cannot help: the request or this worker's setup is
    /// wrong (an unknown kind, a refused mode, a program that is not there).
    pub fn is_permanent(&self) -> bool {
        match self {
            AgentError::UnknownKind(_)
            | AgentError::EmptyCommand
            | AgentError::BypassNotAllowed { .. }
            | AgentError::InvalidOption { .. } => true,
            AgentError::Spawn { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            _ => false,
        }
    }
}

/// Where the worker finds each CLI and what it lets them do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub claude_path: String,
    pub gemini_path: String,
    pub codex_path: String,
    /// Whether subtasks may run claude-code with `bypassPermissions` (or
    /// gemini-cli with `yolo`): only for workers isolated from anything
    /// that matters.
    pub allow_bypass_permissions: bool,
    /// Which of the worker's environment variables agents inherit.
    pub env: AgentEnv,
    /// The time limit of a run whose spec sets none.
    pub default_timeout: Duration,
    /// Bytes of output lines a run may log; past it the log says so once
    /// and keeps nothing more.
    pub log_quota_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            claude_path: "claude".into(),
            gemini_path: "gemini".into(),
            codex_path: "codex".into(),
            allow_bypass_permissions: false,
            env: AgentEnv::default(),
            default_timeout: DEFAULT_TIMEOUT,
            log_quota_bytes: DEFAULT_LOG_QUOTA_BYTES,
        }
    }
}

impl AgentConfig {
    /// The kinds this worker can run: "command" always, each CLI adapter
    /// when its executable is found.
    pub fn available_kinds(&self) -> Vec<String> {
        let mut kinds = vec![COMMAND.to_owned()];
        for (kind, path) in [
            (CLAUDE_CODE, &self.claude_path),
            (GEMINI_CLI, &self.gemini_path),
            (CODEX_CLI, &self.codex_path),
        ] {
            if find_executable(path).is_some() {
                kinds.push(kind.to_owned());
            }
        }
        kinds
    }
}

/// `program` as an executable file: taken as a path when it has a `/`,
/// looked up on `PATH` otherwise.
pub fn find_executable(program: &str) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The agent kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    Command,
    ClaudeCode,
    GeminiCli,
    CodexCli,
}

impl AgentKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            COMMAND => Some(Self::Command),
            CLAUDE_CODE => Some(Self::ClaudeCode),
            GEMINI_CLI => Some(Self::GeminiCli),
            CODEX_CLI => Some(Self::CodexCli),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Command => COMMAND,
            Self::ClaudeCode => CLAUDE_CODE,
            Self::GeminiCli => GEMINI_CLI,
            Self::CodexCli => CODEX_CLI,
        }
    }

    fn parser(self) -> Box<dyn StreamParser> {
        match self {
            Self::Command => Box::new(command::CommandParser::default()),
            Self::ClaudeCode => Box::<claude::ClaudeParser>::default(),
            Self::GeminiCli => Box::<gemini::GeminiParser>::default(),
            Self::CodexCli => Box::<codex::CodexParser>::default(),
        }
    }
}

/// An agent ready to run, validated from its [`AgentSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub kind: AgentKind,
    /// Program and arguments, the prompt included for the CLI adapters.
    pub argv: Vec<String>,
    /// Wall-clock limit of the run: the spec's, or the worker's default.
    pub timeout: Duration,
    /// Said in the log before the agent starts: settings this kind cannot
    /// honour.
    pub notes: Vec<String>,
    /// Which of the worker's variables the process inherits.
    pub env: AgentEnv,
    /// Bytes of output lines the run may log.
    pub log_quota_bytes: u64,
}

/// What the agent is told about its run.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub prompt: String,
    pub task_id: String,
    pub subtask: String,
    pub branch: String,
    pub worktree: PathBuf,
    /// Extra environment from the orchestrator (the task's shared context);
    /// only `AIDA_*` names are set.
    pub env: Vec<(String, String)>,
    /// The worktree set-up's variables (the repository's `.aida/config.toml`,
    /// the task's settings, the run's ports); names already checked.
    pub setup_env: Vec<(String, String)>,
}

/// A finished agent run, successful or not.
#[derive(Debug, Default)]
pub struct AgentOutput {
    /// The process's exit code; -1 when it had none (signal, timeout,
    /// cancellation, never started).
    pub exit_code: i32,
    /// The agent's final message, for adapters that report one.
    pub summary: String,
    /// The agent's answer as a whole (a read-only run's result): the final
    /// message of a CLI, the standard output of a command.
    pub output: String,
    /// What the CLI reported about its run (empty for "command").
    pub usage: AgentUsage,
    /// Why the run failed; `None` on success.
    pub error: Option<AgentError>,
}

/// How the process ended, as the parsers see it.
#[derive(Debug, Clone, Default)]
pub struct Exit {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The last non-empty line the agent wrote to stderr: usage errors of
    /// the CLIs end up there.
    pub stderr_tail: String,
}

/// What a parser concluded once the process ended.
#[derive(Debug, Default)]
pub struct Finished {
    pub summary: String,
    /// The whole answer, when it is more than the summary.
    pub output: Option<String>,
    pub usage: AgentUsage,
    pub error: Option<AgentError>,
}

/// Turns one kind's stdout into log lines and its final report into a
/// [`Finished`].
pub trait StreamParser: Send {
    /// Log lines (stream, text) for one line of the agent's stdout.
    fn line(&mut self, line: &str) -> Vec<(&'static str, String)>;
    /// The outcome, given how the process ended.
    fn finish(&mut self, exit: &Exit) -> Finished;
}

impl Agent {
    /// Validates `spec` and builds the invocation; `prompt` becomes an
    /// argument of the CLI adapters.
    ///
    /// `resume_session` (empty: none) is the CLI session to continue, where
    /// the kind can; an id that is not [`valid_session_id`] is not passed
    /// on, and the log says so.
    pub fn from_spec(
        spec: &AgentSpec,
        prompt: &str,
        resume_session: &str,
        config: &AgentConfig,
    ) -> Result<Self, AgentError> {
        let kind = AgentKind::parse(&spec.kind)
            .ok_or_else(|| AgentError::UnknownKind(spec.kind.clone()))?;
        let mut notes = Vec::new();
        let resume = match resume_session {
            "" => None,
            id if valid_session_id(id) => Some(id),
            id => {
                notes.push(format!(
                    "resume_session {:?} is not a valid session id; starting a new session",
                    clip(id, 64)
                ));
                None
            }
        };
        let argv = match kind {
            AgentKind::Command => {
                if resume.is_some() {
                    notes.push(
                        "the command agent has no session to resume; resume_session ignored"
                            .to_owned(),
                    );
                }
                command::argv(spec)?
            }
            AgentKind::ClaudeCode => claude::argv(spec, prompt, resume, config, &mut notes)?,
            AgentKind::GeminiCli => gemini::argv(spec, prompt, resume, config, &mut notes)?,
            AgentKind::CodexCli => codex::argv(spec, prompt, resume, config, &mut notes)?,
        };
        let timeout = if spec.timeout_secs > 0 {
            Duration::from_secs(spec.timeout_secs.into())
        } else {
            config.default_timeout
        };
        Ok(Self {
            kind,
            argv,
            timeout,
            notes,
            env: config.env.clone(),
            log_quota_bytes: config.log_quota_bytes,
        })
    }

    /// Runs the agent to its end (or its timeout, or `cancel`), sending its
    /// output to `logs`.
    pub async fn run(
        &self,
        inv: &Invocation,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> AgentOutput {
        process::run(self, inv, logs, cancel).await
    }

    /// The argv as shown in the log: the prompt is left out, it is long and
    /// already known (also as `--prompt=<prompt>`).
    pub fn display(&self, prompt: &str) -> String {
        self.argv
            .iter()
            .map(|a| {
                let option = a
                    .strip_suffix(prompt)
                    .filter(|o| !prompt.is_empty() && o.starts_with("--") && o.ends_with('='));
                if !prompt.is_empty() && a == prompt {
                    "<prompt>".to_owned()
                } else if let Some(option) = option {
                    format!("{option}<prompt>")
                } else if a.is_empty() || a.contains(char::is_whitespace) {
                    format!("{a:?}")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The longest session id passed to a CLI.
pub const MAX_SESSION_ID: usize = 128;

/// Whether `id` may be passed to a CLI as the session to resume: ASCII
/// letters, digits, `-` and `_`, at most [`MAX_SESSION_ID`] bytes, and not
/// starting with `-`, so it can never read as a flag.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SESSION_ID
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A non-empty option of the spec.
fn option<'a>(spec: &'a AgentSpec, name: &str) -> Option<&'a str> {
    spec.options
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// Notes options this kind has no use for, so they are not silently lost.
fn note_unused(spec: &AgentSpec, kind: &str, used: &[&str], notes: &mut Vec<String>) {
    let mut unused: Vec<&str> = spec
        .options
        .keys()
        .map(String::as_str)
        .filter(|k| !used.contains(k))
        .collect();
    unused.sort_unstable();
    for name in unused {
        notes.push(format!("option {name:?} is not used by {kind}; ignored"));
    }
}

/// A list option: a JSON array of strings (as the REST layer stores it) or
/// a comma-separated list.
fn list_option(spec: &AgentSpec, name: &str) -> Result<Vec<String>, AgentError> {
    let Some(raw) = option(spec, name) else {
        return Ok(Vec::new());
    };
    let items: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw).map_err(|e| AgentError::InvalidOption {
            name: name.to_owned(),
            reason: format!("not a JSON array of strings: {e}"),
        })?
    } else {
        raw.split(',').map(str::to_owned).collect()
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Parses a line of a JSON stream; `None` for anything that is not a JSON
/// object (such lines are logged as they are).
fn json_object(line: &str) -> Option<Value> {
    if !line.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Value>(line)
        .ok()
        .filter(Value::is_object)
}

/// `v[key]` as a string ("" when missing).
fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `v[key]` as a count (0 when missing).
fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A tool call's input in a few words: the file or command it is about.
fn tool_input_summary(input: &Value) -> String {
    for key in [
        "file_path",
        "path",
        "absolute_path",
        "command",
        "pattern",
        "url",
        "query",
    ] {
        if let Some(value) = input.get(key).and_then(Value::as_str) {
            return clip(value, 160);
        }
    }
    match input {
        Value::Null => String::new(),
        Value::Object(map) if map.is_empty() => String::new(),
        other => clip(&other.to_string(), 160),
    }
}

/// Tool names remembered per run to name their results; a stream that
/// never ends cannot grow the map past this.
const MAX_TOOLS: usize = 4096;

/// Remembers a tool call's name by its id, within bounds.
fn remember_tool(tools: &mut std::collections::HashMap<String, String>, id: &str, name: &str) {
    if tools.len() >= MAX_TOOLS {
        tools.clear();
    }
    tools.insert(truncated(id, 256), truncated(name, 256));
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Drops the front of `text` so that at most about `max` bytes remain.
fn keep_tail(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.drain(..start);
}

/// Log lines for a block of text, one per line.
fn text_lines(prefix: &str, text: &str) -> Vec<(&'static str, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| ("agent", format!("{prefix}{l}")))
        .collect()
}

/// At most `max` characters of `text`, on one line.
fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// " (stderr: …)" when the agent left something on stderr.
fn stderr_hint(exit: &Exit) -> String {
    if exit.stderr_tail.is_empty() {
        String::new()
    } else {
        format!(": {}", clip(&exit.stderr_tail, 300))
    }
}

/// The usual failure when a CLI exits non-zero without a reason of its own.
fn exit_failure(kind: &str, exit: &Exit) -> AgentError {
    match (exit.code, exit.signal) {
        (Some(code), _) => AgentError::Reported(format!(
            "{kind} exited with code {code}{}",
            stderr_hint(exit)
        )),
        (None, signal) => AgentError::Signal(signal.unwrap_or_default()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_executables() {
        assert_eq!(AgentKind::parse("claude-code"), Some(AgentKind::ClaudeCode));
        assert_eq!(AgentKind::parse("gemini"), None);
        assert!(find_executable("sh").is_some());
        assert!(find_executable("/bin/sh").is_some());
        assert!(find_executable("no-such-program-aida").is_none());
        assert!(find_executable("/nonexistent/claude").is_none());
        let config = AgentConfig {
            claude_path: "/bin/sh".into(),
            gemini_path: "/nonexistent/gemini".into(),
            codex_path: "no-such-program-aida".into(),
            ..AgentConfig::default()
        };
        assert_eq!(config.available_kinds(), vec!["command", "claude-code"]);
    }

    #[test]
    fn session_ids_are_plain_words() {
        for ok in ["9a3c-1", "0199a213-81c0-7800-8aa1-bbab2a035a53", "a_b", "x"] {
            assert!(valid_session_id(ok), "{ok}");
        }
        let long = "a".repeat(MAX_SESSION_ID + 1);
        for bad in [
            "",
            "-r",
            "--yolo",
            "a b",
            "a=b",
            "a/b",
            "é",
            "a\n",
            long.as_str(),
        ] {
            assert!(!valid_session_id(bad), "{bad:?}");
        }
        assert!(valid_session_id(&"a".repeat(MAX_SESSION_ID)));
        let spec = AgentSpec {
            kind: "command".into(),
            command: vec!["true".into()],
            ..Default::default()
        };
        let agent = Agent::from_spec(&spec, "p", "s-1", &AgentConfig::default()).unwrap();
        assert_eq!(agent.argv, ["true"]);
        assert_eq!(
            agent.notes,
            ["the command agent has no session to resume; resume_session ignored"]
        );
    }

    #[test]
    fn timeout_and_display() {
        let spec = AgentSpec {
            kind: "command".into(),
            command: vec!["echo".into(), "two words".into()],
            timeout_secs: 7,
            ..Default::default()
        };
        let agent = Agent::from_spec(&spec, "p", "", &AgentConfig::default()).unwrap();
        assert_eq!(agent.timeout, Duration::from_secs(7));
        assert_eq!(agent.display("p"), "echo \"two words\"");
        // No timeout in the spec: the worker's default, never none.
        let config = AgentConfig {
            default_timeout: Duration::from_secs(42),
            ..AgentConfig::default()
        };
        let spec = AgentSpec {
            timeout_secs: 0,
            ..spec
        };
        assert_eq!(
            Agent::from_spec(&spec, "p", "", &config).unwrap().timeout,
            Duration::from_secs(42)
        );
        let spec = AgentSpec {
            kind: "gemini-cli".into(),
            ..Default::default()
        };
        let agent = Agent::from_spec(&spec, "a long prompt", "", &AgentConfig::default()).unwrap();
        assert!(
            agent
                .display("a long prompt")
                .contains(" --prompt=<prompt> "),
            "{}",
            agent.display("a long prompt")
        );
        let spec = AgentSpec {
            kind: "nope".into(),
            ..Default::default()
        };
        assert!(matches!(
            Agent::from_spec(&spec, "p", "", &AgentConfig::default()),
            Err(AgentError::UnknownKind(k)) if k == "nope"
        ));
    }
}
