//! The "gemini-cli" adapter: Gemini CLI in headless mode,
//! `gemini --prompt=<prompt> --output-format stream-json
//! --approval-mode=<mode> [--model=MODEL] [--resume=SESSION]`.
//!
//! `-p/--prompt` takes a value; glued to it with `=` (yargs, which Gemini
//! CLI parses its flags with, takes whatever follows the `=` as the value)
//! a prompt or model name that starts with a dash (`--yolo`) stays a value.
//! `-r/--resume` takes "latest", a session's index or its id; AIDA passes
//! the id, and the `init` event reports the same session id.
//!
//! Its stream-json output is one JSON event per line, each with `type` and
//! `timestamp`: `init` (`session_id`, `model`), `message` (`role`,
//! `content`, `delta` for streamed chunks), `tool_use` (`tool_name`,
//! `tool_id`, `parameters`), `tool_result` (`tool_id`, `status`, `output`
//! or `error`), `error` (`severity`, `message`) and a final `result`
//! (`status`, optional `error`, `stats` with `input_tokens`,
//! `output_tokens`, `total_tokens`, `tool_calls`, ...). Exit codes: 0
//! success, 1 general or API error, 42 input error, 53 turn limit exceeded.
//!
//! Gemini CLI has no flag for a turn limit (its own session limit ends a run
//! with code 53) and reports no cost, so `max_turns` and `max_budget_usd`
//! cannot be applied; the run's log says so.

use std::collections::HashMap;

use aida_proto::common::{AgentSpec, AgentUsage};
use serde_json::Value;

use super::{
    AgentConfig, AgentError, Exit, Finished, GEMINI_CLI, StreamParser, clip, json_object,
    keep_tail, note_unused, option, remember_tool, stderr_hint, str_at, text_lines,
    tool_input_summary, u64_at,
};

/// Edits without asking, nothing more; `yolo` needs the operator's consent.
const DEFAULT_APPROVAL_MODE: &str = "auto_edit";
const YOLO: &str = "yolo";

pub(super) fn argv(
    spec: &AgentSpec,
    prompt: &str,
    resume: Option<&str>,
    config: &AgentConfig,
    notes: &mut Vec<String>,
) -> Result<Vec<String>, AgentError> {
    let mode = option(spec, "approval_mode").unwrap_or(DEFAULT_APPROVAL_MODE);
    if mode == YOLO && !config.allow_bypass_permissions {
        return Err(AgentError::BypassNotAllowed {
            kind: GEMINI_CLI,
            mode: mode.to_owned(),
        });
    }
    let mut argv: Vec<String> = vec![
        config.gemini_path.clone(),
        format!("--prompt={prompt}"),
        "--output-format".into(),
        "stream-json".into(),
        format!("--approval-mode={mode}"),
    ];
    if !spec.model.trim().is_empty() {
        argv.push(format!("--model={}", spec.model.trim()));
    }
    if let Some(session) = resume {
        argv.push(format!("--resume={session}"));
    }
    if spec.max_turns > 0 {
        notes.push(format!(
            "max_turns {} cannot be applied: gemini-cli has no turn-limit flag (its own session limit ends a run with exit code 53)",
            spec.max_turns
        ));
    }
    if spec.max_budget_usd > 0.0 {
        notes.push(format!(
            "max_budget_usd {} cannot be enforced: gemini-cli does not report cost",
            spec.max_budget_usd
        ));
    }
    note_unused(spec, GEMINI_CLI, &["approval_mode"], notes);
    Ok(argv)
}

#[derive(Debug, Default)]
pub struct GeminiParser {
    usage: AgentUsage,
    /// Streamed assistant text not yet logged (no newline seen yet).
    pending: String,
    /// Assistant text since the last tool call: the final message at the end.
    since_tool: String,
    /// `result.status` and its error message, once the result came.
    result: Option<(String, String)>,
    /// The last `error` event's message.
    last_error: String,
    tools: HashMap<String, String>,
}

impl StreamParser for GeminiParser {
    fn line(&mut self, line: &str) -> Vec<(&'static str, String)> {
        let Some(event) = json_object(line) else {
            return vec![("stdout", line.to_owned())];
        };
        let kind = str_at(&event, "type");
        if kind == "message" {
            return self.message(&event);
        }
        // Streamed text ends where anything else begins.
        let mut out = self.flush();
        match kind {
            "init" => {
                self.usage.session_id = str_at(&event, "session_id").to_owned();
                out.push((
                    "agent",
                    format!(
                        "gemini-cli session {} started (model {})",
                        self.usage.session_id,
                        str_at(&event, "model")
                    ),
                ));
            }
            "tool_use" => {
                let name = str_at(&event, "tool_name");
                remember_tool(&mut self.tools, str_at(&event, "tool_id"), name);
                self.since_tool.clear();
                let input = event
                    .get("parameters")
                    .map(tool_input_summary)
                    .unwrap_or_default();
                out.push(("agent", format!("→ {name} {input}").trim_end().to_owned()));
            }
            "tool_result" => {
                let name = self
                    .tools
                    .get(str_at(&event, "tool_id"))
                    .map(String::as_str)
                    .unwrap_or("tool");
                let line = if str_at(&event, "status") == "success" {
                    format!("← {name} ok: {}", clip(str_at(&event, "output"), 200))
                } else {
                    let message = event
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    format!("← {name} failed: {}", clip(message, 200))
                };
                out.push(("agent", line.trim_end_matches([' ', ':']).to_owned()));
            }
            "error" => {
                self.last_error = str_at(&event, "message").to_owned();
                let severity = match str_at(&event, "severity") {
                    "" => "error",
                    s => s,
                };
                out.push(("agent", format!("{severity}: {}", self.last_error)));
            }
            "result" => {
                let status = str_at(&event, "status").to_owned();
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let stats = event.get("stats").cloned().unwrap_or(Value::Null);
                self.usage.input_tokens = u64_at(&stats, "input_tokens");
                self.usage.output_tokens = u64_at(&stats, "output_tokens");
                let mut line = format!(
                    "result: {status}, {} input / {} output tokens, {} tool calls",
                    self.usage.input_tokens,
                    self.usage.output_tokens,
                    u64_at(&stats, "tool_calls")
                );
                if !message.is_empty() {
                    line.push_str(&format!(" ({message})"));
                }
                out.push(("agent", line));
                self.result = Some((status, message));
            }
            _ => {}
        }
        out
    }

    fn finish(&mut self, exit: &Exit) -> Finished {
        let summary = self.since_tool.trim().to_owned();
        let reason = self.reason(exit);
        let error = match exit.code {
            Some(0) => match &self.result {
                Some((status, _)) if status == "success" => None,
                Some((status, _)) => Some(format!("gemini-cli reported {status}{reason}")),
                None => Some("gemini-cli ended without reporting a result".to_owned()),
            },
            Some(42) => Some(format!(
                "gemini-cli rejected its input (exit code 42: invalid prompt or arguments){reason}"
            )),
            Some(53) => Some(format!(
                "gemini-cli exceeded its turn limit (exit code 53){reason}"
            )),
            Some(1) => Some(format!(
                "gemini-cli failed (exit code 1: general or API error){reason}"
            )),
            Some(code) => Some(format!("gemini-cli exited with code {code}{reason}")),
            None => {
                return Finished {
                    output: None,
                    summary,
                    usage: self.usage.clone(),
                    error: Some(AgentError::Signal(exit.signal.unwrap_or_default())),
                };
            }
        };
        Finished {
            output: None,
            summary,
            usage: self.usage.clone(),
            error: error.map(AgentError::Reported),
        }
    }
}

impl GeminiParser {
    fn message(&mut self, event: &Value) -> Vec<(&'static str, String)> {
        if str_at(event, "role") != "assistant" {
            // The user message is the prompt, already known.
            return Vec::new();
        }
        let content = str_at(event, "content");
        self.since_tool.push_str(content);
        // The final message is what came last; a stream of deltas that
        // never calls a tool must not grow it without bound.
        keep_tail(&mut self.since_tool, super::command::MAX_OUTPUT);
        self.pending.push_str(content);
        let delta = event.get("delta").and_then(Value::as_bool) == Some(true);
        // Text that never ends its line is logged in 64 KiB pieces.
        if !delta || self.pending.len() > super::process::MAX_LINE {
            return self.flush();
        }
        // Log whole lines as they complete.
        let Some(end) = self.pending.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.pending.drain(..=end).collect();
        text_lines("", &complete)
    }

    fn flush(&mut self) -> Vec<(&'static str, String)> {
        let text = std::mem::take(&mut self.pending);
        text_lines("", &text)
    }

    /// Why the run failed, in the CLI's words: its result, its last error
    /// event or its last stderr line.
    fn reason(&self, exit: &Exit) -> String {
        let message = match &self.result {
            Some((_, message)) if !message.is_empty() => message.as_str(),
            _ => self.last_error.as_str(),
        };
        if message.is_empty() {
            stderr_hint(exit)
        } else {
            format!(": {}", clip(message, 300))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run as Gemini CLI prints it (event shapes from its headless-mode
    /// docs and `packages/core/src/output/types.ts`).
    const STREAM: &[&str] = &[
        r#"{"type":"init","timestamp":"2025-10-10T12:00:00.000Z","session_id":"c0ffee","model":"gemini-2.5-pro"}"#,
        r#"{"type":"message","timestamp":"2025-10-10T12:00:00.100Z","role":"user","content":"write a.txt"}"#,
        r#"{"type":"tool_use","timestamp":"2025-10-10T12:00:01.000Z","tool_name":"write_file","tool_id":"write_file-1","parameters":{"file_path":"a.txt","content":"hi"}}"#,
        r#"{"type":"tool_result","timestamp":"2025-10-10T12:00:01.100Z","tool_id":"write_file-1","status":"success","output":"Successfully created and wrote to new file: a.txt"}"#,
        r#"{"type":"message","timestamp":"2025-10-10T12:00:02.000Z","role":"assistant","content":"Created a.txt","delta":true}"#,
        r#"{"type":"message","timestamp":"2025-10-10T12:00:02.100Z","role":"assistant","content":" as asked.\nDone.","delta":true}"#,
        r#"{"type":"result","timestamp":"2025-10-10T12:00:02.200Z","status":"success","stats":{"total_tokens":300,"input_tokens":250,"output_tokens":50,"cached":0,"input":250,"duration_ms":2200,"tool_calls":1}}"#,
    ];

    #[test]
    fn parses_a_successful_run() {
        let mut parser = GeminiParser::default();
        let out: Vec<String> = STREAM
            .iter()
            .flat_map(|l| parser.line(l))
            .map(|(_, l)| l)
            .collect();
        assert_eq!(
            out,
            vec![
                "gemini-cli session c0ffee started (model gemini-2.5-pro)",
                "→ write_file a.txt",
                "← write_file ok: Successfully created and wrote to new file: a.txt",
                "Created a.txt as asked.",
                "Done.",
                "result: success, 250 input / 50 output tokens, 1 tool calls",
            ]
        );
        let done = parser.finish(&Exit {
            code: Some(0),
            ..Default::default()
        });
        assert!(done.error.is_none(), "{:?}", done.error);
        assert_eq!(done.summary, "Created a.txt as asked.\nDone.");
        assert_eq!(done.usage.session_id, "c0ffee");
        assert_eq!(done.usage.input_tokens, 250);
        assert_eq!(done.usage.output_tokens, 50);
    }

    #[test]
    fn explains_exit_codes() {
        let mut parser = GeminiParser::default();
        parser.line(r#"{"type":"error","timestamp":"t","severity":"error","message":"Maximum session turns exceeded"}"#);
        let done = parser.finish(&Exit {
            code: Some(53),
            ..Default::default()
        });
        assert_eq!(
            done.error.unwrap().to_string(),
            "gemini-cli exceeded its turn limit (exit code 53): Maximum session turns exceeded"
        );
        let mut parser = GeminiParser::default();
        let done = parser.finish(&Exit {
            code: Some(42),
            stderr_tail: "No input provided".into(),
            ..Default::default()
        });
        assert_eq!(
            done.error.unwrap().to_string(),
            "gemini-cli rejected its input (exit code 42: invalid prompt or arguments): No input provided"
        );
    }

    #[test]
    fn builds_the_documented_invocation() {
        let spec = AgentSpec {
            kind: "gemini-cli".into(),
            model: "gemini-2.5-flash".into(),
            max_turns: 3,
            ..Default::default()
        };
        let mut notes = Vec::new();
        let argv = argv(&spec, "go", None, &AgentConfig::default(), &mut notes).unwrap();
        assert_eq!(
            argv,
            [
                "gemini",
                "--prompt=go",
                "--output-format",
                "stream-json",
                "--approval-mode=auto_edit",
                "--model=gemini-2.5-flash"
            ]
        );
        assert!(
            notes[0].starts_with("max_turns 3 cannot be applied"),
            "{notes:?}"
        );
        let sneaky = AgentSpec {
            model: "--yolo".into(),
            ..spec.clone()
        };
        let argv = super::argv(
            &sneaky,
            "-y",
            Some("c0ffee"),
            &AgentConfig::default(),
            &mut notes,
        )
        .unwrap();
        assert_eq!(argv[1], "--prompt=-y");
        assert_eq!(argv[5], "--model=--yolo");
        assert_eq!(argv[6], "--resume=c0ffee");
        let mut yolo = spec.clone();
        yolo.options.insert("approval_mode".into(), "yolo".into());
        assert!(matches!(
            super::argv(&yolo, "go", None, &AgentConfig::default(), &mut notes),
            Err(AgentError::BypassNotAllowed { .. })
        ));
    }
}
