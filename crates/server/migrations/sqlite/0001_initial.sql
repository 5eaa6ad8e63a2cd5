-- syncfolder server metadata. Kept to SQL that SQLite and PostgreSQL both
-- accept (BIGINT for every u64, TEXT for hashes in lower-case hex, JSON as
-- TEXT), except the `INTEGER PRIMARY KEY` row ids, which become BIGSERIAL
-- / identity columns in a PostgreSQL migration set.

CREATE TABLE folders (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- core::protocol::FolderSettings as JSON
    settings TEXT NOT NULL,
    -- the folder's sequence: the version of its newest accepted change
    seq BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    -- 'read-write' or 'read-only'
    scope TEXT NOT NULL,
    -- SHA-256 of the secret part, hex; the secret itself is never stored
    secret_sha256 TEXT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms BIGINT NOT NULL
);

-- The current record of every path (tombstones included).
CREATE TABLE files (
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- 'file', 'directory', 'symlink'; NULL for a tombstone
    kind TEXT,
    -- bytes of a file, 0 otherwise
    size BIGINT NOT NULL,
    -- core::protocol::Content as JSON; NULL for a tombstone
    content TEXT,
    -- Vec<core::protocol::ChunkRef> as JSON
    chunks TEXT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    committed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (folder_id, path)
);
CREATE INDEX files_by_version ON files (folder_id, version);

-- Previous records, moved here when a newer version is committed.
CREATE TABLE history (
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT,
    size BIGINT NOT NULL,
    content TEXT,
    chunks TEXT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    committed_at_ms BIGINT NOT NULL,
    -- when a newer version replaced it (retention counts days from here)
    replaced_at_ms BIGINT NOT NULL,
    PRIMARY KEY (folder_id, path, version)
);

-- Which chunks a folder may read: written only after the chunk is durable.
CREATE TABLE folder_chunks (
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (folder_id, hash)
);

-- The outbox: one row per accepted change, written in the change's
-- transaction; a shipper copies unshipped rows to PostgreSQL's files_log.
-- Keyed by folder name so that it outlives the folder.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL,
    path TEXT NOT NULL,
    -- create, modify, delete, mkdir, symlink, restore
    action TEXT NOT NULL,
    size BIGINT NOT NULL,
    version BIGINT NOT NULL,
    content_hash TEXT,
    agent_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    shipped BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_unshipped ON events (shipped, id);
