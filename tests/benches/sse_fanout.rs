//! Live events for many clients: N clients follow `GET /api/events`, then
//! a task runs, and the bench reports how many clients got every event of
//! it, how late (event stored → client read it), and the gateway's memory
//! idle, with the clients connected, and after they left. Real release
//! binaries, 1 worker; `make bench` builds them first.
//!
//! `cargo bench -p aida-tests --bench sse_fanout [-- CLIENTS]` (10000)

use std::sync::Arc;
use std::time::{Duration, Instant};

use aida_tests::bench::{self, Goal, Row};
use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;

/// How long every client together may take to receive its response headers.
const CONNECT_PATIENCE: Duration = Duration::from_secs(120);
/// How long after the task ended the last client may still be reading.
const DELIVERY_PATIENCE: Duration = Duration::from_secs(60);

/// What a client reads of each event: only the fields it checks, borrowed
/// from the message (the clients share the gateway's two cores, so each
/// one's cost per event is kept small).
#[derive(serde::Deserialize)]
struct Seen<'a> {
    #[serde(borrow)]
    at: &'a str,
    #[serde(borrow, default)]
    task_id: Option<&'a str>,
    #[serde(borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    data: SeenData<'a>,
}

#[derive(serde::Deserialize, Default)]
struct SeenData<'a> {
    #[serde(borrow, default)]
    status: Option<&'a str>,
}

#[tokio::main]
async fn main() {
    let clients: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let limit = (clients * 2).to_string();
    let system = System::start_with(
        Options::workers(1)
            .gateway_env("AIDA_MAX_SSE_PER_USER", &limit)
            .gateway_env("AIDA_RATE_LIMIT_BURST", &limit)
            .gateway_env("AIDA_CLIENT_RATE_LIMIT_BURST", &limit),
    )
    .await;
    let gateway = system.pid("gateway").expect("the gateway's pid");
    let idle = bench::rss_mb(gateway);
    let after = system.get("/api/status").await.unwrap()["last_event_id"]
        .as_i64()
        .unwrap();

    // Every client follows all events from `after` until the task ends,
    // and records how late it read each one.
    let http = aida_tests::system::client_with(&system.admin_token);
    let url = format!("{}/api/events?after={after}", system.url);
    let task_slot: Arc<tokio::sync::OnceCell<String>> = Arc::default();
    let start = Instant::now();
    let opened = futures::stream::iter(0..clients)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let resp = http
                    .get(&url)
                    .header("accept", "text/event-stream")
                    .send()
                    .await;
                resp.ok().filter(|r| r.status().is_success())
            }
        })
        .buffer_unordered(512)
        .take_until(tokio::time::sleep(CONNECT_PATIENCE))
        .filter_map(|resp| async move { resp })
        .map(|resp| {
            let task_slot = Arc::clone(&task_slot);
            tokio::spawn(async move {
                let mut events = eventsource_stream::EventStream::new(resp.bytes_stream());
                let mut lateness = Vec::new();
                while let Some(Ok(ev)) = events.next().await {
                    let read_at = Utc::now();
                    if ev.event == "error" {
                        return (false, lateness, Some(ev.data));
                    }
                    let event: Seen<'_> = serde_json::from_str(&ev.data).unwrap();
                    let at: DateTime<Utc> = event.at.parse().unwrap();
                    lateness.push((read_at - at).as_seconds_f64());
                    let ours = task_slot.get().is_some_and(|t| event.task_id == Some(t));
                    if ours
                        && event.kind == "task.status"
                        && matches!(
                            event.data.status,
                            Some("succeeded" | "failed" | "cancelled" | "conflicted")
                        )
                    {
                        return (true, lateness, None);
                    }
                }
                (false, lateness, None)
            })
        })
        .collect::<Vec<_>>()
        .await;
    let connect_took = start.elapsed();
    let served = opened.len();
    let with_clients = bench::rss_mb(gateway);

    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let cpu_before = bench::cpu_seconds(gateway);
    let own_before = bench::cpu_seconds(std::process::id());
    let delivery = Instant::now();
    let task = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "fan-out",
            "agent": sh_agent("for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; echo x > out.txt"),
            "subtasks": [{"name": "a", "prompt": "p"}, {"name": "b", "prompt": "p"}]
        }))
        .await;
    task_slot.set(task.clone()).unwrap();
    system.wait_finished(&task).await;
    let ended = Instant::now();
    let mut complete = 0;
    let mut lateness = Vec::new();
    let mut errors = Vec::new();
    for reader in opened {
        let left = DELIVERY_PATIENCE.saturating_sub(ended.elapsed());
        if let Ok(Ok((done, late, error))) = tokio::time::timeout(left, reader).await {
            complete += usize::from(done);
            lateness.extend(late);
            if let Some(error) = error {
                errors.push(error);
            }
        }
    }
    let peak = bench::rss_mb(gateway);
    let delivery = delivery.elapsed().as_secs_f64();
    let gateway_cpu = bench::cpu_seconds(gateway) - cpu_before;
    let clients_cpu = bench::cpu_seconds(std::process::id()) - own_before;
    drop(http);
    // The clients are gone once the gateway counts no open stream; it
    // gives memory back within its 2 s check after that.
    let metrics = format!("{}/metrics", system.url);
    aida_tests::eventually("the SSE clients to be gone", || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| l == "aida_sse_connections_active 0")
            .then_some(())
    })
    .await;
    let after_leaving = bench::settled_rss_mb_over(gateway, Duration::from_secs(3)).await;
    lateness.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lateness
            .get(((lateness.len() as f64 * p) as usize).min(lateness.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };

    println!("\nSSE fan-out: {clients} clients on GET /api/events, release binaries\n");
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| clients with response headers | {served} of {clients} in {:.1} s |",
        connect_took.as_secs_f64()
    );
    println!("| clients that read the task's last event | {complete} of {clients} |");
    println!(
        "| event stored → read, p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        pct(0.5) * 1e3,
        pct(0.99) * 1e3,
        lateness.last().copied().unwrap_or(f64::NAN) * 1e3
    );
    if let Some(first) = errors.first() {
        println!(
            "| clients whose stream ended in an error | {} (first: {first}) |",
            errors.len()
        );
    }
    println!(
        "| CPU while the task ran and its events were delivered ({delivery:.1} s) | gateway {gateway_cpu:.1} s ({:.1} µs per event per client), clients (this bench) {clients_cpu:.1} s |",
        gateway_cpu * 1e6 / lateness.len().max(1) as f64
    );
    println!("| gateway memory idle | {idle:.1} MB |");
    println!("| gateway memory, clients connected | {with_clients:.1} MB |");
    println!("| gateway memory, at the end of the task | {peak:.1} MB |");
    println!("| gateway memory after the clients left | {after_leaving:.1} MB |");
    let p99_ms = pct(0.99) * 1e3;
    bench::report(&[
        Row::ratio(
            format!("SSE clients that read every event, of {clients}"),
            complete.to_string(),
            clients.to_string(),
            complete as f64 / clients as f64,
            Goal::AtLeast(1.0),
        ),
        Row::ratio(
            format!("SSE event stored → read p99, {clients} clients"),
            format!("{p99_ms:.0} ms"),
            "1,000 ms",
            p99_ms / 1000.0,
            Goal::AtMost(1.0),
        ),
        Row::ratio(
            format!("gateway memory, {clients} SSE clients (peak)"),
            format!("{:.0} MB", with_clients.max(peak)),
            "200 MB",
            with_clients.max(peak) / 200.0,
            Goal::AtMost(1.0),
        ),
        Row::ratio(
            "gateway memory after the SSE clients left, vs idle",
            format!("{after_leaving:.0} MB"),
            format!("{idle:.0} MB idle"),
            after_leaving / idle,
            Goal::None,
        ),
    ]);
}
