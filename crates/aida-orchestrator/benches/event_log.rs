//! How fast agent output flows through the event log, the orchestrator's
//! hottest path: every log line a worker reports becomes a stored event,
//! goes to live followers, and is published on Redis by the outbox.
//!
//! `cargo bench -p aida-orchestrator --bench event_log` measures with
//! criterion (group `event_log`; criterion's options after `--`): lines
//! per second (criterion's `thrpt`, in elements) through
//! `EventLog::record_all` in batches of 1 and of 64 lines, one follower
//! reading along (`stored/1`, `stored/64`). With `REDIS_URL` set the
//! outbox publishes meanwhile, and `published/1`, `published/64` also
//! count the wait until every line recorded is published, once a sample:
//! the time criterion prints is its slope over samples of more and more
//! iterations, the cost of one more line, not of that last wait.

use std::time::{Duration, Instant};

use aida_core::event::{Channel, kind};
use aida_orchestrator::events::EventLog;
use aida_orchestrator::store::{NewEvent, Store};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;

fn line(i: usize) -> NewEvent {
    NewEvent {
        channel: Channel::Log,
        kind: kind::LOG_LINE,
        task_id: Some("0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10".into()),
        subtask: Some("api".into()),
        worker_id: Some("worker-1".into()),
        data: serde_json::json!({"stream": "stdout", "line": format!("compiling crate {i}"), "attempt": 1}),
    }
}

fn lines(batch: usize) -> Vec<NewEvent> {
    (0..batch).map(line).collect()
}

fn event_log(c: &mut Criterion) {
    let redis = std::env::var("REDIS_URL").ok();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    // The stores' pools are dropped inside the runtime they were made in.
    let _inside = runtime.enter();
    let mut group = c.benchmark_group("event_log");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = runtime
            .block_on(Store::connect(&format!(
                "sqlite://{}/bench.db",
                dir.path().display()
            )))
            .expect("a store");
        let log = EventLog::new(store.clone());
        let mut follower = log.subscribe();
        runtime.spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            while !matches!(follower.recv().await, Err(RecvError::Closed)) {}
        });
        let stop = CancellationToken::new();
        if let Some(url) = &redis {
            let pool = deadpool_redis::Config::from_url(url.clone())
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .expect("a redis pool");
            runtime.spawn(log.clone().run_publisher(pool, stop.clone()));
        }

        group.bench_with_input(BenchmarkId::new("stored", batch), &log, |b, log| {
            b.to_async(&runtime).iter_batched(
                || lines(batch),
                |events| async move {
                    log.record_all(events).await.expect("recording lines");
                },
                BatchSize::SmallInput,
            );
        });
        if redis.is_some() {
            group.bench_with_input(BenchmarkId::new("published", batch), &log, |b, log| {
                b.to_async(&runtime).iter_custom(|iters| async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        log.record_all(lines(batch)).await.expect("recording lines");
                    }
                    while !log
                        .store()
                        .unpublished_events(1)
                        .await
                        .expect("reading the outbox")
                        .is_empty()
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    start.elapsed()
                });
            });
        }
        stop.cancel();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = event_log
}
criterion_main!(benches);
