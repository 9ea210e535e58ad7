-- The PaaS's durable state: app definitions and their versions, the instances it launched, and
-- its framework id. Portable SQL (SQLite now, PostgreSQL later): TEXT json blobs, TEXT ids.

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- The current definition of every app.
CREATE TABLE apps (
    id              TEXT PRIMARY KEY,
    definition      TEXT NOT NULL,   -- JSON AppDefinition
    version         TEXT NOT NULL,   -- Marathon version timestamp of the latest change
    config_version  TEXT NOT NULL,   -- the latest change that was not only a scale
    scaling_version TEXT NOT NULL    -- the latest scale
);

-- Every version of every app (Marathon's /v2/apps/{id}/versions).
CREATE TABLE app_versions (
    app_id      TEXT NOT NULL,
    version     TEXT NOT NULL,
    definition  TEXT NOT NULL,
    PRIMARY KEY (app_id, version)
);

-- Instances launched and not yet known to be gone.
CREATE TABLE instances (
    task_id  TEXT PRIMARY KEY,
    app_id   TEXT NOT NULL,
    data     TEXT NOT NULL          -- JSON Instance
);
