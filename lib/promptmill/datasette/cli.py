"""`promptmill browse`: the database in Datasette, on 127.0.0.1, with the promptmill plugin."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from promptmill.cli import CONTEXT_SETTINGS, db_option
from promptmill.core.runs import now
from promptmill.core.store import open_store, readonly_uri, require_database


@click.command(context_settings=CONTEXT_SETTINGS)
@db_option
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open a web browser on the first page.")
@click.option("--review", is_flag=True,
              help="Let this machine keep, drop and edit on the review pages (/-/review); off: read-only.")
def cli(db_path, port, open_browser, review):
    """Browse the database in Datasette: tables with thumbnails, canned queries, lineage, review pages.

    Served on 127.0.0.1 only. The database is opened as it is (its WAL included), so
    pages show what running steps have committed. With --review each browser session
    is a run (step review) whose keep/drop/edit actions are appended rows.
    """
    path = Path(db_path)
    # Where not even the WAL index may be written (a read-only mount), Datasette must open it immutable.
    immutable = readonly_uri(require_database(path)).endswith("immutable=1")
    env = dict(os.environ)
    env.pop("PROMPTMILL_REVIEW", None)
    if review:
        open_store(path).close()  # the review pages need the newest schema
        env["PROMPTMILL_REVIEW"] = "1"
    argv = [sys.executable, "-m", "datasette", "serve", *(["-i"] if immutable else []), str(path),
            "--host", "127.0.0.1", "--port", str(port)]
    if open_browser:
        argv.append("--open")
    if review:
        click.echo(f"review pages: http://127.0.0.1:{port}/-/review" if port else "review pages: /-/review")
    process = subprocess.Popen(argv, env=env)
    code = serve_until_stopped(process)
    if review:
        click.echo(close_review_runs(path, process.pid))
    sys.exit(code)


def serve_until_stopped(process: subprocess.Popen) -> int:
    """Wait for the server; Ctrl-C or SIGTERM to this command stops it first, so nothing is left running."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                process.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


def close_review_runs(path: Path, pid: int) -> str:
    """Mark the server's review sessions finished and say what they did."""
    store = open_store(path)
    try:
        runs = store.query("SELECT id, counts FROM runs WHERE step = 'review' AND pid = ? AND status = 'running'",
                           (pid,))
        with store.transaction() as conn:
            conn.executemany("UPDATE runs SET status = 'ok', finished_at = ? WHERE id = ?",
                             [(now(), row["id"]) for row in runs])
    finally:
        store.close()
    actions = sum(value for row in runs for key, value in json.loads(row["counts"] or "{}").items()
                  if key.endswith(" actions"))
    return f"review: {len(runs)} session(s), {actions} action(s) recorded"
