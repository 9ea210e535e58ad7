-- One row the store writer rewrites to find out, after a failure, that the disk takes writes
-- again (drove-store's probe).
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);
