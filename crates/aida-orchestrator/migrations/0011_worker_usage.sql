-- Bytes a worker's worktree root takes on disk, as it last reported.
ALTER TABLE workers ADD COLUMN disk_usage_bytes INTEGER NOT NULL DEFAULT 0;
