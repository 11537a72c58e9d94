-- What agents report about their runs: session id, turns, tokens, cost.
ALTER TABLE subtasks ADD COLUMN usage_json TEXT;
