//! The `aida` command line against a running system, with sign-in on:
//! create a task with flags, watch it to the end, read it back with show,
//! list, report and workers; log in and out, renew a login, override it
//! with `AIDA_TOKEN`, and manage API tokens, users and the audit trail
//! through the CLI. Every run of the CLI gets a configuration directory of
//! the test's own, never the user's.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aida_tests::process::bin;
use aida_tests::system::ADMIN;
use aida_tests::{GitRepo, System};
use serde_json::{Value, json};

/// The CLI as one user on one machine: a home and configuration directory
/// of its own, and every output kept, to look for secrets in.
struct Cli<'a> {
    system: &'a System,
    home: tempfile::TempDir,
    outputs: std::cell::RefCell<Vec<String>>,
}

impl<'a> Cli<'a> {
    fn new(system: &'a System) -> Self {
        Cli {
            system,
            home: tempfile::tempdir().unwrap(),
            outputs: Default::default(),
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.home.path().join("config")
    }

    fn credentials_file(&self) -> PathBuf {
        self.config_dir().join("aida/credentials.json")
    }

    /// Runs `aida --url <system> args`, with `AIDA_TOKEN` only when given
    /// and `stdin` on its standard input.
    fn run(&self, token: Option<&str>, stdin: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("aida"));
        cmd.arg("--url")
            .arg(&self.system.url)
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config_dir())
            .env_remove("AIDA_TOKEN")
            .env_remove("AIDA_URL")
            .current_dir(self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            cmd.env("AIDA_TOKEN", token);
        }
        let mut child = cmd.spawn().expect("run aida");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        self.outputs.borrow_mut().push(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        out
    }

    /// `run` without a token of the test's (the stored login, if any).
    fn aida(&self, args: &[&str]) -> Output {
        self.run(None, None, args)
    }

    /// The stored entry for the system's gateway.
    fn stored(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.credentials_file()).ok()?;
        let file: Value = serde_json::from_str(&text).unwrap();
        let entry = file["gateways"][&self.system.url].clone();
        (!entry.is_null()).then_some(entry)
    }

    fn edit_stored(&self, change: impl FnOnce(&mut Value)) {
        let path = self.credentials_file();
        let mut file: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut file["gateways"][&self.system.url]);
        std::fs::write(&path, file.to_string()).unwrap();
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "aida failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("aida --json prints JSON on stdout")
}

/// Fails with its stderr; returns the stderr.
fn fails(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "aida should have failed: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
    err
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_watches_and_reports_a_task() {
    let system = System::start(1).await;
    let cli = Cli::new(&system);
    let aida = |args: &[&str]| cli.run(Some(&system.admin_token), None, args);
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);

    let created = aida(&[
        "task",
        "create",
        "--json",
        "--repo",
        repo.path_str(),
        "--description",
        "cli demo",
        "--subtask",
        "a=write a",
        "--subtask",
        "b=write b",
        "--depends",
        "b=a",
        "--",
        "sh",
        "-c",
        "cat > \"$AIDA_SUBTASK_NAME.txt\"",
    ]);
    let task = stdout_json(&created);
    let id = task["id"].as_str().expect("id").to_owned();
    assert_eq!(task["created_by"], ADMIN, "{task:#}");

    // watch follows the live events (with the token) and exits 0 once the
    // task succeeded.
    let watched = aida(&["watch", &id]);
    let lines = String::from_utf8_lossy(&watched.stdout);
    assert!(
        watched.status.success(),
        "watch: {lines}\n{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        lines.contains("task.created") && lines.contains("subtask.status"),
        "{lines}"
    );

    let shown = stdout_json(&aida(&["task", "show", &id, "--json"]));
    assert_eq!(shown["status"], "succeeded", "{shown:#}");
    // The prompt arrived on stdin and became the file's content.
    let result = shown["result_branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "a.txt").as_deref(), Some("write a"));
    // b depends on a: its prompt goes on with what a did.
    let b = repo.show(result, "b.txt").unwrap();
    assert!(
        b.starts_with("write b\n\n---\n") && b.contains("### a\n"),
        "{b}"
    );
    // Who created it shows in the human forms too.
    let text = ok(&aida(&["task", "show", &id]));
    assert!(text.contains(&format!(" by {ADMIN}\n")), "{text}");
    let table = ok(&aida(&["task", "list"]));
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in {table}"));
    assert!(row.split_whitespace().any(|cell| cell == ADMIN), "{table}");
    assert!(table.lines().next().unwrap().contains("BY"), "{table}");

    let listed = stdout_json(&aida(&["task", "list", "--json"]));
    assert!(listed.to_string().contains(&id), "{listed}");

    let report = aida(&["task", "report", &id]);
    assert!(report.status.success());
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.starts_with(&format!("# AIDA task {id}: succeeded")),
        "{report}"
    );
    for subtask in [
        "| a | succeeded | worker-1 |",
        "| b | succeeded | worker-1 |",
    ] {
        assert!(
            report.contains(subtask),
            "{subtask:?} missing from {report}"
        );
    }
    assert!(report.contains("No conflicts."), "{report}");

    let workers = stdout_json(&aida(&["workers", "--json"]));
    assert!(workers.to_string().contains("worker-1"), "{workers}");

    // A failing request: a message on stderr, nothing on stdout, exit 1.
    let bad = aida(&["task", "show", "not-a-task"]);
    assert!(fails(&bad).contains("not-a-task"));

    // Without any token the API refuses, and the CLI says what to do.
    let err = fails(&cli.aida(&["task", "list"]));
    assert!(
        err.contains("HTTP 401") && err.contains(&format!("aida login --url {}", system.url)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_tokens_users_and_the_audit_trail_through_the_cli() {
    let system = System::start(0).await;
    let cli = Cli::new(&system);
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);
    let admin_password = format!("{}\n", system.secrets.admin_password);

    // Without --username and without a terminal there is nobody to ask.
    let err = fails(&cli.run(None, Some(&admin_password), &["login", "--password-stdin"]));
    assert!(err.contains("--username"), "{err}");
    // A wrong password is refused and nothing is stored.
    let err = fails(&cli.run(
        None,
        Some("Wrong-passw0rd!\n"),
        &["login", "--username", ADMIN, "--password-stdin"],
    ));
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(cli.stored().is_none());

    // 1. login keeps the tokens in a file of the user's alone.
    let out = cli.run(
        None,
        Some(&admin_password),
        &["login", "--username", ADMIN, "--password-stdin"],
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("logged in"),
        "{out:?}"
    );
    let file = cli.credentials_file();
    assert_eq!(mode(&file), 0o600, "the credentials file");
    assert_eq!(mode(file.parent().unwrap()), 0o700, "its directory");
    let login = cli.stored().expect("the login is stored for the URL");
    assert_eq!(login["username"], ADMIN);
    let first_refresh = login["refresh_token"].as_str().unwrap().to_owned();
    assert!(login["access_token"].as_str().unwrap().starts_with("eyJ"));
    assert!(login["expires_at"].is_string());

    // Later commands need no AIDA_TOKEN.
    assert_eq!(ok(&cli.aida(&["whoami"])), "admin (admin) via jwt\n");

    // 2. Users through the CLI.
    let vic_password = "Vic-passw0rd-123!";
    ok(&cli.run(
        None,
        Some(&format!("{vic_password}\n")),
        &[
            "user",
            "create",
            "vic",
            "--role",
            "viewer",
            "--password-stdin",
        ],
    ));
    let users = stdout_json(&cli.aida(&["user", "list", "--json"]));
    let vic = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "vic")
        .expect("vic is listed");
    assert_eq!(vic["role"], "viewer");
    assert_eq!(vic["created_by"], ADMIN);
    let table = ok(&cli.aida(&["user", "list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("vic ") && l.contains("viewer")),
        "{table}"
    );

    // 3. AIDA_TOKEN overrides the stored login: as a viewer, creating a
    //    task is refused with the API's 403 message.
    let vic_token = system.login("vic", vic_password).await.unwrap();
    assert_eq!(
        ok(&cli.run(Some(&vic_token), None, &["whoami"])),
        "vic (viewer) via jwt\n"
    );
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let create = [
        "task",
        "create",
        "--repo",
        repo.path_str(),
        "--description",
        "not for viewers",
        "--",
        "true",
    ];
    let err = fails(&cli.run(Some(&vic_token), None, &create));
    assert!(
        err.contains("HTTP 403") && err.contains("a viewer may not do this"),
        "{err}"
    );
    assert!(
        stdout_json(&cli.aida(&["task", "list", "--json"]))
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );

    // 4. API tokens: shown once on stdout, usable at once, refused at once
    //    when revoked.
    let out = cli.aida(&["token", "create", "--name", "ci", "--role", "operator"]);
    let token = ok(&out).trim().to_owned();
    assert!(token.starts_with("aida_pat_"), "only the token on stdout");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("shown only now") && !note.contains(&token),
        "{note}"
    );
    let tokens = stdout_json(&cli.aida(&["token", "list", "--json"]));
    let ci = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .expect("ci is listed");
    let id = ci["id"].as_str().unwrap().to_owned();
    assert!(token.contains(&id));
    assert_eq!(ci["owner"], ADMIN);
    assert!(
        !tokens.to_string().contains(&token),
        "lists hold no secrets"
    );
    assert_eq!(
        ok(&cli.run(Some(&token), None, &["whoami"])),
        format!("admin (operator) via api_token:{id}\n")
    );
    let table = ok(&cli.aida(&["token", "list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("active")),
        "{table}"
    );

    let revoked = ok(&cli.aida(&["token", "revoke", &id]));
    assert!(revoked.contains(&id), "{revoked}");
    let err = fails(&cli.run(Some(&token), None, &["whoami"]));
    assert!(
        err.contains("HTTP 401") && err.contains("the token in AIDA_TOKEN was refused"),
        "{err}"
    );
    let table = ok(&cli.aida(&["token", "list"]));
    assert!(
        !table.contains(&id),
        "revoked tokens only with --all: {table}"
    );
    let table = ok(&cli.aida(&["token", "list", "--all"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{table}"
    );

    // Changing and deleting users.
    let vic = stdout_json(&cli.aida(&["user", "update", "vic", "--role", "operator", "--json"]));
    assert_eq!(vic["role"], "operator");
    let vic = stdout_json(&cli.aida(&["user", "update", "vic", "--disable", "--json"]));
    assert_eq!(vic["disabled"], true);
    let err = fails(&cli.aida(&["user", "update", "vic"]));
    assert!(err.contains("nothing to change"), "{err}");
    ok(&cli.aida(&["user", "delete", "vic"]));
    let users = stdout_json(&cli.aida(&["user", "list", "--json"]));
    assert!(!users.to_string().contains("\"vic\""), "{users}");

    // 5. The audit trail, filtered.
    let entries = stdout_json(&cli.aida(&[
        "audit",
        "--action",
        "token.",
        "--user",
        ADMIN,
        "--since",
        &started.to_rfc3339(),
        "--json",
    ]));
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["token.create", "token.revoke"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(
        actions.iter().all(|a| a.starts_with("token.")),
        "{actions:?}"
    );
    let table = ok(&cli.aida(&["audit", "--action", "user.", "--limit", "10"]));
    assert!(
        table.starts_with("TIME") && table.contains("user.create") && table.contains("user:vic"),
        "{table}"
    );
    let err = fails(&cli.aida(&["audit", "--since", "yesterday"]));
    assert!(err.contains("RFC 3339"), "{err}");

    // 6. An expired access token is renewed before use, and the new pair
    //    stored (refresh tokens rotate).
    cli.edit_stored(|entry| entry["expires_at"] = json!("2020-01-01T00:00:00Z"));
    assert_eq!(ok(&cli.aida(&["whoami"])), "admin (admin) via jwt\n");
    let renewed = cli.stored().unwrap();
    let second_refresh = renewed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh, "the refresh token rotated");
    assert_eq!(mode(&file), 0o600, "still private after a rewrite");

    // A request refused for an expired token (the file's expiry was
    // wrong) is renewed and sent again once.
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": ADMIN, "role": "admin", "iss": "aida", "aud": "aida-api",
                "exp": now - 120, "nbf": now - 600, "iat": now - 600, "jti": "j", "sid": "s"}),
        &jsonwebtoken::EncodingKey::from_secret(system.secrets.jwt_secret.as_bytes()),
    )
    .unwrap();
    cli.edit_stored(|entry| {
        entry["access_token"] = json!(expired);
        entry["expires_at"] = json!("2099-01-01T00:00:00Z");
    });
    assert!(ok(&cli.aida(&["workers"])).starts_with("WORKER"));
    let third_refresh = cli.stored().unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(third_refresh, second_refresh, "renewed after the 401");

    // 7. logout ends the session at the gateway and forgets it here.
    let out = cli.aida(&["logout"]);
    ok(&out);
    assert!(cli.stored().is_none(), "the entry is gone");
    let err = fails(&cli.aida(&["whoami"]));
    assert!(
        err.contains("not signed in") && err.contains("aida login"),
        "{err}"
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/api/auth/refresh", system.url))
        .json(&json!({ "refresh_token": third_refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "the session ended");

    // No secret in anything the CLI printed (but the one token create
    // shows), nor in any log of the system.
    let mut secrets = vec![
        system.secrets.admin_password.clone(),
        vic_password.to_owned(),
        first_refresh,
        second_refresh,
        third_refresh,
        login["access_token"].as_str().unwrap().to_owned(),
        vic_token.clone(),
    ];
    let printed = cli.outputs.borrow().join("\n");
    for secret in &secrets {
        assert!(
            !printed.contains(secret.as_str()),
            "the CLI printed a secret"
        );
    }
    assert_eq!(
        printed.matches(&token).count(),
        1,
        "the API token is printed exactly once, by token create"
    );
    secrets.push(token);
    for (name, text) in system.captured_logs() {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{name} holds a secret");
        }
    }
}
