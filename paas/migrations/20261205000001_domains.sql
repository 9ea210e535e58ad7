-- Custom domains: each hostname belongs to one app (the primary key makes a second claim
-- fail even if two changes raced past the check).
CREATE TABLE domains (
    hostname TEXT PRIMARY KEY,
    app_id   TEXT NOT NULL,
    added    TEXT NOT NULL
);
CREATE INDEX domains_by_app ON domains (app_id);
