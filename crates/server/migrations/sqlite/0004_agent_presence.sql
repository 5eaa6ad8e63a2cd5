-- Which agents talked to which servers of a shared database, per folder:
-- each server writes what it saw every few seconds, and every server reads
-- the whole picture from here. (A single server keeps it in memory.)
CREATE TABLE agent_presence (
    folder TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    last_sync_ms BIGINT,
    PRIMARY KEY (folder, agent_id)
);
CREATE INDEX agent_presence_by_time ON agent_presence (last_seen_ms);
