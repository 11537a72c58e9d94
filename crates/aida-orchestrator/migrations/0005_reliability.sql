-- Reliability: per-task limits, idempotent creation, leases on running
-- attempts, retries with backoff, the history of attempts, and locks.
ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN timeout_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- A running attempt holds its subtask until then, renewed by heartbeats.
ALTER TABLE subtasks ADD COLUMN lease_expires_at TEXT;
-- A pending subtask whose last attempt failed waits until then.
ALTER TABLE subtasks ADD COLUMN retry_at TEXT;
CREATE INDEX subtasks_by_lease ON subtasks (lease_expires_at) WHERE status = 'running';

CREATE TABLE attempts (
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    number      INTEGER NOT NULL,
    worker_id   TEXT NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    commit_sha  TEXT,
    exit_code   INTEGER,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (task_id, name, number)
);

CREATE TABLE locks (
    resource    TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
