-- 08_split: what an assignment had seen when it finished, so that a re-run with nothing
-- new (no prompt, image or decision since) can stop at once. Appended, never updated.
CREATE TABLE split_passes (
    scope TEXT NOT NULL,
    prompts_upto INTEGER NOT NULL,   -- max(prompts.id) when the assignment finished (0: none)
    images_upto INTEGER NOT NULL,    -- max(images.id)
    decisions_upto INTEGER NOT NULL, -- max(decisions.id), its own assignments included
    run_id INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (scope, prompts_upto, images_upto, decisions_upto)
);
