"""`--source` means the same everywhere: sources named by id, path (or file name) or kind."""

from __future__ import annotations

from collections.abc import Iterable

from promptmill.core.errors import BadInput
from promptmill.core.store import Store


def resolve_sources(store: Store, values: Iterable[str]) -> list[int] | None:
    """Source ids matching each value (an id, a path or its file name, or a kind such as `discord`);
    None when no value was given (every source). A value that matches nothing is a BadInput."""
    values = [str(value) for value in values]
    if not values:
        return None
    found: set[int] = set()
    for value in values:
        rows = store.execute("SELECT id FROM sources WHERE CAST(id AS TEXT) = ? OR uri = ? OR uri LIKE ? "
                             "OR kind = ?", (value, value, f"%/{value}", value)).fetchall()
        if not rows:
            raise BadInput(f"--source {value!r}: no source has that id, path or kind")
        found.update(row[0] for row in rows)
    return sorted(found)


def images_of(source_ids: list[int] | None, column: str = "image_id") -> tuple[str, list[int]]:
    """SQL (and its parameters) keeping COLUMN to images found in SOURCE_IDS; all images when None."""
    if source_ids is None:
        return "1", []
    marks = ", ".join("?" * len(source_ids))
    return f"{column} IN (SELECT image_id FROM image_origins WHERE source_id IN ({marks}))", list(source_ids)
