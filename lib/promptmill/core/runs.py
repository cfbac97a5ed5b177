"""One `runs` row per step invocation: what ran, with what, where, and how it ended.

A run starts as ``running`` and ends ``ok``, ``failed`` or ``interrupted``
(SIGINT/SIGTERM). A run left ``running`` by a SIGKILL is marked
``interrupted`` by the next run that opens the database and finds its process gone,
or, on another host, by the run that takes over a paid-call claim whose lease ran out.
One that filled the disk and could not record its end left a note in the store's
reserve, and the next run records that instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

from promptmill import __version__
from promptmill.core.store import Store, rollback

SECRET_OPTION = re.compile(r"(^|[-_])(key|token|secret|password|passwd|auth|credentials?)([-_]|$)", re.I)
SECRET_VALUE = re.compile(r"^(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}|AIza[0-9A-Za-z_\-]{20,})")
URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s@]+@")
SECRET_ENV = ("OPENAI_API_KEY", "HF_TOKEN", "GOOGLE_API_KEY", "GEMINI_API_KEY", "GELBOORU_API_KEY",
              "GELBOORU_USER_ID", "HUGGING_FACE_HUB_TOKEN")
REDACTED = "[redacted]"
TRACKED_LIBRARIES = (
    "click", "pillow", "numpy", "pandas", "pyarrow", "simhash", "openai",
    "google-genai", "torch", "diffusers", "transformers", "onnxruntime", "sentence-transformers",
    "faiss-cpu", "datasets", "huggingface_hub",
)


def now(later: float = 0.0) -> str:
    """UTC time as stored, LATER seconds from now; the fixed width makes text order time order."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=later)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def redact(text: str) -> str:
    """The one way a secret is hidden wherever a value is recorded (argv, params, the ledger, exports,
    cards): a key-shaped value whole, the user:password of a URL, the environment's secrets anywhere."""
    if SECRET_VALUE.match(text):
        return REDACTED
    text = URL_CREDENTIALS.sub(lambda match: f"{match.group(1)}{REDACTED}@", text)
    for secret in _env_secrets():
        text = text.replace(secret, REDACTED)
    return text


def redact_params(value, name: str = ""):
    """VALUE with every string redacted, and whole values under secret-looking names hidden."""
    if isinstance(value, dict):
        return {key: redact_params(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_params(item, name) for item in value]
    if isinstance(value, str):
        return REDACTED if value and SECRET_OPTION.search(name) else redact(value)
    return value


def _env_secrets() -> set[str]:
    return {os.environ[name] for name in SECRET_ENV if os.environ.get(name)}


def redact_argv(argv: list[str]) -> list[str]:
    """Hide the values of options whose names look secret, and redact every other argument."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("--") and SECRET_OPTION.search(arg.split("=", 1)[0][2:]):
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=" + REDACTED)
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact(arg))
    return out


def code_version() -> str:
    """`git describe` of the checkout when running from one, else the package version."""
    checkout = Path(__file__).resolve().parents[3]
    if not (checkout / ".git").exists() or not (checkout / "steps").is_dir():
        return __version__
    with contextlib.suppress(Exception):
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=checkout,
            capture_output=True, text=True, timeout=5,
        )
        if result.returncode == 0 and result.stdout.strip():
            return f"{__version__}+{result.stdout.strip()}"
    return __version__


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is not running.
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    return True


def mark_abandoned_runs(store: Store) -> int:
    """Runs still 'running' whose process on this host is gone were killed: say so; or, where the run
    left a note of how it ended because the disk was too full to record it, record that."""
    host = socket.gethostname()
    stale = [
        row["id"] for row in store.query("SELECT id, pid, host FROM runs WHERE status = 'running'")
        if row["host"] == host and row["pid"] and not pid_alive(row["pid"])
    ]
    notes = {note.get("run"): note for note in store.reserve.notes()}
    if stale:
        with store.transaction():
            store.conn.executemany(
                "UPDATE runs SET status = ?, finished_at = ?, counts = coalesce(?, counts), error = ? "
                "WHERE id = ? AND status = 'running'",
                [(*_end_values(notes.get(run_id)), run_id) for run_id in stale],
            )
    if notes:
        running = {row["id"] for row in store.query("SELECT id FROM runs WHERE status = 'running'")}
        store.reserve.forget(lambda note: note.get("run") in running)
    return len(stale)


def mark_lease_lapsed(conn, claim: dict):
    """The run of a claim whose lease ran out on another host is taken for dead: its lease is renewed for as
    long as its request loop goes on. Should it be merely stalled, its next renewal fails and it stops."""
    conn.execute("UPDATE runs SET status = 'interrupted', error = ? WHERE id = ? AND status = 'running'",
                 (f"no heartbeat from host {claim['host']}: its claim lease ran out at {claim['lease_until']}",
                  claim["run_id"]))


def _end_values(note: dict | None) -> tuple:
    if note is None:
        return "interrupted", None, None, "process ended without finishing (killed)"
    return note["status"], note["finished_at"], note["counts"], note["error"]


class Interrupted(Exception):
    """Raised inside a run when SIGTERM arrives, so it ends as 'interrupted'."""


class Run:
    """A started run. Count outcomes with :meth:`add`; the context manager closes it."""

    def __init__(self, store: Store, step: str, command: str | None, params: dict,
                 argv: list[str] | None = None):
        self.store = store
        self.step = step
        self.command = command
        self.params = params
        self.counts: Counter = Counter()
        self.pending: Counter = Counter()  # counted inside a transaction not yet committed
        argv = list(sys.argv if argv is None else argv)
        mark_abandoned_runs(store)
        with store.transaction():
            cursor = store.execute(
                "INSERT INTO runs (step, command, argv, params, code_version, library_versions, host, "
                "pid, started_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (step, command, json.dumps(redact_argv(argv)),
                 json.dumps(redact_params(json.loads(json.dumps(params, default=str))), sort_keys=True),
                 code_version(), json.dumps(library_versions()), socket.gethostname(), os.getpid(), now()),
            )
        self.id = cursor.lastrowid
        store.settle_hooks.append(self._settle)

    def add(self, key: str, n: int = 1):
        """Count an outcome. Inside a transaction it counts once the transaction commits, so a batch
        rolled back (a kill, a full disk) is never reported as stored."""
        (self.pending if self.store.conn.in_transaction else self.counts)[key] += n

    def _settle(self, committed: bool):
        if committed:
            self.counts.update(self.pending)
        self.pending.clear()

    def save_counts(self):
        """Store the counts so far (long runs call this now and then)."""
        with self.store.transaction():
            self.store.execute("UPDATE runs SET counts = ? WHERE id = ?",
                               (json.dumps(dict(self.counts), sort_keys=True), self.id))

    def renew_lease(self, seconds: float) -> bool:
        """Keep this run's claims live for other hosts SECONDS more; False once one has taken them over."""
        with self.store.transaction():
            cursor = self.store.execute("UPDATE runs SET lease_until = ? WHERE id = ? AND status = 'running'",
                                        (now(seconds), self.id))
        return cursor.rowcount == 1

    def finish(self, status: str, error: str | None = None):
        with self.store.transaction():
            self.store.execute(
                "UPDATE runs SET status = ?, finished_at = ?, counts = ?, error = ? WHERE id = ?",
                (status, now(), json.dumps(dict(self.counts), sort_keys=True), error, self.id),
            )

    def end(self, status: str, error: str | None = None):
        """Record how the run ended. When the disk is too full for that, note the end in the reserve beside
        the database, which frees its space, and try again; the next run records the note if this fails."""
        try:
            self.finish(status, error)
        except (sqlite3.Error, OSError):
            self.store.reserve.release({"run": self.id, "status": status, "finished_at": now(), "error": error,
                                        "counts": json.dumps(dict(self.counts), sort_keys=True)})
            self.finish(status, error)

    def __enter__(self):
        self._old_term = signal.getsignal(signal.SIGTERM)
        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGTERM, _raise_interrupted)
        return self

    def __exit__(self, exc_type, exc, tb):
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, self._old_term)
        if self._settle in self.store.settle_hooks:
            self.store.settle_hooks.remove(self._settle)
        rollback(self.store.conn)
        self.pending.clear()
        if exc_type is None:
            self.end("ok")
            return False
        if issubclass(exc_type, (KeyboardInterrupt, Interrupted)):
            status, error = "interrupted", f"{exc_type.__name__}: stopped by signal"
        else:
            status, error = "failed", f"{exc_type.__name__}: {exc}"
        with contextlib.suppress(sqlite3.Error, OSError):  # the run's own error is the one to report
            self.end(status, error)
        return False


def _raise_interrupted(signum, frame):
    raise Interrupted(f"signal {signum}")


def start_run(store: Store, step: str, command: str | None = None, params: dict | None = None,
              argv: list[str] | None = None) -> Run:
    return Run(store, step, command, params or {}, argv)
