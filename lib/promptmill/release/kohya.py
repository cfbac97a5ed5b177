"""A kohya sd-scripts LoRA folder: ``<repeats>_<trigger>/`` with ``image.png`` + ``image.txt``.

kohya reads the repeat count and class tokens from the folder name and the
caption from the image's same-stem ``.txt``. The trigger word starts every
caption exactly once (with ``keep_tokens = 1`` it stays first when captions
are shuffled). Formats kohya cannot read are re-encoded to PNG.
"""

from __future__ import annotations

import io
import json
import re

from promptmill.core.errors import BadInput
from promptmill.core.progress import bar
from promptmill.core.store import Store
from promptmill.release.base import ExportFolder, unique_stems

KOHYA_EXTENSIONS = {"png", "jpg", "jpeg", "webp", "bmp"}
CONFIG_FILE = "dataset_config.toml"


def check_trigger(trigger: str) -> str:
    if not trigger or trigger != trigger.strip() or re.search(r"[/\\\x00-\x1f]", trigger) or "," in trigger:
        raise BadInput(f"--trigger must be a word or words without slashes, commas or edge spaces, not {trigger!r}")
    return trigger


def caption_with_trigger(text: str, trigger: str) -> str:
    """The trigger first and only once: drop it wherever else it appears, tidy the separators left behind."""
    rest = re.sub(rf"(?<!\w){re.escape(trigger)}(?!\w)", " ", text or "", flags=re.IGNORECASE)
    parts = [" ".join(part.split()) for part in rest.split(",")]
    rest = ", ".join(part for part in parts if part)
    return f"{trigger}, {rest}" if rest else trigger


def folder_name(repeats: int, trigger: str) -> str:
    return f"{repeats}_{trigger}"


def dataset_config(folder: str, repeats: int, trigger: str, resolution: int) -> str:
    """A dataset_config.toml with one subset; image_dir is relative to the folder holding this file."""
    return "\n".join([
        "# kohya sd-scripts dataset config. image_dir is relative: train from this folder or make it absolute.",
        "[general]",
        'caption_extension = ".txt"',
        "shuffle_caption = false",
        "keep_tokens = 1",
        "",
        "[[datasets]]",
        f"resolution = {resolution}",
        "batch_size = 1",
        "",
        "  [[datasets.subsets]]",
        f"  image_dir = {json.dumps(folder)}",
        f"  num_repeats = {repeats}",
        f"  class_tokens = {json.dumps(trigger)}",
        "",
    ])


def png_bytes(data: bytes) -> bytes:
    """Re-encode an image kohya cannot read as PNG (deterministic: no metadata, fixed settings)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        converted = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    out = io.BytesIO()
    converted.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def write_kohya(store: Store, folder: ExportFolder, items: list[dict], trigger: str, repeats: int,
                write_config: bool = False, resolution: int = 512) -> tuple[list[dict], int]:
    """Write images and captions; return (release items, number of captions that were only the trigger)."""
    subset = folder_name(repeats, trigger)
    empty = 0
    released = []
    with bar(len(items), "kohya", "img") as progress:
        for item, stem in zip(items, unique_stems(items)):
            blob = store.blobs.path_for(item["sha256"], item["ext"])
            if item["ext"] in KOHYA_EXTENSIONS:
                image_name = f"{subset}/{stem}.{item['ext']}"
                folder.copy_blob(image_name, blob, item["sha256"])
            else:
                image_name = f"{subset}/{stem}.png"
                folder.write_bytes(image_name, png_bytes(blob.read_bytes()))
            caption = caption_with_trigger(item["text"], trigger)
            empty += caption == trigger
            folder.write_text(f"{subset}/{stem}.txt", caption + "\n")
            released.append({"item_type": "image", "item_id": item["image_id"], "split": item["split"],
                             "file_name": image_name, "sha256": item["sha256"], "text": caption})
            progress.update()
    if write_config:
        folder.write_text(CONFIG_FILE, dataset_config(subset, repeats, trigger, resolution))
    return released, empty
