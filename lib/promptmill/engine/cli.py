"""`promptmill ingest DIR`: fold result shards made with `--shard K/N --out-dir DIR` into the database."""

import click

from promptmill.cli import CONTEXT_SETTINGS, db_option, step_run

STEP = "ingest"


@click.command("ingest", context_settings=CONTEXT_SETTINGS)
@db_option
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def cli(db_path, folder):
    """Fold the result shards in FOLDER into this database (each shard once; shards of other plans refused)."""
    from pathlib import Path

    from promptmill.engine.base import ingest

    with step_run(db_path, STEP, "ingest", {}) as (store, run):
        ingest(store, run, Path(folder))
