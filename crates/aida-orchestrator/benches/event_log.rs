//! How fast agent output flows through the event log, the orchestrator's
//! hottest path: every log line a worker reports becomes a stored event,
//! goes to live followers, and is published on Redis by the outbox.
//!
//! `cargo bench -p aida-orchestrator --bench event_log` (set REDIS_URL to
//! include publishing). Prints lines per second for each batch size.

use std::time::{Duration, Instant};

use aida_core::event::{Channel, kind};
use aida_orchestrator::events::EventLog;
use aida_orchestrator::store::{NewEvent, Store};
use tokio_util::sync::CancellationToken;

const LINES: usize = 20_000;

fn line(i: usize) -> NewEvent {
    NewEvent {
        channel: Channel::Log,
        kind: kind::LOG_LINE,
        task_id: Some("0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10".into()),
        subtask: Some("api".into()),
        worker_id: Some("worker-1".into()),
        data: serde_json::json!({"stream": "stdout", "line": format!("compiling crate {i} of {LINES}"), "attempt": 1}),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = std::env::var("REDIS_URL").ok();
    for batch in [1usize, 64] {
        let dir = tempfile::tempdir()?;
        let store = Store::connect(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
        let log = EventLog::new(store.clone());
        let mut follower = log.subscribe();
        let followed = tokio::spawn(async move {
            let mut n = 0;
            while n < LINES {
                match follower.recv().await {
                    Ok(_) => n += 1,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => n += k as usize,
                    Err(_) => break,
                }
            }
        });
        let stop = CancellationToken::new();
        if let Some(url) = &redis {
            let pool = deadpool_redis::Config::from_url(url.clone())
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
            tokio::spawn(log.clone().run_publisher(pool, stop.clone()));
        }

        let start = Instant::now();
        for chunk in (0..LINES).collect::<Vec<_>>().chunks(batch) {
            log.record_all(chunk.iter().map(|&i| line(i)).collect())
                .await?;
        }
        let stored = start.elapsed();
        followed.await?;
        let mut published = None;
        if redis.is_some() {
            while !store.unpublished_events(1).await?.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            published = Some(start.elapsed());
        }
        stop.cancel();
        let rate = |d: Duration| LINES as f64 / d.as_secs_f64();
        print!(
            "batch {batch:>3}: stored and streamed {:>8.0} lines/s",
            rate(stored)
        );
        if let Some(p) = published {
            print!(", published to redis {:>8.0} lines/s", rate(p));
        }
        println!();
    }
    Ok(())
}
