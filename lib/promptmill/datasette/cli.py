"""`promptmill browse`: the database in Datasette, on 127.0.0.1, with the promptmill plugin."""

import subprocess
import sys
from pathlib import Path

import click

from promptmill.cli import CONTEXT_SETTINGS, db_option
from promptmill.core.store import require_database


@click.command(context_settings=CONTEXT_SETTINGS)
@db_option
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open a web browser on the first page.")
def cli(db_path, port, open_browser):
    """Browse the database in Datasette: tables with thumbnails, canned queries, lineage.

    Served on 127.0.0.1 only. The database is opened as it is (its WAL included), so
    pages show what running steps have committed.
    """
    path = Path(db_path)
    require_database(path)
    argv = [sys.executable, "-m", "datasette", "serve", str(path), "--host", "127.0.0.1", "--port", str(port)]
    if open_browser:
        argv.append("--open")
    sys.exit(subprocess.call(argv))
