"""A Hugging Face imagefolder: ``<split>/`` folders of images, each with one ``metadata.jsonl``.

A split with more images than the Hub allows in one folder is spread over
numbered sub-folders; ``file_name`` is always relative to the split's
metadata file.
"""

from __future__ import annotations

import json
from collections import Counter

from promptmill.core.progress import bar
from promptmill.release.images import DatasetsImageExporter, normalize_option, split_option, text_from_option
from promptmill.release.items import metadata_row, split_sort_key, unique_stems

IMAGES_PER_FOLDER = 9_000  # the Hub refuses folders of 10,000 files or more


def image_stems(items: list[dict]) -> list[str]:
    """Each item's path inside its split folder, without extension: flat, or in sub-folders for big splits."""
    stems = unique_stems(items)
    sizes = Counter(item["split"] for item in items)
    seen: Counter = Counter()
    paths = []
    for item, stem in zip(items, stems):
        index = seen[item["split"]]
        seen[item["split"]] += 1
        paths.append(f"{index // IMAGES_PER_FOLDER:03d}/{stem}" if sizes[item["split"]] > IMAGES_PER_FOLDER else stem)
    return paths


class ImagefolderExporter(DatasetsImageExporter):
    """Images in OUT/<split>/ with one metadata.jsonl per split (Hugging Face imagefolder)."""

    name = "imagefolder"
    tasks = ("text-to-image", "image-to-text")
    options = (text_from_option("prompt"), split_option, normalize_option(False))

    def write(self, store, folder):
        items = self.select(store)
        lines: dict[str, list[str]] = {}
        with bar(len(items), "imagefolder", "img") as progress:
            for number, (item, stem) in enumerate(zip(items, image_stems(items)), 1):
                split = item["split"]
                relative, written = self.place(store, folder, f"{split}/{stem}", item)
                row = {"file_name": relative.split("/", 1)[1],
                       **metadata_row({**item, "width": written.width, "height": written.height}, number)}
                lines.setdefault(split, []).append(json.dumps(row, ensure_ascii=False))
                yield self.released(item, split, relative, written, item["text"])
                progress.update()
        for split in sorted(lines, key=split_sort_key):
            folder.write_text(f"{split}/metadata.jsonl", "\n".join(lines[split]) + "\n")

    def data_files(self, splits):
        return {split: [f"{split}/**"] for split in splits}
