#!/usr/bin/env python3
"""04_augment: Write new prompts with an LLM in the style of example prompts, never paying twice."""

from promptmill.augment.cli import cli
from promptmill.cli import main

if __name__ == "__main__":
    main(cli)
