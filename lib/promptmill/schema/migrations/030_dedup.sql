-- 03_dedup: what each dedup configuration has already compared, and caches of
-- derived values (embeddings, perceptual hashes) so a re-run computes nothing twice.

-- One row per completed pass of a dedup scope: every candidate item with
-- id <= upto_id has been compared. The next pass compares only newer items
-- (against everything kept). Appended, never updated.
CREATE TABLE dedup_passes (
    scope TEXT NOT NULL,
    item_type TEXT NOT NULL CHECK (item_type IN ('prompt', 'image')),
    upto_id INTEGER NOT NULL,
    items INTEGER NOT NULL,          -- candidates compared in this pass
    pairs INTEGER NOT NULL,          -- links found
    clusters INTEGER NOT NULL,       -- clusters with more than one member
    drops INTEGER NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (scope, item_type, upto_id)
);

-- Sentence embeddings by model and text: float32, L2-normalised.
CREATE TABLE embeddings (
    model TEXT NOT NULL,
    text_hash INTEGER NOT NULL,      -- promptmill.text.text_hash of the exact text embedded
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)
) WITHOUT ROWID;

-- Perceptual hashes of stored images (images.phash is filled from here too);
-- an unreadable image gets its error instead, once.
CREATE TABLE image_phashes (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    phash TEXT,                      -- 16 hex digits, imagehash.phash with hash_size 8
    error TEXT,
    run_id INTEGER NOT NULL REFERENCES runs(id)
);
