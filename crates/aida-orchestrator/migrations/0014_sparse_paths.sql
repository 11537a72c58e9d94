-- The directories a subtask works in (JSON list of strings): its worktree
-- is a sparse checkout of them. Empty: the whole repository.
ALTER TABLE subtasks ADD COLUMN paths_json TEXT NOT NULL DEFAULT '[]';
