-- Storage lifecycle: garbage collection of chunks, the tombstone horizon,
-- scrub and repair, and singleton jobs shared by every server of a database.

-- Every chunk the store holds, or is about to hold, once, whichever folders
-- read it (`folder_chunks` says which may). A claim comes before the write:
-- the row exists from the moment an upload means to store the chunk.
CREATE TABLE chunks (
    hash TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    -- When an upload, a dedup hit, an announcement or a commit last claimed
    -- it (ms). Every claim changes it (never backwards, never to the same
    -- value), so garbage collection marks a chunk only when this is what it
    -- was when the collection found the chunk unreferenced.
    claimed_at_ms BIGINT NOT NULL,
    -- TRUE once the store holds its bytes durably and they were verified
    stored BOOLEAN NOT NULL DEFAULT FALSE,
    -- 'live'; 'deleting' while a garbage collection removes it; 'repairing'
    -- while a scrub moves a damaged copy aside. Nothing may claim, reference
    -- or read a chunk that is not live; uploads of it wait.
    state TEXT NOT NULL DEFAULT 'live'
);
-- what a collection or a scrub left half done, in hash order
CREATE INDEX chunks_deleting ON chunks (hash) WHERE state = 'deleting';
CREATE INDEX chunks_repairing ON chunks (hash) WHERE state = 'repairing';

-- Chunks every folder could read so far are stored and claimed now: a
-- first garbage collection spares them for a grace period.
INSERT INTO chunks (hash, size, claimed_at_ms, stored, state)
SELECT hash, MAX(size), CAST(strftime('%s', 'now') AS INTEGER) * 1000, TRUE, 'live'
FROM folder_chunks GROUP BY hash;

CREATE INDEX folder_chunks_by_hash ON folder_chunks (hash);

-- The highest version of a tombstone the horizon forgot: a change-feed
-- cursor below it may have missed a deletion, and is refused.
ALTER TABLE folders ADD COLUMN horizon_version BIGINT NOT NULL DEFAULT 0;

-- Tombstones by age, for the horizon.
CREATE INDEX files_tombstones ON files (folder_id, committed_at_ms) WHERE kind IS NULL;

-- Chunks a scrub found corrupt or missing, until an agent uploads them
-- again. `seq` orders them for agents that follow the change feed.
CREATE TABLE damaged_chunks (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    -- 'corrupt' or 'missing'
    problem TEXT NOT NULL,
    found_at_ms BIGINT NOT NULL
);

-- Work that one server at a time does (garbage collection, scrub,
-- the horizon), whoever holds the row's lease.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
