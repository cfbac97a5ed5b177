"""Check a folder the way the Hub viewer will read it, before pushing it.

The viewer stops on: a column whose type differs between rows or splits
(null included, and lists that are empty throughout a file), rows with different keys, a ``file_name`` that is absolute,
climbs out with ``..`` or names no file, mixed metadata formats, parquet
shards with different schemas, and folders of 10,000 files or more.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path, PurePosixPath

from promptmill.release.folder import MARKER, STAGING, is_own, manifest_sha256, read_marker, sha256_file

MAX_FILES_PER_FOLDER = 10_000
METADATA_NAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        kinds = {json_type(v) for v in value}
        return f"list<{kinds.pop() if len(kinds) == 1 else 'mixed' if kinds else 'empty'}>"
    return {int: "int", float: "float", str: "string", dict: "object"}[type(value)]


def _bad_path(name: str) -> str | None:
    if not name:
        return "is empty"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is absolute"
    if "\\" in name:
        return "uses backslashes"
    if ".." in PurePosixPath(name).parts:
        return "climbs out with '..'"
    return None


class _Columns:
    """The keys and types seen so far, across every metadata file."""

    def __init__(self):
        self.keys: tuple[str, ...] | None = None
        self.types: dict[str, str] = {}
        self.where: dict[str, str] = {}

    def check(self, row: dict, where: str) -> list[str]:
        problems = []
        keys = tuple(sorted(row))
        if self.keys is None:
            self.keys = keys
        elif keys != self.keys:
            missing, extra = set(self.keys) - set(keys), set(keys) - set(self.keys)
            problems.append(f"{where}: keys differ from the first row (missing {sorted(missing)}, extra {sorted(extra)})")
        for key, value in row.items():
            kind = json_type(value)
            if kind == "null":
                problems.append(f"{where}: {key} is null (a column that is null somewhere has no single type)")
                continue
            if kind == "list<empty>":
                continue
            known = self.types.get(key)
            if known is None or known == "list<empty>":
                self.types[key], self.where[key] = kind, where
            elif known != kind:
                problems.append(f"{where}: {key} is {kind} but {known} at {self.where[key]}")
        return problems


def check_manifest(root: Path, files: list[Path]) -> tuple[list[str], list[str]]:
    """(problems, files not in the release) against the marker an export left in ROOT."""
    marker = read_marker(root)
    if not (root / MARKER).exists():
        return [], []
    manifest = marker.get("files")
    if not isinstance(manifest, dict) or manifest_sha256(manifest) != marker.get("manifest_sha256"):
        return [f"{MARKER} is damaged or its file list does not match its manifest hash; export again"], []
    present = {p.relative_to(root).as_posix() for p in files}
    problems = [f"{name}: in the release but missing" for name in sorted(manifest.keys() - present)]
    problems += [f"{name}: changed since the export (sha256 differs)" for name in sorted(manifest.keys() & present)
                 if sha256_file(root / name) != manifest[name]]
    return problems, sorted(present - manifest.keys())


def check_folder(root: str | Path, max_problems: int = 50) -> tuple[list[str], int, list[str]]:
    """(problems, files checked, files not in the release) for a dataset folder."""
    root = Path(root)
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not is_own(p.relative_to(root).as_posix())]
    problems, extra = check_manifest(root, files)
    if (root / STAGING).exists():
        problems.insert(0, f"{STAGING}/ exists: an export did not finish; run it again")
    per_folder = Counter(p.parent for p in files)
    for folder, n in sorted(per_folder.items()):
        if n >= MAX_FILES_PER_FOLDER:
            problems.append(f"{folder.relative_to(root).as_posix() or '.'}/ has {n:,} files (the Hub allows fewer "
                            f"than {MAX_FILES_PER_FOLDER:,} per folder)")
    for path in sorted(p for p in root.rglob("*") if p.is_symlink()):
        problems.append(f"{path.relative_to(root).as_posix()}: symbolic links are not uploaded")
    metadata = [p for p in files if p.name in METADATA_NAMES]
    if len({p.suffix for p in metadata}) > 1:
        problems.append(f"metadata files of several formats: {sorted({p.name for p in metadata})}")
    columns = _Columns()
    for path in metadata:
        relative = path.relative_to(root).as_posix()
        if path.suffix != ".jsonl":
            continue
        empty_lists_only: dict[str, bool] = {}
        with open(path, encoding="utf-8") as fh:
            for line_number, line in enumerate(fh, 1):
                where = f"{relative}:{line_number}"
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(f"{where}: not JSON ({exc.msg})")
                    continue
                if not isinstance(row, dict):
                    problems.append(f"{where}: not a JSON object")
                    continue
                problems += columns.check(row, where)
                for key, value in row.items():
                    if isinstance(value, list):
                        empty_lists_only[key] = empty_lists_only.get(key, True) and not value
                name = row.get("file_name")
                if not isinstance(name, str):
                    problems.append(f"{where}: file_name is missing or not text")
                elif why := _bad_path(name):
                    problems.append(f"{where}: file_name {name!r} {why}")
                elif not (path.parent / name).is_file():
                    problems.append(f"{where}: file_name {name!r} names no file")
                if len(problems) >= max_problems:
                    return problems, len(files), extra
        problems += [f"{relative}: {key} is an empty list in every row (no element type to infer)"
                     for key, only in sorted(empty_lists_only.items()) if only]
    problems += _check_parquet_schemas(root, [p for p in files if p.suffix == ".parquet"])
    return problems, len(files), extra


def _check_parquet_schemas(root: Path, shards: list[Path]) -> list[str]:
    if not shards:
        return []
    import pyarrow.parquet as pq

    problems = []
    first = None
    for path in shards:
        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is the problem to report
            problems.append(f"{path.relative_to(root).as_posix()}: unreadable parquet ({exc})")
            continue
        if first is None:
            first = (path, schema)
        elif not schema.equals(first[1], check_metadata=False):
            problems.append(f"{path.relative_to(root).as_posix()}: schema differs from "
                            f"{first[0].relative_to(root).as_posix()}")
    return problems
