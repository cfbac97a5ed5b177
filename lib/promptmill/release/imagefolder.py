"""A Hugging Face imagefolder: ``<split>/`` folders of images, each with one ``metadata.jsonl``.

Images are copied byte for byte from the blob store (their sha256 is their
blob name, so the manifest costs no second read). A split with more images
than the Hub allows in one folder is spread over numbered sub-folders;
``file_name`` is always relative to the split's metadata file.
"""

from __future__ import annotations

import json
from collections import Counter

from promptmill.core.progress import bar
from promptmill.core.store import Store
from promptmill.release.base import ExportFolder, metadata_row, split_sort_key, unique_stems

IMAGES_PER_FOLDER = 9_000  # the Hub refuses folders of 10,000 files or more


def image_paths(items: list[dict]) -> list[str]:
    """Each item's path inside its split folder: flat, or in sub-folders for big splits."""
    stems = unique_stems(items)
    sizes = Counter(item["split"] for item in items)
    seen: Counter = Counter()
    paths = []
    for item, stem in zip(items, stems):
        index = seen[item["split"]]
        seen[item["split"]] += 1
        name = f"{stem}.{item['ext']}"
        paths.append(f"{index // IMAGES_PER_FOLDER:03d}/{name}" if sizes[item["split"]] > IMAGES_PER_FOLDER else name)
    return paths


def write_imagefolder(store: Store, folder: ExportFolder, items: list[dict]) -> list[dict]:
    """Copy the images and write the metadata; return the release items."""
    lines: dict[str, list[str]] = {}
    released = []
    with bar(len(items), "imagefolder", "img") as progress:
        for number, (item, path) in enumerate(zip(items, image_paths(items)), 1):
            split = item["split"]
            folder.copy_blob(f"{split}/{path}", store.blobs.path_for(item["sha256"], item["ext"]), item["sha256"])
            row = {"file_name": path, **metadata_row(item, number)}
            lines.setdefault(split, []).append(json.dumps(row, ensure_ascii=False))
            released.append({"item_type": "image", "item_id": item["image_id"], "split": split,
                             "file_name": f"{split}/{path}", "sha256": item["sha256"], "text": item["text"]})
            progress.update()
    for split in sorted(lines, key=split_sort_key):
        folder.write_text(f"{split}/metadata.jsonl", "\n".join(lines[split]) + "\n")
    return released
