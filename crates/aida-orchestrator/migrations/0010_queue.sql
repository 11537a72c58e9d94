-- The dispatch queue: unfinished tasks by priority, then age. The
-- dispatcher walks it a page at a time from its head (one priority level
-- after another), so a pass costs what it hands out, not what is queued.
-- The WHERE is the queue's: queries must repeat it word for word.
CREATE INDEX tasks_queue ON tasks (priority, created_at, id)
    WHERE status IN ('planning', 'queued', 'running', 'merging');
-- Pending subtasks: the sweep for those no connected worker can run reads
-- these and nothing else.
CREATE INDEX subtasks_pending ON subtasks (task_id) WHERE status = 'pending';
