#!/usr/bin/env python3
"""05_generate: Generate images for kept prompts with diffusers, seeded and resumable."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "05_generate"


@click.group(no_args_is_help=True)
def cli():
    """Generate images for kept prompts with diffusers, seeded and resumable."""


# --- generate ---


if __name__ == "__main__":
    main(cli)
