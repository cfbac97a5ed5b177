"""The README's first command: the demo runs all nine steps on the bundled examples, offline, on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from promptmill.core.store import open_store

pytestmark = pytest.mark.slow


def test_demo_runs_every_step_and_says_where_to_look(tmp_path):
    db, out = tmp_path / "db" / "demo" / "promptmill.db", tmp_path / "out" / "demo"
    env = {key: value for key, value in os.environ.items()
           if key not in ("OPENAI_API_KEY", "PROMPTMILL_LLM_BASE_URL")}
    env.update(DEMO_DIR=str(tmp_path), PROMPTMILL_PROGRESS="0", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")  # as `make demo` does
    result = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "skipping 04_augment and 07_label describe" in result.stdout
    assert "promptmill browse" in result.stdout and str(out) in result.stdout

    store = open_store(db)
    steps = {row["step"] for row in store.query("SELECT step FROM runs WHERE status = 'ok'")}
    assert steps == {"01_collect", "02_clean", "03_dedup", "05_generate", "06_caption", "07_label", "08_split",
                     "09_upload"}
    assert store.count("runs", "status != 'ok'") == 0
    assert store.count("generations") == 16
    assert {row["kind"] for row in store.query("SELECT DISTINCT kind FROM captions")} >= {"imported", "blip", "wd14",
                                                                                          "edit"}
    assert store.count("decisions", "stage = 'split'") > 0
    rows = [json.loads(line) for line in (out / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()]
    assert rows and all(row["text"] for row in rows)
    assert list((out / "kohya").glob("10_sks/*.txt"))
