#!/usr/bin/env python3
"""06_caption: Caption, tag and score images; edit captions with history."""

import click

from promptmill.cli import db_option, main, step_run  # noqa: F401

STEP = "06_caption"


@click.group(no_args_is_help=True)
def cli():
    """Caption, tag and score images; edit captions with history."""


# --- local models: blip, wd14, clipscore ---


# --- API captioners: gemini, vlm ---


# --- curation: edit, stats ---


if __name__ == "__main__":
    main(cli)
