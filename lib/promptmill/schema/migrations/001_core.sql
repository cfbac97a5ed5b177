-- promptmill core schema. Steps append rows; nothing here is updated in place
-- except run bookkeeping (status, counts, finished_at) and source completion.

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    step TEXT NOT NULL,                -- '01_collect', '03_dedup', ...
    command TEXT,                      -- sub-command: 'text', 'prompts', ...
    argv TEXT NOT NULL,                -- JSON list, secrets redacted
    params TEXT NOT NULL DEFAULT '{}', -- JSON of the resolved options
    code_version TEXT,
    library_versions TEXT,             -- JSON {package: version}
    host TEXT,
    pid INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    counts TEXT NOT NULL DEFAULT '{}', -- JSON {added: n, skipped: n, failed: n, ...}
    error TEXT
);
CREATE INDEX runs_step ON runs(step, status);

-- Where rows came from. One row per (kind, content, options): importing the
-- same file again finds this row and adds nothing.
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,        -- text, table, discord, imagefolder, zip, hf, gelbooru, augment
    uri TEXT NOT NULL,         -- path or URL as given (first import)
    sha256 TEXT NOT NULL,      -- content hash of the file/folder, or of the query for remote sources
    options TEXT NOT NULL DEFAULT '{}', -- JSON of the parse options that shape the rows
    bytes INTEGER,
    meta TEXT NOT NULL DEFAULT '{}',
    run_id INTEGER NOT NULL REFERENCES runs(id),
    completed_run_id INTEGER REFERENCES runs(id), -- set once every item has been read
    items INTEGER,                                -- items read when completed
    UNIQUE (kind, sha256, options)
);

-- Prompts as found; the normalised text is promptmill.text.normalize(text). `position` is the item's ordinal inside its source
-- (line, row, message index); `locator` names it there (message id, file name).
CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    position INTEGER NOT NULL,
    locator TEXT,
    text TEXT NOT NULL,
    norm_hash INTEGER NOT NULL,  -- signed 64-bit blake2b of promptmill.text.normalize(text)
    author TEXT,                 -- salted hash, never the raw id or name
    created_at TEXT,             -- when the source says it was written
    meta TEXT,                   -- JSON: seed, cfg, attachments, ...
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (source_id, position)
);
-- No index on norm_hash: it would cost more than the rest of an import.
-- Exact dedup groups the hashes in memory instead.

-- Which prompts an item (a generated prompt, say) was made from.
CREATE TABLE prompt_links (
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    related_prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    relation TEXT NOT NULL,      -- 'example', 'expanded_from', ...
    run_id INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (prompt_id, related_prompt_id, relation)
);

-- Images, stored once by content under blobs/ab/cd/<sha256>.<ext>.
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    ext TEXT NOT NULL,           -- extension of the stored blob (real format when known)
    format TEXT,                 -- Pillow's format name, NULL if unreadable
    width INTEGER,
    height INTEGER,
    mode TEXT,
    bytes INTEGER NOT NULL,
    phash TEXT,                  -- 64-bit perceptual hash, 16 hex digits
    run_id INTEGER NOT NULL REFERENCES runs(id)
);

-- Every place an image was found: a file in a folder or ZIP, an attachment, a post.
CREATE TABLE image_origins (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    source_id INTEGER NOT NULL REFERENCES sources(id),
    position INTEGER NOT NULL,
    locator TEXT,                -- relative path, URL, post id
    prompt_id INTEGER REFERENCES prompts(id), -- the prompt found with it, if any
    meta TEXT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (source_id, position)
);
CREATE INDEX image_origins_image ON image_origins(image_id);

CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    image_index INTEGER NOT NULL DEFAULT 0,  -- 0..images_per_prompt-1
    prompt_text TEXT NOT NULL,               -- the exact text sent to the pipeline
    negative_prompt TEXT,
    model TEXT NOT NULL,
    revision TEXT,
    scheduler TEXT,
    seed INTEGER NOT NULL,
    steps INTEGER,
    guidance REAL,
    width INTEGER,
    height INTEGER,
    dtype TEXT,
    device TEXT,
    seconds REAL,
    params TEXT NOT NULL DEFAULT '{}',       -- JSON of everything else needed to regenerate
    params_hash TEXT NOT NULL,               -- hash of model + parameters (not the prompt)
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (prompt_id, params_hash, image_index)
);
CREATE INDEX generations_image ON generations(image_id);

CREATE TABLE api_calls (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL,   -- hash of provider, model, canonical request, item
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    resolved_model TEXT,             -- what the server said it used
    item_type TEXT,
    item_id INTEGER,
    request TEXT NOT NULL,           -- JSON, no secrets
    response TEXT,                   -- JSON as received
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    http_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 1,
    error_class TEXT,
    error_message TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    tokens_cached INTEGER,
    tokens_reasoning INTEGER,
    cost_usd REAL,                   -- NULL when the model's price is unknown
    latency_s REAL,
    request_id TEXT,                 -- the provider's request id
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX api_calls_key ON api_calls(idempotency_key, status);
CREATE INDEX api_calls_run ON api_calls(run_id);

-- Captions of images. `natural_key` makes each writer idempotent:
-- e.g. 'blip:<image>:<params_hash>', 'imported:<source>:<position>', 'edit:<parent>:<ops>'.
CREATE TABLE captions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    kind TEXT NOT NULL,              -- blip, wd14, gemini, vlm, human, edit, imported
    text TEXT NOT NULL,
    model TEXT,
    params TEXT,                     -- JSON
    params_hash TEXT,
    parent_id INTEGER REFERENCES captions(id),
    source_id INTEGER REFERENCES sources(id),
    api_call_id INTEGER REFERENCES api_calls(id),
    author TEXT,                     -- annotator for human captions
    natural_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX captions_image ON captions(image_id, kind);

CREATE TABLE tags (
    caption_id INTEGER NOT NULL REFERENCES captions(id),
    tag TEXT NOT NULL,
    score REAL,
    category TEXT,                   -- general, character, rating, meta, ...
    position INTEGER,
    PRIMARY KEY (caption_id, tag)
);
CREATE INDEX tags_tag ON tags(tag);

-- Numeric scores of an image (optionally against a prompt): clip score, aesthetics, ratings.
CREATE TABLE scores (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    prompt_id INTEGER REFERENCES prompts(id),
    kind TEXT NOT NULL,              -- clip, quality, style_match, ...
    value REAL NOT NULL,
    model TEXT,
    params_hash TEXT,
    natural_key TEXT NOT NULL UNIQUE,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX scores_image ON scores(image_id, kind);

-- Labels of prompts or images: descriptions, _no_object, categories, human answers.
CREATE TABLE labels (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER REFERENCES prompts(id),
    image_id INTEGER REFERENCES images(id),
    kind TEXT NOT NULL,              -- description, no_object, category, mood, ...
    text TEXT NOT NULL,
    model TEXT,
    api_call_id INTEGER REFERENCES api_calls(id),
    author TEXT,
    meta TEXT,
    natural_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX labels_prompt ON labels(prompt_id, kind);
CREATE INDEX labels_image ON labels(image_id, kind);

-- Every clean/dedup/split/review decision. The state of an item is derived
-- from these rows (views below); they are never deleted or rewritten.
-- `scope` names the decision-maker's configuration (preset, method + params,
-- split seed) so re-running it is a no-op.
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    item_type TEXT NOT NULL CHECK (item_type IN ('prompt', 'image', 'caption', 'label')),
    item_id INTEGER NOT NULL,
    stage TEXT NOT NULL CHECK (stage IN ('clean', 'dedup', 'split', 'review', 'score')),
    verdict TEXT NOT NULL CHECK (verdict IN ('keep', 'drop', 'assign')),
    scope TEXT NOT NULL,
    rule TEXT,                       -- rule or method that decided
    reason TEXT,                     -- human-readable why
    score REAL,
    representative_id INTEGER,       -- the kept item this one duplicates
    value TEXT,                      -- split name for 'assign'; cleaned text for clean/keep
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (item_type, item_id, stage, scope)
);
CREATE INDEX decisions_item ON decisions(item_type, item_id, stage);
CREATE INDEX decisions_run ON decisions(run_id);

-- Problems with input items that never became rows (malformed line, unreadable
-- entry), so every input item is accounted for.
CREATE TABLE item_errors (
    id INTEGER PRIMARY KEY,
    source_id INTEGER REFERENCES sources(id),
    position INTEGER,
    locator TEXT,
    reason TEXT NOT NULL,
    detail TEXT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (source_id, position, reason)
);

CREATE TABLE releases (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    format TEXT NOT NULL,            -- imagefolder, parquet, kohya, pairs, prompts
    path TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    counts TEXT NOT NULL DEFAULT '{}',
    manifest TEXT NOT NULL,          -- JSON {relative path: sha256}
    manifest_sha256 TEXT NOT NULL,
    code_version TEXT,
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (name, format, manifest_sha256)
);

CREATE TABLE release_items (
    release_id INTEGER NOT NULL REFERENCES releases(id),
    item_type TEXT NOT NULL,
    item_id INTEGER NOT NULL,
    split TEXT,
    file_name TEXT,
    sha256 TEXT,
    text TEXT,
    PRIMARY KEY (release_id, item_type, item_id, file_name)
);

-- The current-state views prompt_state and image_state are built by 080_state_views.py
-- from promptmill.core.state, the one definition of "kept".
