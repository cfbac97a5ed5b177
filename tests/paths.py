"""Where the checkout's folders are, for tests that run the numbered scripts, examples and benchmarks."""

from pathlib import Path

from promptmill.core.resources import SCHEMA_DIR  # noqa: F401  (tests read the package's schema)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
STEPS_DIR = ROOT / "steps"
