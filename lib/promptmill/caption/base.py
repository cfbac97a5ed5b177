"""What the local captioners (BLIP, WD14, CLIP score) share: parameter hashes, the images
still to do, images decoded ahead on threads, and the rows they write.

Images are decoded (and, for the tagger, preprocessed) by a thread pool one batch
ahead of the model, so the model never waits on Pillow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from promptmill.core.runs import Run
from promptmill.core.store import Store


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def torch_dtype(name: str, device: str):
    """fp16 on CUDA and fp32 on CPU when 'auto'."""
    import torch

    if name == "auto":
        name = "fp16" if device.startswith("cuda") else "fp32"
    return name, {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def open_rgb(store: Store, sha256: str, ext: str):
    """The stored image as RGB; transparent pixels are composited on white."""
    from PIL import Image, ImageOps

    with Image.open(store.blobs.path_for(sha256, ext)) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return image.convert("RGB")


def decoded_batches(store: Store, rows: list[tuple], batch_size: int, prepare: Callable | None = None,
                    workers: int = 4) -> Iterator[tuple[list[tuple], list]]:
    """Yield (rows, images) per batch; an image that fails to decode is an Exception in its place.

    ROWS are tuples whose 2nd and 3rd items are the image's sha256 and ext. The next
    batch is decoded while the caller runs the model on this one."""

    def load(row):
        try:
            image = open_rgb(store, row[1], row[2])
            return prepare(image) if prepare else image
        except Exception as exc:  # noqa: BLE001 - recorded per image by the caller
            return exc

    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        ahead = [pool.submit(load, row) for row in batches[0]] if batches else []
        for index, batch in enumerate(batches):
            current = ahead
            ahead = [pool.submit(load, row) for row in batches[index + 1]] if index + 1 < len(batches) else []
            yield batch, [future.result() for future in current]


def split_readable(rows: list[tuple], images: list) -> tuple[list[tuple], list, list[tuple[tuple, Exception]]]:
    good = [(row, image) for row, image in zip(rows, images) if not isinstance(image, Exception)]
    bad = [(row, image) for row, image in zip(rows, images) if isinstance(image, Exception)]
    return [row for row, _ in good], [image for _, image in good], bad


def record_unreadable(conn, run: Run, kind: str, bad: Iterable[tuple[tuple, Exception]]):
    """An image the captioner could not open: one item_errors row per image and captioner."""
    for row, exc in bad:
        reason = f"{kind}: unreadable image"
        locator = f"image:{row[0]}"
        exists = conn.execute("SELECT 1 FROM item_errors WHERE source_id IS NULL AND locator = ? AND reason = ?",
                              (locator, reason)).fetchone()
        if not exists:
            conn.execute("INSERT INTO item_errors (position, locator, reason, detail, run_id) VALUES (?, ?, ?, ?, ?)",
                         (row[0], locator, reason, f"{type(exc).__name__}: {exc}"[:500], run.id))
        run.add("images unreadable")


def insert_caption(conn, run: Run, image_id: int, kind: str, text: str, model: str, params_json: str,
                   hash_: str) -> int | None:
    """Insert a caption under its natural key; return its id, or None when it was already there."""
    before = conn.total_changes
    cursor = conn.execute(
        "INSERT INTO captions (image_id, kind, text, model, params, params_hash, natural_key, created_at, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'), ?) ON CONFLICT (natural_key) DO NOTHING",
        (image_id, kind, text, model, params_json, hash_, f"{kind}:{image_id}:{hash_}", run.id))
    if conn.total_changes == before:
        run.add("captions already there")
        return None
    run.add("captions added")
    return cursor.lastrowid


def uncaptioned_images(store: Store, kind: str, hash_: str, limit: int | None = None) -> list[tuple]:
    """(id, sha256, ext) of kept images without a KIND caption for these parameters."""
    from promptmill.core.state import kept_images

    done = {row[0] for row in store.execute("SELECT image_id FROM captions WHERE kind = ? AND params_hash = ?",
                                            (kind, hash_))}
    rows = [row for row in kept_images(store) if row[0] not in done]
    return rows[:limit] if limit else rows
