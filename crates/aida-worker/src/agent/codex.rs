//! The "codex-cli" adapter: Codex CLI's non-interactive mode,
//! `codex -a never exec --json -s workspace-write [--model=MODEL] -- <prompt>`,
//! or, continuing an earlier session,
//! `codex -a never exec --json -s workspace-write [--model=MODEL] resume
//! <SESSION_ID> -- <prompt>`.
//!
//! The prompt is positional, after `--` (clap takes everything after it as
//! arguments); the model is glued to `--model=`, since `-m --yolo` would
//! otherwise turn on codex's `--yolo` (its alias of
//! `--dangerously-bypass-approvals-and-sandbox`).
//!
//! `-a/--ask-for-approval` is an option of `codex` itself: `codex exec`
//! rejects it ("unexpected argument '-a' found", openai/codex#13614), so it
//! goes before the subcommand. The deprecated `--full-auto` is not used.
//!
//! `resume` is a subcommand of `exec` (codex-rs `exec/src/cli.rs`:
//! `codex exec resume [SESSION_ID] [PROMPT]`, or `--last`). `exec`'s own
//! options go before it: `-s/--sandbox` belongs to `exec` only, while
//! `--json` and `--model` would be accepted on either side. The session id
//! is checked to be a plain word, and the prompt still follows `--`. The
//! resumed thread's `thread.started` event carries the same id.
//!
//! With `--json`, codex prints one JSON event per line (codex-rs
//! `exec_events.rs`): `thread.started` (`thread_id`), `turn.started`,
//! `item.started` / `item.updated` / `item.completed` (`item` with `id`,
//! `type` among `agent_message`, `reasoning`, `command_execution`,
//! `file_change`, `mcp_tool_call`, `web_search`, `todo_list`, `error`),
//! `turn.completed` (`usage`: `input_tokens`, `cached_input_tokens`,
//! `output_tokens`), `turn.failed` (`error.message`) and `error`
//! (`message`). It reports no cost and has no turn-limit flag.

use aida_proto::common::{AgentSpec, AgentUsage};
use serde_json::Value;

use super::{
    AgentConfig, AgentError, CODEX_CLI, Exit, Finished, StreamParser, clip, exit_failure,
    json_object, note_unused, str_at, text_lines, u64_at,
};

pub(super) fn argv(
    spec: &AgentSpec,
    prompt: &str,
    resume: Option<&str>,
    config: &AgentConfig,
    notes: &mut Vec<String>,
) -> Result<Vec<String>, AgentError> {
    let mut argv: Vec<String> = [
        config.codex_path.as_str(),
        "-a",
        "never",
        "exec",
        "--json",
        "-s",
        "workspace-write",
    ]
    .map(str::to_owned)
    .to_vec();
    if !spec.model.trim().is_empty() {
        argv.push(format!("--model={}", spec.model.trim()));
    }
    if let Some(session) = resume {
        argv.extend(["resume".to_owned(), session.to_owned()]);
    }
    // The prompt may start with a dash.
    argv.extend(["--".into(), prompt.to_owned()]);
    if spec.max_turns > 0 {
        notes.push(format!(
            "max_turns {} cannot be applied: codex exec has no turn-limit flag",
            spec.max_turns
        ));
    }
    if spec.max_budget_usd > 0.0 {
        notes.push(format!(
            "max_budget_usd {} cannot be enforced: codex-cli does not report cost",
            spec.max_budget_usd
        ));
    }
    note_unused(spec, CODEX_CLI, &[], notes);
    Ok(argv)
}

#[derive(Debug, Default)]
pub struct CodexParser {
    usage: AgentUsage,
    /// The last agent message: the run's summary.
    last_message: String,
    /// Why the turn failed (`turn.failed` or a stream `error`).
    failure: Option<String>,
}

impl StreamParser for CodexParser {
    fn line(&mut self, line: &str) -> Vec<(&'static str, String)> {
        let Some(event) = json_object(line) else {
            return vec![("stdout", line.to_owned())];
        };
        match str_at(&event, "type") {
            "thread.started" => {
                self.usage.session_id = str_at(&event, "thread_id").to_owned();
                vec![(
                    "agent",
                    format!("codex-cli thread {} started", self.usage.session_id),
                )]
            }
            "turn.completed" => {
                let usage = event.get("usage").cloned().unwrap_or(Value::Null);
                // cached_input_tokens is part of input_tokens.
                self.usage.input_tokens += u64_at(&usage, "input_tokens");
                self.usage.output_tokens += u64_at(&usage, "output_tokens");
                self.usage.turns += 1;
                vec![(
                    "agent",
                    format!(
                        "turn completed: {} input ({} cached) / {} output tokens",
                        u64_at(&usage, "input_tokens"),
                        u64_at(&usage, "cached_input_tokens"),
                        u64_at(&usage, "output_tokens")
                    ),
                )]
            }
            "turn.failed" => {
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let line = format!("turn failed: {message}");
                self.failure = Some(message);
                vec![("agent", line)]
            }
            "error" => {
                let message = str_at(&event, "message").to_owned();
                let line = format!("error: {message}");
                self.failure.get_or_insert(message);
                vec![("agent", line)]
            }
            "item.started" => match event.get("item") {
                Some(item) if str_at(item, "type") == "command_execution" => {
                    vec![(
                        "agent",
                        format!("→ $ {}", clip(str_at(item, "command"), 200)),
                    )]
                }
                _ => Vec::new(),
            },
            "item.completed" => event
                .get("item")
                .map(|item| self.item(item))
                .unwrap_or_default(),
            // turn.started, item.updated and later additions: no line.
            _ => Vec::new(),
        }
    }

    fn finish(&mut self, exit: &Exit) -> Finished {
        let error = match (&self.failure, exit.code) {
            (Some(message), _) => Some(AgentError::Reported(format!(
                "codex-cli failed: {}",
                clip(message, 300)
            ))),
            (None, Some(0)) if self.usage.turns == 0 => Some(AgentError::Reported(
                "codex-cli ended without completing a turn".into(),
            )),
            (None, Some(0)) => None,
            (None, _) => Some(exit_failure(CODEX_CLI, exit)),
        };
        Finished {
            output: None,
            summary: self.last_message.clone(),
            usage: self.usage.clone(),
            error,
        }
    }
}

impl CodexParser {
    fn item(&mut self, item: &Value) -> Vec<(&'static str, String)> {
        match str_at(item, "type") {
            "agent_message" => {
                let text = str_at(item, "text");
                self.last_message = text.to_owned();
                text_lines("", text)
            }
            "reasoning" => vec![(
                "agent",
                format!("thinking: {}", clip(str_at(item, "text"), 200)),
            )],
            "command_execution" => {
                let code = item
                    .get("exit_code")
                    .and_then(Value::as_i64)
                    .map(|c| format!("exit {c}"))
                    .unwrap_or_else(|| str_at(item, "status").to_owned());
                vec![(
                    "agent",
                    format!(
                        "← $ {} ({code}): {}",
                        clip(str_at(item, "command"), 120),
                        clip(str_at(item, "aggregated_output"), 160)
                    )
                    .trim_end_matches([' ', ':'])
                    .to_owned(),
                )]
            }
            "file_change" => {
                let changes: Vec<String> = item
                    .get("changes")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|c| format!("{} {}", str_at(c, "kind"), str_at(c, "path")))
                    .collect();
                vec![(
                    "agent",
                    format!("files {}: {}", str_at(item, "status"), changes.join(", ")),
                )]
            }
            "mcp_tool_call" => vec![(
                "agent",
                format!(
                    "→ {}.{} {}",
                    str_at(item, "server"),
                    str_at(item, "tool"),
                    str_at(item, "status")
                ),
            )],
            "web_search" => vec![("agent", format!("web search: {}", str_at(item, "query")))],
            "error" => vec![("agent", format!("warning: {}", str_at(item, "message")))],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run as `codex exec --json` prints it (shapes from codex-rs
    /// `exec/src/exec_events.rs`).
    const STREAM: &[&str] = &[
        r#"{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}"#,
        r#"{"type":"turn.started"}"#,
        r#"{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Planning the edit**"}}"#,
        r#"{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","exit_code":null,"status":"in_progress"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"README.md\n","exit_code":0,"status":"completed"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":[{"path":"a.txt","kind":"add"}],"status":"completed"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Added a.txt."}}"#,
        r#"{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}"#,
    ];

    #[test]
    fn parses_a_successful_run() {
        let mut parser = CodexParser::default();
        let out: Vec<String> = STREAM
            .iter()
            .flat_map(|l| parser.line(l))
            .map(|(_, l)| l)
            .collect();
        assert_eq!(
            out,
            vec![
                "codex-cli thread 0199a213-81c0-7800-8aa1-bbab2a035a53 started",
                "thinking: **Planning the edit**",
                "→ $ bash -lc ls",
                "← $ bash -lc ls (exit 0): README.md",
                "files completed: add a.txt",
                "Added a.txt.",
                "turn completed: 24763 input (24448 cached) / 122 output tokens",
            ]
        );
        let done = parser.finish(&Exit {
            code: Some(0),
            ..Default::default()
        });
        assert!(done.error.is_none(), "{:?}", done.error);
        assert_eq!(done.summary, "Added a.txt.");
        assert_eq!(
            done.usage.session_id,
            "0199a213-81c0-7800-8aa1-bbab2a035a53"
        );
        assert_eq!(done.usage.turns, 1);
        assert_eq!(done.usage.input_tokens, 24763);
        assert_eq!(done.usage.output_tokens, 122);
    }

    #[test]
    fn reports_failed_turns() {
        let mut parser = CodexParser::default();
        parser.line(r#"{"type":"turn.failed","error":{"message":"stream disconnected"}}"#);
        let done = parser.finish(&Exit {
            code: Some(1),
            ..Default::default()
        });
        assert_eq!(
            done.error.unwrap().to_string(),
            "codex-cli failed: stream disconnected"
        );
    }

    #[test]
    fn builds_the_invocation() {
        let spec = AgentSpec {
            kind: "codex-cli".into(),
            model: "gpt-5-codex".into(),
            max_budget_usd: 2.0,
            ..Default::default()
        };
        let mut notes = Vec::new();
        let argv = argv(&spec, "-x", None, &AgentConfig::default(), &mut notes).unwrap();
        assert_eq!(
            argv,
            [
                "codex",
                "-a",
                "never",
                "exec",
                "--json",
                "-s",
                "workspace-write",
                "--model=gpt-5-codex",
                "--",
                "-x"
            ]
        );
        assert_eq!(
            notes,
            ["max_budget_usd 2 cannot be enforced: codex-cli does not report cost"]
        );
        let argv = super::argv(
            &spec,
            "--last",
            Some("0199a213-81c0"),
            &AgentConfig::default(),
            &mut notes,
        )
        .unwrap();
        assert_eq!(
            &argv[3..],
            [
                "exec",
                "--json",
                "-s",
                "workspace-write",
                "--model=gpt-5-codex",
                "resume",
                "0199a213-81c0",
                "--",
                "--last"
            ]
        );
    }
}
