#!/usr/bin/env python3
"""09_upload: Export releases (imagefolder, parquet, kohya, pairs, prompts), cards and Hub pushes."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "09_upload"


@click.group(no_args_is_help=True)
def cli():
    """Export releases (imagefolder, parquet, kohya, pairs, prompts), cards and Hub pushes."""


# --- upload ---


if __name__ == "__main__":
    main(cli)
