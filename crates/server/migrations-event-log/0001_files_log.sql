-- The event log: one row per accepted change, shipped from a server's
-- outbox. (server_id, event_id) makes shipping idempotent: a batch sent
-- twice lands once.
CREATE TABLE IF NOT EXISTS files_log (
    id BIGSERIAL PRIMARY KEY,
    server_id TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    folder TEXT NOT NULL,
    path TEXT NOT NULL,
    -- the source of a rename
    from_path TEXT,
    -- create, modify, delete, mkdir, symlink, rename, conflict, restore
    action TEXT NOT NULL,
    size BIGINT NOT NULL,
    version BIGINT NOT NULL,
    -- SHA-256 content hash of a file, hex
    content_hash TEXT,
    agent_id TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    shipped_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT files_log_event_once UNIQUE (server_id, event_id)
);

-- time-range queries (Grafana's $__timeFilter) and per-folder ones
CREATE INDEX IF NOT EXISTS files_log_occurred_at ON files_log (occurred_at);
CREATE INDEX IF NOT EXISTS files_log_folder_occurred_at ON files_log (folder, occurred_at);
