-- Merge quality: conflicts seen coming (trial merges as subtasks succeed)
-- and what to do about them (`merge_policy`), and the resolver agent for
-- textual conflicts at the merge (`resolve_json`; what it did in
-- `resolutions_json`; its runs are attempts of a pseudo-subtask `_resolve`
-- of role 'resolve').
ALTER TABLE tasks ADD COLUMN merge_policy TEXT NOT NULL DEFAULT 'merge';
ALTER TABLE tasks ADD COLUMN predicted_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN resolve_json TEXT;
ALTER TABLE tasks ADD COLUMN resolutions_json TEXT NOT NULL DEFAULT '[]';
-- Best of N: a subtask's candidates are subtasks of role 'candidate' that
-- name it in `candidate_of`; `chosen` names the winner on the subtask.
ALTER TABLE subtasks ADD COLUMN candidate_of TEXT;
ALTER TABLE subtasks ADD COLUMN chosen TEXT;
