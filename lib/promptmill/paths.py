"""Where the checkout's data folders are (schema, examples), found from this file."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schema"
EXAMPLES_DIR = ROOT / "examples"
STEPS_DIR = ROOT / "steps"
