//! Task intake with group commit. Every new task is durably stored (with
//! its `task.created` event) before its creator hears back, but the tasks
//! that arrive while one transaction is being written are stored together
//! in the next: one commit, one pass through the database's single writer,
//! for many requests. A task that cannot be stored fails alone (each has a
//! savepoint of its own). The stored tasks are read back together too, in
//! the same transaction, so a request costs a share of a few queries, not a
//! few of its own.

use std::collections::HashMap;

use aida_core::proto::common::Task;
use anyhow::anyhow;
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::events::EventLog;
use crate::store::{NewEvent, NewTask};

/// Most tasks stored in one transaction.
const MAX_BATCH: usize = 64;
/// Requests waiting for the writer before senders wait too.
const QUEUE: usize = 1024;

struct Pending {
    task: NewTask,
    event: NewEvent,
    reply: oneshot::Sender<Result<Option<Task>>>,
}

/// The front of the writer: hands it tasks and waits for them to be stored.
#[derive(Debug, Clone)]
pub struct Intake {
    queue: mpsc::Sender<Pending>,
}

impl Intake {
    /// Starts the writer; it stops when the last `Intake` is dropped.
    pub fn start(events: EventLog) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        tokio::spawn(write(events, requests));
        Intake { queue }
    }

    /// Stores `task` with `event`; returns once both are committed, with
    /// the task as stored (`None` when it could not be read back: ask the
    /// store).
    pub async fn store(&self, task: NewTask, event: NewEvent) -> Result<Option<Task>> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { task, event, reply })
            .await
            .map_err(|_| anyhow!("the task intake writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the task intake writer stopped before answering"))?
    }
}

async fn write(events: EventLog, mut requests: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|p| ((p.task, p.event), p.reply))
            .unzip();
        let (outcomes, tasks) = match events.record_tasks(&items).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = ?e, tasks = items.len(), "cannot store new tasks");
                let message = format!("{e:#}");
                for reply in replies {
                    let _ = reply.send(Err(anyhow!("storing the task failed: {message}").into()));
                }
                continue;
            }
        };
        let mut read: HashMap<String, Task> =
            tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        for ((reply, outcome), (task, _)) in replies.into_iter().zip(outcomes).zip(&items) {
            let _ = reply.send(outcome.map(|()| read.remove(&task.id)));
        }
    }
}
