#!/usr/bin/env python3
"""09_upload: export releases (imagefolder, parquet, kohya, pairs, prompts), check them, diff them, push them."""

from promptmill.cli import main
from promptmill.release.cli import cli

if __name__ == "__main__":
    main(cli)
