//! `aida mcp` as an MCP client sees it: the real binary spoken to in
//! newline-delimited JSON-RPC over its stdin and stdout, against a running
//! system with sign-in on. Initialize, list the tools, create a task on a
//! real repository with a command agent, wait for it, read it back, and
//! see the API's refusals come back as tool errors.

use std::process::Stdio;

use aida_tests::process::bin;
use aida_tests::system::sh_agent;
use aida_tests::{DEADLINE, GitRepo, System};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// The protocol revision the test asks for (one with the `initialize`
/// handshake, as today's assistants speak it).
const PROTOCOL_VERSION: &str = "2025-06-18";

/// One `aida mcp` process and the JSON-RPC session with it.
struct McpSession {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Everything the server wrote to stdout, to check it was all protocol.
    seen: Vec<Value>,
    /// Its stderr, read to the end when it exits.
    stderr: Option<tokio::task::JoinHandle<String>>,
}

impl McpSession {
    /// Starts `aida mcp` for the system at `url` with `AIDA_TOKEN=token`, in
    /// a home and working directory of its own (no stored login, no
    /// `data/admin-token` to fall back on).
    fn start(url: &str, token: &str, home: &std::path::Path) -> McpSession {
        let mut child = tokio::process::Command::new(bin("aida"))
            .arg("mcp")
            .env("AIDA_URL", url)
            .env("AIDA_TOKEN", token)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("RUST_LOG", "debug")
            .current_dir(home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start aida mcp");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        McpSession {
            child,
            stdin,
            stdout,
            next_id: 1,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    async fn send(&mut self, message: &Value) {
        let mut line = serde_json::to_string(message).unwrap();
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Sends a request and returns the response with its id, skipping
    /// notifications and anything else the server sends meanwhile.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let read = async {
            loop {
                let line = self
                    .stdout
                    .next_line()
                    .await
                    .expect("read stdout")
                    .unwrap_or_else(|| panic!("aida mcp closed stdout before answering {method}"));
                let message: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
                assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC: {line}");
                self.seen.push(message.clone());
                if message["id"] == id && message.get("method").is_none() {
                    return message;
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} within {DEADLINE:?}"))
    }

    /// `initialize` and `notifications/initialized`; returns the result.
    async fn initialize(&mut self) -> Value {
        let answer = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "aida-tests", "version": "0"}
                }),
            )
            .await;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        answer["result"].clone()
    }

    /// `tools/call`; returns the result (content, isError).
    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let answer = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        assert!(
            answer.get("error").is_none(),
            "{tool}: a protocol error instead of a result: {answer}"
        );
        answer["result"].clone()
    }

    /// Closes stdin and waits for the server to exit; returns its stderr.
    async fn close(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("aida mcp did not exit after stdin closed")
            .unwrap();
        let stderr = self.stderr.take().unwrap().await.unwrap();
        // Whatever came after the last answer must be protocol too.
        while let Ok(Some(line)) = self.stdout.next_line().await {
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
            assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC: {line}");
        }
        (status, stderr)
    }
}

/// The text of a tool result's single content item.
fn text(result: &Value) -> &str {
    assert_eq!(result["content"][0]["type"], "text", "{result}");
    result["content"][0]["text"].as_str().unwrap()
}

/// A successful tool result's JSON.
fn ok_json(tool: &str, result: &Value) -> Value {
    assert_eq!(result["isError"], false, "{tool} failed: {result}");
    serde_json::from_str(text(result)).unwrap_or_else(|e| panic!("{tool}: not JSON ({e})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_creates_waits_for_and_reads_a_task() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let home = tempfile::tempdir().unwrap();
    let mut mcp = McpSession::start(&system.url, &system.admin_token, home.path());

    // The handshake: the version asked for, and who answers.
    let info = mcp.initialize().await;
    assert_eq!(info["protocolVersion"], PROTOCOL_VERSION, "{info}");
    assert_eq!(info["serverInfo"]["name"], "aida", "{info}");
    assert_eq!(info["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["capabilities"]["tools"].is_object(), "{info}");
    let instructions = info["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("create_task") && instructions.contains("wait_task"),
        "{instructions}"
    );

    // The tools, with schemas.
    let listed = mcp.request("tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().expect("tools").clone();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "cancel_task",
            "create_task",
            "follow_up",
            "get_report",
            "get_task",
            "list_tasks",
            "wait_task"
        ]
    );
    let create = tools.iter().find(|t| t["name"] == "create_task").unwrap();
    let schema = &create["inputSchema"];
    assert_eq!(schema["type"], "object", "{schema}");
    let required = schema["required"].as_array().expect("required");
    assert!(
        required.contains(&json!("repo")) && required.contains(&json!("description")),
        "{schema}"
    );
    assert!(
        schema["properties"]["subtasks"].is_object(),
        "subtasks are described: {schema}"
    );
    assert!(
        create["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );

    // A real task through the tool, on a real repository.
    let created = mcp
        .call(
            "create_task",
            json!({
                "repo": repo.path_str(),
                "description": "mcp demo",
                "agent": sh_agent("echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\""),
                "subtasks": [
                    {"name": "a", "prompt": "write a"},
                    {"name": "b", "prompt": "write b", "depends_on": ["a"]}
                ]
            }),
        )
        .await;
    let task = ok_json("create_task", &created);
    let id = task["id"].as_str().expect("task id").to_owned();
    assert!(
        ["queued", "running"].contains(&task["status"].as_str().unwrap()),
        "{task}"
    );
    // The API knows it, and made it for the token's user.
    let stored = system.get(&format!("/api/tasks/{id}")).await.unwrap();
    assert_eq!(stored["description"], "mcp demo");
    assert_eq!(stored["created_by"], "admin");

    // wait_task follows it to the end.
    let waited = mcp
        .call("wait_task", json!({"task_id": id, "timeout_secs": 90}))
        .await;
    let outcome = ok_json("wait_task", &waited);
    assert_eq!(outcome["ended"], true, "{outcome:#}");
    assert_eq!(outcome["task"]["id"], id.as_str());
    assert_eq!(outcome["task"]["status"], "succeeded", "{outcome:#}");
    let events = outcome["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "task.status" && e["status"] == "succeeded"),
        "{outcome:#}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "subtask.status" && e["subtask"] == "b"),
        "{outcome:#}"
    );
    assert!(
        events.iter().all(|e| e["kind"] != "log.line"),
        "no log lines: {outcome:#}"
    );
    let finished = system.wait_finished(&id).await;
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(
        repo.show(&format!("aida/{id}/result"), "b.txt").as_deref(),
        Some("b\n")
    );

    // The other read tools.
    let shown = ok_json(
        "get_task",
        &mcp.call("get_task", json!({"task_id": id})).await,
    );
    assert_eq!(shown["status"], "succeeded");
    let listed = ok_json(
        "list_tasks",
        &mcp.call("list_tasks", json!({"limit": 5})).await,
    );
    assert_eq!(listed["tasks"][0]["id"], id.as_str(), "{listed}");
    let report = mcp.call("get_report", json!({"task_id": id})).await;
    assert_eq!(report["isError"], false, "{report}");
    assert_eq!(text(&report), system.report(&id).await);
    let report = ok_json(
        "get_report",
        &mcp.call("get_report", json!({"task_id": id, "format": "json"}))
            .await,
    );
    assert!(report.is_object(), "{report}");

    // An unknown task: a tool error with the API's own message.
    let unknown = "0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10";
    let response = system
        .http
        .get(format!("{}/api/tasks/{unknown}", system.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let api: Value = response.json().await.unwrap();
    let message = api["error"]["message"].as_str().unwrap();
    let missing = mcp.call("get_task", json!({"task_id": unknown})).await;
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(
        text(&missing).contains(message) && text(&missing).contains("404"),
        "{missing}"
    );
    // So is waiting for it.
    let missing = mcp.call("wait_task", json!({"task_id": unknown})).await;
    assert_eq!(missing["isError"], true, "{missing}");

    // Closing stdin ends the server, cleanly.
    let seen = std::mem::take(&mut mcp.seen);
    let (status, stderr) = mcp.close().await;
    assert!(status.success(), "aida mcp exited with {status}: {stderr}");
    let token = system.admin_token.as_str();
    assert!(!stderr.contains(token), "the token on stderr");
    assert!(
        !seen.iter().any(|m| m.to_string().contains(token)),
        "the token in a message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_tool_error_saying_so() {
    let system = System::start(0).await;
    let home = tempfile::tempdir().unwrap();
    // Shaped like an API token, known to nobody.
    let bogus = format!("aida_pat_{}_{}", "0".repeat(16), "f".repeat(64));
    let mut mcp = McpSession::start(&system.url, &bogus, home.path());
    mcp.initialize().await;

    let refused = mcp.call("list_tasks", json!({})).await;
    assert_eq!(refused["isError"], true, "{refused}");
    let message = text(&refused);
    assert!(
        message.contains("invalid, expired or revoked token")
            && message.contains("HTTP 401")
            && message.contains("AIDA_TOKEN"),
        "{message}"
    );
    assert!(!message.contains(&bogus), "the token is not repeated");

    // Bad arguments are refused before any request.
    let bad = mcp
        .request(
            "tools/call",
            json!({"name": "get_task", "arguments": {"id": "x"}}),
        )
        .await;
    assert!(
        bad.get("error").is_some() || bad["result"]["isError"] == true,
        "{bad}"
    );

    let (status, stderr) = mcp.close().await;
    assert!(status.success(), "aida mcp exited with {status}: {stderr}");
    assert!(!stderr.contains(&bogus), "the token on stderr: {stderr}");
}
