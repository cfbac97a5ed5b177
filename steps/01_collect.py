#!/usr/bin/env python3
"""01_collect: read prompts, images and captions from files, exports and datasets into the store."""

from promptmill.cli import main
from promptmill.collect.cli import cli

if __name__ == "__main__":
    main(cli)
