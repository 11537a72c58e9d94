-- Who may use AIDA: users with hashed passwords and a lockout, sessions
-- (a login's chain of refresh tokens), API tokens, agents' context tokens,
-- webhook deliveries seen, and the audit trail. Every secret is stored as a
-- hash only; a token is "<prefix>_<id>_<secret>" and found by its id.

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    -- argon2id, as a PHC string.
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    -- Wrong passwords in a row; reset by a right one or a lockout.
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_login_at TEXT,
    created_by    TEXT NOT NULL
);

-- One per login. Its refresh tokens rotate; one used twice revokes it.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    revoked_reason TEXT
);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    -- Set when traded for the next one: presenting it again is reuse.
    used_at     TEXT
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    owner        TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    secret_hash  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

-- An agent's token for its task's shared context: one per attempt, valid
-- while that attempt runs.
CREATE TABLE context_tokens (
    id          TEXT PRIMARY KEY,
    task_id     TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    subtask     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Webhook event ids already processed ("<source>:<id>").
CREATE TABLE webhook_deliveries (
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    received_at TEXT NOT NULL
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    username    TEXT NOT NULL,
    role        TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    action      TEXT NOT NULL,
    object      TEXT NOT NULL,
    result      TEXT NOT NULL,
    detail      TEXT NOT NULL
);

CREATE INDEX audit_by_username ON audit_log (username, id);
CREATE INDEX audit_by_action ON audit_log (action, id);

-- An admin can drain a worker: it finishes what it runs and takes nothing
-- new until resumed.
ALTER TABLE workers ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;

-- Tasks remember who created them.
ALTER TABLE tasks ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
-- The per-task context token was kept in plain text; per-attempt hashed
-- tokens replace it.
ALTER TABLE tasks DROP COLUMN context_token;
