"""Several steps writing to one database at once (WAL, BEGIN IMMEDIATE, busy timeout) all finish correctly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from llm_fixtures import FAST_RETRIES, example_prompts, write_prompts

import paths
from conftest import ROOT, run_script
from fakes.openai_server import FakeOpenAI
from promptmill.core.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    from tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("models"), ["tiny-wd14"])["tiny-wd14"]


def test_captioning_labelling_and_collecting_at_once(tmp_path, tagger):
    db = tmp_path / "db" / "promptmill.db"
    prompts = 80
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, example_prompts(prompts))).returncode == 0
    assert run_script("01_collect", "imagefolder", "--db", db, ROOT / "examples" / "images").returncode == 0
    more = write_prompts(tmp_path, [f"a lighthouse number {i} in a storm" for i in range(50_000)], "more.txt")
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0", "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "sk-test-concurrent-01"}

    def start(step, *args):
        return subprocess.Popen([sys.executable, str(paths.STEPS_DIR / f"{step}.py"), *map(str, args), "--db", str(db)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    with FakeOpenAI(latency=0.05) as server:
        processes = {
            "describe": start("07_label", "describe", "--base-url", server.url + "/v1", "--model", "fake-model",
                              "--concurrency", 4, "--limit", prompts, *FAST_RETRIES),
            "wd14": start("06_caption", "wd14", "--model", tagger, "--batch-size", 2),
            "collect": start("01_collect", "text", more),
            "clean": start("02_clean", "images"),
        }
        results = {name: (proc.wait(timeout=300), proc.stderr.read()) for name, proc in processes.items()}
    for name, (code, stderr) in results.items():
        assert code == 0, f"{name}: {stderr[-2000:]}"

    store = open_store(db)
    labelled = store.query("SELECT prompt_id, count(*) AS n FROM labels GROUP BY prompt_id")
    assert len(labelled) == prompts and {row["n"] for row in labelled} == {1}
    assert store.count("captions", "kind = 'wd14'") == 8
    assert store.count("prompts") == prompts + 50_000
    assert store.count("decisions", "item_type = 'image' AND stage = 'clean'") == 8
    assert store.count("runs", "status = 'ok'") == store.count("runs")
