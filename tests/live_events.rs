//! Live events for many clients: the gateway follows the orchestrator's
//! events once and fans them out. A client that stops reading never holds
//! up the others, and still gets every event once it reads again; a client
//! that drops and reconnects with `Last-Event-ID` misses nothing.

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, System};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Lines the agent prints: each is one stored event, far more than the
/// gateway's live feed holds for a client that does not read.
const LINES: usize = 30_000;

/// The event ids of `events`, in order.
fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

/// A client with a 4 KB receive buffer that asks for the task's events
/// over HTTP/1.0 (so the body is the raw event stream, not chunked) and
/// reads only the response headers.
async fn stalled_client(system: &System, task: &str) -> TcpStream {
    let addr = system.url.strip_prefix("http://").unwrap().parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /api/events?task={task} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\n\r\n",
        system.admin_token
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The headers only, a byte at a time: nothing of the body is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "headers cut short"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    stream
}

/// The events of a raw SSE body: every block with a `data:` line.
fn parse_sse(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|block| {
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data).expect("SSE data is JSON"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_holds_up_no_one_and_misses_nothing_and_a_reconnect_resumes() {
    let system = System::start(1).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let gate = scratch.path().join("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; seq 1 {LINES}",
        gate.display()
    );
    let task = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [{"name": "chatty", "prompt": "p", "agent": sh_agent(&script)}]
        }))
        .await;
    let mut stalled = stalled_client(&system, &task).await;
    let fast = {
        let mut stream = system.open_sse(&format!("/api/events?task={task}")).await;
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut events = Vec::new();
            while let Some(item) = stream.next().await {
                let ev = item.expect("SSE event");
                events.push(serde_json::from_str::<Value>(&ev.data).unwrap());
            }
            events
        })
    };
    std::fs::write(&gate, "").unwrap();

    // The fast client reads the whole task while the stalled one has not
    // read a byte of it.
    let fast = tokio::time::timeout(aida_tests::DEADLINE, fast)
        .await
        .expect("the fast client was held up")
        .unwrap();
    let history = system.event_history(&task).await;
    let printed = history
        .iter()
        .filter(|e| e["kind"] == "log.line" && e["data"]["stream"] == "stdout")
        .count();
    assert_eq!(printed, LINES, "every line the agent printed is an event");
    assert_eq!(
        ids(&fast),
        ids(&history),
        "the fast client got every event once"
    );
    let finished = system.get(&format!("/api/tasks/{task}")).await.unwrap();
    assert_eq!(finished["status"], "succeeded", "{finished:#}");

    // Then the stalled client reads: every event of the task, in order,
    // none twice, though it fell far behind the live feed.
    let mut body = Vec::new();
    tokio::time::timeout(aida_tests::DEADLINE, stalled.read_to_end(&mut body))
        .await
        .expect("the stalled client's stream did not end")
        .unwrap();
    let body = String::from_utf8(body).unwrap();
    let slow = parse_sse(&body);
    assert!(
        slow.iter().all(|e| e["task_id"] == task.as_str()),
        "only the task's events"
    );
    assert_eq!(
        ids(&slow),
        ids(&history),
        "the stalled client missed nothing"
    );

    // A client that drops after 100 events and comes back with
    // Last-Event-ID gets the rest, and nothing twice.
    let first = system.read_task_sse(&task, None, Some(100)).await;
    assert_eq!(first.len(), 100);
    let (last_seen, _) = first.last().unwrap().clone();
    let rest = system.read_task_sse(&task, Some(&last_seen), None).await;
    let resumed: Vec<Value> = first.into_iter().chain(rest).map(|(_, e)| e).collect();
    assert_eq!(
        ids(&resumed),
        ids(&history),
        "the reconnect resumed exactly"
    );
}
