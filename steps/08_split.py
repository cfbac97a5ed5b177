#!/usr/bin/env python3
"""08_split: Assign dedup clusters to train/validation/test splits, stable as data grows."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "08_split"


@click.group(no_args_is_help=True)
def cli():
    """Assign dedup clusters to train/validation/test splits, stable as data grows."""


# --- split ---


if __name__ == "__main__":
    main(cli)
