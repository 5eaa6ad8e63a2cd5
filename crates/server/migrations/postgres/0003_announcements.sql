-- Streaming sync's announcements, shared by the servers of this database:
-- a receiver learns of a file being uploaded through whichever server it
-- polls. (A single server keeps them in memory.) Numbers come from one
-- sequence, so that they only grow, whichever server hands them out.
CREATE SEQUENCE announcement_seq;
CREATE TABLE announcements (
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    path TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    -- core::protocol::Announcement as JSON
    body TEXT NOT NULL,
    -- the hashes of its chunks, for reads that wait for one
    hashes TEXT[] NOT NULL,
    announced_at_ms BIGINT NOT NULL,
    PRIMARY KEY (folder_id, path)
);
CREATE INDEX announcements_by_seq ON announcements (folder_id, seq);
CREATE INDEX announcements_by_hash ON announcements USING GIN (hashes);
