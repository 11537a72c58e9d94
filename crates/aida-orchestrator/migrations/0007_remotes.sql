-- Tasks on remotes: the remote's URL (without credentials; `repo` is then
-- the local mirror), what to do with the result and what was done, the
-- set-up of each worktree, the issue that started the task and the
-- workflow it was made from.
ALTER TABLE tasks ADD COLUMN remote TEXT;
ALTER TABLE tasks ADD COLUMN deliver_json TEXT;
ALTER TABLE tasks ADD COLUMN delivery_json TEXT;
ALTER TABLE tasks ADD COLUMN setup_json TEXT;
ALTER TABLE tasks ADD COLUMN origin_json TEXT;
ALTER TABLE tasks ADD COLUMN workflow TEXT;

-- A fallback agent takes a subtask over when its own agent's attempts are
-- used up (`on_fallback`); `attempt_floor` counts the attempts made before
-- the current budget began (the fallback's, or a follow-up's).
ALTER TABLE subtasks ADD COLUMN fallback_json TEXT;
ALTER TABLE subtasks ADD COLUMN on_fallback INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subtasks ADD COLUMN attempt_floor INTEGER NOT NULL DEFAULT 0;
-- Follow-up instructions, oldest first; the last one waits to run while
-- `follow_up_pending` is set.
ALTER TABLE subtasks ADD COLUMN follow_ups_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE subtasks ADD COLUMN follow_up_pending INTEGER NOT NULL DEFAULT 0;

CREATE INDEX tasks_by_remote ON tasks (remote) WHERE remote IS NOT NULL;

-- Stored workflows (a repository's own live in its .aida/workflows/).
CREATE TABLE workflows (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    source      TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL
);
