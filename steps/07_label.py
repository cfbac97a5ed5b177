#!/usr/bin/env python3
"""07_label: Label prompts with an LLM or with people in Label Studio."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "07_label"


@click.group(no_args_is_help=True)
def cli():
    """Label prompts with an LLM or with people in Label Studio."""


# --- LLM labels: describe ---


# --- Label Studio: ls-export, ls-import ---


if __name__ == "__main__":
    main(cli)
