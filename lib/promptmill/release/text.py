"""Text releases: description -> prompt pairs for prompt-writing models, and plain prompt lists.

Pairs are written per split as JSON lines, CSV, or the ``<split>_strings.txt``
layout (``train_strings.txt`` / ``test_strings.txt``) that fine-tuning scripts
read one record per line, rendered from a template. Inside a record every
field has its whitespace collapsed, so only the template itself can break a
line. Prompt lists are streamed from the database to the file, and their
``release_items`` keep each text's sha256 rather than a copy of it.
"""

from __future__ import annotations

import csv
import io
import json
import string

import click

from promptmill.core.errors import BadInput
from promptmill.core.progress import bar
from promptmill.core.text import collapse_whitespace
from promptmill.release.base import Exporter
from promptmill.release.items import pair_items, prompt_items, split_sort_key

DEFAULT_TEMPLATE = "{description}\t{prompt}"
TEMPLATE_FIELDS = {"description", "prompt", "prompt_id", "id"}
PAIR_COLUMNS = ("id", "prompt_id", "description", "prompt", "source_kind", "label_model")
PAIR_FILES = {"jsonl": "{}.jsonl", "csv": "{}.csv", "strings": "{}_strings.txt"}


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


def pairs_body(numbered: list[tuple[int, dict]], fmt: str, template: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps({"id": n, **{k: item[k] for k in PAIR_COLUMNS[1:]}}, ensure_ascii=False) + "\n"
                       for n, item in numbered)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(PAIR_COLUMNS)
        writer.writerows([n, *(item[k] for k in PAIR_COLUMNS[1:])] for n, item in numbered)
        return buffer.getvalue()
    return "".join(template.format(id=n, prompt_id=item["prompt_id"],
                                   description=collapse_whitespace(item["description"]),
                                   prompt=collapse_whitespace(item["prompt"])) + "\n" for n, item in numbered)


def datasets_snippet(builder: str) -> str:
    return ("```python\nfrom datasets import load_dataset\n\n"
            f'dataset = load_dataset("path/to/this/folder")  # or its Hub repository id; configs pick the {builder} files\n```')


class PairsExporter(Exporter):
    """Description -> prompt pairs (07_label descriptions, no _no_object), one file per split."""

    name = "pairs"
    tasks = ("text-generation",)
    item_type = "prompt"
    needs = "with a description label: run 07_label describe first"
    options = (
        click.option("--format", "fmt", type=click.Choice(list(PAIR_FILES)), default="jsonl", show_default=True),
        click.option("--template", default="{description}\\t{prompt}", show_default=True,
                     help="Record template of --format strings: {description}, {prompt}, {prompt_id}, {id}; "
                     "\\t and \\n work."),
    )

    def check(self):
        if self.params["fmt"] == "strings":
            check_template(self.params["template"])

    def write(self, store, folder):
        fmt = self.params["fmt"]
        template = check_template(self.params["template"]) if fmt == "strings" else DEFAULT_TEMPLATE
        for split, numbered in _by_split(pair_items(store)).items():
            name = PAIR_FILES[fmt].format(split)
            folder.write_text(name, pairs_body(numbered, fmt, template))
            for _, item in numbered:
                yield {"item_type": "prompt", "item_id": item["prompt_id"], "split": split, "file_name": name,
                       "text": f"{item['description']}\t{item['prompt']}", "source_kind": item["source_kind"]}

    def data_files(self, splits):
        if self.params["fmt"] == "strings":
            return {}
        return {split: [PAIR_FILES[self.params["fmt"]].format(split)] for split in splits}

    def how_to_load(self, out):
        if self.params["fmt"] == "strings":
            return ("One record per line, rendered from the template in the export parameters:\n\n"
                    "```python\nrecords = open('train_strings.txt', encoding='utf-8').read().splitlines()\n```")
        return datasets_snippet(self.params["fmt"])


class PromptsExporter(Exporter):
    """The kept prompts (cleaned, deduplicated): prompts.txt one per line, or prompts.jsonl with provenance."""

    name = "prompts"
    tasks = ("text-generation",)
    item_type = "prompt"
    record_text = False
    options = (
        click.option("--format", "fmt", type=click.Choice(["txt", "jsonl"]), default="txt", show_default=True),
        click.option("--split", default=None, help="Only prompts of this split."),
    )

    @property
    def file_name(self) -> str:
        return f"prompts.{self.params['fmt']}"

    def write(self, store, folder):
        jsonl = self.params["fmt"] == "jsonl"
        with open(folder.path(self.file_name), "w", encoding="utf-8", newline="\n") as fh, \
                bar(None, "prompts", "prompt", unit_scale=True) as progress:
            for number, item in enumerate(prompt_items(store, self.params.get("split")), 1):
                fh.write(json.dumps({"id": number, **item}, ensure_ascii=False) if jsonl
                         else collapse_whitespace(item["text"]))
                fh.write("\n")
                yield {"item_type": "prompt", "item_id": item["prompt_id"], "split": item["split"],
                       "file_name": self.file_name, "text": item["text"], "source_kind": item["source_kind"]}
                progress.update()

    def data_files(self, splits):
        return {"train": [self.file_name]}

    def how_to_load(self, out):
        return datasets_snippet("text" if self.params["fmt"] == "txt" else "json")
