//! Redis stops for ten seconds in the middle of a task: the task completes
//! anyway, an SSE client that reconnects with `Last-Event-ID` gets every
//! event once and in order, and the events recorded meanwhile reach Redis,
//! in order and once, when it returns.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, System, eventually};
use futures::StreamExt;
use serde_json::{Value, json};

/// The outage the issue asks for: not a readiness wait.
const OUTAGE: Duration = Duration::from_secs(10);

type Seen = Arc<Mutex<Vec<(Instant, Value)>>>;

/// Collects every message published on `aida:events:*` with its arrival
/// time, until the connection ends.
async fn subscribe_all(redis_url: &str) -> Seen {
    let client = redis::Client::open(redis_url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.psubscribe("aida:events:*").await.unwrap();
    let seen = Seen::default();
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let payload: String = msg.get_payload().unwrap();
            let event: Value = serde_json::from_str(&payload).expect("redis payload is JSON");
            sink.lock().unwrap().push((Instant::now(), event));
        }
    });
    seen
}

fn ids_of_task(seen: &Seen, task: &str) -> Vec<i64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| e["task_id"] == task)
        .map(|(_, e)| e["id"].as_i64().unwrap())
        .collect()
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_ten_seconds_without_redis_and_no_event_is_lost() {
    let mut system = System::start(1).await;
    let before_outage = subscribe_all(&system.redis.url).await;
    let repo = GitRepo::with_files(&[("README.md", "hi\n")]);
    let scratch = tempfile::tempdir().unwrap();
    let gate = scratch.path().join("go");
    // Waits for the gate, then prints for about two seconds.
    let script = format!(
        "echo ready; while [ ! -e '{}' ]; do sleep 0.05; done; \
         for i in $(seq 1 40); do echo \"during the outage $i\"; sleep 0.05; done; echo done > done.txt",
        gate.display()
    );
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "subtasks": [{"name": "long", "prompt": "p", "agent": sh_agent(&script)}]
        }))
        .await;

    // Quiet before the outage: the agent waits, and Redis has every event
    // of the task so far.
    let quiet = eventually("the agent to wait and redis to have caught up", || async {
        let history = system.event_history(&task_id).await;
        let ready = history.iter().any(|e| e["data"]["line"] == "ready");
        let ids: Vec<i64> = history.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        (ready && ids_of_task(&before_outage, &task_id) == ids).then_some(history)
    })
    .await;

    system.redis.stop().await;
    let stopped_at = Instant::now();

    // An SSE client reads part of the story, some of it live...
    let first_count = quiet.len() + 5;
    let first_part = {
        let reading = system.read_task_sse(&task_id, None, Some(first_count));
        std::fs::write(&gate, "").unwrap();
        reading.await
    };
    assert_eq!(first_part.len(), first_count);
    // ...drops, and comes back after the last event it saw.
    let last_seen = first_part.last().unwrap().0.clone();
    let rest = system.read_task_sse(&task_id, Some(&last_seen), None).await;

    // The task ended without Redis.
    let task = system.wait_finished(&task_id).await;
    let finished_after = stopped_at.elapsed();
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert!(
        finished_after < OUTAGE,
        "the task finished only {finished_after:?} after Redis stopped"
    );
    assert_eq!(
        repo.show(task["result_branch"].as_str().unwrap(), "done.txt")
            .as_deref(),
        Some("done\n")
    );

    // The two SSE parts are the stored history: in order, none twice.
    let history = system.event_history(&task_id).await;
    let history_ids: Vec<i64> = history.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let sse: Vec<&(String, Value)> = first_part.iter().chain(&rest).collect();
    let sse_ids: Vec<i64> = sse.iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert_eq!(
        sse_ids, history_ids,
        "the SSE parts together are the stored history"
    );
    for ((id, data), stored) in sse.iter().zip(&history) {
        assert_eq!(data, stored, "SSE event {id} is the stored one");
    }
    assert_eq!(
        rest.last().unwrap().1["data"]["status"],
        "succeeded",
        "the resumed stream ran to the end of the task"
    );

    // Redis stays down for the whole outage.
    tokio::time::sleep(OUTAGE.saturating_sub(stopped_at.elapsed())).await;
    let orchestrator = system.pid("orchestrator").unwrap();
    // Held still while Redis starts and we subscribe, so that nothing is
    // published before there is a subscriber to see it.
    signal("-STOP", orchestrator);
    system.redis.restart().await;
    let back_at = Instant::now();
    let after_outage = subscribe_all(&system.redis.url).await;
    signal("-CONT", orchestrator);
    let subscribed_after = back_at.elapsed();

    let final_id = *history_ids.last().unwrap();
    eventually("the backlog to reach redis", || async {
        ids_of_task(&after_outage, &task_id)
            .contains(&final_id)
            .then_some(())
    })
    .await;
    let backlog = after_outage.lock().unwrap().clone();
    let first_at = backlog.first().unwrap().0 - back_at;
    let last_task_event_at = backlog.iter().find(|(_, e)| e["id"] == final_id).unwrap().0 - back_at;
    eprintln!(
        "redis was down {:?}; after it answered PING again: subscribed at {subscribed_after:?}, \
         first backlog event at {first_at:?}, the task's last event at {last_task_event_at:?}; \
         {} events published after the outage",
        back_at - stopped_at,
        backlog.len()
    );

    // Before and after the outage, Redis carried the task's stored history:
    // in id order, none twice, none missing.
    let before = ids_of_task(&before_outage, &task_id);
    let after = ids_of_task(&after_outage, &task_id);
    assert_eq!(
        before,
        quiet_ids(&quiet),
        "nothing went out during the outage"
    );
    let all: Vec<i64> = before.iter().chain(&after).copied().collect();
    assert_eq!(all, history_ids, "redis carried the stored history");
    // Everything published after the outage (worker events too) went out in
    // id order, none of it twice.
    let after_all: Vec<i64> = backlog
        .iter()
        .map(|(_, e)| e["id"].as_i64().unwrap())
        .collect();
    assert!(
        after_all.windows(2).all(|w| w[0] < w[1]),
        "published out of order or twice: {after_all:?}"
    );
    let before_all: Vec<i64> = before_outage
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e["id"].as_i64().unwrap())
        .collect();
    assert!(
        after_all.iter().all(|id| !before_all.contains(id)),
        "an event went out both before and after the outage"
    );
    // The published payloads are the stored events.
    let published_all: Vec<(Instant, Value)> = before_outage
        .lock()
        .unwrap()
        .iter()
        .chain(&backlog)
        .cloned()
        .collect();
    for stored in &history {
        let id = stored["id"].as_i64().unwrap();
        let published = published_all
            .iter()
            .find(|(_, e)| e["id"] == id)
            .map(|(_, e)| e.clone())
            .unwrap();
        assert_eq!(&published, stored);
    }
    // Generous: the outbox retries at most every two seconds.
    assert!(
        last_task_event_at < Duration::from_secs(10),
        "the backlog took {last_task_event_at:?}"
    );
}

fn quiet_ids(history: &[Value]) -> Vec<i64> {
    history.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}
