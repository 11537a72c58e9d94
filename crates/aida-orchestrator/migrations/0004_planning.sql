-- Planning by an agent: the planner's run is a subtask row of its own role,
-- kept out of the task's list of work; a plan may wait for approval.
ALTER TABLE subtasks ADD COLUMN role TEXT NOT NULL DEFAULT 'work';
-- What a read-only run printed (the planner's plan).
ALTER TABLE subtasks ADD COLUMN output TEXT;
ALTER TABLE tasks ADD COLUMN approve TEXT NOT NULL DEFAULT 'auto';
