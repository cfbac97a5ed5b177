#!/usr/bin/env python3
"""02_clean: keep or drop prompts and images by named rules; cleaned text is stored beside the original."""

from promptmill.clean.cli import cli
from promptmill.cli import main

if __name__ == "__main__":
    main(cli)
