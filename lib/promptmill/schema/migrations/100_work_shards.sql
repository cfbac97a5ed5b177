-- Work planned for an engine (local, Ray, or --shard on a scheduler): each shard is a parquet file of
-- work items (one step, one parameter set, a key range). A plan is named by the hash of its task and its
-- items, so every node that plans the same missing work gets the same plan.
CREATE TABLE work_shards (
    id INTEGER PRIMARY KEY,
    plan_id TEXT NOT NULL,
    shard_index INTEGER NOT NULL,
    shard_count INTEGER NOT NULL,
    step TEXT NOT NULL,
    command TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    first_key INTEGER,
    last_key INTEGER,
    items INTEGER NOT NULL,
    path TEXT NOT NULL,               -- the work shard, relative to the database folder
    created_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    UNIQUE (plan_id, shard_index)
);

-- A shard's results are in: written in the same transaction as its last result rows.
CREATE TABLE work_shard_done (
    shard_id INTEGER PRIMARY KEY REFERENCES work_shards(id),
    engine TEXT NOT NULL,             -- local, ray, ingest
    finished_at TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
