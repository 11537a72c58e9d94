//! The audit trail: who did what, from where, to what, and how it ended.
//! Each line goes to the database (admins read it at `GET /api/audit`) and,
//! when `AIDA_AUDIT_LOG` names a file, to that file as one JSON object per
//! line. Lines never hold a secret: callers put names and ids in them, never
//! passwords or tokens.

use std::io::Write;
use std::path::Path;

use aida_core::proto::common::Actor;
use chrono::Utc;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditRow, Store};

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Refused: wrong credentials, not allowed, replayed.
    Denied,
    /// Attempted and failed (bad input, a conflict).
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// One line to write.
#[derive(Debug, Clone)]
pub struct AuditLine {
    pub username: String,
    pub role: String,
    pub client_addr: String,
    pub action: String,
    pub object: String,
    pub outcome: Outcome,
    pub detail: serde_json::Value,
}

impl AuditLine {
    /// `actor` did `action` on `object`, successfully unless told otherwise.
    pub fn new(actor: Option<&Actor>, action: &str, object: impl Into<String>) -> Self {
        let (username, role, client_addr, via) = match actor {
            Some(a) => (
                a.username.clone(),
                a.role.clone(),
                a.client_addr.clone(),
                a.via.clone(),
            ),
            None => (String::new(), String::new(), String::new(), String::new()),
        };
        let mut detail = json!({});
        if !via.is_empty() {
            detail["via"] = json!(via);
        }
        AuditLine {
            username: if username.is_empty() {
                "internal".into()
            } else {
                username
            },
            role: if role.is_empty() {
                "system".into()
            } else {
                role
            },
            client_addr,
            action: action.to_owned(),
            object: object.into(),
            outcome: Outcome::Ok,
            detail,
        }
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Adds `key: value` to the detail object.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.detail[key] = json!(value);
        self
    }

    /// Denied, with why.
    pub fn denied(self, reason: impl Into<String>) -> Self {
        self.outcome(Outcome::Denied).with("reason", reason.into())
    }

    /// Failed, with the error the caller got.
    pub fn failed(self, error: impl std::fmt::Display) -> Self {
        self.outcome(Outcome::Error)
            .with("error", error.to_string())
    }
}

/// Writes audit lines; cheap to clone. Lines go to a writer task that
/// stores them in batches (one transaction for all that arrived meanwhile),
/// so auditing stays off the request path; [`Audit::flush`] waits until
/// everything recorded before it is written, and the orchestrator flushes
/// before it stops and before anyone reads the trail.
#[derive(Clone)]
pub struct Audit {
    queue: mpsc::Sender<Queued>,
}

enum Queued {
    Line(AuditRow),
    /// Answered once every line queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Lines waiting for the writer; past this, recording waits for it.
const QUEUE: usize = 4096;
/// Lines stored in one transaction at most.
const BATCH: usize = 256;

impl Audit {
    /// Audits to the database and, with `path`, to that file (created
    /// readable by its owner only, appended to). Spawns the writer on the
    /// current Tokio runtime.
    pub fn new(store: Store, path: Option<&Path>) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!("opening AIDA_AUDIT_LOG {}: {e}", path.display())
                    })?;
                Some(file)
            }
            None => None,
        };
        let (queue, lines) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(store, file, lines));
        Ok(Audit { queue })
    }

    /// Audits how an action ended (a permission refusal as `denied`, any
    /// other error as `error`, with its message) and passes its result on.
    pub async fn outcome<T>(
        &self,
        line: AuditLine,
        outcome: crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        let line = match &outcome {
            Ok(_) => line,
            Err(crate::error::OrchestratorError::PermissionDenied(m)) => line.denied(m.clone()),
            Err(e) => line.failed(e),
        };
        self.record(line).await;
        outcome
    }

    /// Queues `line` for writing, stamped now. An audit line that cannot
    /// be stored is logged as an error but does not undo what happened.
    pub async fn record(&self, line: AuditLine) {
        let row = AuditRow {
            id: 0,
            at: Utc::now(),
            username: line.username,
            role: line.role,
            client_addr: line.client_addr,
            action: line.action,
            object: line.object,
            result: line.outcome.label().to_owned(),
            detail: line.detail.to_string(),
        };
        if self.queue.send(Queued::Line(row)).await.is_err() {
            tracing::error!("the audit writer has stopped: an audit line is lost");
        }
    }

    /// Waits until every line recorded before is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// The writer: takes what has queued up, stores it in one transaction,
/// appends it to the file, answers flushes; ends when every `Audit` is gone.
async fn write_lines(
    store: Store,
    mut file: Option<std::fs::File>,
    mut queue: mpsc::Receiver<Queued>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Queued::Line(row) => batch.push(row),
                Queued::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let rows = std::mem::take(&mut batch);
            let stored = match store.insert_audit_batch(&rows).await {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(error = %e, lines = rows.len(), "cannot store audit lines");
                    rows
                }
            };
            if let Some(file) = &mut file {
                append(file, &stored);
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn append(file: &mut std::fs::File, rows: &[AuditRow]) {
    let mut text = String::new();
    for row in rows {
        let line = json!({
            "id": row.id,
            "at": row.at,
            "user": row.username,
            "role": row.role,
            "client_addr": row.client_addr,
            "action": row.action,
            "object": row.object,
            "result": row.result,
            "detail": serde_json::from_str::<serde_json::Value>(&row.detail).unwrap_or_default(),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    if let Err(e) = file.write_all(text.as_bytes()) {
        tracing::error!(error = %e, "cannot write to AIDA_AUDIT_LOG");
    }
}
