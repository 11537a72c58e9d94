//! Running a process in a worktree, for every agent kind and for the
//! worktree's set-up command: the program is executed directly (never
//! through a shell) in its own process group, with an allow-listed
//! environment; its stdout goes through a [`StreamParser`] and its stderr is
//! streamed as is (or through the parser too). A timeout or cancellation
//! kills the whole process group (SIGTERM, then SIGKILL after a grace
//! period).
//!
//! Output is bounded whatever the process prints: a line is cut at
//! [`MAX_LINE`] bytes (the rest of it is read and dropped, never buffered),
//! and once the run's lines add up to its quota one "log truncated" line is
//! logged and nothing more; the pipes are still drained so the process
//! never blocks on them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aida_proto::common::LogLine;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::env::{AgentEnv, run_variable_allowed};
use super::{Agent, AgentError, AgentKind, AgentOutput, Exit, Invocation, StreamParser, log_line};

/// The longest output line kept, in bytes; longer ones are cut and marked.
pub const MAX_LINE: usize = 64 * 1024;
/// Appended to a line that was cut.
pub const CUT_MARKER: &str = " [line cut at 64 KiB]";
/// How much of a pipe is read at once.
const READ_BUFFER: usize = 64 * 1024;

/// How long a stopped process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long an output reader may wait on a pipe that gives nothing after
/// the process exited, in case a descendant outside the process group still
/// holds it open. A reader still taking lines in (or handing them on) is
/// never cut off: what the agent printed is all delivered.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The most a reader may go on after the process exited, lines or not: an
/// orphan printing forever does not hold the run.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

pub(crate) type SharedParser = Arc<Mutex<Box<dyn StreamParser>>>;

/// Why a process was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Cancelled,
    TimedOut(u32),
}

/// One process to run to its end.
pub(crate) struct Spawn<'a> {
    /// What it is, for the worker's own log ("agent", "set-up command").
    pub what: &'static str,
    pub argv: &'a [String],
    pub cwd: &'a Path,
    /// Its whole environment: nothing else is inherited.
    pub env: BTreeMap<String, OsString>,
    /// Written to its stdin; `None`: stdin is `/dev/null`.
    pub stdin: Option<String>,
    pub timeout: Duration,
    /// Bytes of output lines it may log.
    pub log_quota_bytes: u64,
    pub parser: Box<dyn StreamParser>,
    /// Whether stderr goes through the parser too, rather than being logged
    /// as "stderr".
    pub parse_stderr: bool,
}

/// How a process ended.
pub(crate) enum Ended {
    /// It could not be started.
    NotStarted(std::io::Error),
    /// Waiting for it failed.
    WaitFailed(std::io::Error),
    Exited(Exit),
    /// A timeout or cancellation stopped it; the last line of its stderr.
    Stopped {
        stop: Stop,
        stderr_tail: String,
    },
}

/// The environment of a process run for `inv`: the worker's variables the
/// allow-list lets `kind` inherit, then the set-up's variables, then the
/// run's own `AIDA_*` variables, then AIDA's fixed ones (each later one
/// wins).
pub(crate) fn environment(
    allow: &AgentEnv,
    kind: AgentKind,
    inv: &Invocation,
) -> BTreeMap<String, OsString> {
    let mut env: BTreeMap<String, OsString> = allow
        .select(kind, std::env::vars_os())
        .into_iter()
        .collect();
    env.extend(
        inv.setup_env
            .iter()
            .map(|(k, v)| (k.clone(), OsString::from(v))),
    );
    let (run_vars, refused): (Vec<_>, Vec<_>) =
        inv.env.iter().partition(|(k, _)| run_variable_allowed(k));
    if !refused.is_empty() {
        let refused: Vec<&str> = refused.iter().map(|(k, _)| k.as_str()).collect();
        tracing::warn!(variables = %refused.join(","), "run variables outside AIDA_* not set");
    }
    env.extend(
        run_vars
            .into_iter()
            .map(|(k, v)| (k.clone(), OsString::from(v))),
    );
    for (name, value) in [
        ("AIDA_PROMPT", OsString::from(&inv.prompt)),
        ("AIDA_TASK_ID", OsString::from(&inv.task_id)),
        ("AIDA_SUBTASK_NAME", OsString::from(&inv.subtask)),
        ("AIDA_BRANCH", OsString::from(&inv.branch)),
        ("AIDA_WORKTREE", inv.worktree.clone().into_os_string()),
    ] {
        env.insert(name.to_owned(), value);
    }
    env
}

/// The names of an environment, for the log (values may be secrets).
pub(crate) fn names(env: &BTreeMap<String, OsString>) -> String {
    env.keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
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
    let env = environment(&agent.env, agent.kind, inv);
    tracing::info!(kind = agent.kind.name(), variables = %names(&env), "agent environment");
    let _ = logs
        .send(log_line(
            "aida",
            format!("agent environment: {}", names(&env)),
        ))
        .await;
    // The command agent reads its prompt on stdin; the CLIs get it as an
    // argument, and codex would append piped stdin to it.
    let stdin = (agent.kind == AgentKind::Command).then(|| inv.prompt.clone());
    let (ended, parser) = run_process(
        Spawn {
            what: "agent",
            argv: &agent.argv,
            cwd: &inv.worktree,
            env,
            stdin,
            timeout: agent.timeout,
            log_quota_bytes: agent.log_quota_bytes,
            parser: agent.kind.parser(),
            parse_stderr: false,
        },
        logs,
        cancel,
    )
    .await;
    match ended {
        Ended::NotStarted(source) => AgentOutput {
            exit_code: -1,
            error: Some(AgentError::Spawn {
                program: agent.argv[0].clone(),
                source,
            }),
            ..Default::default()
        },
        Ended::WaitFailed(e) => AgentOutput {
            exit_code: -1,
            error: Some(AgentError::Wait(e)),
            ..Default::default()
        },
        Ended::Stopped { stop, stderr_tail } => {
            let exit = Exit {
                stderr_tail,
                ..Default::default()
            };
            let finished = lock(&parser).finish(&exit);
            AgentOutput {
                exit_code: -1,
                output: finished.output.unwrap_or_else(|| finished.summary.clone()),
                summary: finished.summary,
                usage: finished.usage,
                error: Some(match stop {
                    Stop::Cancelled => AgentError::Cancelled,
                    Stop::TimedOut(secs) => AgentError::TimedOut(secs),
                }),
            }
        }
        Ended::Exited(exit) => {
            let finished = lock(&parser).finish(&exit);
            AgentOutput {
                exit_code: exit.code.unwrap_or(-1),
                output: finished.output.unwrap_or_else(|| finished.summary.clone()),
                summary: finished.summary,
                usage: finished.usage,
                error: finished.error,
            }
        }
    }
}

/// Runs `spawn` to its end (or its timeout, or `cancel`), sending its
/// output lines to `logs`. The parser comes back for the caller's
/// conclusions.
pub(crate) async fn run_process(
    spawn: Spawn<'_>,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> (Ended, SharedParser) {
    let parser: SharedParser = Arc::new(Mutex::new(spawn.parser));
    let what = spawn.what;
    let program = &spawn.argv[0];
    let spawned = Command::new(program)
        .args(&spawn.argv[1..])
        .current_dir(spawn.cwd)
        // Nothing of the worker's environment but what the caller chose.
        .env_clear()
        .envs(&spawn.env)
        .stdin(if spawn.stdin.is_some() {
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
        Err(source) => return (Ended::NotStarted(source), parser),
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    tracing::info!(what, program = %program, pid = ?pgid, cwd = %spawn.cwd.display(), "process started");

    // Written from its own task: a process that never reads stdin must not
    // block us, and a closed pipe is not an error.
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), spawn.stdin) {
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let stderr_tail = Arc::new(Mutex::new(String::new()));
    let quota = Arc::new(LogQuota::new(spawn.log_quota_bytes));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let sink = Sink::Parsed(parser.clone());
        let progress = Arc::new(ReadProgress::default());
        let task = tokio::spawn(read_lines(
            out,
            sink,
            quota.clone(),
            logs.clone(),
            progress.clone(),
        ));
        readers.push(Reader { task, progress });
    }
    if let Some(err) = child.stderr.take() {
        let sink = if spawn.parse_stderr {
            Sink::Parsed(parser.clone())
        } else {
            Sink::Raw(stderr_tail.clone())
        };
        let progress = Arc::new(ReadProgress::default());
        let task = tokio::spawn(read_lines(
            err,
            sink,
            quota.clone(),
            logs.clone(),
            progress.clone(),
        ));
        readers.push(Reader { task, progress });
    }

    let timeout_secs = u32::try_from(spawn.timeout.as_secs()).unwrap_or(u32::MAX);
    let ended = tokio::select! {
        status = child.wait() => Ok(status),
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        _ = tokio::time::sleep(spawn.timeout) => Err(Stop::TimedOut(timeout_secs)),
    };
    let status = match ended {
        Ok(status) => {
            // Whatever it left running in its group is killed too: its
            // worktree is about to go away and it would hold the pipes.
            kill_group(pgid);
            status
        }
        Err(stop) => {
            match &stop {
                Stop::Cancelled => tracing::info!(what, pid = ?pgid, "cancelling process"),
                Stop::TimedOut(secs) => {
                    tracing::info!(what, pid = ?pgid, secs, "process timed out")
                }
            }
            terminate(&mut child, pgid).await;
            drain(readers).await;
            let stopped = Ended::Stopped {
                stop,
                stderr_tail: take(&stderr_tail),
            };
            return (stopped, parser);
        }
    };
    drain(readers).await;
    let status = match status {
        Ok(status) => status,
        Err(e) => return (Ended::WaitFailed(e), parser),
    };
    use std::os::unix::process::ExitStatusExt;
    let exit = Exit {
        code: status.code(),
        signal: status.signal(),
        stderr_tail: take(&stderr_tail),
    };
    (Ended::Exited(exit), parser)
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
        tracing::warn!(pid = ?pgid, "process ignored SIGTERM, killing it");
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

/// One output pipe's reader, and how far it got.
struct Reader {
    task: tokio::task::JoinHandle<()>,
    progress: Arc<ReadProgress>,
}

/// What a reader did lately: lines taken, and whether it now waits on the
/// pipe (rather than on handing a line on).
#[derive(Default)]
struct ReadProgress {
    lines: AtomicU64,
    on_pipe: AtomicBool,
}

/// Waits for each reader to reach the end of its pipe. One that waited a
/// whole [`DRAIN_GRACE`] on its pipe with no line coming is stopped.
async fn drain(readers: Vec<Reader>) {
    let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
    for Reader { mut task, progress } in readers {
        let mut seen = progress.lines.load(Ordering::Relaxed);
        loop {
            if tokio::time::timeout(DRAIN_GRACE, &mut task).await.is_ok() {
                break;
            }
            let now = progress.lines.load(Ordering::Relaxed);
            let idle = now == seen && progress.on_pipe.load(Ordering::Relaxed);
            if idle || tokio::time::Instant::now() >= limit {
                if !idle {
                    tracing::warn!(
                        limit_secs = DRAIN_LIMIT.as_secs(),
                        "output still coming long after the process exited; stopped reading it"
                    );
                }
                task.abort();
                break;
            }
            seen = now;
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
    /// Through the parser (stdout, and stderr when asked).
    Parsed(SharedParser),
    /// As they are on "stderr", remembering the last non-empty one.
    Raw(Arc<Mutex<String>>),
}

/// A run's log budget, shared by its stdout and stderr.
struct LogQuota {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

/// What to do with one log line.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Send,
    /// The first line past the quota: say that the log ends here.
    Truncate,
    Drop,
}

impl LogQuota {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    fn admit(&self, bytes: usize) -> Admit {
        if self.exceeded.load(Ordering::Relaxed) {
            return Admit::Drop;
        }
        let bytes = bytes as u64;
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) <= self.limit {
            Admit::Send
        } else if !self.exceeded.swap(true, Ordering::Relaxed) {
            // Exactly one reader gets here, however the two race.
            Admit::Truncate
        } else {
            Admit::Drop
        }
    }

    fn notice(&self) -> String {
        format!(
            "log truncated: this run printed more than {} bytes; the rest is not kept",
            self.limit
        )
    }
}

/// One line of a pipe, at most [`MAX_LINE`] bytes of it.
struct Line {
    bytes: Vec<u8>,
    /// Whether the agent's line was longer.
    cut: bool,
}

/// Reads lines of at most [`MAX_LINE`] bytes: the rest of a longer line is
/// read and dropped, so memory stays bounded whatever the agent prints
/// (2 GB without a newline included). Returns `None` at the end.
struct LineReader<R> {
    reader: BufReader<R>,
    /// Inside a line that was cut: drop bytes up to the next newline.
    skipping: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(pipe: R) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUFFER, pipe),
            skipping: false,
        }
    }

    async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut line = Vec::new();
        loop {
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                // The end; a last line without a newline still counts.
                return Ok((!line.is_empty()).then_some(Line {
                    bytes: line,
                    cut: false,
                }));
            }
            // `contains` runs the standard library's optimized memchr; only
            // a chunk with a newline is searched byte by byte.
            let newline = if chunk.contains(&b'\n') {
                chunk.iter().position(|&b| b == b'\n')
            } else {
                None
            };
            let data = &chunk[..newline.unwrap_or(chunk.len())];
            let used = data.len() + usize::from(newline.is_some());
            if self.skipping {
                self.skipping = newline.is_none();
                self.reader.consume(used);
                continue;
            }
            let room = MAX_LINE - line.len();
            if data.len() > room {
                line.extend_from_slice(&data[..room]);
                self.skipping = newline.is_none();
                self.reader.consume(used);
                cut_at_char_boundary(&mut line);
                return Ok(Some(Line {
                    bytes: line,
                    cut: true,
                }));
            }
            line.extend_from_slice(data);
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(Some(Line {
                    bytes: line,
                    cut: false,
                }));
            }
        }
    }
}

/// Drops a UTF-8 sequence the cut left incomplete at the end, so the cut
/// line does not end in a replacement character.
fn cut_at_char_boundary(line: &mut Vec<u8>) {
    let len = line.len();
    for back in 1..=len.min(4) {
        let byte = line[len - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let needed = match byte {
            b if b & 0x80 == 0 => 1,
            b if b & 0xE0 == 0xC0 => 2,
            b if b & 0xF0 == 0xE0 => 3,
            b if b & 0xF8 == 0xF0 => 4,
            _ => return,
        };
        if needed > back {
            line.truncate(len - back);
        }
        return;
    }
}

async fn read_lines(
    pipe: impl AsyncRead + Unpin,
    sink: Sink,
    quota: Arc<LogQuota>,
    logs: mpsc::Sender<LogLine>,
    progress: Arc<ReadProgress>,
) {
    // Bytes, not `lines()`: an agent printing invalid UTF-8 must not stop
    // the reading (a full pipe would block it).
    let mut reader = LineReader::new(pipe);
    loop {
        progress.on_pipe.store(true, Ordering::Relaxed);
        let next = reader.next_line().await;
        progress.on_pipe.store(false, Ordering::Relaxed);
        progress.lines.fetch_add(1, Ordering::Relaxed);
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                let _ = logs
                    .send(log_line("aida", format!("cannot read process output: {e}")))
                    .await;
                break;
            }
        };
        let text = String::from_utf8_lossy(&line.bytes);
        let text = text.trim_end_matches(['\n', '\r']);
        // The parser sees every line, also past the quota: the final
        // report (usage, summary) comes last.
        let mut out = match &sink {
            Sink::Parsed(parser) => lock(parser).line(text),
            Sink::Raw(tail) => {
                if !text.trim().is_empty() {
                    *lock(tail) = text.to_owned();
                }
                vec![("stderr", text.to_owned())]
            }
        };
        if line.cut {
            tracing::debug!(max_bytes = MAX_LINE, "agent output line cut");
            match out.last_mut() {
                Some((_, last)) => last.push_str(CUT_MARKER),
                None => out.push(("stdout", CUT_MARKER.trim_start().to_owned())),
            }
        }
        for (stream, text) in out {
            match quota.admit(text.len()) {
                Admit::Send => {
                    let _ = logs.send(log_line(stream, text)).await;
                }
                Admit::Truncate => {
                    tracing::info!(limit = quota.limit, "agent log truncated at its quota");
                    let _ = logs.send(log_line("aida", quota.notice())).await;
                }
                Admit::Drop => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<(usize, bool)> {
        let mut reader = LineReader::new(input);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push((line.bytes.len(), line.cut));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_line_is_delivered_even_when_the_reader_is_slower_than_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let argv = ["seq".to_owned(), "1".to_owned(), "30000".to_owned()];
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), std::env::var_os("PATH").unwrap());
        let spawn = Spawn {
            what: "agent",
            argv: &argv,
            cwd: dir.path(),
            env,
            stdin: None,
            timeout: Duration::from_secs(60),
            log_quota_bytes: u64::MAX,
            parser: Box::new(super::super::command::CommandParser::default()),
            parse_stderr: false,
        };
        // Lines are taken slowly (as when the orchestrator is busy): `seq`
        // exits with a full pipe that takes longer than the grace to read.
        let (tx, mut rx) = mpsc::channel::<LogLine>(16);
        let reader = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(line) = rx.recv().await {
                lines.push(line.line);
                if lines.len() % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            lines
        });
        let (ended, _) = run_process(spawn, tx, CancellationToken::new()).await;
        assert!(matches!(ended, Ended::Exited(_)));
        let lines = reader.await.unwrap();
        assert_eq!(lines.len(), 30_000);
        assert_eq!(lines.last().map(String::as_str), Some("30000"));
    }

    #[tokio::test]
    async fn lines_are_cut_at_64_kib_and_the_rest_dropped() {
        let mut input = vec![b'x'; MAX_LINE];
        input.push(b'\n');
        input.extend(vec![b'y'; MAX_LINE + 1]);
        input.push(b'\n');
        input.extend(vec![b'z'; 3 * MAX_LINE]);
        input.extend(b"\nlast");
        assert_eq!(
            lines(&input).await,
            [
                (MAX_LINE, false),
                (MAX_LINE, true),
                (MAX_LINE, true),
                (4, false)
            ]
        );
        assert_eq!(
            lines(b"a\n\nb\n").await,
            [(1, false), (0, false), (1, false)]
        );
    }

    #[test]
    fn a_cut_never_leaves_half_a_character() {
        let mut line = "ab€".as_bytes().to_vec();
        line.truncate(4); // 'a', 'b' and the first byte of '€'
        cut_at_char_boundary(&mut line);
        assert_eq!(line, b"ab");
        let mut whole = "ab€".as_bytes().to_vec();
        cut_at_char_boundary(&mut whole);
        assert_eq!(whole, "ab€".as_bytes());
    }

    #[test]
    fn the_quota_admits_lines_up_to_its_limit_then_truncates_once() {
        let quota = LogQuota::new(10);
        assert_eq!(quota.admit(6), Admit::Send);
        assert_eq!(quota.admit(4), Admit::Send);
        assert_eq!(quota.admit(1), Admit::Truncate);
        assert_eq!(quota.admit(0), Admit::Drop);
        assert_eq!(quota.admit(5), Admit::Drop);
    }
}
