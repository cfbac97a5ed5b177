"""kohya sd-scripts training folders, as ``train_network.py`` and ``fine_tune.py`` read them.

Folder layout (DreamBooth-style): ``<repeats>_<trigger>/`` with ``image.png`` +
``image.txt``; kohya reads the repeats and class tokens from the folder name
and needs ``--caption_extension .txt`` to read the captions. Fine-tuning
layout: ``images/`` plus ``meta_cap.json`` (``{image: {caption, tags,
image_size}}``, as kohya's ``merge_captions_to_metadata.py`` writes) and the
same as JSON lines (``image_path``, ``caption``, ``tags``, ``image_size``).

``dataset_config.toml`` names image folders by absolute path, because kohya
resolves a relative ``image_dir`` against the working folder of the trainer
(``--relative-paths`` writes them relative, for a folder that moves: train from
inside it). It turns bucketing on, and writes nothing to ``[general]`` that
the command line would be expected to control unless asked (``--keep-tokens``).

Only the ``train`` split is exported unless told; ``--validation SPLIT``
writes that split to a separate ``validation/`` folder that kohya never
trains on. The trigger starts every caption once; elsewhere only whole tags
equal to it are removed (``sks-style`` and ``black cat`` stay). Each image
folder also holds a Hugging Face ``metadata.jsonl`` (kohya reads only images
and captions there) so the Hub viewer shows images with their captions; the
card has no chart folder, which kohya would report as a folder without repeats.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from promptmill.core.errors import BadInput
from promptmill.core.progress import bar
from promptmill.release.images import ImageExporter, normalize_option, text_from_option
from promptmill.release.items import image_items, unique_stems

READABLE = {"png", "jpg", "webp", "bmp"}  # kohya's IMAGE_EXTENSIONS (jpeg is stored as jpg)
CONFIG_FILE = "dataset_config.toml"
METADATA_JSON = "meta_cap.json"
METADATA_JSONL = "meta_cap.jsonl"
VALIDATION_DIR = "validation"
HUB_METADATA = "metadata.jsonl"


def check_trigger(trigger: str) -> str:
    if not trigger or trigger != trigger.strip() or re.search(r"[/\\\x00-\x1f]", trigger) or "," in trigger:
        raise BadInput(f"--trigger must be a word or words without slashes, commas or edge spaces, not {trigger!r}")
    return trigger


def split_tags(text: str) -> list[str]:
    return [" ".join(part.split()) for part in (text or "").split(",") if part.strip()]


def caption_with_trigger(text: str, trigger: str) -> str:
    """The trigger first and only once: other tags equal to it (whole, any case) go; nothing else changes."""
    rest = [tag for tag in split_tags(text) if tag.casefold() != trigger.casefold()]
    return ", ".join([trigger, *rest])


def toml_value(value) -> str:
    """A TOML scalar: JSON's strings, numbers and booleans are valid TOML."""
    return json.dumps(value)


def dataset_config(subsets: list[dict], dataset: dict, general: dict) -> str:
    """A dataset_config.toml for kohya: one dataset, its settings, its subsets."""
    lines = [f"# kohya sd-scripts dataset config: train with --dataset_config {CONFIG_FILE}", ""]
    if general:
        lines += ["[general]"] + [f"{key} = {toml_value(value)}" for key, value in general.items()] + [""]
    lines += ["[[datasets]]"] + [f"{key} = {toml_value(value)}" for key, value in dataset.items()] + [""]
    for subset in subsets:
        lines += ["  [[datasets.subsets]]"] + [f"  {key} = {toml_value(value)}" for key, value in subset.items()]
        lines.append("")
    return "\n".join(lines)


class KohyaExporter(ImageExporter):
    """A kohya LoRA folder: OUT/<repeats>_<trigger>/ with each image and its same-stem .txt caption
    (or --layout finetune: images/ with kohya's metadata JSON and JSONL)."""

    name = "kohya"
    tasks = ("text-to-image",)
    charts = False
    options = (
        click.option("--trigger", required=True, help="Trigger word: the folder's class tokens and every "
                     "caption's start."),
        click.option("--repeats", default=10, show_default=True, type=click.IntRange(1),
                     help="kohya repeats per epoch."),
        text_from_option("prompt"),
        click.option("--split", "splits", multiple=True, default=("train",), show_default=True,
                     help="Splits to train on (repeatable)."),
        click.option("--validation", "validation", default=None, metavar="SPLIT",
                     help=f"Also write this split to {VALIDATION_DIR}/, a folder kohya does not train on."),
        click.option("--layout", type=click.Choice(["folder", "finetune"]), default="folder", show_default=True,
                     help="folder: <repeats>_<trigger>/ with .txt captions; finetune: images/ with "
                     f"{METADATA_JSON} and {METADATA_JSONL}."),
        click.option("--toml/--no-toml", "write_toml", default=True, show_default=True,
                     help=f"Write {CONFIG_FILE} (always for --layout finetune)."),
        click.option("--relative-paths", is_flag=True,
                     help=f"Write {CONFIG_FILE}'s folders relative to OUT (then train from inside OUT) "
                     "instead of absolute."),
        click.option("--resolution", default=512, show_default=True, type=click.IntRange(64),
                     help="Training resolution in the TOML."),
        click.option("--min-bucket-reso", default=256, show_default=True, type=click.IntRange(64),
                     help="Smallest bucket side in the TOML."),
        click.option("--max-bucket-reso", default=1024, show_default=True, type=click.IntRange(64),
                     help="Largest bucket side in the TOML."),
        click.option("--bucket-reso-steps", default=64, show_default=True, type=click.IntRange(8),
                     help="Bucket sides are multiples of this."),
        click.option("--bucket-no-upscale", is_flag=True, help="Never upscale an image to fill its bucket."),
        click.option("--keep-tokens", default=None, type=click.IntRange(0),
                     help="Write keep_tokens to the TOML's [general] (otherwise your command line decides)."),
        normalize_option(True),
    )

    def check(self):
        super().check()
        check_trigger(self.params["trigger"])
        validation = self.params.get("validation")
        if validation and validation in self.params["splits"]:
            raise BadInput(f"--validation {validation!r} is also a training split (--split)")
        if self.params["min_bucket_reso"] > self.params["max_bucket_reso"]:
            raise BadInput("--min-bucket-reso is larger than --max-bucket-reso")

    def __init__(self, params: dict):
        super().__init__(params)
        self.folders: dict[str, tuple[str, set[str]]] = {}  # role -> (image folder, extensions written)

    # --- where things go ---

    def role(self, split: str) -> str:
        """'train' for every training split, 'validation' for the --validation split."""
        return "validation" if split == self.params.get("validation") else "train"

    def image_dir(self, role: str) -> str:
        trigger, repeats = self.params["trigger"], self.params["repeats"]
        if self.params["layout"] == "finetune":
            return f"{VALIDATION_DIR}/images" if role == "validation" else "images"
        if role == "validation":
            return f"{VALIDATION_DIR}/1_{trigger}"
        return f"train/{repeats}_{trigger}" if self.params.get("validation") else f"{repeats}_{trigger}"

    def config_path(self, out: Path, relative: str) -> str:
        return relative if self.params["relative_paths"] else (Path(out).resolve() / relative).as_posix()

    # --- writing ---

    def write(self, store, folder):
        wanted = set(self.params["splits"]) | ({self.params["validation"]} - {None})
        items = image_items(store, self.params["text_from"], tuple(sorted(wanted)))
        trigger = self.params["trigger"]
        metadata: dict[str, list[dict]] = {}
        with bar(len(items), "kohya", "img") as progress:
            for item, stem in zip(items, unique_stems(items)):
                role = self.role(item["split"])
                directory = self.image_dir(role)
                relative, written = self.place(store, folder, f"{directory}/{stem}", item, READABLE)
                self.folders.setdefault(role, (directory, set()))[1].add(written.ext)
                caption = caption_with_trigger(item["text"], trigger)
                name = relative.rsplit("/", 1)[1]
                tags = [t for t in item["tags"] if t.casefold() != trigger.casefold()
                        and t.casefold() not in {c.casefold() for c in split_tags(caption)}]
                if self.params["layout"] == "folder":
                    folder.write_text(f"{directory}/{stem}.txt", caption + "\n")
                metadata.setdefault(role, []).append({"name": name, "caption": caption, "tags": ", ".join(tags),
                                                      "size": [written.width, written.height]})
                yield self.released(item, item["split"], relative, written, caption)
                progress.update()
        for role, rows in metadata.items():
            directory = self.folders[role][0]
            folder.write_text(f"{directory}/{HUB_METADATA}", "".join(
                json.dumps({"file_name": row["name"], "text": row["caption"]}, ensure_ascii=False) + "\n"
                for row in rows))
            if self.params["layout"] == "finetune":
                self.write_finetune_metadata(folder, directory, rows)
        if self.params["write_toml"] or self.params["layout"] == "finetune":
            folder.write_text(CONFIG_FILE, self.toml(folder.out))

    def write_finetune_metadata(self, folder, directory: str, rows: list[dict]):
        base = directory.rsplit("/", 1)[0] + "/" if "/" in directory else ""
        as_json = {row["name"]: {"caption": row["caption"], **({"tags": row["tags"]} if row["tags"] else {}),
                                 "image_size": row["size"]} for row in rows}
        folder.write_text(f"{base}{METADATA_JSON}", json.dumps(as_json, ensure_ascii=False, indent=1) + "\n")
        folder.write_text(f"{base}{METADATA_JSONL}", "".join(json.dumps(
            {"image_path": row["name"], "caption": row["caption"], **({"tags": row["tags"]} if row["tags"] else {}),
             "image_size": row["size"]}, ensure_ascii=False) + "\n" for row in rows))

    def toml(self, out: Path) -> str:
        p = self.params
        dataset = {"resolution": p["resolution"], "enable_bucket": True, "min_bucket_reso": p["min_bucket_reso"],
                   "max_bucket_reso": p["max_bucket_reso"], "bucket_reso_steps": p["bucket_reso_steps"],
                   "bucket_no_upscale": p["bucket_no_upscale"]}
        subsets = []
        if "train" in self.folders:
            directory = self.folders["train"][0]
            if p["layout"] == "finetune":
                subsets.append({"image_dir": self.config_path(out, directory),
                                "metadata_file": self.config_path(out, METADATA_JSON), "num_repeats": p["repeats"]})
            else:
                subsets.append({"image_dir": self.config_path(out, directory), "caption_extension": ".txt",
                                "num_repeats": p["repeats"], "class_tokens": p["trigger"]})
        general = {"keep_tokens": p["keep_tokens"]} if p.get("keep_tokens") is not None else {}
        return dataset_config(subsets, dataset, general)

    # --- the card ---

    def data_files(self, splits):
        """An imagefolder view of the training and validation folders: the images and their metadata.jsonl,
        never the .txt captions (those would make the Hub read the folder as text) nor anything else in OUT."""
        files = {}
        for role in ("train", "validation"):
            if role in self.folders:
                directory, extensions = self.folders[role]
                files[role] = [f"{directory}/*.{ext}" for ext in sorted(extensions)] + [f"{directory}/{HUB_METADATA}"]
        return files

    def how_to_load(self, out):
        p = self.params
        where = "." if p["relative_paths"] else Path(out).resolve().as_posix()
        config = f"{where}/{CONFIG_FILE}"
        note = ("Folders in the TOML are relative: run the trainer from inside this folder."
                if p["relative_paths"] else "Folders in the TOML are absolute: run the trainer from anywhere.")
        if p["layout"] == "finetune":
            return (f"kohya sd-scripts fine-tuning reads `{METADATA_JSON}` (or `{METADATA_JSONL}`) with `images/`:\n\n"
                    f"```bash\naccelerate launch fine_tune.py --pretrained_model_name_or_path MODEL "
                    f"--dataset_config {config} --output_dir OUTPUT\n```\n\n{note}")
        train_dir = f"{where}/train" if p.get("validation") else where
        lines = ["kohya sd-scripts, folder mode (captions are the `.txt` files: `--caption_extension .txt` is "
                 "required, otherwise kohya trains on the trigger word alone):", "",
                 f"```bash\naccelerate launch train_network.py --pretrained_model_name_or_path MODEL "
                 f"--network_module networks.lora --train_data_dir {train_dir} --caption_extension .txt "
                 f"--resolution {p['resolution']} --enable_bucket --output_dir OUTPUT\n```"]
        if p["write_toml"]:
            lines += ["", "or with the dataset config:", "",
                      f"```bash\naccelerate launch train_network.py --pretrained_model_name_or_path MODEL "
                      f"--network_module networks.lora --dataset_config {config} --output_dir OUTPUT\n```", "", note]
        if p.get("validation"):
            lines += ["", f"`{VALIDATION_DIR}/` holds the `{p['validation']}` split for evaluation; it is not "
                      "trained on."]
        return "\n".join(lines)

