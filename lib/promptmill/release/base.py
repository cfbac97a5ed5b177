"""The Exporter interface, the registry of exporters, and what every export shares.

An exporter names its command (``promptmill upload NAME``), its own options,
the files it writes per split (the card's ``configs``), its card task
categories and how its consumer loads it, and writes its items into an
:class:`~promptmill.release.folder.ExportFolder`. Everything else is shared
(:func:`export`): the lock on OUT, the staging folder, the card, the
manifest, and one ``releases`` row per (name, format, manifest hash), so
exporting the same data again rewrites the same bytes and adds no row.

Third-party exporters register a subclass under the entry point group
``promptmill.exporters``. A subclass without a name or card tasks is refused
when it is defined, so a card can never lack them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

from promptmill.core.errors import BadInput
from promptmill.core.progress import bar
from promptmill.core.runs import Run, code_version, now
from promptmill.core.store import Store
from promptmill.release.folder import (
    ExportFolder,
    locked,
    manifest_sha256,
    read_marker,
    unchanged_since_export,
)

ENTRY_POINT_GROUP = "promptmill.exporters"
STEP = "09_upload"
RESERVED = {"card", "check", "diff", "push"}  # upload's own commands
BATCH_ROWS = 10_000
RECORD_ROWS = 100_000


class Exporter(ABC):
    """One release format. Subclasses set the class attributes and implement the three methods.

    ``write`` yields one dict per released item: item_type, item_id, split,
    file_name, and optionally sha256 (of the file, or of the text), text,
    source_kind, tags, width, height and no_text (True when the item had no
    text to write); the card and the ``release_items`` rows are made from them.
    """

    name: ClassVar[str]                      # the command: promptmill upload NAME
    tasks: ClassVar[tuple[str, ...]]         # the card's task_categories
    item_type: ClassVar[str] = "image"       # 'image' or 'prompt'
    options: ClassVar[tuple] = ()            # click.option(...) decorators of its own options
    charts: ClassVar[bool] = True            # card charts in card/ (kohya reads every folder: no)
    record_text: ClassVar[bool] = True       # False: release_items keep the text's sha256, not the text
    needs: ClassVar[str] = ""                # what to run first when there is nothing to export

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls):
            return
        name, tasks = getattr(cls, "name", None), getattr(cls, "tasks", None)
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name) or name in RESERVED:
            raise TypeError(f"{cls.__qualname__}.name must be a lower-case command name other than "
                            f"{sorted(RESERVED)}")
        if not tasks or isinstance(tasks, str) or not all(isinstance(t, str) and t for t in tasks):
            raise TypeError(f"{cls.__qualname__}.tasks must list the card's task categories")

    def __init__(self, params: dict):
        self.params = params

    def check(self) -> None:
        """Refuse unusable options (raise BadInput) before the database is opened."""
        return None

    @abstractmethod
    def write(self, store: Store, folder: ExportFolder) -> Iterator[dict]:
        """Write the release's files into FOLDER; yield each released item."""

    @abstractmethod
    def data_files(self, splits: list[str]) -> dict[str, list[str]]:
        """split -> path patterns of its data (the card's ``configs``, what the Hub viewer shows)."""

    @abstractmethod
    def how_to_load(self, out: Path) -> str:
        """Markdown telling how the consumer loads the release, exact command included."""

    def card_sections(self) -> list[str]:
        """Extra markdown lines for the card (columns, conventions)."""
        return []

    def dataset_info(self, folder: ExportFolder, splits: dict[str, int]) -> dict:
        """Extra ``dataset_info`` for the card header, read from the written files."""
        return {}


def builtin_exporters() -> list[type[Exporter]]:
    from promptmill.release.imagefolder import ImagefolderExporter
    from promptmill.release.kohya import KohyaExporter
    from promptmill.release.parquet import ParquetExporter
    from promptmill.release.text import PairsExporter, PromptsExporter

    return [ImagefolderExporter, ParquetExporter, KohyaExporter, PairsExporter, PromptsExporter]


def exporters() -> dict[str, type[Exporter]]:
    """name -> exporter class: the built-in ones, then those of installed packages (entry points).

    A plugin that fails to load is named on stderr and left out; it cannot hide the others."""
    found = {cls.name: cls for cls in builtin_exporters()}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never fatal
            print(f"warning: exporter plugin {point.name!r} failed to load: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Exporter)) or inspect.isabstract(cls):
            print(f"warning: exporter plugin {point.name!r} is not an Exporter subclass", file=sys.stderr)
        elif cls.name not in found:
            found[cls.name] = cls
    return found


def exporter_for(fmt: str) -> type[Exporter]:
    cls = exporters().get(fmt)
    if cls is None:
        raise BadInput(f"no exporter {fmt!r} is installed")
    return cls


# --- the items of an export, on their way to release_items ---

class ExportScope:
    """The released items of the export under way, in a temporary table of this connection.

    The card's queries read their ids from it and :func:`record_release` copies
    it into ``release_items``, so no export holds all its items in memory."""

    TABLE = "temp.export_items"

    def __init__(self, store: Store, record_text: bool):
        self.conn = store.conn
        self.record_text = record_text
        self.pending: list[tuple] = []
        self.conn.execute(f"DROP TABLE IF EXISTS {self.TABLE}")  # scratch space of this connection, not a fact
        self.conn.execute("CREATE TEMP TABLE export_items (item_type TEXT, item_id INTEGER, split TEXT, "
                          "file_name TEXT, sha256 TEXT, text TEXT)")

    def add(self, item: dict):
        text = item.get("text")
        sha256 = item.get("sha256")
        if not self.record_text:
            sha256 = sha256 or hashlib.sha256((text or "").encode("utf-8")).hexdigest()
            text = None
        self.pending.append((item["item_type"], item["item_id"], item["split"], item["file_name"], sha256, text))
        if len(self.pending) >= BATCH_ROWS:
            self.flush()

    def flush(self):
        if self.pending:
            self.conn.execute("BEGIN")  # the temp table only: no lock on the database
            self.conn.executemany(f"INSERT INTO {self.TABLE} VALUES (?, ?, ?, ?, ?, ?)", self.pending)
            self.conn.execute("COMMIT")
            self.pending = []

    @property
    def ids_sql(self) -> str:
        return f"SELECT item_id FROM {self.TABLE}"


# --- releases rows ---

@dataclass
class Recorded:
    release_id: int
    manifest_sha256: str
    added: bool
    items: int = 0
    without_text: int = 0
    extra_files: list[str] = field(default_factory=list)


def record_release(store: Store, run: Run, name: str, fmt: str, out: Path, params: dict, counts: dict,
                   stats: dict, manifest: dict[str, str]) -> tuple[int, bool]:
    """One releases row per distinct content of a release name, with its items; re-exports add nothing."""
    digest = manifest_sha256(manifest)
    with store.transaction() as conn:
        before = conn.total_changes
        conn.execute(
            "INSERT INTO releases (name, format, path, params, counts, manifest, manifest_sha256, code_version, "
            "created_at, run_id, card_stats) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name, format, manifest_sha256) DO NOTHING",
            (name, fmt, str(Path(out).resolve()), json.dumps(params, sort_keys=True, default=str),
             json.dumps(counts, sort_keys=True), json.dumps(manifest, sort_keys=True), digest, code_version(),
             now(), run.id, json.dumps(stats, sort_keys=True)))
        added = conn.total_changes > before
        release_id = conn.execute("SELECT id FROM releases WHERE name = ? AND format = ? AND manifest_sha256 = ?",
                                  (name, fmt, digest)).fetchone()[0]
        if added:
            last = conn.execute(f"SELECT max(rowid) FROM {ExportScope.TABLE}").fetchone()[0] or 0
            with bar(last, "release items", "item", unit_scale=True) as progress:
                for start in range(1, last + 1, RECORD_ROWS):
                    conn.execute(
                        "INSERT INTO release_items (release_id, item_type, item_id, split, file_name, sha256, text) "
                        f"SELECT ?, item_type, item_id, split, file_name, sha256, text FROM {ExportScope.TABLE} "
                        "WHERE rowid BETWEEN ? AND ? ON CONFLICT DO NOTHING",
                        (release_id, start, start + RECORD_ROWS - 1))
                    progress.update(min(RECORD_ROWS, last - start + 1))
    return release_id, added


# Tables an export reads. They only grow, so their largest rowids say whether anything was added.
INPUT_TABLES = ("sources", "prompts", "images", "image_origins", "generations", "captions", "tags", "scores",
                "labels", "decisions")


def inputs_fingerprint(store: Store, exporter: Exporter, name: str, out: Path, card: CardSettings) -> str:
    """What an export's files are a function of: the database's contents (the last row of each table it
    reads, and the runs of other steps its card lists), the options, the release name, OUT and the code."""
    marks = {table: store.scalar(f"SELECT max(rowid) FROM {table}") for table in INPUT_TABLES}
    marks["runs"] = list(store.execute("SELECT max(id), max(finished_at), sum(status = 'running') FROM runs "
                                       "WHERE step != ?", (STEP,)).fetchone())
    identity = {"db": marks, "exporter": exporter.name, "params": exporter.params, "card": asdict(card),
                "name": name, "out": str(Path(out).resolve()), "code": code_version()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def unchanged_release(store: Store, out: Path, name: str, fmt: str, fingerprint: str) -> dict | None:
    """The recorded release OUT still holds, when nothing it was made from has changed since; else None."""
    marker = read_marker(out)
    if marker.get("inputs_sha256") != fingerprint or not unchanged_since_export(out, marker):
        return None
    rows = store.query("SELECT id, manifest_sha256, counts, card_stats FROM releases WHERE name = ? AND format = ? "
                       "AND manifest_sha256 = ?", (name, fmt, marker.get("manifest_sha256")))
    return rows[0] if rows else None


@dataclass
class CardSettings:
    enabled: bool = True
    license: str = "other"
    license_name: str | None = None
    license_link: str | None = None
    pretty_name: str | None = None


def export(store: Store, run: Run, exporter: Exporter, out: Path, name: str, card: CardSettings) -> Recorded:
    """Lock OUT, stage every file, add the card, move into place, then record the release (once per content)."""
    from promptmill.release.card import CardInfo, CardStats, render_card

    with locked(out):
        fingerprint = inputs_fingerprint(store, exporter, name, out, card)
        same = unchanged_release(store, out, name, exporter.name, fingerprint)
        if same:
            counts, stats = json.loads(same["counts"]), json.loads(same["card_stats"] or "{}")
            run.add("releases already recorded")
            run.add("exports skipped: nothing changed since the last one")
            return Recorded(same["id"], same["manifest_sha256"], False, counts.get("items", 0),
                            stats.get("without_text", 0), [])
        folder = ExportFolder(out)
        try:
            scope = ExportScope(store, exporter.record_text)
            stats = CardStats()
            for item in exporter.write(store, folder):
                stats.add(item)
                scope.add(item)
            scope.flush()
            if not stats.items:
                raise BadInput(f"nothing to export as {exporter.name}: no kept {exporter.item_type}s"
                               + (f" ({exporter.needs})" if exporter.needs else ""))
            stats.header = exporter.dataset_info(folder, stats.splits)
            stats.data_files = exporter.data_files(stats.split_names())
            if card.enabled:
                info = CardInfo(name=name, exporter=exporter, out=Path(out), stats=stats, scope_sql=scope.ids_sql,
                                settings=card)
                for relative, data in render_card(store, info).items():
                    folder.write_bytes(relative, data)
            manifest = folder.manifest()
            digest = manifest_sha256(manifest)
            extra = folder.commit(manifest, {"release": name, "format": exporter.name, "manifest_sha256": digest,
                                             "inputs_sha256": fingerprint})
        except BaseException:
            folder.abandon()
            raise
        counts = {"items": stats.items, "files": len(manifest)}
        counts.update({f"items {split}": n for split, n in sorted(stats.splits.items())})
        params = {**exporter.params, "card": asdict(card)}
        release_id, added = record_release(store, run, name, exporter.name, out, params, counts, stats.to_json(),
                                           manifest)
    run.add(f"{exporter.item_type}s exported", stats.items)
    run.add("files written", len(manifest))
    run.add("releases recorded" if added else "releases already recorded")
    if extra:
        run.add("files in OUT not from this release", len(extra))
    return Recorded(release_id, digest, added, stats.items, stats.without_text, extra)


def find_release(store: Store, ref: str) -> dict:
    """A release by name (its newest row) or by '#ID'."""
    if ref.startswith("#") and ref[1:].isdigit():
        rows = store.query("SELECT * FROM releases WHERE id = ?", (int(ref[1:]),))
    else:
        rows = store.query("SELECT * FROM releases WHERE name = ? ORDER BY id DESC LIMIT 1", (ref,))
    if not rows:
        raise BadInput(f"no release {ref!r} in {store.path}")
    return rows[0]


def release_items(store: Store, release_id: int) -> dict[tuple[str, int], dict]:
    return {(row["item_type"], row["item_id"]): row for row in store.query(
        "SELECT item_type, item_id, split, file_name, sha256, text FROM release_items WHERE release_id = ? "
        "ORDER BY item_type, item_id", (release_id,))}


def diff_releases(store: Store, old_ref: str, new_ref: str) -> dict:
    """Items added, removed and changed (split, text, file or content) from release OLD to NEW."""
    old, new = find_release(store, old_ref), find_release(store, new_ref)
    before, after = release_items(store, old["id"]), release_items(store, new["id"])
    changed = []
    for key in sorted(before.keys() & after.keys()):
        fields = {name: [before[key][name], after[key][name]] for name in ("split", "file_name", "sha256", "text")
                  if before[key][name] != after[key][name]}
        if fields:
            changed.append({"item_type": key[0], "item_id": key[1], "changes": fields})
    old_files, new_files = json.loads(old["manifest"]), json.loads(new["manifest"])
    return {
        "old": {"id": old["id"], "name": old["name"], "format": old["format"], "manifest_sha256": old["manifest_sha256"]},
        "new": {"id": new["id"], "name": new["name"], "format": new["format"], "manifest_sha256": new["manifest_sha256"]},
        "added": [after[key] for key in sorted(after.keys() - before.keys())],
        "removed": [before[key] for key in sorted(before.keys() - after.keys())],
        "changed": changed,
        "files_added": sorted(new_files.keys() - old_files.keys()),
        "files_removed": sorted(old_files.keys() - new_files.keys()),
        "files_changed": sorted(p for p in old_files.keys() & new_files.keys() if old_files[p] != new_files[p]),
    }
