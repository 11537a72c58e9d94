//! The event log. Every event is stored first (the database gives it its
//! id), then handed to live followers, then published on Redis by an outbox
//! loop: while Redis is down events wait in the database and go out in
//! order when it returns, so no subscriber-visible history is lost.

use std::sync::Arc;
use std::time::Duration;

use aida_core::event::Event;
use aida_core::proto::common::Task;
use chrono::Utc;
use tokio::sync::{Mutex, Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::store::{NewEvent, NewTask, Store};

/// How many events a slow live follower may fall behind before it re-reads
/// from the database.
const LIVE_BUFFER: usize = 4096;
const PUBLISH_BATCH: u32 = 500;

#[derive(Clone)]
pub struct EventLog {
    store: Store,
    live: broadcast::Sender<Event>,
    /// Held across insert and broadcast so followers see ids in order.
    order: Arc<Mutex<()>>,
    outbox: Arc<Notify>,
}

impl EventLog {
    pub fn new(store: Store) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Self {
            store,
            live,
            order: Arc::new(Mutex::new(())),
            outbox: Arc::new(Notify::new()),
        }
    }

    pub async fn record(&self, event: NewEvent) -> Result<Event> {
        let mut stored = self.record_all(vec![event]).await?;
        Ok(stored.remove(0))
    }

    pub async fn record_all(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // The events continue the trace of whatever recorded them.
        let trace = aida_core::telemetry::current_traceparent();
        let traces = vec![trace; events.len()];
        let _order = self.order.lock().await;
        let stored = self
            .store
            .insert_events(&events, &traces, Utc::now())
            .await?;
        self.announce(&stored);
        Ok(stored)
    }

    /// Hands just-stored events to the live followers and the outbox; call
    /// with the order lock held.
    fn announce(&self, stored: &[Event]) {
        for e in stored {
            // No receivers is fine: nobody is following right now.
            let _ = self.live.send(e.clone());
        }
        if !stored.is_empty() {
            self.outbox.notify_one();
        }
    }

    /// Stores new tasks, each with its `task.created` event, in one
    /// transaction (see [`Store::insert_tasks_with_events`]); returns each
    /// task's outcome and the tasks as stored.
    pub async fn record_tasks(
        &self,
        batch: &[(NewTask, NewEvent)],
    ) -> Result<(Vec<Result<()>>, Vec<Task>)> {
        let _order = self.order.lock().await;
        let stored = self
            .store
            .insert_tasks_with_events(batch, Utc::now())
            .await?;
        self.announce(&stored.events);
        Ok((stored.outcomes, stored.tasks))
    }

    /// Subscribe before reading history, so nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Publishes stored events to Redis in id order until `stop`.
    pub async fn run_publisher(self, pool: deadpool_redis::Pool, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut healthy = true;
        loop {
            match self.publish_pending(&pool).await {
                Ok(more) => {
                    if !healthy {
                        tracing::info!("redis reachable again, publishing resumed");
                        healthy = true;
                    }
                    backoff = Duration::from_millis(100);
                    if more {
                        continue;
                    }
                    tokio::select! {
                        _ = self.outbox.notified() => {}
                        // A safety net in case a notification raced the query.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    if healthy {
                        tracing::warn!(error = %e, "cannot publish events to redis; they stay stored and go out when it returns");
                        healthy = false;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One batch; true when there may be more waiting.
    async fn publish_pending(&self, pool: &deadpool_redis::Pool) -> anyhow::Result<bool> {
        let batch = self.store.unpublished_events(PUBLISH_BATCH).await?;
        let Some(last) = batch.last().map(|e| e.id) else {
            return Ok(false);
        };
        let mut conn = pool.get().await?;
        let mut pipe = redis::pipe();
        for e in &batch {
            pipe.publish(e.channel.redis_channel(), serde_json::to_string(e)?)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        self.store.mark_published(last).await?;
        for e in &batch {
            metrics::counter!(aida_core::metrics::names::EVENTS_PUBLISHED,
                "channel" => e.channel.redis_channel())
            .increment(1);
        }
        Ok(batch.len() as u32 == PUBLISH_BATCH)
    }
}
