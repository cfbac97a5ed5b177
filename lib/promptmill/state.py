"""The current state of prompts and images, derived from their decisions.

Same rules as the `prompt_state` / `image_state` views, written as set
operations so they stay fast on millions of rows: the latest review decision
wins; otherwise any clean or dedup (or, for images, score) drop drops. The
text of a prompt is its latest cleaned text, else the text as found.
"""

from __future__ import annotations

from collections.abc import Iterator

from promptmill.store import Store


def _latest(item_type: str, stage: str, extra: str = "") -> str:
    return (
        f"SELECT item_id, verdict, value FROM decisions WHERE id IN ("
        f"SELECT max(id) FROM decisions WHERE item_type = '{item_type}' AND stage = '{stage}' {extra} "
        f"GROUP BY item_id)"
    )


def kept_prompts_sql(where: str = "1") -> str:
    """SELECT id, source_id, text (cleaned) of every kept prompt matching WHERE (over `p`, `s`)."""
    return f"""
        WITH dropped AS (
            SELECT DISTINCT item_id FROM decisions
            WHERE item_type = 'prompt' AND stage IN ('clean', 'dedup') AND verdict = 'drop'),
        review AS ({_latest('prompt', 'review')}),
        cleaned AS ({_latest('prompt', 'clean', "AND verdict = 'keep' AND value IS NOT NULL")})
        SELECT p.id, p.source_id, COALESCE(cleaned.value, p.text) AS text
        FROM prompts p
        JOIN sources s ON s.id = p.source_id
        LEFT JOIN cleaned ON cleaned.item_id = p.id
        LEFT JOIN review ON review.item_id = p.id
        WHERE COALESCE(review.verdict,
                       CASE WHEN p.id IN (SELECT item_id FROM dropped) THEN 'drop' ELSE 'keep' END) = 'keep'
          AND ({where})
        ORDER BY p.id
    """


def kept_prompts(store: Store, where: str = "1", params=()) -> Iterator[tuple[int, int, str]]:
    """(prompt id, source id, cleaned text) of every kept prompt, in id order."""
    yield from store.execute(kept_prompts_sql(where), params)


def kept_images_sql(where: str = "1") -> str:
    """SELECT id, sha256, ext of every kept image matching WHERE (over `i`)."""
    return f"""
        WITH dropped AS (
            SELECT DISTINCT item_id FROM decisions
            WHERE item_type = 'image' AND stage IN ('clean', 'dedup', 'score') AND verdict = 'drop'),
        review AS ({_latest('image', 'review')})
        SELECT i.id, i.sha256, i.ext
        FROM images i
        LEFT JOIN review ON review.item_id = i.id
        WHERE COALESCE(review.verdict,
                       CASE WHEN i.id IN (SELECT item_id FROM dropped) THEN 'drop' ELSE 'keep' END) = 'keep'
          AND ({where})
        ORDER BY i.id
    """


def kept_images(store: Store, where: str = "1", params=()) -> Iterator[tuple[int, str, str]]:
    """(image id, sha256, ext) of every kept image, in id order."""
    yield from store.execute(kept_images_sql(where), params)


def split_of(store: Store, item_type: str) -> dict[int, str]:
    """item id -> split name, from the latest split decision of each item."""
    return {item_id: value for item_id, _, value in store.execute(_latest(item_type, "split"))}
