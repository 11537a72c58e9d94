//! What a repository asks of every worktree AIDA makes for it, read from
//! its `.aida/config.toml` at the run's start commit, and the task's own
//! set-up fields laid over it:
//!
//! ```toml
//! setup = ["npm", "ci"]          # argv run in each new worktree before the agent
//! setup_timeout_secs = 600       # optional
//! ports = 2                      # ports each run gets
//! [env]                          # environment for the set-up command and the agent
//! NODE_ENV = "development"
//! [verify]                       # how the work is checked (read by the orchestrator
//! command = ["npm", "test"]      # when it creates a task; a task's own "verify" wins)
//! ```
//!
//! Only parsing and validation live here; running the command is
//! [`crate::setup`], the ports are [`crate::ports`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use aida_proto::common::WorktreeSetup;
use serde::Deserialize;

/// Where the file lives, relative to the worktree.
pub const CONFIG_PATH: &str = ".aida/config.toml";
/// The most ports one run may ask for.
pub const MAX_PORTS: u32 = 16;
/// A config file larger than this is refused rather than read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;
/// Names the set-up environment may not set: AIDA's own variables, and the
/// two every program depends on to find itself.
const RESERVED_NAMES: &[&str] = &["PATH", "HOME"];

/// `.aida/config.toml` as written.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// The set-up argv; empty: none.
    #[serde(default)]
    pub setup: Vec<String>,
    pub setup_timeout_secs: Option<u64>,
    #[serde(default)]
    pub ports: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The orchestrator reads and checks it when a task is created; the
    /// task carries it to the worker from there.
    #[serde(default)]
    pub verify: Option<toml::Table>,
}

/// Why `.aida/config.toml` cannot be used. Always permanent: the file is
/// part of the start commit, so a retry reads the same thing.
#[derive(Debug, thiserror::Error)]
#[error("invalid {CONFIG_PATH}: {problem}")]
pub struct InvalidConfig {
    pub problem: String,
}

fn invalid(problem: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        problem: problem.into(),
    }
}

/// Reads `.aida/config.toml` from `worktree`; `None` when there is none.
/// A symlink is refused: the file comes from the repository, and a link
/// could point the worker at any file of its host.
pub fn load(worktree: &Path) -> Result<Option<RepoConfig>, InvalidConfig> {
    let dir = worktree.join(".aida");
    let path = worktree.join(CONFIG_PATH);
    for (p, what) in [(&dir, ".aida"), (&path, CONFIG_PATH)] {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(invalid(format!("{what} is a symbolic link")));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(invalid(format!("cannot read {what}: {e}"))),
        }
    }
    let file = std::fs::File::open(&path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(invalid("it is not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| invalid(format!("cannot read it: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "it is larger than {} KiB",
            MAX_CONFIG_BYTES / 1024
        )));
    }
    parse(&text).map(Some)
}

/// Parses and validates the file's text.
pub fn parse(text: &str) -> Result<RepoConfig, InvalidConfig> {
    let config: RepoConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim();
        match e.span() {
            Some(span) => {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
                invalid(format!("line {line}: {message}"))
            }
            None => invalid(message),
        }
    })?;
    if config.setup.first().is_some_and(|p| p.is_empty()) {
        return Err(invalid("setup: the program (its first element) is empty"));
    }
    if config.setup_timeout_secs == Some(0) {
        return Err(invalid("setup_timeout_secs must be at least 1"));
    }
    check_ports(config.ports).map_err(invalid)?;
    for name in config.env.keys() {
        check_env_name(name).map_err(|e| invalid(format!("env: {e}")))?;
    }
    Ok(config)
}

/// What a run's worktree gets: the repository's config with the task's
/// fields laid over it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetupPlan {
    /// Run before the agent when not empty.
    pub command: Vec<String>,
    /// For the set-up command and the agent; names checked.
    pub env: BTreeMap<String, String>,
    /// How many ports the run reserves.
    pub ports: u32,
    /// The set-up command's limit; `None`: the worker's default.
    pub timeout: Option<Duration>,
}

impl SetupPlan {
    /// The repository's settings overridden field by field by the task's:
    /// a non-empty command replaces, env entries merge (the task's win),
    /// ports and timeout replace when above 0.
    pub fn merge(repo: Option<RepoConfig>, task: Option<&WorktreeSetup>) -> Self {
        let repo = repo.unwrap_or_default();
        let mut plan = SetupPlan {
            command: repo.setup,
            env: repo.env,
            ports: repo.ports,
            timeout: repo.setup_timeout_secs.map(Duration::from_secs),
        };
        if let Some(task) = task {
            if !task.command.is_empty() {
                plan.command = task.command.clone();
            }
            plan.env
                .extend(task.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            if task.ports > 0 {
                plan.ports = task.ports;
            }
            if task.timeout_secs > 0 {
                plan.timeout = Some(Duration::from_secs(task.timeout_secs.into()));
            }
        }
        plan
    }
}

/// Why a task's own set-up fields are refused (a validation error of the
/// run, so permanent).
pub fn validate_task_setup(setup: &WorktreeSetup) -> Result<(), String> {
    if setup.command.first().is_some_and(|p| p.is_empty()) {
        return Err("setup.command: the program (its first element) is empty".into());
    }
    check_ports(setup.ports).map_err(|e| format!("setup.{e}"))?;
    for name in setup.env.keys() {
        check_env_name(name).map_err(|e| format!("setup.env: {e}"))?;
    }
    Ok(())
}

fn check_ports(ports: u32) -> Result<(), String> {
    if ports > MAX_PORTS {
        return Err(format!(
            "ports: {ports} asked for, at most {MAX_PORTS} allowed"
        ));
    }
    Ok(())
}

/// A variable name the set-up environment may set: plain
/// (`[A-Za-z_][A-Za-z0-9_]*`), not AIDA's and not `PATH` or `HOME`.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let plain = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plain {
        return Err(format!(
            "{name:?} is not a plain variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    if name.starts_with("AIDA_") {
        return Err(format!("{name:?}: AIDA_* variables are set by AIDA only"));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!("{name:?} may not be changed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_file() {
        let config = parse(
            "setup = [\"npm\", \"ci\"]\nsetup_timeout_secs = 600\nports = 2\n[env]\nNODE_ENV = \"development\"\n",
        )
        .unwrap();
        assert_eq!(config.setup, ["npm", "ci"]);
        assert_eq!(config.setup_timeout_secs, Some(600));
        assert_eq!(config.ports, 2);
        assert_eq!(config.env["NODE_ENV"], "development");
        assert_eq!(parse("").unwrap(), RepoConfig::default());
    }

    #[test]
    fn refuses_what_it_does_not_know_or_allow() {
        let cases = [
            ("setpu = [\"x\"]", "unknown field `setpu`"),
            ("setup = \"npm ci\"", "invalid type"),
            ("ports = 17", "ports: 17 asked for, at most 16 allowed"),
            ("ports = -1", "invalid value"),
            ("setup_timeout_secs = 0", "at least 1"),
            ("setup = [\"\"]", "the program (its first element) is empty"),
            ("[env]\nPATH = \"/tmp\"", "\"PATH\" may not be changed"),
            (
                "[env]\nAIDA_TOKEN = \"x\"",
                "AIDA_* variables are set by AIDA only",
            ),
            ("[env]\n\"A-B\" = \"x\"", "not a plain variable name"),
            ("[env]\n\"1A\" = \"x\"", "not a plain variable name"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("invalid .aida/config.toml: "), "{err}");
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_task_overrides_field_by_field() {
        let repo = parse(
            "setup = [\"npm\", \"ci\"]\nsetup_timeout_secs = 60\nports = 2\n[env]\nA = \"repo\"\nB = \"repo\"\n",
        )
        .unwrap();
        let plan = SetupPlan::merge(Some(repo.clone()), None);
        assert_eq!(plan.command, ["npm", "ci"]);
        assert_eq!(plan.timeout, Some(Duration::from_secs(60)));

        let mut task = WorktreeSetup {
            ports: 0,
            timeout_secs: 0,
            ..Default::default()
        };
        task.env.insert("B".into(), "task".into());
        task.env.insert("C".into(), "task".into());
        let plan = SetupPlan::merge(Some(repo.clone()), Some(&task));
        assert_eq!(
            plan.command,
            ["npm", "ci"],
            "an empty command keeps the repo's"
        );
        assert_eq!(plan.ports, 2);
        assert_eq!(plan.timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            plan.env.into_iter().collect::<Vec<_>>(),
            [
                ("A".to_owned(), "repo".to_owned()),
                ("B".to_owned(), "task".to_owned()),
                ("C".to_owned(), "task".to_owned())
            ]
        );

        task.command = vec!["make".into(), "deps".into()];
        task.ports = 3;
        task.timeout_secs = 5;
        let plan = SetupPlan::merge(Some(repo), Some(&task));
        assert_eq!(plan.command, ["make", "deps"]);
        assert_eq!(plan.ports, 3);
        assert_eq!(plan.timeout, Some(Duration::from_secs(5)));
        assert_eq!(SetupPlan::merge(None, None), SetupPlan::default());
    }

    #[test]
    fn a_tasks_setup_is_checked_like_the_file() {
        let mut task = WorktreeSetup {
            ports: 16,
            ..Default::default()
        };
        assert!(validate_task_setup(&task).is_ok());
        task.ports = 17;
        assert!(
            validate_task_setup(&task)
                .unwrap_err()
                .contains("at most 16")
        );
        task.ports = 0;
        task.env.insert("HOME".into(), "/".into());
        assert!(validate_task_setup(&task).unwrap_err().contains("\"HOME\""));
    }

    #[test]
    fn a_symlinked_config_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        std::fs::create_dir(dir.path().join(".aida")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(CONFIG_PATH)).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid .aida/config.toml: .aida/config.toml is a symbolic link"
        );
        std::fs::remove_file(dir.path().join(CONFIG_PATH)).unwrap();
        std::fs::write(dir.path().join(CONFIG_PATH), "ports = 1\n").unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().ports, 1);
    }
}
