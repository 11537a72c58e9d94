//! The README's run command: `aida dev` runs every service in one process,
//! with SQLite and no Redis, listening on loopback only, with sign-in on
//! and nothing to set up: the README's "Try it" commands, read from the
//! README itself, run against a fresh one without the test handing the CLI
//! any token. Each `aida dev` here has a working directory, home and
//! configuration directory of its own, and ports picked free.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aida_tests::process::{Proc, bin};
use aida_tests::system::{client_with, sh_agent};
use aida_tests::{GitRepo, eventually, free_port};
use serde_json::{Value, json};

/// One user's machine, as far as `aida dev` and the CLI can tell.
struct Machine {
    /// Where `aida dev` runs: `data/` goes here.
    cwd: tempfile::TempDir,
    home: tempfile::TempDir,
    config: tempfile::TempDir,
    /// The processes' logs, apart from the working directory.
    logs: tempfile::TempDir,
}

/// A running `aida dev`.
struct Dev {
    proc: Proc,
    url: String,
    /// Gateway, orchestrator, aggregator.
    ports: [u16; 3],
}

/// Variables of the test's own environment that would change what
/// `aida dev` or the CLI does.
const OVERRIDES: &[&str] = &[
    "AIDA_TOKEN",
    "AIDA_URL",
    "AIDA_REPO_ROOTS",
    "AIDA_DEV_WORKERS",
    "AIDA_JWT_SECRET",
    "AIDA_JWT_SECRET_FILE",
    "AIDA_INTERNAL_TOKEN",
    "AIDA_INTERNAL_TOKEN_FILE",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_ADDR",
    "GATEWAY_LISTEN_ADDR",
    "ORCHESTRATOR_LISTEN_ADDR",
    "AGGREGATOR_LISTEN_ADDR",
];

impl Machine {
    fn new() -> Machine {
        let dir = || tempfile::tempdir().unwrap();
        Machine {
            cwd: dir(),
            home: dir(),
            config: dir(),
            logs: dir(),
        }
    }

    fn data(&self) -> PathBuf {
        self.cwd.path().join("data")
    }

    fn credentials_file(&self) -> PathBuf {
        self.config.path().join("aida/credentials.json")
    }

    /// A command run as this machine's user.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.config.path());
        for var in OVERRIDES {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Starts `aida dev` in the working directory on free ports, with
    /// `extra` arguments.
    /// Starts `aida dev` and waits until its workers are idle; returns it
    /// and the admin token it keeps in `data`. The ports are picked free
    /// just before use, so another process may take one first: then it is
    /// started again on new ones.
    async fn start_ready(
        &self,
        name: &str,
        workers: usize,
        extra: &[&str],
        data: &Path,
    ) -> (Dev, String) {
        for _ in 0..3 {
            let mut dev = self.start_dev(name, workers, extra);
            match dev.ready(data, workers).await {
                Ok(token) => return (dev, token),
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("aida dev exited before it was ready:\n{log}"),
            }
        }
        panic!("aida dev found no free ports in three tries");
    }

    fn start_dev(&self, name: &str, workers: usize, extra: &[&str]) -> Dev {
        let ports = [free_port(), free_port(), free_port()];
        let mut cmd = self.command(bin("aida"));
        cmd.args(["dev", "--workers", &workers.to_string()])
            .args(["--gateway-addr", &format!("127.0.0.1:{}", ports[0])])
            .args(["--orchestrator-addr", &format!("127.0.0.1:{}", ports[1])])
            .args(["--aggregator-addr", &format!("127.0.0.1:{}", ports[2])])
            .args(extra)
            .current_dir(self.cwd.path());
        Dev {
            proc: Proc::spawn(name, cmd, self.logs.path()),
            url: format!("http://127.0.0.1:{}", ports[0]),
            ports,
        }
    }
}

impl Dev {
    /// Waits until `workers` workers are idle, asked with the admin token
    /// `aida dev` keeps in `data`; returns that token, or the log if the
    /// process ended first.
    async fn ready(&mut self, data: &Path, workers: usize) -> Result<String, String> {
        let token_file = data.join("admin-token");
        let start = tokio::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            if let Some(token) = self.idle(&token_file, workers).await {
                return Ok(token);
            }
            if self.proc.child.try_wait().unwrap().is_some() {
                return Err(std::fs::read_to_string(&self.proc.log).unwrap_or_default());
            }
            assert!(
                start.elapsed() < aida_tests::DEADLINE,
                "timed out waiting for aida dev to have its workers connected"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(250));
        }
    }

    async fn idle(&self, token_file: &Path, workers: usize) -> Option<String> {
        let token = std::fs::read_to_string(token_file).ok()?.trim().to_owned();
        let listed = aida_tests::get_json(&client_with(&token), &self.url, "/api/workers")
            .await
            .ok()?;
        let idle = listed["workers"]
            .as_array()?
            .iter()
            .filter(|w| w["state"] == "idle")
            .count();
        (idle == workers).then_some(token)
    }

    /// SIGTERM (what `podman stop` sends); waits for the exit.
    async fn stop(mut self) -> (std::process::ExitStatus, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || {
            let status = self.proc.child.wait().unwrap();
            (status, self)
        });
        let (status, dev) = tokio::time::timeout(aida_tests::DEADLINE, status)
            .await
            .expect("aida dev did not stop")
            .unwrap();
        let log = std::fs::read_to_string(&dev.proc.log).unwrap_or_default();
        (status, log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.proc.log).unwrap_or_default()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The addresses of the TCP sockets process `pid` listens on: its socket
/// file descriptors' inodes, looked up in the kernel's tables.
fn listening_addresses(pid: u32) -> Vec<SocketAddr> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's file descriptors")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut found = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        // tcp6 is missing where IPv6 is off.
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st ... uid timeout inode
            let cols: Vec<&str> = line.split_whitespace().collect();
            const LISTEN: &str = "0A";
            if cols.len() < 10 || cols[3] != LISTEN {
                continue;
            }
            if inodes.contains(&cols[9].parse::<u64>().unwrap()) {
                found.push(kernel_address(cols[1], v6));
            }
        }
    }
    found
}

/// `0100007F:1F90` (or 32 hex digits for IPv6): the address as the kernel
/// prints it, in 32-bit words of host byte order, and the port.
fn kernel_address(text: &str, v6: bool) -> SocketAddr {
    let (ip, port) = text.split_once(':').unwrap();
    let port = u16::from_str_radix(port, 16).unwrap();
    let word = |hex: &str| u32::from_str_radix(hex, 16).unwrap().to_ne_bytes();
    let ip = if v6 {
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8]));
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::from(word(ip)))
    };
    SocketAddr::new(ip, port)
}

/// The shell code blocks of the README's "Try it" section.
fn try_it_blocks() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find("\n## Try it")
        .expect("the README has a Try it section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed code block");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
    blocks
}

/// The commands of a code block: continued lines joined, comment lines
/// dropped.
fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

fn sh(machine: &Machine, dir: &Path, url: &str, script: &str) -> Output {
    let out = machine
        .command("sh")
        .args(["-c", script])
        .env("AIDA_URL", url)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\nfailed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_try_it_works_against_a_fresh_aida_dev_listening_on_loopback_only() {
    let machine = Machine::new();
    let data = machine.data();
    let (dev, token) = machine.start_ready("aida-dev", 2, &[], &data).await;

    // Every socket it listens on is bound to loopback: the gateway, the
    // orchestrator, the aggregator and the two workers.
    let listening = listening_addresses(dev.proc.pid());
    assert_eq!(listening.len(), 5, "{listening:?}");
    for addr in &listening {
        assert!(
            addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)
                || addr.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST),
            "{addr} is not loopback: {listening:?}"
        );
    }
    for port in dev.ports {
        assert!(
            listening.iter().any(|a| a.port() == port),
            "{port} in {listening:?}"
        );
    }

    // Its secrets, the admin's password and token are the user's alone,
    // in the default data directory of the working directory.
    assert_eq!(mode(&data), 0o700);
    for name in [
        "jwt-secret",
        "internal-token",
        "admin-password",
        "admin-token",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    assert!(data.join("aida.db").exists());
    // The token is registered for the CLI, for this gateway's URL.
    let file = machine.credentials_file();
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let stored: Value = serde_json::from_str(&read(&file)).unwrap();
    assert_eq!(stored["gateways"][&dev.url]["access_token"], token.as_str());
    assert_eq!(stored["gateways"][&dev.url]["source"], "aida dev");
    // The password is one the admin can log in with.
    let password = read(&data.join("admin-password"));
    let login = reqwest::Client::new()
        .post(format!("{}/api/auth/login", dev.url))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);

    // The README's commands, as written, but for where the demo repository
    // goes, how the CLI is run and which task: from another directory, with
    // no token given.
    let blocks = try_it_blocks();
    assert!(
        blocks.len() >= 2,
        "the CLI block and the curl block: {blocks:?}"
    );
    let parent = tempfile::tempdir().unwrap();
    let demo = parent.path().join("demo");
    let elsewhere = tempfile::tempdir().unwrap();
    let aida = format!("'{}'", bin("aida").display());
    let mut task_id: Option<String> = None;
    let mut outputs = Vec::new();
    let mut ran = Vec::new();
    for command in commands(&blocks[0]) {
        let script = command
            .replace("/tmp/demo", &demo.display().to_string())
            .replace("cargo run --release -p aida --", &aida);
        let script = match &task_id {
            Some(id) => script.replace("<TASK-ID>", id),
            None => {
                assert!(!script.contains("<TASK-ID>"), "no task yet for {command}");
                script
            }
        };
        let out = sh(&machine, elsewhere.path(), &dev.url, &script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if command.contains(" task create ") {
            let line = stdout
                .lines()
                .find(|l| l.starts_with("task "))
                .unwrap_or_else(|| panic!("no task in {stdout}"));
            task_id = Some(line.split_whitespace().nth(1).unwrap().to_owned());
            ran.push("create");
        }
        let id = task_id.clone().unwrap_or_default();
        if command.contains(" watch ") {
            assert!(stdout.contains("task.created"), "{stdout}");
            ran.push("watch");
        }
        if command.contains(" task report ") {
            assert!(
                stdout.starts_with(&format!("# AIDA task {id}: succeeded")),
                "{stdout}"
            );
            ran.push("report");
        }
        if command.starts_with("git -C") {
            assert!(stdout.contains("init"), "{stdout}");
            ran.push("git log");
        }
        outputs.push(stdout);
        outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    assert_eq!(ran, ["create", "watch", "report", "git log"]);
    let id = task_id.unwrap();
    let show = |file: &str| {
        let out = Command::new("git")
            .args(["show", &format!("aida/{id}/result:{file}")])
            .current_dir(&demo)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(show("a.txt"), "a\n");
    assert_eq!(show("b.txt"), "b\n");
    // Who created it: the admin, through the token aida dev registered.
    let task = aida_tests::get_json(&client_with(&token), &dev.url, &format!("/api/tasks/{id}"))
        .await
        .unwrap();
    assert_eq!(task["created_by"], "admin");

    // The curl example, from where aida dev runs (it reads data/).
    let curl = blocks[1]
        .replace("/tmp/demo", &demo.display().to_string())
        .replace("localhost:8080", &format!("localhost:{}", dev.ports[0]));
    let out = sh(&machine, machine.cwd.path(), &dev.url, &curl);
    let created: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    let curl_id = created["id"]
        .as_str()
        .expect("curl created a task")
        .to_owned();
    eventually("the curl task to finish", || async {
        let task = aida_tests::get_json(
            &client_with(&token),
            &dev.url,
            &format!("/api/tasks/{curl_id}"),
        )
        .await
        .ok()?;
        (task["status"] == "succeeded").then_some(())
    })
    .await;

    // No secret in the CLI's output or aida dev's log; aida dev says where
    // they are.
    let secrets: Vec<String> = [
        "jwt-secret",
        "internal-token",
        "admin-password",
        "admin-token",
    ]
    .iter()
    .map(|name| read(&data.join(name)))
    .collect();
    let log = dev.log();
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "aida dev logged a secret");
        for out in &outputs {
            assert!(!out.contains(secret.as_str()), "the CLI printed a secret");
        }
    }
    for said in [
        "data/admin-password",
        "data/admin-token",
        "data/internal-token",
    ] {
        assert!(log.contains(said), "aida dev names {said}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aida_dev_runs_a_task_without_redis_and_stops_cleanly_on_sigterm() {
    let machine = Machine::new();
    let db = machine.cwd.path().join("state/aida.db");
    let database_url = format!("sqlite://{}", db.display());
    // The secrets go beside the database.
    let data = db.parent().unwrap();
    let (dev, token) = machine
        .start_ready("aida-dev", 2, &["--database-url", &database_url], data)
        .await;
    let http = client_with(&token);
    let url = dev.url.clone();
    assert!(
        db.exists(),
        "the SQLite database is created where DATABASE_URL says"
    );

    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let body = json!({
        "repo": repo.path_str(),
        "description": "two steps",
        "agent": sh_agent("echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\""),
        "subtasks": [{"name": "first", "prompt": "a"}, {"name": "second", "prompt": "b", "depends_on": ["first"]}]
    });
    let created: Value = http
        .post(format!("{url}/api/orchestrate"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("task id").to_owned();
    let task = eventually("the task to finish", || async {
        let t = aida_tests::get_json(&http, &url, &format!("/api/tasks/{id}"))
            .await
            .ok()?;
        ["succeeded", "failed", "conflicted"]
            .contains(&t["status"].as_str()?)
            .then_some(t)
    })
    .await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "first.txt").as_deref(), Some("first\n"));
    assert_eq!(repo.show(result, "second.txt").as_deref(), Some("second\n"));

    // SIGTERM (what `podman stop` sends) stops every service and the process.
    let (status, _log) = dev.stop().await;
    assert!(status.success(), "aida dev exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_run_keeps_its_secrets_and_replaces_a_revoked_admin_token() {
    let machine = Machine::new();
    let data = machine.data();
    let (first, token) = machine.start_ready("aida-dev-1", 1, &[], &data).await;
    let kept: Vec<String> = ["jwt-secret", "internal-token", "admin-password"]
        .iter()
        .map(|name| read(&data.join(name)))
        .collect();

    // The token is revoked (as an admin may do with any token).
    let http = client_with(&token);
    let tokens = aida_tests::get_json(&http, &first.url, "/api/tokens")
        .await
        .unwrap();
    let id = tokens["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert!(token.contains(&id), "{tokens}");
    let revoked = http
        .delete(format!("{}/api/tokens/{id}", first.url))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    let (status, _) = first.stop().await;
    assert!(status.success());

    // The next run makes no new admin or secret, but a new token, and
    // registers it in place of the old one.
    let (second, renewed) = machine.start_ready("aida-dev-2", 1, &[], &data).await;
    assert_ne!(renewed, token);
    let again: Vec<String> = ["jwt-secret", "internal-token", "admin-password"]
        .iter()
        .map(|name| read(&data.join(name)))
        .collect();
    assert_eq!(again, kept, "the secrets and the password stay");
    let log = second.log();
    assert!(
        !log.contains("created user admin") && log.contains("a new admin API token"),
        "{log}"
    );
    let stored: Value = serde_json::from_str(&read(&machine.credentials_file())).unwrap();
    assert_eq!(
        stored["gateways"][&second.url]["access_token"],
        renewed.as_str()
    );

    // The CLI finds it by itself.
    let out = machine
        .command(bin("aida"))
        .args(["whoami", "--url", &second.url])
        .current_dir(machine.home.path())
        .output()
        .unwrap();
    let renewed_id = renewed.split('_').nth(2).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("admin (admin) via api_token:{renewed_id}\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = second.stop().await;
    assert!(status.success());
}
