-- The master's durable state: enough to resume after a restart without killing anything.
-- Portable SQL (SQLite now, PostgreSQL later): TEXT json blobs, BIGINT epoch milliseconds.

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    hostname        TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    resources       TEXT NOT NULL,   -- JSON list of Mesos Resource
    attributes      TEXT NOT NULL,   -- JSON list of Mesos Attribute
    registered_at   BIGINT NOT NULL,
    unreachable_at  BIGINT            -- set while the agent is unreachable
);

CREATE TABLE frameworks (
    id                TEXT PRIMARY KEY,
    info              TEXT NOT NULL,  -- JSON FrameworkInfo
    failover_timeout  DOUBLE PRECISION NOT NULL,
    registered_at     BIGINT NOT NULL
);

CREATE TABLE tasks (
    framework_id  TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    info          TEXT NOT NULL,     -- JSON TaskInfo
    state         TEXT NOT NULL,     -- TASK_* name of the latest status
    status        TEXT,              -- JSON TaskStatus, latest
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (framework_id, task_id)
);

CREATE INDEX tasks_by_agent ON tasks (agent_id);
