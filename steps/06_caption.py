#!/usr/bin/env python3
"""06_caption: Caption, tag and score images; edit captions with history."""

from promptmill.caption.cli import cli
from promptmill.cli import main

if __name__ == "__main__":
    main(cli)
