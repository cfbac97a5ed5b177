"""Fixtures shared by the ledger, describe, augment and API-caption tests: fake servers and seed prompts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import paths

sys.path.insert(0, str(paths.ROOT / "tests"))

from fakes.openai_server import FakeOpenAI

FAST_RETRIES = ("--backoff-base", "0.01", "--backoff-cap", "0.2")


@pytest.fixture(name="fake_openai")
def fake_openai_fixture(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-123456")
    with FakeOpenAI() as server:
        yield server


def write_prompts(tmp_path: Path, lines: list[str], name: str = "prompts.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def example_prompts(limit: int) -> list[str]:
    lines = (paths.EXAMPLES_DIR / "prompts" / "diffusiondb_style.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()][:limit]


def fake_prices(tmp_path: Path, model: str = "fake-model", input_usd: float = 1000.0,
                output_usd: float = 2000.0) -> Path:
    """A user price file for the fake model (deliberately expensive, so budgets bite fast)."""
    path = tmp_path / "prices.toml"
    path.write_text(f'[models."{model}"]\nin = {input_usd}\nout = {output_usd}\n', encoding="utf-8")
    return path


def ledger_rows(store) -> list[dict]:
    rows = store.query("SELECT * FROM api_calls ORDER BY id")
    for row in rows:
        row["request"] = json.loads(row["request"])
    return rows
