"""Rows of a Hugging Face dataset (a Hub id, a local data folder or a ``save_to_disk`` folder).

Columns are mapped by name: a prompt column, an image column (read as raw bytes,
never decoded here) and a caption text column. ``datasets`` is imported only
when this runs.
"""

from __future__ import annotations

from pathlib import Path

from promptmill.collect.base import Collector, SourceInfo, file_sha256, folder_sha256
from promptmill.collect.imagefolder import MAX_IMAGE_BYTES
from promptmill.core.progress import bar
from promptmill.core.text import sha256_hex

BATCH_ROWS = 1_000


def is_saved_dataset(path: Path) -> bool:
    """A folder written by Dataset.save_to_disk (or DatasetDict.save_to_disk)."""
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())


def load(name: str, split: str, config: str | None, streaming: bool):
    import datasets

    path = Path(name)
    if is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise KeyError(f"no split {split!r} in {name} (it has: {', '.join(loaded)})")
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded
    return datasets.load_dataset(name, config, split=split, streaming=streaming)


def source_info(name: str, split: str, config: str | None, columns: dict) -> SourceInfo:
    path = Path(name)
    if path.is_dir():
        digest, size = folder_sha256(path), sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        digest, size = file_sha256(path), path.stat().st_size
    else:
        digest, size = sha256_hex(f"hub:{name}"), None
    return SourceInfo(kind="hf", uri=name, sha256=digest, bytes=size,
                      options={"split": split, "config": config, **columns})


def allowed_roots(name: str) -> list[Path]:
    """Where an image `path` of the dataset may point: its own folder, or for a Hub id the caches
    the datasets library downloads into. A row naming /etc/passwd or a token file is refused."""
    path = Path(name)
    if path.exists():
        return [(path if path.is_dir() else path.parent).resolve()]
    import datasets
    from huggingface_hub import constants

    return [Path(datasets.config.HF_DATASETS_CACHE).resolve(), Path(constants.HF_HUB_CACHE).resolve()]


def image_bytes(value, roots: list[Path]) -> tuple[bytes | None, str | None]:
    """(bytes, None) of an undecoded datasets Image value ({"bytes", "path"}) or of a raw bytes column,
    else (None, why): a path outside ROOTS, or anything over MAX_IMAGE_BYTES, is never read."""
    if isinstance(value, dict) and not value.get("bytes") and value.get("path"):
        return _read_inside(str(value["path"]), roots)
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)) or not data:
        return None, "no bytes"
    if len(data) > MAX_IMAGE_BYTES:
        return None, f"{len(data):,} bytes, over the limit of {MAX_IMAGE_BYTES:,}"
    return bytes(data), None


def _read_inside(name: str, roots: list[Path]) -> tuple[bytes | None, str | None]:
    """A relative path is read from the dataset's own folder (the first root)."""
    path = Path(name)
    if roots and not path.is_absolute():
        path = roots[0] / path
    path = path.resolve()
    if not any(path.is_relative_to(root) for root in roots):
        return None, f"path {name!r} is outside the dataset's folder"
    if not path.is_file():
        return None, f"no file at {name!r}"
    with open(path, "rb") as fh:
        data = fh.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        return None, f"{name!r} is over the limit of {MAX_IMAGE_BYTES:,} bytes"
    return data, None


def collect_dataset(collector: Collector, dataset, prompt_column: str | None, image_column: str | None,
                    text_column: str | None, roots: list[Path] = ()) -> int:
    """Add each row's prompt and/or image with caption; return the rows read."""
    import datasets

    names = dataset.column_names or list(dataset.features or {})
    missing = [c for c in (prompt_column, image_column, text_column) if c and c not in names]
    if missing:
        raise KeyError(f"no column {', '.join(map(repr, missing))} (it has: {', '.join(names)})")
    if image_column and isinstance((dataset.features or {}).get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    position = 0
    with bar(getattr(dataset, "num_rows", None), "hf", "row") as progress:
        for batch in dataset.iter(batch_size=BATCH_ROWS):
            rows = len(next(iter(batch.values()))) if batch else 0
            for index in range(rows):
                position += 1
                if not collector.seen(position):
                    add_row(collector, position, {k: v[index] for k, v in batch.items()},
                            prompt_column, image_column, text_column, roots)
            progress.update(rows)
    return position


def add_row(collector: Collector, position: int, row: dict, prompt_column, image_column, text_column,
            roots: list[Path] = ()):
    prompt = row.get(prompt_column) if prompt_column else None
    prompt = str(prompt).strip() if prompt not in (None, "") else None
    caption = row.get(text_column) if text_column else None
    caption = str(caption).strip() if caption not in (None, "") else None
    if image_column:
        data, problem = image_bytes(row.get(image_column), list(roots))
        if data is None:
            collector.add_error(position, "no image", f"column {image_column!r}: {problem}")
            return
        image_value = row.get(image_column)
        locator = (image_value.get("path") if isinstance(image_value, dict) else None) or f"row {position}"
        collector.add_image(position, data, str(locator), caption=caption, prompt=prompt)
    elif prompt:
        collector.add_prompt(position, prompt, locator=f"row {position}")
    else:
        collector.add_error(position, "empty", f"no text in {prompt_column!r}")
