"""The current state of prompts and images, derived from their decisions.

The rule is written once, here, as set operations that stay fast on millions of
rows: the latest review decision wins, unless its value is 'clear' (an undone
review: then none does); otherwise any clean or dedup (or, for images, score)
drop drops. The text of a prompt is its latest cleaned text,
else the text as found. The `prompt_state` / `image_state` views are built from
the same SQL by a migration (``080_state_views.py``).
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


DROP_STAGES = {"prompt": "'clean', 'dedup'", "image": "'clean', 'dedup', 'score'"}


def _state_ctes(item_type: str, ignore_dedup_scopes: str | None = None) -> str:
    """`dropped` (ids with a drop that counts) and `review` (each id's latest review verdict)."""
    return (f"dropped AS ({_dropped(item_type, DROP_STAGES[item_type], ignore_dedup_scopes)}), "
            f"review AS ({_latest(item_type, 'review')})")


def _state(alias: str) -> str:
    """The one rule: the latest review verdict wins (a 'clear' one withdraws the review); otherwise any
    counted drop drops; otherwise keep."""
    return (f"COALESCE(CASE WHEN review.value = 'clear' THEN NULL ELSE review.verdict END, CASE WHEN {alias}.id IN (SELECT item_id FROM dropped) "
            f"THEN 'drop' ELSE 'keep' END)")


def kept_prompts_sql(where: str = "1", columns: str = "p.id, p.source_id, COALESCE(cleaned.value, p.text) AS text",
                     ignore_dedup_scopes: str | None = None) -> str:
    """SELECT COLUMNS (over `p`, `s`, `cleaned`) of every kept prompt matching WHERE, in id order."""
    return f"""
        WITH {_state_ctes('prompt', ignore_dedup_scopes)},
        cleaned AS ({_latest('prompt', 'clean', "AND verdict = 'keep' AND value IS NOT NULL")})
        SELECT {columns}
        FROM prompts p
        JOIN sources s ON s.id = p.source_id
        LEFT JOIN cleaned ON cleaned.item_id = p.id
        LEFT JOIN review ON review.item_id = p.id
        WHERE {_state('p')} = 'keep'
          AND ({where})
        ORDER BY p.id
    """


def _first_drop(item_type: str) -> str:
    return (f"SELECT item_id, stage || ':' || COALESCE(rule, '') AS dropped_by FROM decisions WHERE id IN ("
            f"SELECT min(id) FROM decisions WHERE item_type = '{item_type}' AND verdict = 'drop' GROUP BY item_id)")


def prompt_state_view_sql() -> str:
    """The `prompt_state` view: every prompt with its cleaned text, state, first drop and split."""
    return f"""CREATE VIEW prompt_state AS
        WITH {_state_ctes('prompt')},
        cleaned AS ({_latest('prompt', 'clean', "AND verdict = 'keep' AND value IS NOT NULL")}),
        first_drop AS ({_first_drop('prompt')}),
        split AS ({_latest('prompt', 'split')})
        SELECT p.id AS prompt_id, p.source_id, s.kind AS source_kind, p.text,
               COALESCE(cleaned.value, p.text) AS clean_text, {_state('p')} AS state,
               first_drop.dropped_by, split.value AS split
        FROM prompts p
        JOIN sources s ON s.id = p.source_id
        LEFT JOIN cleaned ON cleaned.item_id = p.id
        LEFT JOIN review ON review.item_id = p.id
        LEFT JOIN first_drop ON first_drop.item_id = p.id
        LEFT JOIN split ON split.item_id = p.id"""


def image_state_view_sql() -> str:
    """The `image_state` view: every image with its state, first drop and split."""
    return f"""CREATE VIEW image_state AS
        WITH {_state_ctes('image')},
        first_drop AS ({_first_drop('image')}),
        split AS ({_latest('image', 'split')})
        SELECT i.id AS image_id, i.sha256, i.format, i.width, i.height, {_state('i')} AS state,
               first_drop.dropped_by, split.value AS split
        FROM images i
        LEFT JOIN review ON review.item_id = i.id
        LEFT JOIN first_drop ON first_drop.item_id = i.id
        LEFT JOIN split ON split.item_id = i.id"""


def kept_prompts(store: Store, where: str = "1", params=()) -> Iterator[tuple[int, int, str]]:
    """(prompt id, source id, cleaned text) of every kept prompt, in id order."""
    yield from store.execute(kept_prompts_sql(where), params)


def kept_images_sql(where: str = "1", columns: str = "i.id, i.sha256, i.ext",
                    ignore_dedup_scopes: str | None = None) -> str:
    """SELECT COLUMNS (over `i`) of every kept image matching WHERE, in id order."""
    return f"""
        WITH {_state_ctes('image', ignore_dedup_scopes)}
        SELECT {columns}
        FROM images i
        LEFT JOIN review ON review.item_id = i.id
        WHERE {_state('i')} = 'keep'
          AND ({where})
        ORDER BY i.id
    """


def kept_images(store: Store, where: str = "1", params=()) -> Iterator[tuple[int, str, str]]:
    """(image id, sha256, ext) of every kept image, in id order."""
    yield from store.execute(kept_images_sql(where), params)


def split_of(store: Store, item_type: str) -> dict[int, str]:
    """item id -> split name, from the latest split decision of each item."""
    return {item_id: value for item_id, _, value in store.execute(_latest(item_type, "split"))}
