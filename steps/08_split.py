#!/usr/bin/env python3
"""08_split: Assign dedup clusters to train/validation/test splits, stable as data grows."""

from promptmill.cli import main
from promptmill.split.cli import cli

if __name__ == "__main__":
    main(cli)
