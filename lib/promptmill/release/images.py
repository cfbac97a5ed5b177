"""What the image exporters (imagefolder, parquet, kohya) share: options, selection, and each image's bytes.

Images are copied byte for byte from the blob store unless asked to be
normalised (``--normalize``, the default for kohya, which reads files as they
are): then an image that a trainer would read wrong (EXIF-rotated, 16-bit,
with transparency, or in a format the consumer cannot open) is written as an
8-bit RGB PNG through :func:`promptmill.core.images.to_rgb8`, and its width
and height are those of the written file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import click

from promptmill.core.store import Store
from promptmill.release.base import Exporter
from promptmill.release.folder import ExportFolder
from promptmill.release.items import IMAGE_COLUMNS, image_items, parse_text_from

EXIF_ORIENTATION = 0x0112
NEEDS_CONVERSION_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F", "RGBA", "LA", "PA", "RGBa", "La", "CMYK"}
PLACEHOLDERS = ('Missing values are typed placeholders, never null: `""` for text, `-1` for numbers. '
                '`tags` is comma-separated, in the tagger\'s order.')


def text_from_option(default: str):
    return click.option("--text-from", default=default, show_default=True,
                        help="Text of each image: prompt, caption:KIND (the current caption of that kind, edits "
                        "included, e.g. caption:wd14) or label:KIND; comma-separated fallbacks, the first "
                        "with text wins (e.g. prompt,caption:imported).")


split_option = click.option("--split", "splits", multiple=True, help="Only these splits (repeatable; default: all).")


def normalize_option(default: bool):
    return click.option("--normalize/--no-normalize", default=default, show_default=True,
                        help="Write EXIF-rotated, 16-bit and transparent images as upright 8-bit RGB PNGs "
                        "(transparency on white) instead of copying their bytes.")


@dataclass
class ImageFile:
    ext: str
    sha256: str
    width: int
    height: int
    data: bytes | None = None   # None: copy the blob as it is


def needs_conversion(image) -> bool:
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return orientation not in (None, 1) or image.mode in NEEDS_CONVERSION_MODES or "transparency" in image.info


def png_of(image) -> bytes:
    """Deterministic PNG bytes (no metadata, fixed settings), so a re-export is byte-identical."""
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def image_file(store: Store, item: dict, normalize: bool, readable: set[str] | None = None) -> ImageFile:
    """The bytes to write for ITEM: its blob, or an upright 8-bit RGB PNG when normalising finds it needed
    or when its extension is not in READABLE (what the consumer opens)."""
    import hashlib

    from promptmill.core.images import TooManyPixels, open_image, to_rgb8

    blob = ImageFile(item["ext"], item["sha256"], item["width"], item["height"])
    unreadable = readable is not None and item["ext"] not in readable
    if not normalize and not unreadable:
        return blob
    try:
        image = open_image(store.blobs.path_for(item["sha256"], item["ext"]))
    except TooManyPixels:
        return blob  # too large to decode safely: exported as stored (02_clean --max-pixels drops these)
    with image:
        if not unreadable and not needs_conversion(image):
            return blob
        image.seek(0)
        converted = to_rgb8(image)
    data = png_of(converted)
    return ImageFile("png", hashlib.sha256(data).hexdigest(), converted.width, converted.height, data)


class ImageExporter(Exporter):
    """An exporter of kept images with their text and provenance."""

    item_type = "image"
    needs = "collect or generate some first"
    default_text_from = "prompt"

    def check(self):
        parse_text_from(self.params["text_from"])

    def select(self, store: Store) -> list[dict]:
        return image_items(store, self.params["text_from"], tuple(self.params.get("splits") or ()))

    def place(self, store: Store, folder: ExportFolder, relative_stem: str, item: dict,
              readable: set[str] | None = None) -> tuple[str, ImageFile]:
        """Write ITEM's image at RELATIVE_STEM + its extension; return (relative path, what was written)."""
        written = image_file(store, item, self.params.get("normalize", False), readable)
        relative = f"{relative_stem}.{written.ext}"
        if written.data is None:
            folder.copy_blob(relative, store.blobs.path_for(item["sha256"], item["ext"]), item["sha256"])
        else:
            folder.write_bytes(relative, written.data)
        return relative, written

    @staticmethod
    def released(item: dict, split: str, file_name: str, written: ImageFile, text: str) -> dict:
        return {"item_type": "image", "item_id": item["image_id"], "split": split, "file_name": file_name,
                "sha256": written.sha256, "text": text, "source_kind": item["source_kind"], "tags": item["tags"],
                "width": written.width, "height": written.height, "no_text": not item["text"].strip()}


class DatasetsImageExporter(ImageExporter):
    """An image export that `datasets.load_dataset` reads as it is (imagefolder, parquet)."""

    def how_to_load(self, out):
        return load_snippet()

    def card_sections(self):
        return columns_section()


def load_snippet() -> str:
    """The card's loading code; it names no local path, so the same release renders the same card anywhere."""
    return ('```python\nfrom datasets import load_dataset\n\n'
            'dataset = load_dataset("path/to/this/folder")  # or the Hub repository id it was pushed to\n```')


def columns_section() -> list[str]:
    rows = "\n".join(f"| {name} | {kind} |" for name, kind in IMAGE_COLUMNS)
    return ["## Columns", "", "| column | type |\n|---|---|\n" + rows, "", PLACEHOLDERS, ""]
