#!/usr/bin/env python3
"""07_label: Label prompts with an LLM or with people in Label Studio."""

from promptmill.cli import main
from promptmill.label.cli import cli

if __name__ == "__main__":
    main(cli)
