-- Certificates the routers serve for custom domains (the key too: this database is root's
-- alone, 0600 in a 0700 directory, like every secret drove keeps).
CREATE TABLE certificates (
    hostname  TEXT PRIMARY KEY,
    chain_pem TEXT NOT NULL,
    key_pem   TEXT NOT NULL,
    source    TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issuer    TEXT NOT NULL,
    added     TEXT NOT NULL
);
