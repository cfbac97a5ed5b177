"""Images with their captions from a folder (or a ZIP, see ``archive``).

Two layouts: a Hugging Face imagefolder (``metadata.jsonl`` or ``metadata.csv``
with a relative ``file_name`` and a text column, optionally in split folders
``train/``, ``validation/``, ``test/``) — which is also what 09_upload writes,
so releases can be merged back — or plain images with sidecar ``.txt`` /
``.caption`` files (the kohya layout, and ``x.jpg.txt`` as gallery-dl writes them),
or a DiffusionDB image part (see ``diffusiondb``). Text files may carry a UTF-8 or
UTF-16 byte order mark. Positions are the order of the sorted
member names, so a re-run or a resumed run sees the same numbering.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from promptmill.collect import diffusiondb
from promptmill.collect.base import Collector, SourceInfo, decode_text, folder_sha256
from promptmill.collect.meta import normalize_meta
from promptmill.core.images import is_image_name
from promptmill.core.progress import bar

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
SPLIT_FOLDERS = ("train", "validation", "test")
SIDECAR_SUFFIXES = (".txt", ".caption")
MAX_IMAGE_BYTES = 256 * 1024 * 1024
MAX_CAPTION_BYTES = 64 * 1024  # a longer sidecar or metadata caption is an item error, not 200 MB of text
TEXT_AS = ("caption", "prompt", "both")


class FolderTree:
    """Regular files under a folder, by relative POSIX name. Symlinks are reported, not followed."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.problems: list[tuple[str, str, str]] = []  # (name, reason, detail)
        self.names: list[str] = []
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_symlink():
                self.problems.append((name, "symlink", "symbolic links are not followed"))
            elif path.is_file() and hidden(name):
                if is_image_name(name):
                    self.problems.append((name, "hidden file", "names starting with a dot are skipped"))
            elif path.is_file():
                self.names.append(name)
        self._names = set(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def read(self, name: str, limit: int = MAX_IMAGE_BYTES) -> bytes:
        with open(self.root / name, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"over {limit} bytes")
        return data


def hidden(name: str) -> bool:
    """Dot files and anything in a dot folder (.git, .cache): skipped, and reported when they look like images."""
    return any(part.startswith(".") for part in PurePosixPath(name).parts)


def printable(name: str) -> str:
    """A file name as it can be stored: bytes that are not UTF-8 shown as \\x escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _text(tree, name: str) -> str:
    return decode_text(tree.read(name, MAX_CAPTION_BYTES)).strip()


def _caption(text) -> tuple[str | None, tuple[str, str] | None]:
    """(caption, None), or (None, problem) when it is over MAX_CAPTION_BYTES."""
    if text is None:
        return None, None
    text = str(text)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CAPTION_BYTES:
        return None, ("caption too long", f"over {MAX_CAPTION_BYTES:,} bytes")
    return text, None


def metadata_files(tree) -> list[str]:
    """metadata.jsonl/csv at the top or in split folders (one extension per dataset, jsonl first)."""
    for file_name in METADATA_NAMES:
        found = [n for n in tree.names if PurePosixPath(n).name == file_name
                 and (PurePosixPath(n).parent.as_posix() in (".", *SPLIT_FOLDERS))]
        if found:
            return found
    return []


def metadata_rows(tree, name: str) -> Iterator[tuple[dict | None, str | None]]:
    """(row, problem) per line of a metadata file."""
    text = decode_text(tree.read(name))
    if name.endswith(".csv"):
        for row in csv.DictReader(io.StringIO(text)):
            yield row, None
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            yield None, f"malformed JSON: {exc}"
            continue
        yield (row, None) if isinstance(row, dict) else (None, "not a JSON object")


def safe_member(folder: str, file_name: str) -> str | None:
    """The member name file_name points at inside the tree, or None if it escapes it."""
    if not file_name or file_name.startswith(("/", "\\")) or ":" in PurePosixPath(file_name).parts[0]:
        return None
    parts = [p for p in PurePosixPath(folder, file_name.replace("\\", "/")).parts if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/".join(parts)


def sidecar_of(tree, name: str) -> str | None:
    """x.txt or x.caption beside x.jpg, else x.jpg.txt / x.jpg.caption (gallery-dl)."""
    stem = str(PurePosixPath(name).with_suffix(""))
    return next((c for c in (*(stem + s for s in SIDECAR_SUFFIXES), *(name + s for s in SIDECAR_SUFFIXES))
                 if c in tree), None)


def part_items(tree) -> Iterator[dict]:
    """A DiffusionDB image part: each image with its prompt and settings from part-NNNNNN.json."""
    try:
        entries = diffusiondb.part_entries(tree, decode_text)
    except (ValueError, OSError) as exc:
        yield {"name": diffusiondb.part_files(tree.names)[0], "problem": ("bad part json", str(exc))}
        return
    for name in tree.names:
        if not is_image_name(name):
            continue
        entry = entries.get(name)
        if entry is None:
            yield {"name": name, "text": None, "meta": {"diffusiondb_part": True}}
            continue
        meta = {**diffusiondb.entry_meta(name, entry), "diffusiondb_part": True}
        yield {"name": name, "text": entry.get("p"), "meta": meta, "text_as": "prompt"}


def items(tree, text_column: str) -> Iterator[dict]:
    """Every image of the tree with its text, or a problem, in a stable order."""
    for name, reason, detail in tree.problems:
        yield {"name": name, "problem": (reason, detail)}
    if diffusiondb.part_files(tree.names):
        yield from part_items(tree)
        return
    metadata = metadata_files(tree)
    if metadata:
        for meta_name in metadata:
            folder = PurePosixPath(meta_name).parent.as_posix()
            split = folder if folder in SPLIT_FOLDERS else None
            for row_number, (row, problem) in enumerate(metadata_rows(tree, meta_name), 1):
                locator = f"{meta_name}#{row_number}"
                if problem:
                    yield {"name": locator, "problem": ("bad metadata row", problem)}
                    continue
                if "file_name" not in row:
                    yield {"name": locator, "problem": ("missing column", "no file_name column; it has: "
                                                        + ", ".join(map(str, row))[:200])}
                    continue
                member = safe_member(folder, str(row.get("file_name") or ""))
                if member is None:
                    yield {"name": locator, "problem": ("path outside folder", str(row.get("file_name")))}
                elif member not in tree:
                    yield {"name": locator, "problem": ("missing file", member)}
                else:
                    text, too_long = _caption(row.get(text_column))
                    if too_long:
                        yield {"name": locator, "problem": too_long}
                        continue
                    extra = {k: v for k, v in row.items() if k not in ("file_name", text_column)}
                    if split:
                        extra["split"] = split
                    yield {"name": member, "text": text, "meta": extra}
        return
    for name in tree.names:
        if not is_image_name(name):
            continue
        sidecar = sidecar_of(tree, name)
        try:
            text = _text(tree, sidecar) if sidecar else None
        except ValueError as exc:
            yield {"name": name, "problem": ("caption too long", f"{sidecar}: {exc}")}
            continue
        yield {"name": name, "text": text, "meta": {}}


def collect_tree(collector: Collector, tree, text_column: str = "text", text_as: str = "caption",
                 label: str = "images") -> int:
    """Store every image of the tree with its caption and/or prompt; return the items seen."""
    run = collector.run
    position, parts = 0, False
    with bar(None, label, "img") as progress:
        for position, item in enumerate(items(tree, text_column), 1):
            progress.update()
            if collector.seen(position):
                continue
            if "problem" in item:
                reason, detail = item["problem"]
                collector.add_error(position, reason, printable(detail), printable(item["name"]))
                continue
            try:
                data = tree.read(item["name"])
            except Exception as exc:  # noqa: BLE001 - a damaged file or member is this item's problem, not the run's
                collector.add_error(position, "unreadable file", printable(f"{type(exc).__name__}: {exc}"),
                                    printable(item["name"]))
                continue
            text = item["text"]
            used_as = text_as if text_as == "both" else item.get("text_as", text_as)
            parts = parts or "diffusiondb_part" in item["meta"]
            collector.add_image(
                position, data, printable(item["name"]),
                caption=text if used_as in ("caption", "both") else None,
                prompt=text if used_as in ("prompt", "both") else None,
                meta=normalize_meta(item["meta"]) or None,
            )
            if text is None:
                run.add("images without text")
    if parts:
        collector.flush()
        diffusiondb.link_tables_to_parts(collector.store, run)
    return position


def source_info(root: Path, text_column: str, text_as: str) -> SourceInfo:
    return SourceInfo(kind="imagefolder", uri=str(root), sha256=folder_sha256(root),
                      options={"text_column": text_column, "text_as": text_as},
                      bytes=sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()))


def folder_tree(root: Path) -> FolderTree:
    if not os.path.isdir(root):
        raise NotADirectoryError(root)
    return FolderTree(root)
