//! What the worker is doing right now, shared by the gRPC service and the
//! orchestrator session: at most one run at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aida_proto::common::SubtaskRun;
use tokio_util::sync::CancellationToken;

/// The run in progress.
#[derive(Debug, Clone)]
pub struct CurrentRun {
    pub task_id: String,
    pub subtask: String,
    pub attempt: u32,
    pub cancel: CancellationToken,
}

#[derive(Debug)]
pub struct WorkerState {
    pub worker_id: String,
    current: Mutex<Option<CurrentRun>>,
    completed: AtomicU64,
    /// Whether the RegisterWorker stream to the orchestrator is open.
    connected: AtomicBool,
    /// Told each time `connected` flips.
    connection_changed: tokio::sync::Notify,
    /// Cancelled on shutdown; every run's token is a child of it.
    shutdown: CancellationToken,
}

/// Holds the worker's single run slot; releasing it (on drop) counts the
/// run as completed.
#[derive(Debug)]
pub struct RunSlot {
    state: Arc<WorkerState>,
    pub cancel: CancellationToken,
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        *self.state.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.state.completed.fetch_add(1, Ordering::Relaxed);
    }
}

impl WorkerState {
    pub fn new(worker_id: String, shutdown: CancellationToken) -> Self {
        Self {
            worker_id,
            current: Mutex::new(None),
            completed: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            connection_changed: tokio::sync::Notify::new(),
            shutdown,
        }
    }

    /// Claims the run slot for `run`, or returns what is running instead.
    /// Whether the worker is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    pub fn try_start(self: &Arc<Self>, run: &SubtaskRun) -> Result<RunSlot, CurrentRun> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(busy) = current.as_ref() {
            return Err(busy.clone());
        }
        let cancel = self.shutdown.child_token();
        *current = Some(CurrentRun {
            task_id: run.task_id.clone(),
            subtask: run.subtask.clone(),
            attempt: run.attempt,
            cancel: cancel.clone(),
        });
        Ok(RunSlot {
            state: Arc::clone(self),
            cancel,
        })
    }

    pub fn current(&self) -> Option<CurrentRun> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Cancels the current run if it matches; empty fields (and attempt 0)
    /// match anything. Returns whether a run was cancelled.
    pub fn cancel_matching(&self, task_id: &str, subtask: &str, attempt: u32) -> bool {
        let Some(run) = self.current() else {
            return false;
        };
        let matches = (task_id.is_empty() || task_id == run.task_id)
            && (subtask.is_empty() || subtask == run.subtask)
            && (attempt == 0 || attempt == run.attempt);
        if matches {
            run.cancel.cancel();
        }
        matches
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, connected: bool) {
        if self.connected.swap(connected, Ordering::Relaxed) != connected {
            self.connection_changed.notify_waiters();
        }
    }

    /// Resolves at the next time the session comes up or goes down.
    pub async fn connection_changed(&self) {
        self.connection_changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time_and_cancel_matches_fields() {
        let state = Arc::new(WorkerState::new("w".into(), CancellationToken::new()));
        let run = SubtaskRun {
            task_id: "t".into(),
            subtask: "s".into(),
            attempt: 2,
            ..Default::default()
        };
        let slot = state.try_start(&run).unwrap();
        assert_eq!(state.try_start(&run).unwrap_err().subtask, "s");
        assert!(!state.cancel_matching("t", "other", 0));
        assert!(!state.cancel_matching("t", "s", 1));
        assert!(!slot.cancel.is_cancelled());
        assert!(state.cancel_matching("t", "s", 2));
        assert!(slot.cancel.is_cancelled());
        drop(slot);
        assert!(state.current().is_none());
        assert_eq!(state.completed(), 1);
        assert!(!state.cancel_matching("", "", 0), "nothing runs");
    }
}
