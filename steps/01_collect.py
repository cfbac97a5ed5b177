#!/usr/bin/env python3
"""01_collect: read prompts, images and captions from files, exports and datasets into the store.

Every sub-command records a `sources` row and each item's position inside it,
streams its input, commits in batches and can be killed and run again: a source
that was read to the end is skipped, a half-read one resumes where it stopped.
"""

from pathlib import Path

import click

from promptmill.cli import db_option, main, step_run
from promptmill.collect import Collector
from promptmill.sources import textfile

STEP = "01_collect"


@click.group(no_args_is_help=True)
def cli():
    """Collect prompts and images into the promptmill database."""


@cli.command()
@db_option
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def text(db_path, files):
    """One prompt per line from FILES (.txt or .txt.gz)."""
    with step_run(db_path, STEP, "text", {"files": [str(f) for f in files]}) as (store, run):
        for path in files:
            collector = Collector(store, run, textfile.source_info(path))
            if collector.completed:
                run.add("sources already imported")
                continue
            collector.finish(textfile.collect_lines(collector, path))
            run.add("sources imported")


if __name__ == "__main__":
    main(cli)
