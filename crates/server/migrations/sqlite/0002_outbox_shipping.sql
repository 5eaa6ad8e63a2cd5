-- One row of settings that belong to this data directory.
CREATE TABLE server_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The event log names this data directory, so that a PostgreSQL shared by
-- several servers (or a data directory started afresh) never merges two
-- servers' event ids: (server_id, event id) is the shipping key.
INSERT INTO server_meta (key, value)
VALUES ('server_id', lower(hex(randomblob(8))));

-- A rename detected within one commit: the destination's event names the
-- source, and the source's tombstone has no event of its own.
ALTER TABLE events ADD COLUMN from_path TEXT;

-- The pruning of shipped events walks by time.
CREATE INDEX events_at ON events (at_ms);
