#!/usr/bin/env python3
"""02_clean: Keep or drop prompts and images by named rules; cleaned text is stored beside the original."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "02_clean"


@click.group(no_args_is_help=True)
def cli():
    """Keep or drop prompts and images by named rules; cleaned text is stored beside the original."""


# --- prompts ---


# --- images ---


if __name__ == "__main__":
    main(cli)
