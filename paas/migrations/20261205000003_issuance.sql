-- Where each hostname's automatic certificate stands (ACME or drove's local CA): kept so a
-- restart neither forgets a failure's backoff nor hammers the CA.
CREATE TABLE issuance (
    hostname     TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    authority    TEXT NOT NULL,
    error        TEXT,
    attempts     INTEGER NOT NULL,
    next_attempt TEXT,
    updated      TEXT NOT NULL
);
