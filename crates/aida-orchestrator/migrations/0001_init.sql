-- Tasks, their subtasks, and the event log. Every state the orchestrator
-- needs after a restart lives here.

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    repo            TEXT NOT NULL,
    base            TEXT NOT NULL,
    base_commit     TEXT NOT NULL,
    description     TEXT NOT NULL,
    agent_json      TEXT NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    result_branch   TEXT,
    result_commit   TEXT,
    conflicts_json  TEXT NOT NULL DEFAULT '[]',
    error           TEXT,
    report_markdown TEXT,
    report_json     TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT
);

CREATE INDEX tasks_by_status ON tasks (status, priority DESC, created_at);
CREATE INDEX tasks_by_created ON tasks (created_at DESC);

CREATE TABLE subtasks (
    task_id         TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    -- Order in the request: ties in scheduling and merging follow it.
    position        INTEGER NOT NULL,
    prompt          TEXT NOT NULL,
    depends_on_json TEXT NOT NULL,
    agent_json      TEXT NOT NULL,
    status          TEXT NOT NULL,
    branch          TEXT NOT NULL,
    commit_sha      TEXT,
    start_commit    TEXT,
    worker_id       TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    exit_code       INTEGER,
    summary         TEXT,
    stats_json      TEXT,
    merged          INTEGER NOT NULL DEFAULT 0,
    started_at      TEXT,
    finished_at     TEXT,
    PRIMARY KEY (task_id, name)
);

CREATE INDEX subtasks_by_worker ON subtasks (worker_id, status);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    task_id     TEXT,
    subtask     TEXT,
    worker_id   TEXT,
    at          TEXT NOT NULL,
    data        TEXT NOT NULL,
    -- Outbox flag: set once the event reached Redis.
    published   INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX events_by_task ON events (task_id, id);
CREATE INDEX events_unpublished ON events (id) WHERE published = 0;

CREATE TABLE workers (
    worker_id    TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    agent_kinds  TEXT NOT NULL,
    hostname     TEXT NOT NULL,
    state        TEXT NOT NULL,
    completed    INTEGER NOT NULL DEFAULT 0,
    connected_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
