//! Which of the worker's environment variables an agent inherits. An agent
//! runs code the task asked for, so it never gets the worker's whole
//! environment (the internal token, database and Redis settings, other
//! CLIs' API keys): only a base list (path, home, locale, proxies, CA
//! certificates), what its own CLI needs to reach its model, and what the
//! operator adds with `AIDA_AGENT_ENV`. The variables AIDA sets for the run
//! (`AIDA_PROMPT`, ...) are added by the caller, not inherited.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::AgentKind;

/// Every kind gets these when the worker has them: what any program needs
/// to run, find files, speak the user's locale and reach the network.
const BASE: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Claude Code's own settings and credentials (code.claude.com/docs/en/env-vars).
const CLAUDE: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
];

/// Claude Code on Amazon Bedrock: `AWS_REGION` is required (it is not read
/// from `~/.aws/config`), credentials come from the AWS SDK chain (access
/// keys, a profile, or a Bedrock API key). Passed only when the worker sets
/// `CLAUDE_CODE_USE_BEDROCK`: otherwise they are the worker's AWS
/// credentials, which an agent has no business with.
const CLAUDE_BEDROCK: &[&str] = &[
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_BEARER_TOKEN_BEDROCK",
    "ANTHROPIC_BEDROCK_BASE_URL",
];

/// Claude Code on Google Vertex AI: region, project and the Google
/// credentials file; only with `CLAUDE_CODE_USE_VERTEX`.
const CLAUDE_VERTEX: &[&str] = &[
    "CLOUD_ML_REGION",
    "ANTHROPIC_VERTEX_PROJECT_ID",
    "ANTHROPIC_VERTEX_BASE_URL",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Gemini CLI: an API key, or Vertex AI with project, location and
/// credentials.
const GEMINI: &[&str] = &[
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Codex CLI: its key, an alternative endpoint, its home (config, login).
const CODEX: &[&str] = &["OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"];

/// Never inherited, whatever `AIDA_AGENT_ENV` says: the worker's own
/// settings (`AIDA_INTERNAL_TOKEN`, `AIDA_TLS_*`, ...) and the stores of the
/// services it may share a host with. AIDA's per-run variables are set
/// explicitly, not inherited, so none of them is lost here.
const DENIED: &[&str] = &["AIDA_*", "DATABASE_URL", "REDIS_*"];

/// The allow-list of one worker: the fixed lists above plus the operator's
/// extra names or globs.
#[derive(Clone)]
pub struct AgentEnv {
    /// As the operator wrote them, for equality and the log.
    extra_patterns: Arc<[String]>,
    extra: Arc<GlobSet>,
    denied: Arc<GlobSet>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid AIDA_AGENT_ENV pattern {pattern:?}: {source}")]
pub struct InvalidPattern {
    pattern: String,
    source: globset::Error,
}

impl AgentEnv {
    /// The allow-list with `extra` added: a comma-separated list of
    /// variable names or globs (`MY_*`), as `AIDA_AGENT_ENV` holds it.
    pub fn new(extra: &str) -> Result<Self, InvalidPattern> {
        let patterns: Vec<String> = extra
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            extra: Arc::new(glob_set(&patterns)?),
            denied: Arc::new(glob_set(DENIED)?),
            extra_patterns: patterns.into(),
        })
    }

    /// The operator's extra patterns.
    pub fn extra_patterns(&self) -> &[String] {
        &self.extra_patterns
    }

    /// Whether an agent of `kind` inherits variable `name`; `vars` is the
    /// worker's whole environment, for the settings that switch a CLI's
    /// provider (Bedrock, Vertex AI).
    fn allows(&self, kind: AgentKind, name: &str, vars: &BTreeMap<String, OsString>) -> bool {
        if self.denied.is_match(name) {
            return false;
        }
        let switched_on = |var: &str| {
            vars.get(var)
                .is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
        };
        let for_kind = match kind {
            AgentKind::Command => false,
            AgentKind::ClaudeCode => {
                CLAUDE.contains(&name)
                    || (switched_on("CLAUDE_CODE_USE_BEDROCK") && CLAUDE_BEDROCK.contains(&name))
                    || (switched_on("CLAUDE_CODE_USE_VERTEX") && CLAUDE_VERTEX.contains(&name))
            }
            AgentKind::GeminiCli => GEMINI.contains(&name),
            AgentKind::CodexCli => CODEX.contains(&name),
        };
        BASE.contains(&name) || name.starts_with("LC_") || for_kind || self.extra.is_match(name)
    }

    /// The variables of `vars` (the worker's environment) an agent of
    /// `kind` inherits, sorted by name. Names that are not UTF-8 are never
    /// on any list.
    pub fn select(
        &self,
        kind: AgentKind,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(String, OsString)> {
        let vars: BTreeMap<String, OsString> = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
            .collect();
        vars.iter()
            .filter(|(name, _)| self.allows(kind, name, &vars))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }
}

fn glob_set(patterns: &[impl AsRef<str>]) -> Result<GlobSet, InvalidPattern> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let pattern = pattern.as_ref();
        let glob = Glob::new(pattern).map_err(|source| InvalidPattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        set.add(glob);
    }
    set.build().map_err(|source| InvalidPattern {
        pattern: patterns
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(","),
        source,
    })
}

/// Whether a variable the run itself asks for (the orchestrator's
/// `SubtaskRun.env`: the shared-context URL and token) may be set: only
/// AIDA's own names, so a run cannot swap an agent's `PATH` or preload a
/// library into a CLI.
pub fn run_variable_allowed(name: &str) -> bool {
    name.starts_with("AIDA_")
        && name.len() > "AIDA_".len()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl Default for AgentEnv {
    fn default() -> Self {
        Self::new("").expect("the fixed lists are valid globs")
    }
}

impl PartialEq for AgentEnv {
    fn eq(&self, other: &Self) -> bool {
        self.extra_patterns == other.extra_patterns
    }
}

impl Eq for AgentEnv {}

impl std::fmt::Debug for AgentEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEnv")
            .field("extra", &self.extra_patterns)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn names(env: &AgentEnv, kind: AgentKind, pairs: &[(&str, &str)]) -> Vec<String> {
        env.select(kind, vars(pairs))
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    const WORKER: &[(&str, &str)] = &[
        ("PATH", "/usr/bin"),
        ("HOME", "/home/w"),
        ("LC_ALL", "C.UTF-8"),
        ("https_proxy", "http://proxy:3128"),
        ("AIDA_INTERNAL_TOKEN", "s3cret-internal-token"),
        ("AIDA_TLS_KEY", "/etc/aida/key.pem"),
        ("AIDA_JWT_SECRET", "jwt"),
        ("DATABASE_URL", "sqlite://x"),
        ("REDIS_URL", "redis://x"),
        ("ANTHROPIC_API_KEY", "sk-ant"),
        ("GEMINI_API_KEY", "gm"),
        ("OPENAI_API_KEY", "sk-oai"),
        ("AWS_SECRET_ACCESS_KEY", "aws"),
        ("AWS_REGION", "us-east-1"),
        ("MY_TOOL_HOME", "/opt/tool"),
        ("SECRET_X", "x"),
    ];

    #[test]
    fn each_kind_gets_the_base_list_and_its_own_credentials_only() {
        let env = AgentEnv::default();
        let base = ["HOME", "LC_ALL", "PATH", "https_proxy"];
        assert_eq!(names(&env, AgentKind::Command, WORKER), base);
        let mut claude = names(&env, AgentKind::ClaudeCode, WORKER);
        claude.retain(|n| !base.contains(&n.as_str()));
        assert_eq!(claude, ["ANTHROPIC_API_KEY"]);
        let mut gemini = names(&env, AgentKind::GeminiCli, WORKER);
        gemini.retain(|n| !base.contains(&n.as_str()));
        assert_eq!(gemini, ["GEMINI_API_KEY"]);
        let mut codex = names(&env, AgentKind::CodexCli, WORKER);
        codex.retain(|n| !base.contains(&n.as_str()));
        assert_eq!(codex, ["OPENAI_API_KEY"]);
    }

    #[test]
    fn bedrock_credentials_only_in_bedrock_mode() {
        let env = AgentEnv::default();
        let mut worker = WORKER.to_vec();
        assert!(!names(&env, AgentKind::ClaudeCode, &worker).contains(&"AWS_REGION".to_owned()));
        worker.push(("CLAUDE_CODE_USE_BEDROCK", "1"));
        let got = names(&env, AgentKind::ClaudeCode, &worker);
        for name in [
            "AWS_REGION",
            "AWS_SECRET_ACCESS_KEY",
            "CLAUDE_CODE_USE_BEDROCK",
        ] {
            assert!(got.contains(&name.to_owned()), "{name} in {got:?}");
        }
        assert!(!names(&env, AgentKind::Command, &worker).contains(&"AWS_REGION".to_owned()));
    }

    #[test]
    fn extra_patterns_add_names_but_never_the_workers_own_settings() {
        let env = AgentEnv::new(" MY_*, SECRET_X ,AIDA_*,DATABASE_URL,*").unwrap();
        let got = names(&env, AgentKind::Command, WORKER);
        assert!(got.contains(&"MY_TOOL_HOME".to_owned()), "{got:?}");
        assert!(got.contains(&"SECRET_X".to_owned()), "{got:?}");
        for denied in [
            "AIDA_INTERNAL_TOKEN",
            "AIDA_TLS_KEY",
            "AIDA_JWT_SECRET",
            "DATABASE_URL",
            "REDIS_URL",
        ] {
            assert!(!got.contains(&denied.to_owned()), "{denied} in {got:?}");
        }
        assert!(AgentEnv::new("[oops").is_err());
        assert_eq!(
            AgentEnv::new("A, B").unwrap().extra_patterns(),
            ["A".to_owned(), "B".to_owned()]
        );
    }

    #[test]
    fn run_variables_are_aidas_own_names_only() {
        assert!(run_variable_allowed("AIDA_CONTEXT_URL"));
        assert!(run_variable_allowed("AIDA_CONTEXT_TOKEN"));
        for name in ["PATH", "LD_PRELOAD", "AIDA_", "aida_x", "AIDA_X=Y"] {
            assert!(!run_variable_allowed(name), "{name}");
        }
    }
}
