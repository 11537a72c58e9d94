-- A task's shared context: every value of every key is kept.
CREATE TABLE task_context (
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    value      TEXT NOT NULL,
    author     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (task_id, key, version)
);

-- Agents prove they work for the task with this token when they write.
ALTER TABLE tasks ADD COLUMN context_token TEXT;
