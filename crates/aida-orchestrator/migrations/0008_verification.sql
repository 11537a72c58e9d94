-- Verification of a task's work: the command (`verify_json`) and how
-- checking the merged result goes (`verification_json`: status, the runs,
-- the bisection's state, what broke it and what was left out). Its runs
-- are attempts of a pseudo-subtask `_verify` of role 'verify'.
ALTER TABLE tasks ADD COLUMN verify_json TEXT;
ALTER TABLE tasks ADD COLUMN verification_json TEXT;
