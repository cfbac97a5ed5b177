-- Label Studio: who answered, when and for how long, in columns; the projects
-- promptmill pushes to and pulls from.

-- One row per version of a person's annotation (a Label Studio annotation as
-- it stood at its updated_at). Captions, labels, scores and review decisions
-- made from it point here through annotation_id.
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    source_id INTEGER REFERENCES sources(id),          -- the export file it came in; NULL when pulled
    ls_project_id INTEGER REFERENCES ls_projects(id),  -- the project it was pulled from
    task_id INTEGER,                                   -- Label Studio's task id
    ls_annotation_id INTEGER,                          -- Label Studio's annotation id
    annotator TEXT,                                    -- email, or user id when the export has no email
    created_at TEXT,
    updated_at TEXT,                                   -- UTC, ISO 8601; the newest answer wins
    lead_time REAL,                                    -- seconds spent on it, as Label Studio measured
    prediction_id INTEGER,                             -- the prediction it started from, if any
    natural_key TEXT NOT NULL UNIQUE,                  -- 'ls:<annotation id>:<updated_at>'
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX annotations_image ON annotations(image_id, updated_at);

ALTER TABLE captions ADD COLUMN annotation_id INTEGER REFERENCES annotations(id);
ALTER TABLE labels ADD COLUMN annotation_id INTEGER REFERENCES annotations(id);
ALTER TABLE scores ADD COLUMN annotation_id INTEGER REFERENCES annotations(id);
ALTER TABLE decisions ADD COLUMN annotation_id INTEGER REFERENCES annotations(id);

-- A Label Studio project promptmill pushes tasks to: server, project, its local-files storage.
CREATE TABLE ls_projects (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,               -- the server's base URL, without credentials
    project_id INTEGER NOT NULL,     -- Label Studio's project id
    title TEXT NOT NULL,
    storage_id INTEGER,              -- its local-files import storage
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (url, project_id)
);

-- Each pull of a project: annotations changed after `since` were read, up to `until`.
CREATE TABLE ls_pulls (
    id INTEGER PRIMARY KEY,
    ls_project_id INTEGER NOT NULL REFERENCES ls_projects(id),
    since TEXT,                      -- the previous pull's `until` (NULL: the first pull)
    until TEXT,                      -- the newest updated_at read (the next pull starts after it)
    annotations INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX ls_pulls_project ON ls_pulls(ls_project_id, id);
