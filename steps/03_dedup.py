#!/usr/bin/env python3
"""03_dedup: Find exact and near-duplicate prompts and images; keep one of each cluster."""

from promptmill.cli import main
from promptmill.dedup.cli import cli

if __name__ == "__main__":
    main(cli)
