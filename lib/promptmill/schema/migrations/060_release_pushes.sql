-- Where each release was published: one row per push to a Hub repository,
-- with the commit that holds it, so a release can be traced to its Hub revision.
CREATE TABLE release_pushes (
    id INTEGER PRIMARY KEY,
    release_id INTEGER NOT NULL REFERENCES releases(id),
    repo_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    private INTEGER NOT NULL,
    files INTEGER NOT NULL,
    commit_oid TEXT,
    commit_url TEXT,
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX release_pushes_release ON release_pushes(release_id);
