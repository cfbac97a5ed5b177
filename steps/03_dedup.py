#!/usr/bin/env python3
"""03_dedup: Find exact and near-duplicate prompts and images; keep one of each cluster."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "03_dedup"


@click.group(no_args_is_help=True)
def cli():
    """Find exact and near-duplicate prompts and images; keep one of each cluster."""


# --- dedup ---


if __name__ == "__main__":
    main(cli)
