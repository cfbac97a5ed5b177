#!/usr/bin/env python3
"""04_augment: Write new prompts with an LLM in the style of example prompts, never paying twice."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "04_augment"


@click.group(no_args_is_help=True)
def cli():
    """Write new prompts with an LLM in the style of example prompts, never paying twice."""


# --- augment ---


if __name__ == "__main__":
    main(cli)
