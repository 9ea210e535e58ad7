-- Apps deployed by git push: their deploy token, webhook secret and release count (JSON).
CREATE TABLE push_apps (
    name  TEXT PRIMARY KEY,
    data  TEXT NOT NULL
);

-- Releases of pushed apps (JSON: commit, descriptor, artifact, config, status, log, by).
CREATE TABLE releases (
    app     TEXT NOT NULL,
    number  INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (app, number)
);
