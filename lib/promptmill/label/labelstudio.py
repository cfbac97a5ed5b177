"""The Label Studio round trip: images out as tasks with predictions, people's answers back in.

Export (a file, or ``ls-push`` to a server) writes one task per kept image; its
data carries the promptmill image id, so answers find their image again even
after files were renamed. Predictions pre-fill the config's controls from
machine work, under a ``model_version`` that names it.

Import (an export file in any format ``ls_formats`` reads, or ``ls-pull``)
appends what people said, each row pointing at its ``annotations`` row (the
annotator, times and lead time). Where each control lands:

- a text area becomes a caption of its own kind (``TEXT_KINDS``: ``human_desc``
  -> ``human``, ``reverse_prompt`` -> ``human_prompt``, ``machine_tags`` ->
  ``human_tags``, any other -> ``human_<name>``), except ``notes``, a label;
- choices, labels and taxonomy answers become labels named after the control;
- ratings and numbers become scores named after the control;
- ``triage`` also becomes a ``review`` decision (keep -> keep, skip -> drop;
  maybe is a label only) when its annotation is the newest of the image by
  ``updated_at``, whatever order the answers arrive in;
- a result Label Studio marks ``origin: "prediction"`` (pre-filled and left
  unchanged) is not a person's work: it becomes a ``review`` keep decision on
  the machine caption or label it came from. JSON_MIN, CSV and TSV drop that
  mark; there a text area whose text is still the machine text is taken as
  left unchanged.

Every row has a natural key built from the annotation id and its
``updated_at``, so importing an export again, or the same answers in another
format, adds nothing; an annotation edited later comes back as new rows.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from promptmill.collect.base import Collector, SourceInfo, file_sha256
from promptmill.core import resources
from promptmill.core.errors import BadInput
from promptmill.core.progress import bar
from promptmill.core.runs import Run, redact
from promptmill.core.save import (
    save_annotation,
    save_caption,
    save_decisions,
    save_item_error,
    save_label,
    save_score,
)
from promptmill.core.sources import images_of
from promptmill.core.state import kept_images_sql
from promptmill.core.store import Store
from promptmill.core.text import sha256_hex
from promptmill.label.ls_formats import Answer, Result, read_export

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
TEXT_KINDS = {"human_desc": "human", "reverse_prompt": "human_prompt", "machine_tags": "human_tags"}
MODEL_VERSION_PREFIX = "promptmill"
BATCH = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


@dataclass(frozen=True)
class Control:
    name: str
    type: str
    to_name: str
    values: tuple[str, ...] = ()
    multiple: bool = False


def read_config(path: str | Path = DEFAULT_CONFIG) -> dict[str, Control]:
    """The labelling controls of a Label Studio config: name -> type, target, allowed values, one or many."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise BadInput(f"{path}: not a Label Studio config ({exc})") from exc
    controls = {}
    for element in root.iter():
        kind = CONTROL_TAGS.get(element.tag)
        if kind and element.get("name"):
            values = tuple(child.get("value") for child in element if child.get("value") is not None)
            multiple = kind in ("labels", "taxonomy") or element.get("choice") == "multiple"
            controls[element.get("name")] = Control(element.get("name"), kind, element.get("toName", ""), values,
                                                    multiple)
    return controls


# --- export ---

def image_url(relative_path: str, url_prefix: str | None = None) -> str:
    """What Label Studio opens: its local-files endpoint, or PREFIX + path when the files are served elsewhere
    (credentials inside PREFIX are redacted: tasks files get shared)."""
    if url_prefix:
        return redact(url_prefix).rstrip("/") + "/" + urllib.parse.quote(relative_path)
    return LOCAL_FILES_PREFIX + urllib.parse.quote(relative_path, safe="")


def _textarea(control: Control, text: str) -> dict:
    return {"from_name": control.name, "to_name": control.to_name, "type": "textarea", "value": {"text": [text]}}


def _choices(control: Control, values: list[str]) -> dict | None:
    """A choices prediction with the values the control offers (the newest one for a single choice)."""
    allowed = list(dict.fromkeys(value for value in values if value in control.values))
    if not allowed:
        return None
    if not control.multiple:
        allowed = allowed[-1:]
    key = "labels" if control.type == "labels" else "choices"
    return {"from_name": control.name, "to_name": control.to_name, "type": control.type, "value": {key: allowed}}


def build_tasks(store: Store, controls: dict[str, Control], document_root: Path, url_prefix: str | None = None,
                source_ids: list[int] | None = None) -> list[dict]:
    """One task per kept image, with a prediction from its current captions, tags, labels and prompt description."""
    where, params = images_of(source_ids, "i.id")
    images = store.query(kept_images_sql(where), params)
    captions: dict[int, dict[str, str]] = {}
    for row in store.query("SELECT image_id, lineage_kind, text FROM current_captions"):
        captions.setdefault(row["image_id"], {})[row["lineage_kind"]] = row["text"]
    machine_tags: dict[int, list[str]] = {}
    for image_id, tag in store.execute(
            "SELECT c.image_id, t.tag FROM current_captions c JOIN tags t ON t.caption_id = c.caption_id "
            f"WHERE c.lineage_kind IN ({', '.join('?' * len(TAG_KINDS))}) ORDER BY t.position", TAG_KINDS):
        machine_tags.setdefault(image_id, []).append(tag)
    labels: dict[int, dict[str, list[str]]] = {}
    for row in store.query("SELECT image_id, kind, text FROM labels WHERE image_id IS NOT NULL AND annotation_id IS NULL "
                           "ORDER BY id"):
        labels.setdefault(row["image_id"], {}).setdefault(row["kind"], []).append(row["text"])
    clip = dict(store.execute("SELECT image_id, value FROM scores WHERE kind = 'clip' ORDER BY id"))
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
        image_labels = dict(labels.get(image["id"], {}))
        if machine_tags.get(image["id"]):
            image_labels["tags"] = image_labels.get("tags", []) + machine_tags[image["id"]]
        task = {"data": {"image": image_url(relative, url_prefix),
                         "file_name": origin["locator"] or f"{image['sha256']}.{image['ext']}",
                         "promptmill_image_id": image["id"], "sha256": image["sha256"], "prompt": prompt or ""}}
        prediction = _prediction(controls, captions.get(image["id"], {}), image_labels, description,
                                 clip.get(image["id"]))
        if prediction:
            task["predictions"] = [prediction]
        tasks.append(task)
        progress.update()
    progress.close()
    return tasks


def _prediction(controls: dict[str, Control], captions: dict[str, str], labels: dict[str, list[str]],
                description: str | None, score: float | None) -> dict | None:
    """Label Studio's prediction: the results, a model_version naming the machine work they came from
    (promptmill:<caption kinds, description, labels>), and the image's CLIP score when it has one."""
    result, sources = [], []
    reverse_kind = next((kind for kind in REVERSE_PROMPT_KINDS if kind in captions), None)
    tags_kind = next((kind for kind in TAG_KINDS if kind in captions), None)
    for name, kind, text in (("reverse_prompt", reverse_kind, captions.get(reverse_kind)),
                             ("machine_tags", tags_kind, captions.get(tags_kind)),
                             ("human_desc", "description", description)):
        if text and name in controls and controls[name].type == "textarea":
            result.append(_textarea(controls[name], text))
            sources.append(kind)
    for name, values in labels.items():
        control = controls.get(name)
        if control and control.type in ("choices", "labels") and name != TRIAGE_FIELD:
            prediction = _choices(control, values)
            if prediction:
                result.append(prediction)
                sources.append(name)
    if not result:
        return None
    prediction = {"model_version": f"{MODEL_VERSION_PREFIX}:{'+'.join(sorted(set(sources)))}", "result": result}
    if score is not None:
        prediction["score"] = score
    return prediction



# --- import ---

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
        image_id, sha = _image_id(data.get("promptmill_image_id")), data.get("sha256")
        if image_id is not None:
            found = self.store.scalar("SELECT sha256 FROM images WHERE id = ?", (image_id,))
            if found and (not sha or sha == found):
                return image_id
        names = [data[key] for key in ("file_name", "image") if isinstance(data.get(key), str) and data[key]]
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


def _image_id(raw) -> int | None:
    """A promptmill image id as a task carries it: a number, or its digits in a CSV cell."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def import_answers(store: Store, run: Run, path: Path, controls: dict[str, Control]) -> str:
    """Append the answers in a Label Studio export (any format ls_formats reads); return its format."""
    sha = file_sha256(path)
    kind, errors, answers, cancelled = read_export(path, controls)
    collector = Collector(store, run, SourceInfo(kind="labelstudio", uri=str(path), sha256=sha,
                                                 bytes=path.stat().st_size, options={"format": kind}))
    if collector.completed:
        run.add("sources already imported")
        return kind
    if cancelled:
        run.add("cancelled annotations ignored", len(cancelled))
    for position, reason, detail in errors:
        collector.add_error(position, reason, detail)
    collector.flush()
    record_answers(store, run, answers, source_id=collector.source_id, scope_suffix=sha[:16])
    collector.finish(len(answers) + len(errors))
    return kind


def record_answers(store: Store, run: Run, answers: list[Answer], *, source_id: int | None = None,
                   ls_project_id: int | None = None, scope_suffix: str = "", locator: str | None = None) -> None:
    """Write answers in batches, each batch one transaction; an answer whose image is unknown, or a
    result that doesn't fit its control, becomes an item error."""
    matcher = ImageMatcher(store)
    with bar(len(answers), "answers", "answer") as progress:
        for start in range(0, len(answers), BATCH):
            batch = answers[start:start + BATCH]
            with store.transaction() as conn:
                for answer in batch:
                    task = answer.meta.get("task_id")
                    task = f"task {task}" if task is not None else f"item {answer.position}"
                    where = f"{locator}/{task}" if locator else task
                    image_id = matcher.match(answer.data)
                    if image_id is None:
                        save_item_error(conn, run, "no matching image", source_id=source_id, position=answer.position,
                                        locator=where, detail=json.dumps(answer.data, sort_keys=True, default=str))
                        run.add("answers without a matching image")
                        continue
                    if answer.errors:
                        # position NULL: several annotations of one task may each have a bad result.
                        save_item_error(conn, run, "malformed result", source_id=source_id,
                                        locator=f"{where} {answer.key or ''}".strip(), detail="; ".join(answer.errors))
                        run.add("malformed results skipped", len(answer.errors))
                    _record(conn, run, image_id, answer, source_id, ls_project_id, scope_suffix)
                    run.add("answers imported")
            progress.update(len(batch))


def _record(conn, run: Run, image_id: int, answer: Answer, source_id: int | None, ls_project_id: int | None,
            scope_suffix: str) -> None:
    annotation_id = save_annotation(conn, run, image_id, answer.key, source_id=source_id,
                                    ls_project_id=ls_project_id, **answer.meta) if answer.key else None
    author = answer.meta.get("annotator")

    def key(name: str, value=None) -> str:
        # Label Studio answers are named by annotation version; SSLQ rows by content.
        if answer.key is None:
            return f"csv:{image_id}:{name}:{sha256_hex(str(value))[:16]}"
        return f"{answer.key}:{image_id}:{name}" + ("" if value is None else f":{value}")

    for result in answer.results:
        if _left_as_predicted(result) and answer.key and _accept_prediction(conn, run, image_id, result,
                                                                             answer.key, annotation_id):
            continue
        name, values = result.name, result.values
        if result.type == "textarea":
            text = "\n".join(str(v) for v in values).strip()
            if not text:
                continue
            if name in LABEL_TEXTAREAS:
                if save_label(conn, run, name, text, image_id=image_id, author=author, annotation_id=annotation_id,
                              natural_key=key(name, text if answer.key is None else None)):
                    run.add("labels added")
            elif save_caption(conn, run, image_id, TEXT_KINDS.get(name, f"human_{name}"), text, model="labelstudio",
                              params={"field": name}, source_id=source_id, author=author,
                              annotation_id=annotation_id, natural_key=key(name, text if answer.key is None else None)):
                run.add("human captions added")
        elif result.type in ("rating", "number"):
            value = float(values[0])
            if save_score(conn, run, image_id, name, value, model="labelstudio", annotation_id=annotation_id,
                          natural_key=key(name, value if answer.key is None else None)):
                run.add("scores added")
        else:
            for value in values:
                if save_label(conn, run, name, str(value), image_id=image_id, author=author,
                              annotation_id=annotation_id, natural_key=key(name, value)):
                    run.add("labels added")
            if name == TRIAGE_FIELD and str(values[0]) in TRIAGE_VERDICT:
                _triage(conn, run, image_id, str(values[0]), answer, annotation_id, scope_suffix)


def _triage(conn, run: Run, image_id: int, value: str, answer: Answer, annotation_id: int | None,
            scope_suffix: str) -> None:
    """A review decision from a triage answer, unless a newer annotation already decided this image."""
    updated = answer.meta.get("updated_at") or answer.meta.get("created_at")
    if annotation_id is not None:
        newest = conn.execute(
            "SELECT max(a.updated_at) FROM decisions d JOIN annotations a ON a.id = d.annotation_id "
            "WHERE d.item_type = 'image' AND d.item_id = ? AND d.stage = 'review'", (image_id,)).fetchone()[0]
        if newest is not None and (updated or "") < newest:
            run.add("older triage answers kept as labels only")
            return
    scope = f"labelstudio:{answer.key}" if answer.key else f"labelstudio-csv:{scope_suffix}"
    if save_decisions(conn, run, [{"item_type": "image", "item_id": image_id, "stage": "review",
                                   "verdict": TRIAGE_VERDICT[value], "scope": scope, "rule": "labelstudio triage",
                                   "value": value, "annotation_id": annotation_id}]):
        run.add("review decisions added")


def _left_as_predicted(result: Result) -> bool:
    """Marked as an unchanged prediction, or, where the format drops the mark, a text area that may be
    one (it is, when its text is the machine text the task was pre-filled with)."""
    return result.origin == "prediction" or (result.origin is None and result.type == "textarea")


def _accept_prediction(conn, run: Run, image_id: int, result: Result, answer_key: str,
                       annotation_id: int | None) -> bool:
    """A pre-filled result left unchanged: a review keep decision on each machine caption or label it
    came from. False when no machine row matches (it is then recorded as the person's answer)."""
    if result.type == "textarea":
        text = "\n".join(str(v) for v in result.values).strip()
        found = conn.execute(
            "SELECT 'caption', caption_id FROM current_captions WHERE image_id = ? AND text = ? AND kind NOT LIKE "
            "'human%' UNION ALL SELECT 'label', l.id FROM labels l JOIN image_origins o ON o.prompt_id = l.prompt_id "
            "WHERE o.image_id = ? AND l.kind = 'description' AND l.text = ? ORDER BY 2 DESC LIMIT 1",
            (image_id, text, image_id, text)).fetchall()
    else:
        found = [conn.execute(
            "SELECT 'label', max(id) FROM labels WHERE image_id = ? AND kind = ? AND text = ? AND annotation_id IS NULL",
            (image_id, result.name, str(value))).fetchone() for value in result.values]
        found = found if all(item[1] is not None for item in found) else []
    if not found:
        return False
    decisions = [{"item_type": item_type, "item_id": item_id, "stage": "review", "verdict": "keep",
                  "scope": f"labelstudio:{answer_key}:{result.name}", "rule": "labelstudio accepted prediction",
                  "value": result.name, "annotation_id": annotation_id} for item_type, item_id in found]
    run.add("accepted predictions", save_decisions(conn, run, decisions))
    return True
