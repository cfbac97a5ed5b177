"""The Label Studio round trip: images out as tasks with predictions, people's answers back in.

Export writes one task per kept image; its data carries the promptmill image
id, so answers find their image again even after files were renamed. Import
reads Label Studio's JSON export (or the flat CSV layout of the SSLQ project)
and appends what people said: text areas become human captions (kind
``human``; a ``notes`` box becomes a label), choices and labels become labels
named after their control, ratings become scores, and triage becomes a
``review`` decision (keep -> keep, skip -> drop; maybe is a label only).
Every row carries the annotator, the annotation's timestamps and lead time, and
a natural key, so importing an export again adds nothing; an annotation edited
in Label Studio after an import comes back as new rows (its ``updated_at``
is in the key), and the newest answer wins.
"""

from __future__ import annotations

import csv
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from promptmill.collect.base import Collector, SourceInfo, file_sha256
from promptmill.core import resources
from promptmill.core.progress import bar
from promptmill.core.runs import Run, now
from promptmill.core.state import kept_images_sql
from promptmill.core.store import Store
from promptmill.core.text import sha256_hex

DEFAULT_CONFIG = resources.SCHEMA_DIR / "labelstudio" / "image_review.xml"
LOCAL_FILES_PREFIX = "/data/local-files/?d="
CONTROL_TAGS = {"Choices": "choices", "Labels": "labels", "TextArea": "textarea", "Rating": "rating",
                "Taxonomy": "taxonomy", "Number": "number"}
LABEL_TEXTAREAS = {"notes"}
TRIAGE_FIELD = "triage"
TRIAGE_VERDICT = {"keep": "keep", "skip": "drop", "drop": "drop"}
# Where each prediction comes from: caption lineage kinds in order of preference.
REVERSE_PROMPT_KINDS = ("gemini", "vlm", "blip", "imported")
TAG_KINDS = ("wd14",)
CSV_FIELDS = {  # SSLQ flat export column -> (control name, control type)
    "category": ("category", "choices"), "mood": ("mood", "choices"), "composition": ("composition", "choices"),
    "attributes": ("attributes", "choices"), "palette": ("palette", "choices"), "issue": ("issue", "choices"),
    "triage": ("triage", "choices"), "human_description": ("human_desc", "textarea"),
    "llm_description": ("reverse_prompt", "textarea"), "notes": ("notes", "textarea"),
    "quality": ("quality", "rating"), "style_match": ("style_match", "rating"),
}
BATCH = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


@dataclass(frozen=True)
class Control:
    name: str
    type: str
    to_name: str
    values: tuple[str, ...] = ()


def read_config(path: str | Path = DEFAULT_CONFIG) -> dict[str, Control]:
    """The labelling controls of a Label Studio config: name -> type, target and allowed values."""
    controls = {}
    for element in ET.parse(path).getroot().iter():
        kind = CONTROL_TAGS.get(element.tag)
        if kind and element.get("name"):
            values = tuple(child.get("value") for child in element if child.get("value") is not None)
            controls[element.get("name")] = Control(element.get("name"), kind, element.get("toName", ""), values)
    return controls


# --- export ---

def image_url(relative_path: str, url_prefix: str | None = None) -> str:
    """What Label Studio opens: its local-files endpoint, or PREFIX + path when the files are served elsewhere."""
    if url_prefix:
        return url_prefix.rstrip("/") + "/" + urllib.parse.quote(relative_path)
    return LOCAL_FILES_PREFIX + urllib.parse.quote(relative_path, safe="")


def _textarea(control: Control, text: str) -> dict:
    return {"from_name": control.name, "to_name": control.to_name, "type": "textarea", "value": {"text": [text]}}


def _choices(control: Control, values: list[str]) -> dict | None:
    allowed = [value for value in values if value in control.values]
    if not allowed:
        return None
    key = "labels" if control.type == "labels" else "choices"
    return {"from_name": control.name, "to_name": control.to_name, "type": control.type, "value": {key: allowed}}


def build_tasks(store: Store, controls: dict[str, Control], document_root: Path, url_prefix: str | None = None,
                source_id: int | None = None) -> list[dict]:
    """One task per kept image, with predictions from its current captions, labels and prompt description."""
    where = "i.id IN (SELECT image_id FROM image_origins WHERE source_id = ?)" if source_id is not None else "1"
    images = store.query(kept_images_sql(where), (source_id,) if source_id is not None else ())
    captions: dict[int, dict[str, str]] = {}
    for row in store.query("SELECT image_id, lineage_kind, text FROM current_captions"):
        captions.setdefault(row["image_id"], {})[row["lineage_kind"]] = row["text"]
    labels: dict[int, dict[str, list[str]]] = {}
    for row in store.query("SELECT image_id, kind, text FROM labels WHERE image_id IS NOT NULL ORDER BY id"):
        labels.setdefault(row["image_id"], {}).setdefault(row["kind"], []).append(row["text"])
    tasks = []
    progress = bar(len(images), "tasks", "image")
    for image in images:
        origin = store.query(
            """SELECT o.locator, COALESCE(o.prompt_id, g.prompt_id) AS prompt_id
               FROM images i LEFT JOIN image_origins o ON o.image_id = i.id
               LEFT JOIN generations g ON g.image_id = i.id WHERE i.id = ? ORDER BY o.id, g.id LIMIT 1""",
            (image["id"],))[0]
        prompt = description = None
        if origin["prompt_id"]:
            prompt = store.scalar("SELECT text FROM prompts WHERE id = ?", (origin["prompt_id"],))
            description = store.scalar(
                "SELECT text FROM labels WHERE prompt_id = ? AND kind = 'description' ORDER BY id DESC LIMIT 1",
                (origin["prompt_id"],))
        blob = store.blobs.path_for(image["sha256"], image["ext"])
        relative = blob.resolve().relative_to(document_root.resolve()).as_posix()
        result = _predictions(controls, captions.get(image["id"], {}), labels.get(image["id"], {}), description)
        task = {"data": {"image": image_url(relative, url_prefix),
                         "file_name": origin["locator"] or f"{image['sha256']}.{image['ext']}",
                         "promptmill_image_id": image["id"], "sha256": image["sha256"], "prompt": prompt or ""}}
        if result:
            task["predictions"] = [{"model_version": "promptmill", "result": result}]
        tasks.append(task)
        progress.update()
    progress.close()
    return tasks


def _predictions(controls: dict[str, Control], captions: dict[str, str], labels: dict[str, list[str]],
                 description: str | None) -> list[dict]:
    result = []
    reverse = next((captions[kind] for kind in REVERSE_PROMPT_KINDS if kind in captions), None)
    tags = next((captions[kind] for kind in TAG_KINDS if kind in captions), None)
    for name, text in (("reverse_prompt", reverse), ("machine_tags", tags), ("human_desc", description)):
        if text and name in controls and controls[name].type == "textarea":
            result.append(_textarea(controls[name], text))
    for name, values in labels.items():
        control = controls.get(name)
        if control and control.type in ("choices", "labels") and name != TRIAGE_FIELD:
            prediction = _choices(control, values)
            if prediction:
                result.append(prediction)
    return result


# --- import ---

@dataclass
class Answer:
    """One person's answers to one task, whatever file they came in."""

    position: int
    key: str                          # natural-key prefix that names this answer
    fields: list[tuple[str, str, list]] = field(default_factory=list)  # (control, type, values)
    meta: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)


class ImageMatcher:
    """Finds the promptmill image of a task: by image id, by a sha256 in its file name, or by locator."""

    def __init__(self, store: Store):
        self.store = store
        self.by_locator: dict[str, int] = {}
        by_name: dict[str, set[int]] = {}
        for locator, image_id in store.execute("SELECT locator, image_id FROM image_origins WHERE locator IS NOT NULL"):
            self.by_locator.setdefault(locator, image_id)
            by_name.setdefault(PurePosixPath(locator).name, set()).add(image_id)
        self.by_name = {name: ids.pop() for name, ids in by_name.items() if len(ids) == 1}

    def match(self, data: dict) -> int | None:
        image_id, sha = data.get("promptmill_image_id"), data.get("sha256")
        if image_id is not None:
            found = self.store.scalar("SELECT sha256 FROM images WHERE id = ?", (int(image_id),))
            if found and (not sha or sha == found):
                return int(image_id)
        names = [str(data[key]) for key in ("file_name", "image") if data.get(key)]
        for name in names:
            for digest in _SHA256.findall(name):
                found = self.store.scalar("SELECT id FROM images WHERE sha256 = ?", (digest,))
                if found:
                    return found
        for name in names:
            path = urllib.parse.unquote(name.split("?d=", 1)[-1])
            if path in self.by_locator:
                return self.by_locator[path]
            base = PurePosixPath(path).name
            for candidate in (base, _UPLOAD_PREFIX.sub("", base)):
                if candidate in self.by_name:
                    return self.by_name[candidate]
        return None


def read_ls_json(path: Path, run: Run, collector: Collector) -> list[Answer]:
    """Answers from a Label Studio JSON export; cancelled annotations are skipped and counted,
    tasks and annotations that are not objects are recorded as item errors."""
    tasks = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        from promptmill.core.errors import BadInput

        raise BadInput(f"{path}: not a Label Studio export (a {type(tasks).__name__}, not a list of tasks)")
    answers = []
    for position, task in enumerate(tasks):
        if not isinstance(task, dict):
            collector.add_error(position, "malformed task", f"a {type(task).__name__}, not an object")
            continue
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            collector.add_error(position, "malformed task", "annotations is not a list of objects")
            continue
        for annotation in annotations:
            if annotation.get("was_cancelled"):
                run.add("cancelled annotations ignored")
                continue
            annotator = annotation.get("completed_by")
            if isinstance(annotator, dict):
                annotator = annotator.get("email") or annotator.get("id")
            meta = {"annotator": None if annotator is None else str(annotator),
                    "annotation_id": annotation.get("id"), "task_id": task.get("id"),
                    "created_at": annotation.get("created_at"), "updated_at": annotation.get("updated_at"),
                    "lead_time": annotation.get("lead_time")}
            answer = Answer(position, f"ls:{annotation.get('id')}:{annotation.get('updated_at') or ''}",
                            meta=meta, data=task.get("data") or {})
            for item in annotation.get("result") or []:
                if not isinstance(item, dict) or not isinstance(item.get("value") or {}, dict):
                    run.add("malformed results skipped")
                    continue
                kind, value = item.get("type"), item.get("value") or {}
                values = value.get(kind) if kind in ("choices", "labels", "taxonomy") else (
                    value.get("text") if kind == "textarea" else [value.get(kind)])
                if item.get("from_name") and values and values != [None]:
                    answer.fields.append((item["from_name"], kind, list(values)))
            answers.append(answer)
    return answers


def read_flat_csv(path: Path) -> list[Answer]:
    """Answers from the flat CSV layout (one row per image, multi-valued columns joined by ';')."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "file_name" not in (reader.fieldnames or []):
            from promptmill.core.errors import BadInput

            raise BadInput(f"{path}: no file_name column")
        rows = list(reader)
    answers = []
    for position, row in enumerate(rows):
        answer = Answer(position, "csv", meta={"row_id": row.get("id")}, data={"file_name": row["file_name"]})
        for column, (name, kind) in CSV_FIELDS.items():
            raw = (row.get(column) or "").strip()
            if not raw:
                continue
            values = [raw] if kind == "textarea" else [v.strip() for v in raw.split(";") if v.strip()]
            if kind == "rating":
                try:
                    values = [float(values[0])]
                except ValueError:
                    continue
            answer.fields.append((name, kind, values))
        answers.append(answer)
    return answers


def import_answers(store: Store, run: Run, path: Path) -> None:
    """Append the answers in a Label Studio JSON export or flat CSV to the store."""
    is_csv = path.suffix.lower() == ".csv"
    sha = file_sha256(path)
    collector = Collector(store, run, SourceInfo(kind="labelstudio", uri=str(path), sha256=sha,
                                                 bytes=path.stat().st_size, options={"format": "csv" if is_csv else "json"}))
    if collector.completed:
        run.add("sources already imported")
        return
    try:
        answers = read_flat_csv(path) if is_csv else read_ls_json(path, run, collector)
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        from promptmill.core.errors import BadInput

        raise BadInput(f"{path}: not a Label Studio export ({exc})") from exc
    matcher = ImageMatcher(store)
    scope_suffix = sha[:16]
    with bar(len(answers), "answers", "answer") as progress:
        for start in range(0, len(answers), BATCH):
            batch = answers[start:start + BATCH]
            with store.transaction() as conn:
                for answer in batch:
                    image_id = matcher.match(answer.data)
                    if image_id is None:
                        collector.add_error(answer.position, "no matching image",
                                            json.dumps(answer.data, sort_keys=True)[:300])
                        continue
                    _record(conn, run, collector.source_id, image_id, answer, scope_suffix)
                    run.add("answers imported")
            progress.update(len(batch))
    collector.finish(len(answers))


def _record(conn, run: Run, source_id: int, image_id: int, answer: Answer, scope_suffix: str):
    meta = {k: v for k, v in answer.meta.items() if v is not None}
    meta_json = json.dumps(meta, sort_keys=True)
    created = answer.meta.get("updated_at") or answer.meta.get("created_at") or now()
    author = answer.meta.get("annotator")

    def key(name: str, value) -> str:
        # LS answers are named by annotation; CSV rows by content, so the same answer never lands twice.
        if answer.key == "csv":
            return f"csv:{image_id}:{name}:{sha256_hex(str(value))[:16]}"
        return f"{answer.key}:{image_id}:{name}" + ("" if value is None else f":{value}")

    def counted(sql: str, params: tuple, what: str):
        before = conn.total_changes
        conn.execute(sql, params)
        if conn.total_changes > before:
            run.add(what)

    for name, kind, values in answer.fields:
        if kind == "textarea":
            text = "\n".join(str(v) for v in values).strip()
            if not text:
                continue
            if name in LABEL_TEXTAREAS:
                counted("INSERT INTO labels (image_id, kind, text, author, meta, natural_key, created_at, run_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (natural_key) DO NOTHING",
                        (image_id, name, text, author, meta_json, key(name, text if answer.key == "csv" else None),
                         created, run.id), "labels added")
            else:
                counted("INSERT INTO captions (image_id, kind, text, model, params, source_id, author, natural_key, "
                        "created_at, run_id) VALUES (?, 'human', ?, 'labelstudio', ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (natural_key) DO NOTHING",
                        (image_id, text, json.dumps({"field": name, **meta}, sort_keys=True), source_id, author,
                         key(name, text if answer.key == "csv" else None), created, run.id), "human captions added")
        elif kind == "rating" or kind == "number":
            value = float(values[0])
            counted("INSERT INTO scores (image_id, kind, value, model, natural_key, run_id) "
                    "VALUES (?, ?, ?, 'labelstudio', ?, ?) ON CONFLICT (natural_key) DO NOTHING",
                    (image_id, name, value, key(name, value if answer.key == "csv" else None), run.id),
                    "scores added")
        else:
            for value in values:
                counted("INSERT INTO labels (image_id, kind, text, author, meta, natural_key, created_at, run_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (natural_key) DO NOTHING",
                        (image_id, name, str(value), author, meta_json, key(name, value), created, run.id),
                        "labels added")
            if name == TRIAGE_FIELD and values and str(values[0]) in TRIAGE_VERDICT:
                scope = f"labelstudio:{answer.key}" if answer.key != "csv" else f"labelstudio-csv:{scope_suffix}"
                counted("INSERT INTO decisions (item_type, item_id, stage, verdict, scope, rule, reason, value, run_id) "
                        "VALUES ('image', ?, 'review', ?, ?, 'labelstudio triage', ?, ?, ?) "
                        "ON CONFLICT (item_type, item_id, stage, scope) DO NOTHING",
                        (image_id, TRIAGE_VERDICT[str(values[0])], scope, meta_json, str(values[0]), run.id),
                        "review decisions added")
