//! The "claude-code" adapter: Claude Code in headless mode,
//! `claude -p --output-format stream-json --verbose --permission-mode=<mode>
//! [--model=M] [--max-turns=N] [--max-budget-usd=X]
//! [--append-system-prompt=S] [--allowedTools=T,...] [--resume=SESSION]
//! -- <prompt>`.
//!
//! `-p/--print` is a switch and the prompt a positional argument: it goes
//! after `--` (commander.js, which Claude Code parses its flags with, takes
//! everything after it as arguments), and every value AIDA passes on a
//! user's behalf is glued to its option with `=`, so text that starts with
//! a dash (`--dangerously-skip-permissions`) can never become a flag.
//! `--resume=<session id>` continues an earlier session (its history and
//! context) with the new prompt; the stream reports the same session id.
//!
//! Its stream-json output is one JSON object per line: a `system` event
//! (subtype `init`, with `session_id`, `model`, `permissionMode`), then
//! `assistant` messages whose content blocks are `text` or `tool_use`,
//! `user` messages carrying the `tool_result`s, and a final `result` event
//! with `subtype` (`success`, `error_max_turns`, `error_max_budget_usd`,
//! `error_during_execution`), `is_error`, `result` (the final text),
//! `num_turns`, `total_cost_usd`, `session_id` and `usage`.

use std::collections::HashMap;

use aida_proto::common::{AgentSpec, AgentUsage};
use serde_json::Value;

use super::{
    AgentConfig, AgentError, CLAUDE_CODE, Exit, Finished, StreamParser, clip, exit_failure,
    json_object, list_option, note_unused, option, remember_tool, str_at, text_lines,
    tool_input_summary, u64_at,
};

/// Edits are fine in a throwaway worktree; anything more needs the operator.
const DEFAULT_PERMISSION_MODE: &str = "acceptEdits";
const BYPASS: &str = "bypassPermissions";

pub(super) fn argv(
    spec: &AgentSpec,
    prompt: &str,
    resume: Option<&str>,
    config: &AgentConfig,
    notes: &mut Vec<String>,
) -> Result<Vec<String>, AgentError> {
    let mode = option(spec, "permission_mode").unwrap_or(DEFAULT_PERMISSION_MODE);
    if mode == BYPASS && !config.allow_bypass_permissions {
        return Err(AgentError::BypassNotAllowed {
            kind: CLAUDE_CODE,
            mode: mode.to_owned(),
        });
    }
    let mut argv: Vec<String> = [
        config.claude_path.as_str(),
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    .map(str::to_owned)
    .to_vec();
    argv.push(format!("--permission-mode={mode}"));
    if !spec.model.trim().is_empty() {
        argv.push(format!("--model={}", spec.model.trim()));
    }
    if spec.max_turns > 0 {
        argv.push(format!("--max-turns={}", spec.max_turns));
    }
    if spec.max_budget_usd > 0.0 {
        argv.push(format!("--max-budget-usd={}", spec.max_budget_usd));
    }
    if let Some(extra) = option(spec, "append_system_prompt") {
        argv.push(format!("--append-system-prompt={extra}"));
    }
    let tools = list_option(spec, "allowed_tools")?;
    if !tools.is_empty() {
        // One comma-separated value, the documented form; glued with `=`
        // it cannot swallow the arguments after it either.
        argv.push(format!("--allowedTools={}", tools.join(",")));
    }
    if let Some(session) = resume {
        argv.push(format!("--resume={session}"));
    }
    argv.extend(["--".to_owned(), prompt.to_owned()]);
    note_unused(
        spec,
        CLAUDE_CODE,
        &["permission_mode", "append_system_prompt", "allowed_tools"],
        notes,
    );
    Ok(argv)
}

/// The final `result` event.
#[derive(Debug, Default, Clone)]
struct ResultEvent {
    subtype: String,
    is_error: bool,
    text: String,
    num_turns: u32,
    cost_usd: f64,
}

#[derive(Debug, Default)]
pub struct ClaudeParser {
    usage: AgentUsage,
    result: Option<ResultEvent>,
    /// The last assistant text, in case no result event comes.
    last_text: String,
    /// Tool names by tool_use id, to name the results.
    tools: HashMap<String, String>,
}

impl StreamParser for ClaudeParser {
    fn line(&mut self, line: &str) -> Vec<(&'static str, String)> {
        let Some(event) = json_object(line) else {
            return vec![("stdout", line.to_owned())];
        };
        let session = str_at(&event, "session_id");
        if !session.is_empty() {
            self.usage.session_id = session.to_owned();
        }
        match str_at(&event, "type") {
            "system" if str_at(&event, "subtype") == "init" => vec![(
                "agent",
                format!(
                    "claude-code session {} started (model {}, permission mode {})",
                    self.usage.session_id,
                    str_at(&event, "model"),
                    str_at(&event, "permissionMode"),
                ),
            )],
            "system" => vec![("agent", format!("system: {}", str_at(&event, "subtype")))],
            "assistant" => self.assistant(&event),
            "user" => self.user(&event),
            "result" => self.result(&event),
            // Partial messages and event kinds added later: not worth a line.
            _ => Vec::new(),
        }
    }

    fn finish(&mut self, exit: &Exit) -> Finished {
        let summary = match &self.result {
            Some(r) if !r.text.is_empty() => r.text.clone(),
            _ => self.last_text.clone(),
        };
        let error = match &self.result {
            Some(r) if r.is_error || r.subtype != "success" => {
                Some(AgentError::Reported(describe_failure(r)))
            }
            Some(_) if exit.code != Some(0) => Some(exit_failure(CLAUDE_CODE, exit)),
            Some(_) => None,
            None if exit.code == Some(0) => Some(AgentError::Reported(
                "claude-code ended without reporting a result".into(),
            )),
            None => Some(exit_failure(CLAUDE_CODE, exit)),
        };
        Finished {
            output: None,
            summary,
            usage: self.usage.clone(),
            error,
        }
    }
}

impl ClaudeParser {
    fn blocks(event: &Value) -> &[Value] {
        event
            .pointer("/message/content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn assistant(&mut self, event: &Value) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for block in Self::blocks(event) {
            match str_at(block, "type") {
                "text" => {
                    let text = str_at(block, "text");
                    if !text.trim().is_empty() {
                        self.last_text = text.to_owned();
                    }
                    out.extend(text_lines("", text));
                }
                "tool_use" => {
                    let name = str_at(block, "name");
                    remember_tool(&mut self.tools, str_at(block, "id"), name);
                    let input = block.get("input").map(tool_input_summary);
                    out.push((
                        "agent",
                        format!("→ {name} {}", input.unwrap_or_default())
                            .trim_end()
                            .to_owned(),
                    ));
                }
                _ => {}
            }
        }
        out
    }

    fn user(&mut self, event: &Value) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for block in Self::blocks(event) {
            if str_at(block, "type") != "tool_result" {
                continue;
            }
            let name = self
                .tools
                .get(str_at(block, "tool_use_id"))
                .map(String::as_str)
                .unwrap_or("tool");
            let content = match block.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| str_at(p, "text"))
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            let failed = block.get("is_error").and_then(Value::as_bool) == Some(true);
            let verdict = if failed { "failed" } else { "ok" };
            out.push((
                "agent",
                format!("← {name} {verdict}: {}", clip(&content, 200))
                    .trim_end_matches([' ', ':'])
                    .to_owned(),
            ));
        }
        out
    }

    fn result(&mut self, event: &Value) -> Vec<(&'static str, String)> {
        let usage = event.get("usage").cloned().unwrap_or(Value::Null);
        // Cached input is input too: count what the model read in total.
        self.usage.input_tokens = u64_at(&usage, "input_tokens")
            + u64_at(&usage, "cache_creation_input_tokens")
            + u64_at(&usage, "cache_read_input_tokens");
        self.usage.output_tokens = u64_at(&usage, "output_tokens");
        let r = ResultEvent {
            subtype: str_at(event, "subtype").to_owned(),
            is_error: event.get("is_error").and_then(Value::as_bool) == Some(true),
            text: str_at(event, "result").to_owned(),
            num_turns: u64_at(event, "num_turns") as u32,
            cost_usd: event
                .get("total_cost_usd")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        };
        self.usage.turns = r.num_turns;
        self.usage.cost_usd = r.cost_usd;
        let line = format!(
            "result: {}{}, {} turns, ${:.4}, {} input / {} output tokens",
            r.subtype,
            if r.is_error { " (error)" } else { "" },
            r.num_turns,
            r.cost_usd,
            self.usage.input_tokens,
            self.usage.output_tokens,
        );
        self.result = Some(r);
        vec![("agent", line)]
    }
}

fn describe_failure(r: &ResultEvent) -> String {
    let what = match r.subtype.as_str() {
        "error_max_turns" => format!(
            "claude-code stopped at its turn limit ({} turns)",
            r.num_turns
        ),
        "error_max_budget_usd" => format!(
            "claude-code stopped at its budget limit (${:.4} spent)",
            r.cost_usd
        ),
        "error_during_execution" => "claude-code failed during execution".to_owned(),
        "success" => "claude-code reported an error".to_owned(),
        other => format!("claude-code ended with {other}"),
    };
    if r.text.trim().is_empty() {
        what
    } else {
        format!("{what}: {}", clip(&r.text, 300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run as Claude Code prints it (shapes from its headless-mode docs).
    const STREAM: &[&str] = &[
        r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"9a3c-1","tools":["Read","Write","Bash"],"mcp_servers":[],"model":"claude-sonnet-4-5","permissionMode":"acceptEdits","apiKeySource":"none"}"#,
        r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"I'll create the file.\nThen stop."}],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":5}},"parent_tool_use_id":null,"session_id":"9a3c-1"}"#,
        r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"Write","input":{"file_path":"/w/a.txt","content":"hi"}}]},"session_id":"9a3c-1"}"#,
        r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01","type":"tool_result","content":"File created successfully at: /w/a.txt"}]},"session_id":"9a3c-1"}"#,
        r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":2100,"duration_api_ms":1900,"num_turns":3,"result":"Created a.txt.","session_id":"9a3c-1","total_cost_usd":0.0123,"usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":40}}"#,
    ];

    fn feed(lines: &[&str]) -> (ClaudeParser, Vec<(&'static str, String)>) {
        let mut parser = ClaudeParser::default();
        let mut out = Vec::new();
        for line in lines {
            out.extend(parser.line(line));
        }
        (parser, out)
    }

    #[test]
    fn parses_a_successful_run() {
        let (mut parser, out) = feed(STREAM);
        let texts: Vec<&str> = out.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "claude-code session 9a3c-1 started (model claude-sonnet-4-5, permission mode acceptEdits)",
                "I'll create the file.",
                "Then stop.",
                "→ Write /w/a.txt",
                "← Write ok: File created successfully at: /w/a.txt",
                "result: success, 3 turns, $0.0123, 150 input / 40 output tokens",
            ]
        );
        assert!(out.iter().all(|(s, _)| *s == "agent"));
        let done = parser.finish(&Exit {
            code: Some(0),
            ..Default::default()
        });
        assert!(done.error.is_none(), "{:?}", done.error);
        assert_eq!(done.summary, "Created a.txt.");
        assert_eq!(done.usage.session_id, "9a3c-1");
        assert_eq!(done.usage.turns, 3);
        assert_eq!(done.usage.input_tokens, 150);
        assert_eq!(done.usage.output_tokens, 40);
        assert!((done.usage.cost_usd - 0.0123).abs() < 1e-9);
    }

    #[test]
    fn reports_errors_and_passes_other_lines() {
        let (mut parser, out) = feed(&[
            "not json at all",
            r#"{"type":"result","subtype":"error_max_turns","is_error":false,"num_turns":2,"result":"","session_id":"s","total_cost_usd":0.5,"usage":{}}"#,
        ]);
        assert_eq!(out[0], ("stdout", "not json at all".to_owned()));
        let done = parser.finish(&Exit {
            code: Some(1),
            ..Default::default()
        });
        let error = done.error.unwrap().to_string();
        assert_eq!(error, "claude-code stopped at its turn limit (2 turns)");

        let (mut parser, _) = feed(&[]);
        let done = parser.finish(&Exit {
            code: Some(2),
            stderr_tail: "error: unknown option '--bogus'".into(),
            ..Default::default()
        });
        assert_eq!(
            done.error.unwrap().to_string(),
            "claude-code exited with code 2: error: unknown option '--bogus'"
        );
    }

    #[test]
    fn builds_the_documented_invocation() {
        let mut spec = AgentSpec {
            kind: "claude-code".into(),
            model: "sonnet".into(),
            max_turns: 5,
            max_budget_usd: 1.5,
            ..Default::default()
        };
        spec.options.insert(
            "allowed_tools".into(),
            r#"["Read","Bash(git diff:*)"]"#.into(),
        );
        spec.options
            .insert("append_system_prompt".into(), "Be brief.".into());
        spec.options.insert("approval_mode".into(), "yolo".into());
        let config = AgentConfig {
            claude_path: "/opt/claude".into(),
            ..Default::default()
        };
        let mut notes = Vec::new();
        let argv = argv(&spec, "do it", None, &config, &mut notes).unwrap();
        assert_eq!(
            argv,
            [
                "/opt/claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode=acceptEdits",
                "--model=sonnet",
                "--max-turns=5",
                "--max-budget-usd=1.5",
                "--append-system-prompt=Be brief.",
                "--allowedTools=Read,Bash(git diff:*)",
                "--",
                "do it",
            ]
        );
        assert_eq!(
            notes,
            ["option \"approval_mode\" is not used by claude-code; ignored"]
        );

        spec.options
            .insert("permission_mode".into(), "bypassPermissions".into());
        let err = super::argv(&spec, "x", None, &config, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, AgentError::BypassNotAllowed { .. }), "{err}");
        let allowed = AgentConfig {
            allow_bypass_permissions: true,
            ..config.clone()
        };
        let argv = super::argv(&spec, "x", None, &allowed, &mut Vec::new()).unwrap();
        assert!(argv.contains(&"--permission-mode=bypassPermissions".to_owned()));
        // User text that looks like a flag stays glued to its option or
        // after `--`.
        let sneaky = AgentSpec {
            model: "--dangerously-skip-permissions".into(),
            ..Default::default()
        };
        let argv = super::argv(&sneaky, "-rf /", None, &config, &mut Vec::new()).unwrap();
        assert_eq!(
            &argv[argv.len() - 3..],
            ["--model=--dangerously-skip-permissions", "--", "-rf /"]
        );

        let argv = super::argv(&sneaky, "-p", Some("9a3c-1"), &config, &mut Vec::new()).unwrap();
        assert_eq!(
            &argv[argv.len() - 4..],
            [
                "--model=--dangerously-skip-permissions",
                "--resume=9a3c-1",
                "--",
                "-p"
            ]
        );

        spec.options.insert("allowed_tools".into(), "[1, 2".into());
        let err = super::argv(&spec, "x", None, &allowed, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("\"allowed_tools\""), "{err}");
    }
}
