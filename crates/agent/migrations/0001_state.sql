-- The agent's local state: what it last synced (base), the server's records
-- as last seen (remote) and small settings such as the change-feed cursor.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE base (
    path        TEXT PRIMARY KEY NOT NULL,
    record      TEXT NOT NULL,
    fingerprint TEXT
);

CREATE TABLE remote (
    path   TEXT PRIMARY KEY NOT NULL,
    record TEXT NOT NULL
);
