"""Prompts from a column of a table: CSV, TSV, JSON lines or Parquet, read in batches.

Presets name the layouts of well-known prompt datasets:
- ``diffusiondb``: DiffusionDB's ``metadata.parquet`` (``prompt``; the generation
  settings and NSFW scores become prompt meta under the common keys of
  ``promptmill.collect.meta``, sampler ids as names, ``user_name`` the hashed author
  except ``deleted_account``, ``image_name`` the locator, linked to the images of
  DiffusionDB parts collected before or after).

Text files may start with a UTF-8 byte order mark (Excel's "CSV UTF-8"); it is dropped.
- ``gustavosta``: Gustavosta/Stable-Diffusion-Prompts (a single ``Prompt`` column).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from promptmill.collect import diffusiondb
from promptmill.collect.base import Collector, SourceInfo, file_sha256
from promptmill.collect.meta import normalize_meta
from promptmill.core.progress import bar

BATCH_ROWS = 50_000
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Layout:
    column: str
    meta_columns: tuple[str, ...] = ()
    author_column: str | None = None
    time_column: str | None = None
    locator_column: str | None = None
    value_maps: dict = field(default_factory=dict)
    anonymous_authors: tuple[str, ...] = ()  # author values that stand for no one in particular
    links_diffusiondb_parts: bool = False


PRESETS = {
    "diffusiondb": Layout(
        column="prompt",
        meta_columns=("seed", "step", "cfg", "sampler", "width", "height", "image_nsfw", "prompt_nsfw", "part_id"),
        author_column="user_name", time_column="timestamp", locator_column="image_name",
        value_maps={"sampler": diffusiondb.SAMPLERS}, anonymous_authors=(diffusiondb.DELETED_ACCOUNT,),
        links_diffusiondb_parts=True,
    ),
    "gustavosta": Layout(column="Prompt"),
}


class MissingColumn(ValueError):
    """The table has no column of that name."""


def table_format(path: Path, given: str | None) -> str:
    suffix = "".join(path.suffixes[-1:]).lower()
    fmt = given or FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(f"cannot tell the format of {path.name}; pass --format csv|tsv|jsonl|parquet")
    return fmt


def layout_columns(layout: Layout) -> list[str]:
    return [c for c in (layout.column, *layout.meta_columns, layout.author_column, layout.time_column,
                        layout.locator_column) if c]


def _require(columns, layout: Layout, path: Path):
    if layout.column not in columns:
        raise MissingColumn(f"{path.name} has no column {layout.column!r} (it has: {', '.join(map(str, columns))[:200]})")


def check_columns(path: Path, fmt: str, layout: Layout):
    """Raise MissingColumn before anything is written when the header lacks the prompt column."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        _require(pq.ParquetFile(path).schema_arrow.names, layout, path)
    elif fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            header = next(csv.reader(fh, delimiter="\t" if fmt == "tsv" else ","), None)
        if header is not None:
            _require(header, layout, path)


def parquet_batches(path: Path, layout: Layout) -> Iterator[list[dict]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    _require(names, layout, path)
    wanted = [c for c in layout_columns(layout) if c in names]
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
        yield batch.to_pylist()


def csv_batches(path: Path, layout: Layout, delimiter: str) -> Iterator[list[dict]]:
    """Rows in batches; a bad row (undecodable bytes, broken quoting) comes as {"__error__": reason}."""
    csv.field_size_limit(min(sys.maxsize, 1 << 24))
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        _require(header, layout, path)
        batch = []
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if "field limit" in str(exc):  # inside an endless quoted field: what follows is not rows
                    batch.append({"__error__": ("malformed row", f"{exc}; the rest of the file is not read")})
                    break
                batch.append({"__error__": ("malformed row", str(exc))})
                continue
            batch.append(dict(zip(header, values)))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        yield batch


def jsonl_batches(path: Path) -> Iterator[list[dict]]:
    with open(path, "rb") as fh:
        batch = []
        for line in fh:
            if not line.strip():
                batch.append({"__error__": ("blank line", "")})
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                row = {"__error__": ("malformed JSON", str(exc))}
            batch.append(row if isinstance(row, dict) else {"__error__": ("not a JSON object", "")})
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        yield batch


def row_batches(path: Path, fmt: str, layout: Layout) -> Iterator[list[dict]]:
    if fmt == "parquet":
        return parquet_batches(path, layout)
    if fmt == "jsonl":
        return jsonl_batches(path)
    return csv_batches(path, layout, "\t" if fmt == "tsv" else ",")


def _plain(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def as_text(value) -> tuple[str | None, str | None]:
    """(text, None) of a cell, or (None, what it holds) when it is not text: a parquet column of
    bytes, lists or structs is never stored as a Python repr. Numbers read as their digits; NaN is empty."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return None, "a boolean"
    if isinstance(value, float) and math.isnan(value):
        return None, None
    if isinstance(value, (int, float)):
        return str(value), None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8"), None
        except UnicodeDecodeError:
            return None, "bytes that are not UTF-8 text"
    return None, f"a {type(value).__name__}, not text"


def add_row(collector: Collector, position: int, row: dict, layout: Layout):
    if "__error__" in row:
        reason, detail = row["__error__"]
        if reason == "blank line":
            collector.run.add("blank lines skipped")
        else:
            collector.add_error(position, reason, detail)
        return
    if layout.column not in row:
        collector.add_error(position, "missing column", layout.column)
        return
    text, problem = as_text(row[layout.column])
    if problem:
        collector.add_error(position, "not text", f"{layout.column!r} holds {problem}")
        return
    if text is None or not text.replace("\x00", "").strip():
        collector.add_error(position, "empty", f"no text in {layout.column!r}")
        return
    text = str(text)  # as found: trimming is 02_clean's job
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        collector.add_error(position, "not utf-8", f"undecodable bytes in {layout.column!r}")
        return
    meta = {}
    for column in layout.meta_columns:
        value = row.get(column)
        if value is not None and value != "":
            meta[column] = layout.value_maps.get(column, {}).get(value, _plain(value))
    author = row.get(layout.author_column) if layout.author_column else None
    if author in layout.anonymous_authors:
        author = None
    created = _plain(row.get(layout.time_column)) if layout.time_column else None
    locator = row.get(layout.locator_column) if layout.locator_column else None
    collector.add_prompt(position, text, locator=None if locator is None else str(locator),
                         author=None if author in (None, "") else str(author),
                         created_at=None if created in (None, "") else str(created),
                         meta=normalize_meta(meta) or None)


def collect_table(collector: Collector, path: Path, fmt: str, layout: Layout) -> int:
    """Add every row's prompt; return the number of rows read. Row 1 is the first data row."""
    position = 0
    with bar(None, f"table {path.name}", "row") as progress:
        for batch in row_batches(path, fmt, layout):
            start = position
            position += len(batch)
            progress.update(len(batch))
            if position <= collector.done_upto:
                continue
            for offset, row in enumerate(batch, start + 1):
                if not collector.seen(offset):
                    add_row(collector, offset, row, layout)
    if layout.links_diffusiondb_parts:
        collector.flush()
        diffusiondb.link_tables_to_parts(collector.store, collector.run)
    return position


def source_info(path: Path, fmt: str, layout: Layout, preset: str | None) -> SourceInfo:
    options = {"format": fmt, "column": layout.column}
    if preset:
        options["preset"] = preset
    if layout.meta_columns and not preset:
        options["meta_columns"] = list(layout.meta_columns)
    return SourceInfo(kind="table", uri=str(path), sha256=file_sha256(path), options=options,
                      bytes=os.path.getsize(path))
