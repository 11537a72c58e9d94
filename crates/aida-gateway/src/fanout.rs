//! One subscription to the orchestrator's events, fanned out to every SSE
//! client of this gateway.
//!
//! The gateway follows the orchestrator's `GetProgress` stream once, for all
//! tasks, and hands each event to its clients through a broadcast channel,
//! serialized once. A client reads its history (from its `Last-Event-ID` or
//! `after`) with paged `ListEvents` calls, then takes the live events from
//! here. A client that falls behind (its connection does not take what is
//! sent as fast as events come) loses its place in the channel and reads the
//! gap from the history again: it never holds up the channel or the other
//! clients, and it misses nothing.
//!
//! Why no gap is possible: the hub starts from the newest stored event id,
//! read before any client subscribes. Anything stored after it comes through
//! the hub, in id order, and the hub resumes after the last id it saw when
//! its stream breaks. A client subscribes before it reads its history, so
//! an event is either in what it reads or arrives after it subscribed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aida_core::event::Event;
use aida_core::grpc::AuthChannel;
use aida_proto::orchestrator as orch;
use aida_proto::orchestrator::orchestrator_client::OrchestratorClient;
use tokio::sync::{broadcast, watch};

/// Events a client may fall behind before it re-reads from the history.
const LIVE_BUFFER: usize = 4096;
/// How long a client waits for the hub's first contact with the
/// orchestrator before it is told the service is unavailable.
const READY_PATIENCE: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// An event as the hub hands it out: what a client filters on, and the
/// event's JSON, serialized once for every client.
#[derive(Debug)]
pub struct Frame {
    pub id: i64,
    pub kind: String,
    pub task_id: Option<String>,
    /// The last event of its task: a client following that task ends here.
    pub ends_task: bool,
    pub json: String,
}

impl Frame {
    pub fn new(event: &Event) -> Self {
        Frame {
            id: event.id,
            kind: event.kind.clone(),
            task_id: event.task_id.clone(),
            ends_task: event.ends_task(),
            json: serde_json::to_string(event).unwrap_or_default(),
        }
    }
}

/// The shared subscription; cheap to clone. It connects on first use.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    channel: AuthChannel,
    live: broadcast::Sender<Arc<Frame>>,
    /// Becomes true once the hub knows where it starts from.
    ready: watch::Sender<bool>,
    started: OnceLock<()>,
    closing: watch::Receiver<bool>,
}

/// Why a client cannot follow the live events now.
#[derive(Debug)]
pub struct NotReady;

impl Hub {
    /// A hub over `channel` that stops when `closing` turns true.
    pub fn new(channel: AuthChannel, closing: watch::Receiver<bool>) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (ready, _) = watch::channel(false);
        Hub {
            inner: Arc::new(Inner {
                channel,
                live,
                ready,
                started: OnceLock::new(),
                closing,
            }),
        }
    }

    /// A receiver of every event stored from now on. Subscribe before
    /// reading the history, so nothing falls in between.
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<Arc<Frame>>, NotReady> {
        self.inner.started.get_or_init(|| {
            tokio::spawn(Arc::clone(&self.inner).run());
        });
        let mut ready = self.inner.ready.subscribe();
        // Subscribing first: once ready, the hub's start is before this
        // receiver's, so what this receiver lacks is in the history.
        let rx = self.inner.live.subscribe();
        match tokio::time::timeout(READY_PATIENCE, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(rx),
            _ => Err(NotReady),
        }
    }

    /// How many clients are following now.
    pub fn followers(&self) -> usize {
        self.inner.live.receiver_count()
    }
}

impl Inner {
    fn client(&self) -> OrchestratorClient<AuthChannel> {
        OrchestratorClient::new(self.channel.clone())
    }

    async fn run(self: Arc<Self>) {
        let mut closing = self.closing.clone();
        tokio::select! {
            () = self.follow() => {}
            _ = closing.wait_for(|c| *c) => {}
        }
    }

    /// Follows the orchestrator for ever, resuming after the last event
    /// seen whenever the stream breaks.
    async fn follow(&self) {
        let mut retry = RETRY_MIN;
        let mut after = None;
        loop {
            match self.follow_once(&mut after).await {
                // The orchestrator ended the stream (it is stopping).
                Ok(()) => {
                    retry = RETRY_MIN;
                    tokio::time::sleep(retry).await;
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), detail = %status.message(), "following the orchestrator's events failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn follow_once(&self, after: &mut Option<i64>) -> Result<(), tonic::Status> {
        let mut client = self.client();
        let start = match *after {
            Some(id) => id,
            None => {
                let head = client
                    .list_events(orch::ListEventsRequest {
                        task_id: String::new(),
                        after_event_id: i64::MAX,
                        limit: 1,
                    })
                    .await?
                    .into_inner()
                    .latest_event_id;
                *after = Some(head);
                self.ready.send_replace(true);
                tracing::debug!(after = head, "following the orchestrator's events");
                head
            }
        };
        let mut updates = client
            .get_progress(orch::ProgressRequest {
                task_id: String::new(),
                after_event_id: start,
            })
            .await?
            .into_inner();
        while let Some(update) = updates.message().await? {
            let Some(event) = update.event else { continue };
            match Event::try_from(event) {
                Ok(event) => {
                    *after = Some(event.id);
                    // No receivers is fine: nobody is following right now.
                    let _ = self.live.send(Arc::new(Frame::new(&event)));
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "skipping unreadable event");
                }
            }
        }
        Ok(())
    }
}
