-- Where a worker serves /metrics, /healthz and /readyz ('' for nowhere).
ALTER TABLE workers ADD COLUMN metrics_address TEXT NOT NULL DEFAULT '';
