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
//! Each event becomes its SSE message once, here: every client writes the
//! same bytes, so a client costs a reference count per event, not a copy.
//! The hub also sends the keep-alive comment to every client on one timer,
//! instead of one timer per client.
//!
//! Why no gap is possible: the hub starts from the newest stored event id,
//! read before any client subscribes. Anything stored after it comes through
//! the hub, in id order, and the hub resumes after the last id it saw when
//! its stream breaks. A client subscribes before it reads its history, so
//! an event is either in what it reads or arrives after it subscribed.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aida_core::event::Event;
use aida_core::grpc::AuthChannel;
use aida_proto::orchestrator as orch;
use aida_proto::orchestrator::orchestrator_client::OrchestratorClient;
use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, watch};

/// Events a client may fall behind before it re-reads from the history.
const LIVE_BUFFER: usize = 4096;
/// How long a client waits for the hub's first contact with the
/// orchestrator before it is told the service is unavailable.
const READY_PATIENCE: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often every client gets a keep-alive comment, so that proxies and
/// clients see a quiet stream is still open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the hub looks whether clients left (see [`crate::memory`]).
const MEMORY_CHECK: Duration = Duration::from_secs(2);

/// An event as the hub hands it out: what a client filters on, and the
/// event as an SSE message, rendered once for every client.
#[derive(Debug)]
pub struct Frame {
    pub id: i64,
    pub task_id: Option<String>,
    /// The last event of its task: a client following that task ends here.
    pub ends_task: bool,
    /// `id`, `event` and `data` lines and the blank line that ends them.
    pub message: Bytes,
}

impl Frame {
    pub fn new(event: &Event) -> Self {
        let json = serde_json::to_string(event).unwrap_or_default();
        // The event name comes from another service: a line break in it
        // would end the field early, so such a kind is left out (the data
        // has it too).
        let kind = Some(event.kind.as_str()).filter(|k| !k.is_empty() && !k.contains(['\n', '\r']));
        Frame {
            id: event.id,
            task_id: event.task_id.clone(),
            ends_task: event.ends_task(),
            message: message(Some(event.id), kind, &json),
        }
    }
}

/// One SSE message. `data` is compact JSON, which has no line breaks, so
/// it is one `data` line.
pub fn message(id: Option<i64>, kind: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + kind.map_or(0, str::len) + 48);
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    if let Some(kind) = kind {
        let _ = writeln!(out, "event: {kind}");
    }
    let _ = write!(out, "data: {data}\n\n");
    out.freeze()
}

/// What the hub sends its clients.
#[derive(Debug, Clone)]
pub enum Signal {
    Event(Arc<Frame>),
    /// Time for a keep-alive comment.
    KeepAlive,
}

/// The keep-alive comment.
pub const KEEP_ALIVE_MESSAGE: &[u8] = b":\n\n";

/// The shared subscription; cheap to clone. It connects on first use.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    channel: AuthChannel,
    live: broadcast::Sender<Signal>,
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
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<Signal>, NotReady> {
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
            () = self.keep_alive() => {}
            () = self.give_back_memory() => {}
            _ = closing.wait_for(|c| *c) => {}
        }
    }

    /// Tells every client to send its keep-alive comment, on one timer.
    async fn keep_alive(&self) {
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // No receivers is fine: nobody is following right now.
            let _ = self.live.send(Signal::KeepAlive);
        }
    }

    /// Gives the allocator's free pages back to the system after many
    /// clients left (see [`crate::memory`]), checking every few seconds.
    async fn give_back_memory(&self) {
        let mut release = crate::memory::Release::default();
        let mut tick = tokio::time::interval(MEMORY_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let followers = self.live.receiver_count();
            if release.observe(followers) {
                let gave = tokio::task::spawn_blocking(crate::memory::give_back)
                    .await
                    .unwrap_or(false);
                tracing::debug!(followers, gave, "SSE clients left; memory given back");
            }
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
                    let _ = self.live.send(Signal::Event(Arc::new(Frame::new(&event))));
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "skipping unreadable event");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aida_core::event::{Channel, Event};

    use super::*;

    fn event(kind: &str, data: serde_json::Value) -> Event {
        Event {
            id: 42,
            channel: Channel::Task,
            kind: kind.to_owned(),
            task_id: Some("t-1".to_owned()),
            subtask: None,
            worker_id: None,
            at: chrono::Utc::now(),
            data,
            traceparent: None,
        }
    }

    /// What an `EventSource` reads: the id to resume from, the kind as the
    /// event name, the event as one `data` line of JSON, a blank line.
    #[test]
    fn a_frame_is_one_sse_message_with_id_name_and_json() {
        let ev = event(
            "task.status",
            serde_json::json!({"status": "succeeded", "note": "a\nb"}),
        );
        let frame = Frame::new(&ev);
        let text = std::str::from_utf8(&frame.message).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "id: 42");
        assert_eq!(lines[1], "event: task.status");
        let data = lines[2].strip_prefix("data: ").unwrap();
        let back: Event = serde_json::from_str(data).unwrap();
        assert_eq!(back.data["note"], "a\nb");
        assert_eq!(&lines[3..], ["", ""], "ends with one blank line: {text:?}");
        assert!(frame.ends_task);
    }

    /// A kind with a line break would end the `event` field early and let
    /// the rest pose as another field: it is left out, the data keeps it.
    #[test]
    fn a_kind_with_a_line_break_is_not_an_event_name() {
        let frame = Frame::new(&event("x\ndata: forged", serde_json::json!({})));
        let text = std::str::from_utf8(&frame.message).unwrap();
        assert!(
            !text.contains("\nevent:") && !text.starts_with("event:"),
            "{text:?}"
        );
        assert_eq!(
            text.matches("\ndata: ").count() + usize::from(text.starts_with("data: ")),
            1
        );
    }
}
