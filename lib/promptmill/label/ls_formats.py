"""Readers for what Label Studio exports, all turned into the same Answers.

Label Studio writes a project's annotations as JSON (tasks with their
annotations, each result with its ``from_name``, ``type``, ``value`` and
``origin``), and through its converter as JSON_MIN (one flat record per
annotation: task data, one key per control, ``annotator``, ``annotation_id``,
``created_at``, ``updated_at``, ``lead_time``), CSV and TSV (the same record as
a row; one choice as a string, several as ``{"choices": [...]}``, a rating as
``[{"rating": n}]``). The SSLQ project's flat CSV has one row per image with
multi-valued columns joined by ``;``. Which one a file is comes from its
content, not its name.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from promptmill.core.errors import BadInput

FORMATS = "Label Studio JSON, JSON_MIN, CSV or TSV exports, or the SSLQ flat CSV"
# SSLQ flat export column -> (control name, control type)
SSLQ_FIELDS = {
    "category": ("category", "choices"), "mood": ("mood", "choices"), "composition": ("composition", "choices"),
    "attributes": ("attributes", "choices"), "palette": ("palette", "choices"), "issue": ("issue", "choices"),
    "triage": ("triage", "choices"), "human_description": ("human_desc", "textarea"),
    "llm_description": ("reverse_prompt", "textarea"), "notes": ("notes", "textarea"),
    "quality": ("quality", "rating"), "style_match": ("style_match", "rating"),
}
ANNOTATION_COLUMNS = {"annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "history"}
VALUE_KEYS = {"textarea": "text", "choices": "choices", "labels": "labels", "taxonomy": "taxonomy",
              "rating": "rating", "number": "number"}


class BadValue(ValueError):
    """A result whose value does not fit its control (a rating "five", a choice that is a number)."""


@dataclass
class Result:
    name: str                   # the control's name
    type: str                   # textarea, choices, labels, taxonomy, rating, number
    values: list                # strings, or one float for ratings and numbers
    origin: str | None = None   # Label Studio's origin (manual, prediction, prediction-changed);
                                # None where the format drops it (JSON_MIN, CSV, TSV)


@dataclass
class Answer:
    """One person's answers to one task, whatever file or API they came from."""

    position: int
    data: dict
    key: str | None = None      # 'ls:<annotation id>:<updated_at>'; None for SSLQ rows (keyed by content)
    meta: dict = field(default_factory=dict)  # annotator, task_id, ls_annotation_id, created_at, ...
    results: list[Result] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def utc(timestamp) -> str | None:
    """An ISO 8601 time as UTC with microseconds, so times from every format compare as strings."""
    if not isinstance(timestamp, str) or not timestamp.strip():
        return None
    try:
        parsed = datetime.fromisoformat(timestamp.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def number(raw) -> float | None:
    """A finite number from a number or numeric string; None for anything else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def values_of(kind: str, raw) -> list:
    """The answer in RAW (a result value, or a JSON_MIN/CSV cell already decoded) as a list for KIND.

    Raises BadValue when it doesn't fit: a rating that is not one number, a choice that is not text."""
    key = VALUE_KEYS.get(kind)
    if isinstance(raw, dict):
        if key not in raw:
            raise BadValue(f"no {key!r} in {json.dumps(raw)[:80]}")
        return values_of(kind, raw[key])
    if kind in ("rating", "number"):
        items = raw if isinstance(raw, list) else [raw]
        if len(items) != 1:
            raise BadValue(f"{kind} is not one number: {json.dumps(raw)[:80]}")
        item = items[0]
        value = values_of(kind, item)[0] if isinstance(item, dict) else number(item)
        if value is None:
            raise BadValue(f"{kind} is not a number: {json.dumps(raw)[:80]}")
        return [value]
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise BadValue(f"{kind} is not text: {json.dumps(raw)[:80]}")
    values = []
    for item in raw:
        if kind == "taxonomy" and isinstance(item, list) and all(isinstance(part, str) for part in item):
            values.append("/".join(item))
        elif isinstance(item, dict | list):
            values.extend(values_of(kind, item))
        elif isinstance(item, str):
            values.append(item)
        else:
            raise BadValue(f"{kind} is not text: {json.dumps(raw)[:80]}")
    return values


def annotator_of(completed_by) -> str | None:
    """The annotator as Label Studio names them: a user id (its API and JSON export since 1.x), or the
    email where the export carries the user (older exports, the converter's CSV)."""
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("email") or completed_by.get("id")
    if completed_by is None or completed_by == "" or isinstance(completed_by, dict | list):
        return None
    return str(completed_by)


def answer_meta(annotation_id, task_id, annotator, created_at, updated_at, lead_time, prediction_id=None) -> dict:
    return {"ls_annotation_id": _integer(annotation_id), "task_id": _integer(task_id),
            "annotator": annotator_of(annotator), "created_at": utc(created_at), "updated_at": utc(updated_at),
            "lead_time": number(lead_time), "prediction_id": _integer(prediction_id)}


def answer_key(meta: dict) -> str | None:
    if meta["ls_annotation_id"] is None:
        return None
    return f"ls:{meta['ls_annotation_id']}:{meta['updated_at'] or meta['created_at'] or ''}"


def _integer(raw) -> int | None:
    value = number(raw)
    return int(value) if value is not None and value.is_integer() else None


# --- JSON: the full export, and tasks as the API lists them ---

def answers_from_task(task: dict, position: int, cancelled: list) -> list[Answer]:
    """The answers in one task as Label Studio's JSON export and its tasks API give it."""
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise BadValue("annotations is not a list of objects")
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    answers = []
    for annotation in annotations:
        if annotation.get("was_cancelled"):
            cancelled.append(annotation.get("id"))
            continue
        meta = answer_meta(annotation.get("id"), task.get("id"), annotation.get("completed_by"),
                           annotation.get("created_at"), annotation.get("updated_at"), annotation.get("lead_time"),
                           annotation.get("parent_prediction"))
        answer = Answer(position, data, answer_key(meta), meta)
        for item in annotation.get("result") or []:
            if not isinstance(item, dict) or not isinstance(item.get("value"), dict) or not item.get("from_name"):
                answer.errors.append(f"malformed result {json.dumps(item)[:80]}")
                continue
            kind = str(item.get("type") or "").lower()
            if kind not in VALUE_KEYS:
                continue
            try:
                values = values_of(kind, item["value"])
            except BadValue as exc:
                answer.errors.append(f"{item['from_name']}: {exc}")
                continue
            if values:
                answer.results.append(Result(str(item["from_name"]), kind, values, str(item.get("origin") or "manual")))
        answers.append(answer)
    return answers


class TooDeep:
    """In place of a task nested deeper than the JSON parser can follow."""


def _value_end(text: str, index: int) -> int:
    """Where the JSON value starting at INDEX ends, by counting brackets outside strings (no recursion)."""
    depth, in_string, i = 0, False, index
    while i < len(text):
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise json.JSONDecodeError("unterminated value", text, index)


def _array_items(text: str) -> list:
    """The elements of a top-level JSON array one by one, so a task nested too deep to parse is that
    task's error (a TooDeep in its place), not the whole file's."""
    decoder, items = json.JSONDecoder(), []
    index = len(text) - len(text.lstrip("\ufeff \t\r\n"))
    if text[index:index + 1] != "[":
        raise json.JSONDecodeError("nested too deep", text, index)
    index += 1
    while True:
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if text[index:index + 1] == "]":
            return items
        try:
            item, index = decoder.raw_decode(text, index)
        except RecursionError:
            item, index = TooDeep(), _value_end(text, index)
        items.append(item)


def read_json(path: Path, controls: dict) -> tuple[str, list, list[Answer], list]:
    """(format, per-item errors, answers, cancelled annotation ids) from a JSON or JSON_MIN export."""
    try:
        text = path.read_text(encoding="utf-8")
        try:
            document = json.loads(text)
        except RecursionError:
            document = _array_items(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"{path}: not one of {FORMATS} ({str(exc)[:120] or type(exc).__name__})") from exc
    items = [document] if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise BadInput(f"{path}: not one of {FORMATS} (a JSON {type(document).__name__})")
    is_min = any(isinstance(item, dict) and "data" not in item and "annotations" not in item for item in items)
    errors, answers, cancelled = [], [], []
    for position, item in enumerate(items):
        if isinstance(item, TooDeep):
            errors.append((position, "malformed task", "nested too deep to read"))
            continue
        if not isinstance(item, dict):
            errors.append((position, "malformed task", f"a {type(item).__name__}, not an object"))
            continue
        try:
            if is_min:
                answers.extend(_answers_from_record(item, position, controls, decode=False))
            else:
                answers.extend(answers_from_task(item, position, cancelled))
        except BadValue as exc:
            errors.append((position, "malformed task", str(exc)))
    return ("json_min" if is_min else "json"), errors, answers, cancelled


# --- JSON_MIN, CSV and TSV: one flat record per annotation ---

def _decoded(cell: str):
    """A CSV cell as the converter wrote it: JSON for lists and objects, the bare text otherwise."""
    text = cell.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return cell
    return cell


def _cell_values(kind: str, raw, decode: bool) -> list:
    """A record's value for a control; CSV cells hold JSON for lists and objects, text as it is
    (so a text that merely looks like JSON stays text)."""
    if not (decode and isinstance(raw, str)):
        return values_of(kind, raw)
    decoded = _decoded(raw)
    if decoded is raw:
        return values_of(kind, raw)
    try:
        return values_of(kind, decoded)
    except BadValue:
        if kind in ("textarea", "choices", "labels"):
            return [raw]
        raise


def _answers_from_record(record: dict, position: int, controls: dict, decode: bool) -> list[Answer]:
    annotation_id = record.get("annotation_id")
    if annotation_id in (None, ""):
        return []  # a task nobody answered
    meta = answer_meta(annotation_id, record.get("id"), record.get("annotator"), record.get("created_at"),
                       record.get("updated_at"), record.get("lead_time"))
    data = {k: v for k, v in record.items() if k not in controls and k not in ANNOTATION_COLUMNS and k != "id"}
    answer = Answer(position, data, answer_key(meta), meta)
    for name, control in controls.items():
        raw = record.get(name)
        if raw is None or raw == "":
            continue
        try:
            values = _cell_values(control.type, raw, decode)
        except BadValue as exc:
            answer.errors.append(f"{name}: {exc}")
            continue
        if values:
            answer.results.append(Result(name, control.type, values))
    return [answer]


def read_table(path: Path, controls: dict) -> tuple[str, list, list[Answer], list]:
    """(format, per-item errors, answers, []) from Label Studio's CSV or TSV, or the SSLQ flat CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not one of {FORMATS} (not UTF-8 text)") from exc
    header = text.split("\n", 1)[0]
    delimiter = "\t" if header.count("\t") > header.count(",") else ","
    csv.field_size_limit(64 * 1024 * 1024)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        columns = set(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as exc:
        raise BadInput(f"{path}: not one of {FORMATS} ({exc})") from exc
    errors, answers = [], []
    if "annotation_id" in columns:
        for position, row in enumerate(rows):
            answers.extend(_answers_from_record(row, position, controls, decode=True))
        return ("tsv" if delimiter == "\t" else "csv"), errors, answers, []
    if "file_name" in columns and columns & set(SSLQ_FIELDS):
        for position, row in enumerate(rows):
            answer = _sslq_answer(row, position)
            answers.append(answer)
        return "sslq_csv", errors, answers, []
    raise BadInput(f"{path}: not one of {FORMATS} (no annotation_id column, nor file_name with SSLQ columns)")


def _sslq_answer(row: dict, position: int) -> Answer:
    answer = Answer(position, {"file_name": row["file_name"]}, meta={"row_id": row.get("id")})
    for column, (name, kind) in SSLQ_FIELDS.items():
        raw = (row.get(column) or "").strip()
        if not raw:
            continue
        if kind == "rating":
            value = number(raw)
            if value is None:
                answer.errors.append(f"{column}: not a number: {raw[:40]!r}")
                continue
            values = [value]
        else:
            values = [raw] if kind == "textarea" else [v.strip() for v in raw.split(";") if v.strip()]
        answer.results.append(Result(name, kind, values))
    return answer


def read_export(path: Path, controls: dict) -> tuple[str, list, list[Answer], list]:
    """Whichever export PATH is: (format, item errors, answers, cancelled annotation ids)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start in (b"[", b"{"):
        return read_json(path, controls)
    if b"\0" in head or head.startswith(b"PK"):
        raise BadInput(f"{path}: not one of {FORMATS} (a binary file; unzip a ZIP export first)")
    return read_table(path, controls)
