-- Apps deployed by git push: their deploy token, webhook secret and release count (JSON).
CREATE TABLE push_apps (
    name  TEXT PRIMARY KEY,
    data  TEXT NOT NULL
);
