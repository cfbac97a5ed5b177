-- Paid requests in flight: a key is claimed (in a BEGIN IMMEDIATE transaction, after
-- checking the ledger) before its request is sent, and the claim goes when the answer
-- is stored. Another process that finds a live claim leaves the key alone; a claim
-- whose run ended or whose process is gone is taken over. These rows are locks, not
-- facts: what was paid is in api_calls.
CREATE TABLE api_claims (
    idempotency_key TEXT PRIMARY KEY,
    scope TEXT,                      -- what the claim counts towards (an augment source), if anything
    run_id INTEGER NOT NULL REFERENCES runs(id),
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    claimed_at TEXT NOT NULL
);
CREATE INDEX api_claims_scope ON api_claims(scope);
