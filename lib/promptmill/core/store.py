"""The provenance store: one SQLite database plus a content-addressed blob folder.

Open it with :func:`open_store`. The schema comes from the numbered SQL files in
``schema/migrations``, applied in order on open and recorded in
``schema_migrations``. Writers use :meth:`Store.transaction` (``BEGIN
IMMEDIATE``) so several steps can write to one WAL database at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path

from promptmill.core import resources
from promptmill.core.errors import BadInput, PromptmillError

DEFAULT_DB = "db/promptmill.db"
BUSY_TIMEOUT_MS = 60_000
RESERVE_BYTES = 1 << 20  # room for the last status write of a run that filled the disk
NOTE_BYTES = 4096  # the reserve's first block, where notes live


def default_db_path() -> str:
    return os.environ.get("PROMPTMILL_DB") or DEFAULT_DB


class Store:
    """A connection to the database and the blob store beside it."""

    def __init__(self, path: str | os.PathLike, conn: sqlite3.Connection):
        self.path = Path(path)
        self.conn = conn
        self.blobs = BlobStore(self.path.parent / "blobs")
        self.reserve = Reserve(self.path)
        self.settle_hooks: list = []  # called with True after a commit, False after a rollback

    @contextlib.contextmanager
    def transaction(self):
        """A write transaction taken up front, so concurrent writers queue instead of deadlocking."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        committing = False
        try:
            yield self.conn
            committing = True
            self.conn.execute("COMMIT")
        except BaseException as exc:
            # A signal's exception (SIGTERM, Ctrl-C) can land just after COMMIT returned: what was
            # committed is stored, so it counts. A COMMIT that failed raised sqlite3.Error itself.
            stored = committing and not self.conn.in_transaction and not isinstance(exc, sqlite3.Error)
            if not stored:
                rollback(self.conn)
            self._settle(stored)
            raise
        self._settle(True)

    def _settle(self, committed: bool):
        for hook in self.settle_hooks:
            hook(committed)

    def execute(self, sql: str, params=()):
        return self.conn.execute(sql, params)

    def query(self, sql: str, params=()) -> list[dict]:
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    def scalar(self, sql: str, params=()):
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def count(self, table: str, where: str = "1", params=()) -> int:
        return self.scalar(f"SELECT count(*) FROM [{table}] WHERE {where}", params)

    def close(self):
        self.conn.close()


def rollback(conn: sqlite3.Connection):
    """Roll back what is still open: after a full disk or an I/O error SQLite has already rolled the
    transaction back, and a second ROLLBACK would replace the real error with "no transaction is active"."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class Reserve:
    """``<db>-reserve``: disk space held back so that a run that fills the disk can still record how it
    ended. Releasing it keeps a note of that end in its first block, overwritten in place (no growth),
    for the next run to record in case even the freed space was not enough (a per-file size limit)."""

    def __init__(self, db_path: Path):
        self.path = Path(f"{db_path}-reserve")

    def fill(self):
        """Grow back to full size after the notes; best effort: a full or read-only disk goes without."""
        with contextlib.suppress(OSError), open(self.path, "ab") as fh:
            fh.write(bytes(max(0, RESERVE_BYTES - fh.tell())))

    def release(self, note: dict):
        """Free the space, keeping NOTE (with the notes before it) in the first block."""
        with contextlib.suppress(OSError), self._locked() as fh:
            self._write(fh, [*self._read(fh), note])
            fh.truncate(NOTE_BYTES)

    def notes(self) -> list[dict]:
        with contextlib.suppress(OSError), open(self.path, "rb") as fh:
            return self._read(fh)
        return []

    def forget(self, keep):
        """Drop the notes for which KEEP(note) is false."""
        with contextlib.suppress(OSError), self._locked() as fh:
            self._write(fh, [note for note in self._read(fh) if keep(note)])

    @contextlib.contextmanager
    def _locked(self):
        with os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield fh

    @staticmethod
    def _read(fh) -> list[dict]:
        fh.seek(0)
        text = fh.read(NOTE_BYTES).split(b"\0", 1)[0].decode(errors="replace")
        notes = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                notes.append(json.loads(line))
        return notes

    @staticmethod
    def _write(fh, notes: list[dict]):
        lines = [json.dumps(note).encode() + b"\n" for note in notes]
        while sum(map(len, lines)) > NOTE_BYTES:  # the newest notes matter
            lines.pop(0)
        fh.seek(0)
        fh.write(b"".join(lines).ljust(NOTE_BYTES, b"\0"))


class BlobStore:
    """Files named by the sha256 of their bytes: ``blobs/ab/cd/<sha256>.<ext>``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, sha256: str, ext: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}.{ext}"

    def put(self, data: bytes, ext: str, sha256: str | None = None) -> tuple[str, Path]:
        """Store bytes once; return (sha256, path). Written to a temp file and renamed, so a
        kill never leaves a half-written blob under its final name."""
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        target = self.path_for(sha256, ext)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return sha256, target


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def open_store(path: str | os.PathLike | None = None) -> Store:
    """Open (creating if needed) the database and bring its schema up to date; a path that can't hold
    one (a directory, a file that is not a database, no permission) is one line, not a traceback."""
    path = Path(path or default_db_path())
    migration_files()
    if path.is_dir():
        raise BadInput(f"--db {path} is a directory, not a database file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path)
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise PromptmillError(f"can't open the database {path}: {exc}") from None
    except OSError as exc:
        raise PromptmillError(f"can't open the database {path}: {exc.strerror or exc}") from None
    store = Store(path, conn)
    store.reserve.fill()
    return store


def open_readonly(path: str | os.PathLike | None = None) -> Store:
    """An existing database opened for reading only (no schema change, nothing created)."""
    path = require_database(path or default_db_path())
    return Store(path, connect_readonly(path))


def connect_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(readonly_uri(path), uri=True, check_same_thread=False)


def readonly_uri(path: Path) -> str:
    """The URI that reads PATH: mode=ro, or immutable where not even the WAL index may be written (a
    read-only mount, chattr +i); BadInput when the file is not a promptmill database. Immutable skips the
    WAL, so a WAL with changes and no index to read it by is refused rather than read stale."""
    uri = path.resolve().as_uri()
    for flags in ("mode=ro", "mode=ro&immutable=1"):
        wal = Path(f"{path}-wal")
        if "immutable" in flags and wal.is_file() and wal.stat().st_size:
            raise PromptmillError(f"can't read {path}: {wal.name} holds changes that only a {path.name}-shm "
                                  "beside it would let us read, and the folder is read-only; open it once "
                                  "where it can be written")
        conn = sqlite3.connect(f"{uri}?{flags}", uri=True)
        try:
            conn.execute("SELECT 1 FROM schema_migrations LIMIT 1").fetchall()
            return f"{uri}?{flags}"
        except sqlite3.DatabaseError as exc:
            reason = exc
        finally:
            conn.close()
    raise BadInput(f"{path} is not a promptmill database ({reason})")


def require_database(path: str | os.PathLike) -> Path:
    """The path of an existing promptmill database; a missing or foreign file is a BadInput, never a new
    empty database (a mistyped --db must not answer "nothing yet")."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no database at {path}")
    readonly_uri(path)
    return path


def migration_files() -> list[tuple[int, str, Path]]:
    """The numbered SQL migrations shipped in the package; none found means a broken install."""
    found = []
    folder = resources.SCHEMA_DIR.joinpath("migrations")
    for file in folder.iterdir() if folder.is_dir() else ():
        if file.suffix in (".sql", ".py"):
            number, _, name = file.stem.partition("_")
            found.append((int(number), name, file))
    if not found:
        raise PromptmillError(f"no migrations in {resources.SCHEMA_DIR}: the promptmill install is incomplete")
    return sorted(found)


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply every migration not yet recorded, each in its own transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL "
        "DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    done = []
    for version, name, file in migration_files():
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in migration_statements(file):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name))
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        done.append(version)
    return done


def migration_statements(file: Path) -> list[str]:
    """The statements of a migration: an SQL script, or a Python module whose `statements()` builds them
    (views generated from the library's own SQL, so there is one definition)."""
    if file.suffix == ".py":
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"promptmill_migration_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.statements()
    return split_sql(file.read_text())


def split_sql(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about triggers)."""
    statements, current = [], []
    for line in script.splitlines(keepends=True):
        current.append(line)
        candidate = "".join(current)
        if sqlite3.complete_statement(candidate):
            if candidate.strip():
                statements.append(candidate)
            current = []
    rest = "".join(current).strip()
    if rest and not all(line.strip().startswith("--") for line in rest.splitlines() if line.strip()):
        statements.append(rest)
    return statements
