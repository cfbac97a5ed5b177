"""The current state of prompts and images, derived from their decisions.

Same rules as the `prompt_state` / `image_state` views, written as set
operations so they stay fast on millions of rows: the latest review decision
wins; otherwise any clean or dedup (or, for images, score) drop drops. The
text of a prompt is its latest cleaned text, else the text as found.
"""

from __future__ import annotations

from collections.abc import Iterator

from promptmill.core.store import Store


def _latest(item_type: str, stage: str, extra: str = "") -> str:
    return (
        f"SELECT item_id, verdict, value FROM decisions WHERE id IN ("
        f"SELECT max(id) FROM decisions WHERE item_type = '{item_type}' AND stage = '{stage}' {extra} "
        f"GROUP BY item_id)"
    )


def _dropped(item_type: str, stages: str, ignore_dedup_scopes: str | None) -> str:
    """Ids with a drop decision; drops by the dedup scopes in the JSON list parameter
    `ignore_dedup_scopes` (e.g. ':ignored') don't count, so a dedup pass can resume over its own drops."""
    ignore = (f" AND NOT (stage = 'dedup' AND scope IN (SELECT value FROM json_each({ignore_dedup_scopes})))"
              if ignore_dedup_scopes else "")
    return (f"SELECT DISTINCT item_id FROM decisions WHERE item_type = '{item_type}' "
            f"AND stage IN ({stages}) AND verdict = 'drop'{ignore}")


def kept_prompts_sql(where: str = "1", columns: str = "p.id, p.source_id, COALESCE(cleaned.value, p.text) AS text",
                     ignore_dedup_scopes: str | None = None) -> str:
    """SELECT COLUMNS (over `p`, `s`, `cleaned`) of every kept prompt matching WHERE, in id order."""
    return f"""
        WITH dropped AS ({_dropped('prompt', "'clean', 'dedup'", ignore_dedup_scopes)}),
        review AS ({_latest('prompt', 'review')}),
        cleaned AS ({_latest('prompt', 'clean', "AND verdict = 'keep' AND value IS NOT NULL")})
        SELECT {columns}
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


def kept_images_sql(where: str = "1", columns: str = "i.id, i.sha256, i.ext",
                    ignore_dedup_scopes: str | None = None) -> str:
    """SELECT COLUMNS (over `i`) of every kept image matching WHERE, in id order."""
    return f"""
        WITH dropped AS ({_dropped('image', "'clean', 'dedup', 'score'", ignore_dedup_scopes)}),
        review AS ({_latest('image', 'review')})
        SELECT {columns}
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
