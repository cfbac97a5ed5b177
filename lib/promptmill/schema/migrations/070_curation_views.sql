-- Views for caption curation and browsing.
--
-- A caption's lineage kind is its own kind, or, for an edit, the kind of the
-- caption its chain of edits started from (kept in the edit's params as
-- root_kind). A head is a caption nothing was derived from yet. The current
-- caption of an image for a lineage kind is its newest head: edits, and undos
-- of edits, always extend a chain at its head, so history stays and the latest
-- change wins.

CREATE INDEX captions_parent ON captions(parent_id);

CREATE VIEW caption_heads AS
SELECT
    c.id AS caption_id,
    c.image_id,
    CASE WHEN c.kind = 'edit' THEN json_extract(c.params, '$.root_kind') ELSE c.kind END AS lineage_kind,
    c.kind,
    c.text,
    c.parent_id,
    c.created_at,
    c.run_id
FROM captions c
WHERE NOT EXISTS (SELECT 1 FROM captions child WHERE child.parent_id = c.id);

CREATE VIEW current_captions AS
SELECT caption_id, image_id, lineage_kind, kind, text, parent_id, created_at, run_id
FROM (
    SELECT h.*, row_number() OVER (PARTITION BY h.image_id, h.lineage_kind ORDER BY h.caption_id DESC) AS newest
    FROM caption_heads h
)
WHERE newest = 1;

-- API spend per run and model, for the ledger's canned query and the run history.
CREATE VIEW api_spend AS
SELECT
    a.run_id,
    r.step,
    r.command,
    a.provider,
    a.model,
    count(*) AS calls,
    sum(a.status = 'failed') AS failed,
    sum(a.attempts) AS attempts,
    sum(COALESCE(a.tokens_in, 0)) AS tokens_in,
    sum(COALESCE(a.tokens_out, 0)) AS tokens_out,
    round(sum(COALESCE(a.cost_usd, 0)), 6) AS cost_usd,
    sum(a.cost_usd IS NULL) AS calls_without_price,
    round(avg(a.latency_s), 3) AS mean_latency_s
FROM api_calls a JOIN runs r ON r.id = a.run_id
GROUP BY a.run_id, a.provider, a.model;
