//! The CLI adapters against the fake `claude`, `gemini` and `codex` of
//! tests/fakes, in real repositories: invocations, rendered logs, usage,
//! failures, timeouts, `.worktreeinclude` and secret masking.

mod common;

use std::time::{Duration, Instant};

use aida_proto::common::{LogLine, RunResult};
use aida_worker::secrets::SecretMask;
use common::{Ctx, TestRepo, cli, fakes_dir, has_line};
use nix::sys::signal::kill;
use nix::unistd::Pid;

fn agent_lines(lines: &[LogLine]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == "agent")
        .map(|l| l.line.as_str())
        .collect()
}

fn starting_line(lines: &[LogLine]) -> &str {
    lines
        .iter()
        .find(|l| l.stream == "aida" && l.line.starts_with("starting "))
        .map(|l| l.line.as_str())
        .expect("a starting line")
}

fn assert_files(repo: &TestRepo, result: &RunResult, files: &[(&str, &str)]) {
    assert_ne!(result.commit, result.start_commit, "a commit was made");
    for (path, content) in files {
        assert_eq!(
            repo.file_at(&result.commit, path).as_deref(),
            Some(*content),
            "{path} in the commit"
        );
    }
}

#[tokio::test]
async fn claude_code_edits_files_and_reports_its_usage() {
    let repo = TestRepo::new();
    let ctx = Ctx::with_fakes();
    let mut spec = cli(
        "claude-code",
        &[
            ("append_system_prompt", "Keep it short."),
            ("allowed_tools", r#"["Read","Write","Bash(git diff:*)"]"#),
        ],
    );
    spec.model = "claude-opus-4-1".into();
    spec.max_turns = 10;
    spec.max_budget_usd = 5.0;
    let run = repo.agent_run(
        "claude",
        spec,
        "Add the notes\nwrite notes/a.txt: alpha\nwrite b.txt: beta\nturns 4",
    );
    let (result, lines) = ctx.execute(run.clone()).await;

    assert!(result.success, "{result:?}");
    assert_eq!(result.exit_code, 0);
    assert_files(
        &repo,
        &result,
        &[("notes/a.txt", "alpha\n"), ("b.txt", "beta\n")],
    );
    assert_eq!(result.summary, "Wrote notes/a.txt, b.txt.");
    let usage = result.usage.expect("usage reported");
    assert_eq!(usage.session_id.len(), 36, "{usage:?}");
    assert_eq!(usage.turns, 4);
    assert_eq!(usage.input_tokens, 600, "input plus cache reads");
    assert_eq!(usage.output_tokens, 100);
    assert!((usage.cost_usd - 0.04).abs() < 1e-9, "{usage:?}");

    let fake = fakes_dir().join("claude");
    assert_eq!(
        starting_line(&lines),
        format!(
            "starting claude-code agent: {} -p --output-format stream-json --verbose --permission-mode=acceptEdits --model=claude-opus-4-1 --max-turns=10 --max-budget-usd=5 \"--append-system-prompt=Keep it short.\" \"--allowedTools=Read,Write,Bash(git diff:*)\" -- <prompt>",
            fake.display()
        )
    );
    let rendered = agent_lines(&lines);
    assert_eq!(
        rendered[0],
        format!(
            "claude-code session {} started (model claude-opus-4-1, permission mode acceptEdits)",
            usage.session_id
        )
    );
    assert!(
        rendered
            .iter()
            .any(|l| l.starts_with("→ Write ") && l.ends_with("/notes/a.txt")),
        "{rendered:?}"
    );
    assert!(
        rendered
            .iter()
            .any(|l| l.starts_with("← Write ok: File created successfully at: ")),
        "{rendered:?}"
    );
    assert!(rendered.contains(&"Wrote notes/a.txt, b.txt."));
    assert_eq!(
        rendered.last().copied(),
        Some("result: success, 4 turns, $0.0400, 600 input / 100 output tokens")
    );
    assert!(
        !lines.iter().any(|l| l.stream == "stdout"),
        "every stdout line was an event"
    );
    ctx.assert_released(&run);
}

#[tokio::test]
async fn gemini_cli_edits_files_and_reports_its_usage() {
    let repo = TestRepo::new();
    let ctx = Ctx::with_fakes();
    let mut spec = cli("gemini-cli", &[]);
    spec.model = "gemini-2.5-flash".into();
    spec.max_turns = 3;
    let run = repo.agent_run(
        "gemini",
        spec,
        "write a.txt: one\nsay looking good\nwrite src/b.rs: fn main() {}",
    );
    let (result, lines) = ctx.execute(run).await;

    assert!(result.success, "{result:?}");
    assert_files(
        &repo,
        &result,
        &[("a.txt", "one\n"), ("src/b.rs", "fn main() {}\n")],
    );
    assert_eq!(result.summary, "Wrote a.txt, src/b.rs.");
    let usage = result.usage.expect("usage reported");
    assert_eq!(usage.session_id.len(), 36, "{usage:?}");
    assert_eq!(usage.input_tokens, 750);
    assert_eq!(usage.output_tokens, 150);
    assert_eq!(usage.turns, 0, "gemini-cli does not report turns");
    assert_eq!(usage.cost_usd, 0.0, "nor cost");

    assert_eq!(
        starting_line(&lines),
        format!(
            "starting gemini-cli agent: {} --prompt=<prompt> --output-format stream-json --approval-mode=auto_edit --model=gemini-2.5-flash",
            fakes_dir().join("gemini").display()
        )
    );
    assert!(
        lines.iter().any(|l| l.stream == "aida"
            && l.line
                .starts_with("max_turns 3 cannot be applied: gemini-cli has no turn-limit flag")),
        "{lines:?}"
    );
    let rendered = agent_lines(&lines);
    assert!(rendered.contains(&"→ write_file a.txt"), "{rendered:?}");
    assert!(
        rendered
            .iter()
            .any(|l| l.starts_with("← write_file ok: Successfully created and wrote to new file: ")),
        "{rendered:?}"
    );
    assert!(rendered.contains(&"looking good"), "{rendered:?}");
    assert!(rendered.contains(&"Wrote a.txt, src/b.rs."), "{rendered:?}");
    assert_eq!(
        rendered.last().copied(),
        Some("result: success, 750 input / 150 output tokens, 2 tool calls")
    );
}

#[tokio::test]
async fn codex_cli_edits_files_and_reports_its_usage() {
    let repo = TestRepo::new();
    let ctx = Ctx::with_fakes();
    let mut spec = cli("codex-cli", &[]);
    spec.model = "gpt-5-codex".into();
    let run = repo.agent_run("codex", spec, "-- starts with dashes\nwrite c.txt: see");
    let (result, lines) = ctx.execute(run).await;

    assert!(result.success, "{result:?}");
    assert_files(&repo, &result, &[("c.txt", "see\n")]);
    assert_eq!(result.summary, "Wrote c.txt.");
    let usage = result.usage.expect("usage reported");
    assert_eq!(usage.session_id.len(), 36, "{usage:?}");
    assert_eq!(usage.turns, 1);
    assert_eq!(usage.input_tokens, 2000);
    assert_eq!(usage.output_tokens, 200);

    assert_eq!(
        starting_line(&lines),
        format!(
            "starting codex-cli agent: {} -a never exec --json -s workspace-write --model=gpt-5-codex -- <prompt>",
            fakes_dir().join("codex").display()
        )
    );
    let rendered = agent_lines(&lines);
    assert!(
        rendered
            .iter()
            .any(|l| l.starts_with("files completed: add ") && l.ends_with("/c.txt")),
        "{rendered:?}"
    );
    assert_eq!(
        rendered.last().copied(),
        Some("turn completed: 2000 input (800 cached) / 200 output tokens")
    );
}

#[tokio::test]
async fn flags_a_cli_does_not_know_fail_the_run_with_its_usage_message() {
    let repo = TestRepo::new();
    let ctx = Ctx::with_fakes();

    let run = repo.agent_run(
        "bad-claude",
        cli("claude-code", &[("permission_mode", "yolo")]),
        "write x.txt: x",
    );
    let (result, lines) = ctx.execute(run).await;
    assert!(!result.success);
    assert_eq!(result.exit_code, 2);
    assert!(
        result.error.starts_with(
            "claude-code exited with code 2: claude: error: argument --permission-mode: invalid choice: 'yolo'"
        ),
        "{}",
        result.error
    );
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stderr" && l.line.starts_with("usage: claude")),
        "{lines:?}"
    );
    assert_eq!(result.commit, result.start_commit, "nothing was written");

    let run = repo.agent_run(
        "bad-gemini",
        cli("gemini-cli", &[("approval_mode", "always")]),
        "write x.txt: x",
    );
    let (result, _) = ctx.execute(run).await;
    assert!(!result.success);
    assert_eq!(result.exit_code, 2);
    assert!(
        result
            .error
            .contains("gemini: error: argument --approval-mode: invalid choice: 'always'"),
        "{}",
        result.error
    );
}

#[tokio::test]
async fn bypass_permissions_needs_the_operators_consent() {
    let repo = TestRepo::new();
    let mut ctx = Ctx::with_fakes();
    let run = repo.agent_run(
        "bypass",
        cli("claude-code", &[("permission_mode", "bypassPermissions")]),
        "write y.txt: y",
    );
    let (result, _) = ctx.execute(run.clone()).await;
    assert!(!result.success);
    assert_eq!(
        result.error,
        "claude-code asks for \"bypassPermissions\", which this worker does not allow (set ALLOW_BYPASS_PERMISSIONS=true only on isolated workers)"
    );
    assert!(result.commit.is_empty(), "the run never started");

    let gemini = repo.agent_run("yolo", cli("gemini-cli", &[("approval_mode", "yolo")]), "x");
    let (result, _) = ctx.execute(gemini).await;
    assert!(result.error.contains("\"yolo\""), "{}", result.error);

    ctx.ctx.agents.allow_bypass_permissions = true;
    let (result, lines) = ctx.execute(run).await;
    assert!(result.success, "{result:?}");
    assert!(starting_line(&lines).contains("--permission-mode=bypassPermissions"));
    assert_files(&repo, &result, &[("y.txt", "y\n")]);
}

#[tokio::test]
async fn reported_failures_and_limits_give_clear_errors() {
    let repo = TestRepo::new();
    let ctx = Ctx::with_fakes();
    let cases: Vec<(&str, aida_proto::common::AgentSpec, &str, &str)> = vec![
        (
            "gemini-42",
            cli("gemini-cli", &[]),
            "exit 42",
            "gemini-cli rejected its input (exit code 42: invalid prompt or arguments): Invalid input: the prompt was rejected",
        ),
        (
            "gemini-53",
            cli("gemini-cli", &[]),
            "write half.txt: h\nexit 53",
            "gemini-cli exceeded its turn limit (exit code 53): Reached max session turns for this session",
        ),
        (
            "gemini-fail",
            cli("gemini-cli", &[]),
            "fail quota exhausted",
            "gemini-cli failed (exit code 1: general or API error): quota exhausted",
        ),
        (
            "claude-fail",
            cli("claude-code", &[]),
            "fail the API is down",
            "claude-code failed during execution: the API is down",
        ),
        (
            "claude-turns",
            aida_proto::common::AgentSpec {
                max_turns: 2,
                ..cli("claude-code", &[])
            },
            "turns 5",
            "claude-code stopped at its turn limit (2 turns)",
        ),
        (
            "claude-budget",
            aida_proto::common::AgentSpec {
                max_budget_usd: 1.0,
                ..cli("claude-code", &[])
            },
            "cost 3",
            "claude-code stopped at its budget limit ($3.0000 spent)",
        ),
        (
            "codex-fail",
            cli("codex-cli", &[]),
            "fail stream disconnected",
            "codex-cli failed: stream disconnected",
        ),
    ];
    for (name, spec, prompt, error) in cases {
        let run = repo.agent_run(name, spec, prompt);
        let (result, lines) = ctx.execute(run).await;
        assert!(!result.success, "{name}: {result:?}");
        assert_eq!(result.error, error, "{name}");
        assert!(
            has_line(&lines, "aida", &format!("agent failed: {error}")),
            "{name}: {lines:?}"
        );
    }
    // Work done before the failure is kept on the branch.
    let run = repo.agent_run(
        "gemini-53b",
        cli("gemini-cli", &[]),
        "write half.txt: h\nexit 53",
    );
    let (result, _) = ctx.execute(run).await;
    assert_eq!(result.exit_code, 53);
    assert_eq!(
        repo.file_at(&result.commit, "half.txt").as_deref(),
        Some("h\n")
    );
}

/// Alive and not a zombie (an orphan may wait a moment to be reaped).
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    !matches!(state, Some('Z') | Some('X') | None)
}

async fn wait_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !alive(pid)
}

fn child_pid(lines: &[LogLine], prefix: &str) -> i32 {
    lines
        .iter()
        .find_map(|l| l.line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_run_past_its_timeout_is_killed_with_its_process_group() {
    let repo = TestRepo::new();
    let ctx = Ctx::with_fakes();
    for (kind, prog) in [
        ("claude-code", "claude"),
        ("gemini-cli", "gemini"),
        ("codex-cli", "codex"),
    ] {
        let spec = aida_proto::common::AgentSpec {
            timeout_secs: 1,
            ..cli(kind, &[])
        };
        let run = repo.agent_run(
            &format!("slow-{prog}"),
            spec,
            "write early.txt: e\nsleep 1000",
        );
        let started = Instant::now();
        let (result, lines) = ctx.execute(run.clone()).await;
        assert!(started.elapsed() < Duration::from_secs(20), "{kind}");
        assert!(!result.success, "{kind}");
        assert_eq!(result.error, "timed out after 1 s", "{kind}");
        assert_eq!(result.exit_code, -1);
        let sleeper = child_pid(&lines, &format!("{prog}: child sleep pid "));
        assert!(
            wait_dead(sleeper).await,
            "{kind}: child sleep {sleeper} survived"
        );
        assert_eq!(
            repo.file_at(&result.commit, "early.txt").as_deref(),
            Some("e\n"),
            "{kind}: partial work kept"
        );
        // What the CLI said before it was stopped still counts.
        assert!(
            !result.usage.unwrap_or_default().session_id.is_empty(),
            "{kind}"
        );
        ctx.assert_released(&run);
    }

    // The plain command agent has the same limit.
    let mut run = repo.run(
        "slow-command",
        &["sh", "-c", "sleep 1000 & echo child=$!; wait"],
    );
    run.agent.as_mut().unwrap().timeout_secs = 1;
    let (result, lines) = ctx.execute(run).await;
    assert_eq!(result.error, "timed out after 1 s");
    let sleeper = child_pid(&lines, "child=");
    assert!(wait_dead(sleeper).await, "child sleep {sleeper} survived");
}

#[tokio::test]
async fn worktreeinclude_copies_ignored_files_that_are_never_committed() {
    let repo = TestRepo::with_files(&[(".gitignore", ".env\nsecrets/\nlocal.txt\n")]);
    let root = repo.path();
    std::fs::write(root.join(".env"), "API_URL=http://localhost\n").unwrap();
    std::fs::create_dir_all(root.join("secrets/deep")).unwrap();
    std::fs::write(root.join("secrets/dev.key"), "dev-key\n").unwrap();
    std::fs::write(root.join("secrets/deep/x.key"), "x-key\n").unwrap();
    std::fs::write(root.join("secrets/notes.md"), "not a key\n").unwrap();
    std::fs::write(root.join("untracked.txt"), "not ignored\n").unwrap();
    std::fs::write(root.join("README.md"), "changed in the main tree\n").unwrap();
    std::fs::write(
        root.join(".worktreeinclude"),
        "# files every worktree needs\n.env\nsecrets/**/*.key\nuntracked.txt\nREADME.md\n../escape\nmissing.txt\n",
    )
    .unwrap();
    let ctx = Ctx::new();
    let run = repo.run(
        "include",
        &[
            "sh",
            "-c",
            "cat .env secrets/dev.key secrets/deep/x.key README.md > seen.txt; ls secrets >> seen.txt; test -e untracked.txt && echo leaked >> seen.txt; true",
        ],
    );
    let (result, lines) = ctx.execute(run).await;
    assert!(result.success, "{result:?}");
    assert!(
        has_line(
            &lines,
            "aida",
            "copied from .worktreeinclude: .env, secrets/deep/x.key, secrets/dev.key"
        ),
        "{lines:?}"
    );
    assert_eq!(
        repo.file_at(&result.commit, "seen.txt").as_deref(),
        Some("API_URL=http://localhost\ndev-key\nx-key\nhello\ndeep\ndev.key\n"),
        "ignored files copied, tracked README from the commit, untracked file not copied"
    );
    for ignored in [".env", "secrets/dev.key", "secrets/deep/x.key"] {
        assert_eq!(
            repo.file_at(&result.commit, ignored),
            None,
            "{ignored} committed"
        );
    }
}

#[tokio::test]
async fn secrets_from_the_environment_never_leave_the_worker() {
    let repo = TestRepo::new();
    let mut ctx = Ctx::with_fakes();
    ctx.ctx.secrets = std::sync::Arc::new(SecretMask::from_vars([
        ("AIDA_TEST_API_KEY", "sk-test-123456"),
        ("HOME_DIR", "sk-test-not-a-secret-name"),
    ]));
    let mut run = repo.run(
        "leaky",
        &[
            "sh",
            "-c",
            "echo token=$0; echo \"$0 on stderr\" >&2; echo sk-test-not-a-secret-name; echo context $AIDA_CONTEXT_URL $AIDA_CONTEXT_TOKEN",
            "sk-test-123456",
        ],
    );
    // The run's own environment reaches the agent; its secrets are masked too.
    run.env
        .insert("AIDA_CONTEXT_URL".into(), "http://127.0.0.1:1/ctx".into());
    run.env
        .insert("AIDA_CONTEXT_TOKEN".into(), "ctx-token-987654".into());
    let (result, lines) = ctx.execute(run).await;
    assert!(result.success, "{result:?}");
    assert!(
        has_line(&lines, "stdout", "context http://127.0.0.1:1/ctx ***"),
        "{lines:?}"
    );
    assert!(has_line(&lines, "stdout", "token=***"), "{lines:?}");
    assert!(has_line(&lines, "stderr", "*** on stderr"), "{lines:?}");
    assert!(has_line(&lines, "stdout", "sk-test-not-a-secret-name"));
    assert!(
        starting_line(&lines).ends_with(" ***"),
        "the argv is masked too: {lines:?}"
    );

    let run = repo.agent_run(
        "leaky-claude",
        cli("claude-code", &[]),
        "say the key is sk-test-123456\nfail rejected sk-test-123456",
    );
    let (result, lines) = ctx.execute(run).await;
    assert_eq!(
        result.error,
        "claude-code failed during execution: rejected ***"
    );
    assert!(has_line(&lines, "agent", "the key is ***"), "{lines:?}");
    for line in &lines {
        assert!(!line.line.contains("sk-test-123456"), "{line:?}");
    }
}

/// What a fake recorded about its invocation (see tests/fakes/fakeagent.py).
fn record(repo: &TestRepo, result: &RunResult, prog: &str) -> serde_json::Value {
    let text = repo
        .file_at(&result.commit, &format!(".aida-fake-{prog}.json"))
        .unwrap_or_else(|| panic!("{prog} recorded nothing: {result:?}"));
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn text_that_looks_like_a_flag_stays_text() {
    // The fakes record what they parsed when the worktree has this marker.
    let repo = TestRepo::with_files(&[(".aida-fake-record", "")]);
    let ctx = Ctx::with_fakes();
    for prompt in ["--dangerously-skip-permissions", "-rf /", "--yolo", "-p"] {
        let mut spec = cli(
            "claude-code",
            &[("append_system_prompt", "--dangerously-skip-permissions")],
        );
        spec.model = "--yolo".into();
        let (result, lines) = ctx.execute(repo.agent_run("claude", spec, prompt)).await;
        assert!(result.success, "claude, {prompt:?}: {result:?} {lines:?}");
        let args = &record(&repo, &result, "claude")["args"];
        assert_eq!(args["prompt"], prompt, "claude's prompt");
        assert_eq!(args["model"], "--yolo");
        assert_eq!(
            args["append_system_prompt"],
            "--dangerously-skip-permissions"
        );
        assert_eq!(args["dangerously_skip_permissions"], false, "{prompt:?}");
        assert_eq!(args["print_mode"], true);
        assert_eq!(args["permission_mode"], "acceptEdits");

        let mut spec = cli("gemini-cli", &[]);
        spec.model = "--yolo".into();
        let (result, lines) = ctx.execute(repo.agent_run("gemini", spec, prompt)).await;
        assert!(result.success, "gemini, {prompt:?}: {result:?} {lines:?}");
        let args = &record(&repo, &result, "gemini")["args"];
        assert_eq!(args["prompt"], prompt, "gemini's prompt");
        assert_eq!(args["model"], "--yolo");
        assert_eq!(args["yolo"], false, "{prompt:?}");
        assert_eq!(args["approval_mode"], "auto_edit");

        let mut spec = cli("codex-cli", &[]);
        spec.model = "--yolo".into();
        let (result, lines) = ctx.execute(repo.agent_run("codex", spec, prompt)).await;
        assert!(result.success, "codex, {prompt:?}: {result:?} {lines:?}");
        let args = &record(&repo, &result, "codex")["args"];
        assert_eq!(args["prompt"], prompt, "codex's prompt");
        assert_eq!(args["exec_model"], "--yolo");
        assert_eq!(args["model"], serde_json::Value::Null);
        assert_eq!(
            args["dangerously_bypass_approvals_and_sandbox"], false,
            "{prompt:?}"
        );
        assert_eq!(args["sandbox"], "workspace-write");
    }
}

#[tokio::test]
async fn resuming_a_session_passes_its_id_to_each_cli() {
    let repo = TestRepo::with_files(&[(".aida-fake-record", "")]);
    let ctx = Ctx::with_fakes();
    let session = "0199a213-81c0-7800-8aa1-bbab2a035a53";
    for (kind, prog, resume_arg) in [
        ("claude-code", "claude", format!("--resume={session}")),
        ("gemini-cli", "gemini", format!("--resume={session}")),
        ("codex-cli", "codex", "resume".to_owned()),
    ] {
        let mut spec = cli(kind, &[]);
        spec.model = "m-1".into();
        let mut run = repo.agent_run(prog, spec, "-p\nwrite again.txt: more");
        run.resume_session = session.into();
        let (result, lines) = ctx.execute(run).await;
        assert!(result.success, "{kind}: {result:?} {lines:?}");
        assert_files(&repo, &result, &[("again.txt", "more\n")]);
        // The CLI reports the session it resumed.
        assert_eq!(
            result.usage.clone().unwrap_or_default().session_id,
            session,
            "{kind}"
        );
        let recorded = record(&repo, &result, prog);
        let argv: Vec<&str> = recorded["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(argv.contains(&resume_arg.as_str()), "{kind}: {argv:?}");
        let args = &recorded["args"];
        assert_eq!(args["prompt"], "-p\nwrite again.txt: more", "{kind}");
        match prog {
            "codex" => {
                assert_eq!(
                    &argv[..],
                    [
                        "-a",
                        "never",
                        "exec",
                        "--json",
                        "-s",
                        "workspace-write",
                        "--model=m-1",
                        "resume",
                        session,
                        "--",
                        "-p\nwrite again.txt: more"
                    ]
                );
                assert_eq!(args["resume"], true);
                assert_eq!(args["session_id"], session);
                assert_eq!(args["last"], false);
                assert_eq!(args["sandbox"], "workspace-write");
                assert_eq!(args["json"], true);
                assert_eq!(args["exec_model"], "m-1");
            }
            _ => assert_eq!(args["resume"], session, "{kind}"),
        }
        assert!(
            starting_line(&lines).contains(&resume_arg),
            "{kind}: {lines:?}"
        );
    }

    // An id that could be read as a flag or worse is not passed on.
    let mut run = repo.agent_run("bad-id", cli("claude-code", &[]), "say hi");
    run.resume_session = "--dangerously-skip-permissions".into();
    let (result, lines) = ctx.execute(run).await;
    assert!(result.success, "{result:?}");
    assert!(
        has_line(
            &lines,
            "aida",
            "resume_session \"--dangerously-skip-permissions\" is not a valid session id; starting a new session"
        ),
        "{lines:?}"
    );
    let recorded = record(&repo, &result, "claude");
    assert_eq!(recorded["args"]["resume"], serde_json::Value::Null);
    assert_eq!(recorded["args"]["dangerously_skip_permissions"], false);
    assert_ne!(
        result.usage.unwrap_or_default().session_id,
        "--dangerously-skip-permissions"
    );
}
