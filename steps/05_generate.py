#!/usr/bin/env python3
"""05_generate: generate images for kept prompts with diffusers, seeded and resumable."""

from promptmill.cli import main
from promptmill.generate.cli import cli

if __name__ == "__main__":
    main(cli)
