-- What the dashboard shows of each app's past, kept across restarts: its scaling decisions
-- and wake timelines (by app id) and its last hour of samples (by route name). JSON, one row
-- each, trimmed to the last few of each kind as they are written.
CREATE TABLE journal (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    app   TEXT NOT NULL,
    kind  TEXT NOT NULL,
    data  TEXT NOT NULL
);
CREATE INDEX journal_by_app ON journal (app, kind, id);
