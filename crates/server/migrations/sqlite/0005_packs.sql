-- Pack files: small chunks stored together in one object, read by range.
-- A chunk row with `pack` set lives at `pack_offset` in that pack (its
-- length is the chunk's size); NULL: a loose object of its own.
CREATE TABLE packs (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    -- written (state 'writing'), or the last time chunks moved out of it
    touched_at_ms INTEGER NOT NULL,
    -- 'writing' until an upload records its chunks, then 'live';
    -- 'deleting' once garbage collection took it
    state TEXT NOT NULL DEFAULT 'writing'
);
ALTER TABLE chunks ADD COLUMN pack TEXT;
ALTER TABLE chunks ADD COLUMN pack_offset INTEGER;
CREATE INDEX chunks_pack ON chunks (pack) WHERE pack IS NOT NULL;
