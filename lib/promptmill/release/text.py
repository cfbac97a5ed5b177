"""Text releases: description -> prompt pairs for prompt-writing models, and plain prompt lists.

Pairs are written per split as JSON lines, CSV, or the ``<split>_strings.txt``
layout (``train_strings.txt`` / ``test_strings.txt``) that fine-tuning scripts
read one record per line, rendered from a template. Inside a record every
field has its whitespace collapsed, so only the template itself can break a
line.
"""

from __future__ import annotations

import csv
import io
import json
import string

from promptmill.core.errors import BadInput
from promptmill.core.text import collapse_whitespace
from promptmill.release.base import ExportFolder, split_sort_key

DEFAULT_TEMPLATE = "{description}\t{prompt}"
TEMPLATE_FIELDS = {"description", "prompt", "prompt_id", "id"}
PAIR_COLUMNS = ("id", "prompt_id", "description", "prompt", "source_kind", "label_model")


def check_template(template: str) -> str:
    """Validate a strings template and turn the escapes \\t and \\n typed on a shell into real ones."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise BadInput(f"--template is not a valid format string: {exc}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown or not {"description", "prompt"} <= fields:
        raise BadInput(f"--template must use {{description}} and {{prompt}} and only "
                       f"{sorted(TEMPLATE_FIELDS)}, got {sorted(fields)}")
    return template


def _by_split(items: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    groups: dict[str, list[tuple[int, dict]]] = {}
    for number, item in enumerate(items, 1):
        groups.setdefault(item["split"], []).append((number, item))
    return dict(sorted(groups.items(), key=lambda kv: split_sort_key(kv[0])))


def write_pairs(folder: ExportFolder, items: list[dict], fmt: str, template: str = DEFAULT_TEMPLATE) -> list[dict]:
    """One file per split; return the release items."""
    released = []
    for split, numbered in _by_split(items).items():
        if fmt == "jsonl":
            name = f"{split}.jsonl"
            body = "".join(json.dumps({"id": n, **{k: item[k] for k in PAIR_COLUMNS[1:]}}, ensure_ascii=False) + "\n"
                           for n, item in numbered)
        elif fmt == "csv":
            name = f"{split}.csv"
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(PAIR_COLUMNS)
            writer.writerows([n, *(item[k] for k in PAIR_COLUMNS[1:])] for n, item in numbered)
            body = buffer.getvalue()
        else:
            name = f"{split}_strings.txt"
            body = "".join(template.format(id=n, prompt_id=item["prompt_id"],
                                           description=collapse_whitespace(item["description"]),
                                           prompt=collapse_whitespace(item["prompt"])) + "\n"
                           for n, item in numbered)
        folder.write_text(name, body)
        released += [{"item_type": "prompt", "item_id": item["prompt_id"], "split": split, "file_name": name,
                      "text": f"{item['description']}\t{item['prompt']}"} for _, item in numbered]
    return released


def write_prompts(folder: ExportFolder, items: list[dict], fmt: str) -> list[dict]:
    """prompts.txt (one per line) or prompts.jsonl (with ids and provenance); return the release items."""
    if fmt == "txt":
        name = "prompts.txt"
        body = "".join(collapse_whitespace(item["text"]) + "\n" for item in items)
    else:
        name = "prompts.jsonl"
        body = "".join(json.dumps({"id": n, **item}, ensure_ascii=False) + "\n" for n, item in enumerate(items, 1))
    folder.write_text(name, body)
    return [{"item_type": "prompt", "item_id": item["prompt_id"], "split": item["split"], "file_name": name,
             "text": item["text"]} for item in items]
