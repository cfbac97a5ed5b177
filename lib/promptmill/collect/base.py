"""Sources and the collector that writes what they yield into the store.

A :class:`Source` is one way in (`promptmill collect NAME`): its command-line
parameters and the imports it makes. Built-in sources and third-party ones (entry
point group ``promptmill.sources``) are found through the same registry,
:func:`sources`.

A source's reader calls :class:`Collector`'s ``add_*``
methods with each item's position inside the source. Rows are buffered and
committed in batches; each batch is one transaction, so a killed run leaves a
prefix of the source behind and the next run skips what is already there.
Natural keys (source, position) make a second import add nothing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from itertools import chain, islice
from pathlib import Path
from typing import ClassVar

import click

from promptmill.core.images import probe_image
from promptmill.core.runs import Run
from promptmill.core.save import save_caption, save_item_errors, save_tags
from promptmill.core.store import Store
from promptmill.core.text import hash_author, normalize, text_hash

BATCH_ROWS = 20_000
HASH_CHUNK = 1 << 20
# Checkpoint the WAL every ~40 MB instead of every 4 MB: a big import rewrites fewer pages twice.
IMPORT_WAL_AUTOCHECKPOINT = 10_000
# Rows per INSERT statement of the lean path: one statement run per 100 rows instead of one per
# row halves the cost of the insert (fewer statement starts and cursor opens); 2 + 3 * 100
# parameters stay under the 999 that older SQLite builds allow.
LEAN_ROWS_PER_INSERT = 100


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def decode_text(data: bytes) -> str:
    """Text as editors and spreadsheets save it: a UTF-8 or UTF-16 byte order mark is read and
    dropped (Excel's "CSV UTF-8", Notepad's "Unicode"); no mark means UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def folder_sha256(root: str | os.PathLike) -> str:
    """Hash of a folder: every file's relative path, size and modification time.

    Cheap for big image folders; a changed or added file changes it."""
    root = Path(root)
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        lines.append(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


@functools.lru_cache(maxsize=8)
def lean_insert_sql(rows: int) -> str:
    values = ", ".join(f"(?1, ?{3 * i + 3}, ?{3 * i + 4}, ?{3 * i + 5}, ?2)" for i in range(rows))
    return (f"INSERT INTO prompts (source_id, position, text, norm_hash, run_id) VALUES {values} "
            "ON CONFLICT (source_id, position) DO NOTHING")


@dataclass
class SourceInfo:
    kind: str
    uri: str
    sha256: str
    options: dict = field(default_factory=dict)
    bytes: int | None = None
    meta: dict = field(default_factory=dict)


Reader = Callable[["Collector"], int]


class Source(ABC):
    """One way into the database, shown as `promptmill collect NAME`.

    A subclass names itself, lists its click parameters and, built from their parsed
    values, yields what to import: a :class:`SourceInfo` and a reader that feeds a
    :class:`Collector` and returns the number of items it read. The constructor checks
    the options and raises :class:`~promptmill.core.errors.BadInput` before any run starts."""

    name: ClassVar[str]
    params: ClassVar[tuple[click.Parameter, ...]] = ()
    # Remote sources change between runs: read them again even when a run finished them.
    reread_completed: ClassVar[bool] = False

    def __init__(self, **options):
        self.options = options

    @abstractmethod
    def imports(self) -> Iterator[tuple[SourceInfo, Reader]]:
        """(what is imported, how to read it), one pair per source row."""

    def recorded(self) -> dict:
        """Values worked out from the options that the run records beside them (a detected format)."""
        return {}

    def close(self) -> None:
        """Release what the constructor opened (nothing, unless a source says otherwise)."""
        return None


# Built-in sources, as "module:class" like an entry point's value, loaded only when named.
BUILTIN_SOURCES = {
    "text": "promptmill.collect.sources:TextSource",
    "discord": "promptmill.collect.sources:DiscordSource",
    "table": "promptmill.collect.sources:TableSource",
    "imagefolder": "promptmill.collect.sources:ImageFolderSource",
    "zip": "promptmill.collect.sources:ZipSource",
    "hf": "promptmill.collect.sources:HfSource",
    "gelbooru": "promptmill.collect.sources:GelbooruSource",
}
ENTRY_POINT_GROUP = "promptmill.sources"


def sources() -> dict[str, Callable[[], type[Source]]]:
    """Source name -> loader of its class: the built-ins, then installed plugins (which may not
    replace a built-in name)."""
    found = {name: functools.partial(_load, spec) for name, spec in BUILTIN_SOURCES.items()}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, point.load)
    return found


def _load(spec: str) -> type[Source]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class Collector:
    """Buffers rows for one source and commits them in batches."""

    def __init__(self, store: Store, run: Run, info: SourceInfo, batch_rows: int = BATCH_ROWS):
        self.store = store
        self.run = run
        self.info = info
        self.batch_rows = batch_rows
        self._prompts: list[tuple] = []
        self._errors: list[tuple] = []
        self._images: list[tuple] = []
        self._lean: list[tuple] = []  # (positions, texts, hashes) column chunks
        self._lean_rows = 0
        self.incomplete = False
        self.store.execute(f"PRAGMA wal_autocheckpoint = {IMPORT_WAL_AUTOCHECKPOINT}")
        self.source_id, self.completed, self.done_upto = self._open_source()

    def _open_source(self) -> tuple[int, bool, int]:
        options = json.dumps(self.info.options, sort_keys=True)
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO sources (kind, uri, sha256, options, bytes, meta, run_id) VALUES "
                "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, sha256, options) DO NOTHING",
                (self.info.kind, self.info.uri, self.info.sha256, options, self.info.bytes,
                 json.dumps(self.info.meta, sort_keys=True), self.run.id),
            )
            source_id, completed = self.store.execute(
                "SELECT id, completed_run_id FROM sources WHERE kind = ? AND sha256 = ? AND options = ?",
                (self.info.kind, self.info.sha256, options),
            ).fetchone()
        done_upto = -1
        if not completed:
            done_upto = max(
                self.store.scalar(f"SELECT max(position) FROM {table} WHERE source_id = ?", (source_id,)) or -1
                for table in ("prompts", "image_origins", "item_errors")
            )
        return source_id, completed is not None, done_upto

    def seen(self, position: int) -> bool:
        """True when an earlier (killed) run already committed this position."""
        return position <= self.done_upto

    def add_prompt(self, position: int, text: str, locator: str | None = None, author: str | None = None,
                   created_at: str | None = None, meta: dict | None = None):
        norm = normalize(text)
        if not norm:
            self.add_error(position, "empty", "no text after normalisation", locator)
            return
        self._prompts.append((
            self.source_id, position, locator, text, text_hash(norm), hash_author(author),
            created_at, json.dumps(meta, sort_keys=True, default=str) if meta else None, self.run.id,
        ))
        if len(self._prompts) >= self.batch_rows:
            self.flush()

    def add_text_rows(self, positions, texts, hashes):
        """Plain prompts already normalised and hashed by the caller, written with a lean INSERT
        (no locator, author or meta): the fast path for big text files.

        The columns are kept as they come and zipped into rows only while sqlite3 reads them."""
        self._lean.append((positions, texts, hashes))
        self._lean_rows += len(texts)
        if self._lean_rows >= self.batch_rows:
            self.flush()

    def _write_lean(self, conn) -> None:
        """Multi-row INSERTs of (position, text, hash) triples; the source and run ids are
        bound once per statement as ?1 and ?2."""
        flat = chain.from_iterable(chain.from_iterable(zip(positions, texts, hashes)
                                                      for positions, texts, hashes in self._lean))
        ids = (self.source_id, self.run.id)
        statements, rest = divmod(self._lean_rows, LEAN_ROWS_PER_INSERT)
        if statements:
            groups = islice(zip(*[flat] * (3 * LEAN_ROWS_PER_INSERT)), statements)
            conn.executemany(lean_insert_sql(LEAN_ROWS_PER_INSERT), map(ids.__add__, groups))
        if rest:
            conn.execute(lean_insert_sql(rest), ids + tuple(flat))

    def add_error(self, position: int, reason: str, detail: str | None = None, locator: str | None = None):
        self._errors.append((self.source_id, position, locator, reason, (detail or "")[:500]))
        if len(self._errors) >= self.batch_rows:
            self.flush()

    def mark_incomplete(self):
        """The source ended early (a file cut off): finish() leaves it open, so it is read again."""
        self.incomplete = True

    def add_image(self, position: int, data: bytes, locator: str, caption: str | None = None,
                  prompt: str | None = None, meta: dict | None = None, caption_meta: dict | None = None,
                  tags: list[str] | None = None, prompt_position: int | None = None):
        """An image found in the source, with the caption or prompt (and tags) found beside it, or
        linked to the prompt this source holds at prompt_position (a message and its attachment).

        Unreadable bytes are kept too (format NULL), so 02_clean can record why they are dropped."""
        probe = probe_image(data, locator)
        if probe.format is None:
            self.run.add("images unreadable")
        sha256, _ = self.store.blobs.put(data, probe.ext)
        self._images.append((position, sha256, probe, locator, caption, prompt, meta, caption_meta, tags,
                             prompt_position))
        if len(self._images) >= max(1, self.batch_rows // 100):
            self.flush()

    def flush(self):
        if not (self._prompts or self._errors or self._images or self._lean):
            return
        # Lean rows and errors refer only to this collector's own source and run rows, read back
        # from the database above: checking both foreign keys per row costs ~15% of the insert.
        skip_key_checks = not (self._prompts or self._images or self.store.conn.in_transaction)
        if skip_key_checks:
            self.store.execute("PRAGMA foreign_keys = OFF")
        try:
            self._write_batch()
        finally:
            if skip_key_checks:
                self.store.execute("PRAGMA foreign_keys = ON")
        self._prompts, self._errors, self._images, self._lean, self._lean_rows = [], [], [], [], 0

    def _write_batch(self):
        with self.store.transaction() as conn:
            for write, count in ((self._write_lean, self._lean_rows), (self._write_prompts, len(self._prompts))):
                if not count:
                    continue
                before = conn.total_changes
                write(conn)
                added = conn.total_changes - before
                self.run.add("prompts added", added)
                if added < count:
                    self.run.add("prompts already there", count - added)
            if self._errors:
                self.run.add("items rejected", save_item_errors(conn, self.run, self._errors))
            for row in self._images:
                self._write_image(conn, *row)

    def _write_prompts(self, conn) -> None:
        conn.executemany(
            "INSERT INTO prompts (source_id, position, locator, text, norm_hash, author, created_at, meta, "
            "run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_id, position) DO NOTHING",
            self._prompts,
        )

    def _write_image(self, conn, position, sha256, probe, locator, caption, prompt, meta, caption_meta, tags,
                     prompt_position):
        before = conn.total_changes
        conn.execute(
            "INSERT INTO images (sha256, ext, format, width, height, mode, bytes, orientation, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
            (sha256, probe.ext, probe.format, probe.width, probe.height, probe.mode, probe.bytes,
             probe.orientation, self.run.id),
        )
        self.run.add("images added" if conn.total_changes > before else "images already there")
        image_id = conn.execute("SELECT id FROM images WHERE sha256 = ?", (sha256,)).fetchone()[0]
        prompt_id = None
        if prompt and normalize(prompt):
            norm = normalize(prompt)
            conn.execute(
                "INSERT INTO prompts (source_id, position, locator, text, norm_hash, meta, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_id, position) DO NOTHING",
                (self.source_id, position, locator, prompt, text_hash(norm),
                 json.dumps(meta, sort_keys=True, default=str) if meta else None, self.run.id),
            )
            prompt_position = position
        if prompt_position is not None:
            found = conn.execute("SELECT id FROM prompts WHERE source_id = ? AND position = ?",
                                 (self.source_id, prompt_position)).fetchone()
            prompt_id = found[0] if found else None
        conn.execute(
            "INSERT INTO image_origins (image_id, source_id, position, locator, prompt_id, meta, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source_id, position) DO NOTHING",
            (image_id, self.source_id, position, locator, prompt_id,
             json.dumps(meta, sort_keys=True, default=str) if meta else None, self.run.id),
        )
        if caption is not None and caption.strip():
            caption_id = save_caption(conn, self.run, image_id, "imported", caption.strip(),
                                      params=caption_meta or None, source_id=self.source_id,
                                      natural_key=f"imported:{self.source_id}:{position}")
            if caption_id is not None:
                self.run.add("captions added")
                save_tags(conn, caption_id, [(tag, None, None, index) for index, tag in enumerate(tags or ())])

    def finish(self, items: int):
        """Flush and mark the source complete, so the next import of it is skipped at once
        (unless it ended early: then it stays open and the run says so)."""
        self.flush()
        if self.incomplete:
            self.run.add("sources incomplete")
            return
        with self.store.transaction():
            self.store.execute(
                "UPDATE sources SET completed_run_id = ?, items = ? WHERE id = ? AND completed_run_id IS NULL",
                (self.run.id, items, self.source_id),
            )
