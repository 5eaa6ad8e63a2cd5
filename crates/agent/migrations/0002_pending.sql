-- Downloads about to be renamed into place (a write-ahead intent): after a
-- crash between the rename and the base update, a local file whose content
-- equals its intent is known to be that record, not a new local file.
CREATE TABLE pending (
    path   TEXT PRIMARY KEY NOT NULL,
    record TEXT NOT NULL
);
