"""One writer per table: the natural keys and conflict rules of every appended row, in one place.

Each ``save_*`` takes an open connection inside a transaction (``store.transaction()``)
and the run that makes the rows. Rows are appended with ``ON CONFLICT DO NOTHING`` on
their natural key, so a resumed or repeated run adds nothing it already added; the
return value says what was new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from promptmill.core.runs import Run

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
DECISION_COLUMNS = ("item_type", "item_id", "stage", "verdict", "scope", "rule", "reason", "score",
                    "representative_id", "value", "annotation_id")


def params_hash(settings: Mapping) -> str:
    """The identity of a configuration: 16 hex digits of the sha256 of its canonical JSON."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def save_decisions(conn, run: Run, decisions: Iterable[Mapping]) -> int:
    """Decisions keyed by (item_type, item_id, stage, scope); return how many were new.

    Each decision is a mapping with at least item_type, item_id, stage, verdict and scope."""
    rows = [tuple(decision.get(column) for column in DECISION_COLUMNS) + (run.id,) for decision in decisions]
    before = conn.total_changes
    conn.executemany(
        f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}, run_id) "
        f"VALUES ({', '.join('?' * (len(DECISION_COLUMNS) + 1))}) "
        "ON CONFLICT (item_type, item_id, stage, scope) DO NOTHING", rows)
    return conn.total_changes - before


def caption_key(kind: str, image_id: int, identity: str) -> str:
    """The natural key of a caption: its kind, its image and what makes it (params hash, source row, parent)."""
    return f"{kind}:{image_id}:{identity}"


def save_caption(conn, run: Run, image_id: int, kind: str, text: str, *, natural_key: str,
                 model: str | None = None, params: Mapping | str | None = None, params_hash: str | None = None,
                 parent_id: int | None = None, source_id: int | None = None, api_call_id: int | None = None,
                 author: str | None = None, annotation_id: int | None = None) -> int | None:
    """A caption under its natural key; its id, or None when that key was already stored."""
    if isinstance(params, Mapping):
        params = json.dumps(params, sort_keys=True)
    before = conn.total_changes
    cursor = conn.execute(
        "INSERT INTO captions (image_id, kind, text, model, params, params_hash, parent_id, source_id, api_call_id, "
        f"author, annotation_id, natural_key, created_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW}, ?) "
        "ON CONFLICT (natural_key) DO NOTHING",
        (image_id, kind, text, model, params, params_hash, parent_id, source_id, api_call_id, author, annotation_id,
         natural_key, run.id))
    return cursor.lastrowid if conn.total_changes > before else None


def save_tags(conn, caption_id: int, tags: Iterable[tuple[str, float | None, str | None, int | None]]) -> int:
    """Tags of a caption as (tag, score, category, position); return how many were new."""
    before = conn.total_changes
    conn.executemany("INSERT INTO tags (caption_id, tag, score, category, position) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT DO NOTHING", [(caption_id, *tag) for tag in tags])
    return conn.total_changes - before


def save_score(conn, run: Run, image_id: int, kind: str, value: float, *, natural_key: str,
               prompt_id: int | None = None, model: str | None = None, params_hash: str | None = None,
               annotation_id: int | None = None) -> bool:
    """A score of an image (optionally against a prompt); True when it was new."""
    before = conn.total_changes
    conn.execute("INSERT INTO scores (image_id, prompt_id, kind, value, model, params_hash, annotation_id, "
                 "natural_key, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (natural_key) DO NOTHING",
                 (image_id, prompt_id, kind, value, model, params_hash, annotation_id, natural_key, run.id))
    return conn.total_changes > before


def save_label(conn, run: Run, kind: str, text: str, *, natural_key: str, prompt_id: int | None = None,
               image_id: int | None = None, model: str | None = None, api_call_id: int | None = None,
               author: str | None = None, meta: Mapping | str | None = None,
               annotation_id: int | None = None) -> int | None:
    """A label of a prompt or an image; its id, or None when that key was already stored."""
    if isinstance(meta, Mapping):
        meta = json.dumps(meta, sort_keys=True, ensure_ascii=False)
    before = conn.total_changes
    cursor = conn.execute(
        "INSERT INTO labels (prompt_id, image_id, kind, text, model, api_call_id, author, meta, annotation_id, "
        f"natural_key, created_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW}, ?) "
        "ON CONFLICT (natural_key) DO NOTHING",
        (prompt_id, image_id, kind, text, model, api_call_id, author, meta, annotation_id, natural_key, run.id))
    return cursor.lastrowid if conn.total_changes > before else None


def save_item_errors(conn, run: Run, errors: Iterable[tuple]) -> int:
    """Problems with items of a source, as (source_id, position, locator, reason, detail), once per
    (source, position, reason) - the batched writer of the collectors; return how many were new."""
    before = conn.total_changes
    conn.executemany("INSERT INTO item_errors (source_id, position, locator, reason, detail, run_id) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source_id, position, reason) DO NOTHING",
                     [(*error, run.id) for error in errors])
    return conn.total_changes - before


def save_item_error(conn, run: Run, reason: str, *, source_id: int | None = None, position: int | None = None,
                    locator: str | None = None, detail: str | None = None) -> bool:
    """A problem with one input item, recorded once per (source, locator, reason); True when new."""
    exists = conn.execute("SELECT 1 FROM item_errors WHERE source_id IS ? AND locator IS ? AND reason = ?",
                          (source_id, locator, reason)).fetchone()
    if exists:
        return False
    conn.execute("INSERT INTO item_errors (source_id, position, locator, reason, detail, run_id) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (source_id, position, locator, reason, (detail or "")[:500] or None,
                                               run.id))
    return True


ANNOTATION_COLUMNS = ("task_id", "ls_annotation_id", "annotator", "created_at", "updated_at", "lead_time",
                      "prediction_id")


def save_annotation(conn, run: Run, image_id: int, natural_key: str, *, source_id: int | None = None,
                    ls_project_id: int | None = None, **facts) -> int:
    """One version of a person's Label Studio answer (who, when, how long); its id, new or not.

    FACTS are the ANNOTATION_COLUMNS; the captions, labels, scores and decisions made from it point here."""
    values = [facts.get(column) for column in ANNOTATION_COLUMNS]
    conn.execute(
        f"INSERT INTO annotations (image_id, source_id, ls_project_id, {', '.join(ANNOTATION_COLUMNS)}, natural_key, "
        f"run_id) VALUES ({', '.join('?' * (len(ANNOTATION_COLUMNS) + 5))}) ON CONFLICT (natural_key) DO NOTHING",
        (image_id, source_id, ls_project_id, *values, natural_key, run.id))
    return conn.execute("SELECT id FROM annotations WHERE natural_key = ?", (natural_key,)).fetchone()[0]
