//! The "command" agent: runs the spec's argv as it is, with the prompt on
//! stdin and in `AIDA_PROMPT`; its output is logged line by line, its last
//! line is its summary, and only its exit code counts.

use aida_proto::common::AgentSpec;

use super::{AgentError, Exit, Finished, StreamParser};

pub(super) fn argv(spec: &AgentSpec) -> Result<Vec<String>, AgentError> {
    if spec.command.first().is_none_or(|p| p.is_empty()) {
        return Err(AgentError::EmptyCommand);
    }
    Ok(spec.command.clone())
}

/// How much of a command's standard output a read-only run returns.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// Passes stdout through; success is exit code 0.
#[derive(Debug, Default)]
pub struct CommandParser {
    /// The last non-empty line: a command's closest thing to a final message.
    last: String,
    /// Standard output, up to [`MAX_OUTPUT`] bytes.
    output: String,
}

impl StreamParser for CommandParser {
    fn line(&mut self, line: &str) -> Vec<(&'static str, String)> {
        if !line.trim().is_empty() {
            self.last = line.trim().to_owned();
        }
        if self.output.len() + line.len() < MAX_OUTPUT {
            self.output.push_str(line);
            self.output.push('\n');
        }
        vec![("stdout", line.to_owned())]
    }

    fn finish(&mut self, exit: &Exit) -> Finished {
        let error = match (exit.code, exit.signal) {
            (Some(0), _) => None,
            (Some(code), _) => Some(AgentError::ExitCode(code)),
            (None, signal) => Some(AgentError::Signal(signal.unwrap_or_default())),
        };
        Finished {
            error,
            summary: std::mem::take(&mut self.last),
            output: Some(std::mem::take(&mut self.output)),
            ..Default::default()
        }
    }
}
