//! The `aida` command line: drives a running AIDA through the gateway's REST
//! API, signed in (see `credentials` for which token a request carries).
//! Data goes to stdout, diagnostics to stderr; no token or password is ever
//! printed. Adding a subcommand is a variant of [`Command`] plus a module in
//! `commands`.

mod client;
mod commands;
mod credentials;
mod mcp;
mod output;
mod tui;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::Global;

#[derive(Debug, Parser)]
#[command(
    name = "aida",
    version,
    about = "Run AI coding agents in parallel and merge their work"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, inspect and cancel tasks.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// List the workers.
    Workers(commands::workers::WorkersArgs),
    /// The system at a glance: health, workers, queue, tasks under way,
    /// last failures.
    Status(commands::status::StatusArgs),
    /// The terminal UI: tasks, subtasks and live logs; cancel and approve.
    Tui(commands::status::TuiArgs),
    /// Follow a task's events until it finished; exit 0 if it succeeded.
    Watch(commands::watch::WatchArgs),
    /// Run every service in this process on 127.0.0.1: gateway,
    /// orchestrator (SQLite), workers and aggregator; sign-in on, secrets
    /// and an admin token made under data/.
    Dev(commands::dev::DevArgs),
    /// Back up and restore the orchestrator's database, and make users on
    /// it directly; remove what old tasks left behind (gc).
    #[command(subcommand)]
    Admin(commands::admin::AdminCommand),
    /// Sign in to a gateway; later commands send the login's token.
    Login(commands::login::LoginArgs),
    /// End the stored login for the gateway and forget it.
    Logout(commands::login::LogoutArgs),
    /// Who the gateway takes you for.
    Whoami(commands::login::WhoamiArgs),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// List, create, change and delete users (admin).
    #[command(subcommand)]
    User(commands::user::UserCommand),
    /// Read the audit trail, newest first (admin).
    Audit(commands::audit::AuditArgs),
    /// List, show, store and delete workflows (reusable task templates).
    #[command(subcommand)]
    Workflow(commands::workflow::WorkflowCommand),
    /// Make a task of a workflow with its parameters.
    Run(commands::workflow::RunArgs),
    /// Serve AIDA's tools (create_task, wait_task, get_report, ...) to an
    /// MCP client over stdio: `claude mcp add aida -- aida mcp`.
    Mcp(commands::mcp::McpArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Task(command) => command.run(&cli.global).await,
        Command::Workers(args) => args.run(&cli.global).await,
        Command::Status(args) => args.run(&cli.global).await,
        Command::Tui(args) => args.run(&cli.global).await,
        Command::Watch(args) => args.run(&cli.global).await,
        Command::Dev(args) => args.run(&cli.global).await,
        Command::Admin(command) => command.run(&cli.global).await,
        Command::Login(args) => args.run(&cli.global).await,
        Command::Logout(args) => args.run(&cli.global).await,
        Command::Whoami(args) => args.run(&cli.global).await,
        Command::Token(command) => command.run(&cli.global).await,
        Command::User(command) => command.run(&cli.global).await,
        Command::Audit(args) => args.run(&cli.global).await,
        Command::Workflow(command) => command.run(&cli.global).await,
        Command::Run(args) => args.run(&cli.global).await,
        Command::Mcp(args) => args.run(&cli.global).await,
    };
    result.unwrap_or_else(|err| {
        eprintln!("aida: {err:#}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use aida_gateway::api::{AgentSpec, CreateTask, SubtaskSpec};
    use clap::CommandFactory;

    use super::*;
    use crate::commands::task::TaskCommand;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn create(args: &[&str]) -> Result<commands::task::CreateArgs, clap::Error> {
        let argv = ["aida", "task", "create"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Task(TaskCommand::Create(args)) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn spec(name: &str, prompt: &str, depends_on: &[&str]) -> SubtaskSpec {
        SubtaskSpec {
            name: name.into(),
            prompt: prompt.into(),
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
            agent: None,
            fallback: None,
            candidates: None,
            judge: None,
            paths: Vec::new(),
        }
    }

    #[test]
    fn flags_build_the_request_body() {
        let args = create(&[
            "--repo",
            "/srv/shop",
            "--base",
            "main",
            "--description",
            "add an api",
            "--priority",
            "-2",
            "--subtask",
            "a=write x",
            "--subtask",
            "b=use x = y",
            "--depends",
            "b=a",
            "--command",
            "sh",
            "--arg",
            "-c",
            "--arg",
            "echo hi",
        ])
        .unwrap();
        let body = args.request().unwrap();
        assert_eq!(
            body,
            CreateTask {
                repo: "/srv/shop".into(),
                base: Some("main".into()),
                description: "add an api".into(),
                agent: Some(AgentSpec {
                    kind: "command".into(),
                    command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                    ..Default::default()
                }),
                subtasks: vec![spec("a", "write x", &[]), spec("b", "use x = y", &["a"])],
                priority: -2,
                plan: None,
                max_attempts: None,
                timeout_secs: None,
                deliver: None,
                setup: None,
                verify: None,
                merge_policy: None,
                resolve: None,
            }
        );
    }

    #[test]
    fn the_command_can_follow_a_double_dash() {
        let args = create(&[
            "--repo",
            "/r",
            "--description",
            "d",
            "--agent",
            "claude-code",
            "--option",
            "model=opus",
            "--",
            "claude",
            "-p",
            "--verbose",
        ])
        .unwrap();
        let agent = args.request().unwrap().agent.unwrap();
        assert_eq!(agent.kind, "claude-code");
        assert_eq!(agent.command, ["claude", "-p", "--verbose"]);
        assert_eq!(agent.options["model"], "opus");
    }

    #[test]
    fn relative_repos_become_absolute() {
        let args = create(&["--repo", "shop", "--description", "d", "--", "true"]).unwrap();
        let repo = args.request().unwrap().repo;
        assert!(
            std::path::Path::new(&repo).is_absolute() && repo.ends_with("shop"),
            "{repo}"
        );
    }

    #[test]
    fn mistakes_are_caught_before_calling_the_api() {
        // A dependency of an undeclared subtask.
        let args = create(&[
            "--repo",
            "/r",
            "--description",
            "d",
            "--subtask",
            "a=x",
            "--depends",
            "b=a",
            "--",
            "true",
        ])
        .unwrap();
        assert!(
            args.request()
                .unwrap_err()
                .to_string()
                .contains("no --subtask b")
        );
        // The command agent without a command.
        let args = create(&["--repo", "/r", "--description", "d"]).unwrap();
        assert!(args.request().is_err());
        // Not NAME=PROMPT.
        assert!(
            create(&[
                "--repo",
                "/r",
                "--description",
                "d",
                "--subtask",
                "oops",
                "--",
                "true"
            ])
            .is_err()
        );
        // --file excludes the flags, and the flags need --repo.
        assert!(create(&["--file", "t.json", "--repo", "/r"]).is_err());
        assert!(create(&["--description", "d", "--", "true"]).is_err());
        // --command and a trailing command are two answers to one question.
        assert!(
            create(&[
                "--repo",
                "/r",
                "--description",
                "d",
                "--command",
                "a",
                "--",
                "b"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_file_holds_the_rest_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.json");
        std::fs::write(
            &path,
            r#"{"repo": "/r", "description": "d", "agent": {"kind": "command", "command": ["true"]},
                "subtasks": [{"name": "a", "prompt": "p"}, {"name": "b", "prompt": "q", "depends_on": ["a"]}]}"#,
        )
        .unwrap();
        let body = create(&["--file", path.to_str().unwrap()])
            .unwrap()
            .request()
            .unwrap();
        assert_eq!(
            body.subtasks,
            vec![spec("a", "p", &[]), spec("b", "q", &["a"])]
        );

        std::fs::write(&path, r#"{"repo": "/r", "description": "d", "typo": 1}"#).unwrap();
        let err = create(&["--file", path.to_str().unwrap()])
            .unwrap()
            .request()
            .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `typo`"));
    }

    #[test]
    fn aida_dev_listens_on_loopback_unless_told_otherwise() {
        let Command::Dev(args) = Cli::try_parse_from(["aida", "dev"]).unwrap().command else {
            panic!("not dev");
        };
        // The variables may be set where the tests run.
        for (addr, var, default) in [
            (&args.gateway_addr, "GATEWAY_LISTEN_ADDR", "127.0.0.1:8080"),
            (
                &args.orchestrator_addr,
                "ORCHESTRATOR_LISTEN_ADDR",
                "127.0.0.1:50051",
            ),
            (
                &args.aggregator_addr,
                "AGGREGATOR_LISTEN_ADDR",
                "127.0.0.1:50053",
            ),
        ] {
            let expected = std::env::var(var).unwrap_or_else(|_| default.into());
            assert_eq!(addr, &expected);
        }
    }

    #[test]
    fn the_url_comes_from_the_flag_or_its_default() {
        let cli = Cli::try_parse_from(["aida", "workers", "--url", "http://gw:9000"]).unwrap();
        assert_eq!(cli.global.url, "http://gw:9000");
        let cli = Cli::try_parse_from(["aida", "watch", "x"]).unwrap();
        // AIDA_URL may be set where the tests run.
        let expected = std::env::var("AIDA_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
        assert_eq!(cli.global.url, expected);
    }
}
