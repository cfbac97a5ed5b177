"""05_generate through diffusers' real loader, on a tiny random Stable Diffusion pipeline."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

import paths
from conftest import ROOT, run_script
from promptmill.generate.seeds import image_seed
from tiny_models import build_all

torch.set_num_threads(1)
TINY = ["--steps", "2", "--width", "32", "--height", "32"]


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models", ["tiny-sd"])["tiny-sd"]


def generated(db) -> dict[tuple[int, int], str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT g.prompt_id, g.image_index, i.sha256 FROM generations g "
                            "JOIN images i ON i.id = g.image_id").fetchall()
    return {(p, i): sha for p, i, sha in rows}


def test_generates_kept_prompts_once_with_everything_to_regenerate(invoke, store, prompts_file, tiny_sd):
    invoke("01_collect", "text", prompts_file)
    invoke("05_generate", "diffusers", "--model", tiny_sd, *TINY, "--batch-size", "2", "--limit", "2",
           "--negative-prompt", "blurry")
    assert store.count("generations") == 2
    invoke("05_generate", "diffusers", "--model", tiny_sd, *TINY, "--batch-size", "4", "--negative-prompt", "blurry",
           "--images-per-prompt", "2")
    rows = store.query("SELECT g.*, i.sha256, i.ext, i.width AS w, i.format FROM generations g "
                       "JOIN images i ON i.id = g.image_id ORDER BY g.prompt_id, g.image_index")
    assert len(rows) == 12 and len({r["image_id"] for r in rows}) == 12
    prompts = {r["id"]: r["text"] for r in store.query("SELECT id, text FROM prompts")}
    for row in rows:
        assert row["prompt_text"] == prompts[row["prompt_id"]]
        assert row["seed"] == image_seed(0, row["prompt_id"], row["image_index"])
        assert (row["model"], row["scheduler"], row["steps"], row["guidance"], row["width"], row["height"],
                row["dtype"], row["device"], row["negative_prompt"]) == (
            str(tiny_sd), "DDIMScheduler", 2, 9.0, 32, 32, "fp32", "cpu", "blurry")
        assert row["seconds"] > 0 and row["format"] == "PNG" and row["w"] == 32
        data = store.blobs.path_for(row["sha256"], row["ext"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert len({r["params_hash"] for r in rows}) == 1
    invoke("05_generate", "diffusers", "--model", tiny_sd, *TINY, "--negative-prompt", "blurry",
           "--images-per-prompt", "2")
    assert store.count("generations") == 12
    # Another seed is another set of images; the first set stays.
    invoke("05_generate", "diffusers", "--model", tiny_sd, *TINY, "--seed", "7", "--limit", "1")
    assert store.count("generations") == 13


def test_dropped_prompts_get_no_images(invoke, store, prompts_file, tiny_sd, run):
    invoke("01_collect", "text", prompts_file)
    with store.transaction():
        store.execute("INSERT INTO decisions (item_type, item_id, stage, verdict, scope, run_id) "
                      "VALUES ('prompt', 1, 'clean', 'drop', 'test', ?)", (run.id,))
    invoke("05_generate", "diffusers", "--model", tiny_sd, *TINY)
    assert sorted(p for p, _ in generated(store.path)) == [2, 3, 4, 5, 6]


def test_same_images_whatever_the_batching_or_sharding(tmp_path, invoke, prompts_file, tiny_sd, monkeypatch):
    whole, sharded = tmp_path / "whole" / "p.db", tmp_path / "sharded" / "p.db"
    for db in (whole, sharded):
        invoke("01_collect", "text", prompts_file, db=db)
    invoke("05_generate", "diffusers", "--model", tiny_sd, *TINY, "--batch-size", "4", db=whole)
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        invoke("05_generate", "diffusers", "--model", tiny_sd, *TINY, "--batch-size", "1", db=sharded)
    assert generated(whole) == generated(sharded) and len(generated(whole)) == 6


@pytest.mark.resilience
@pytest.mark.slow
def test_sigkill_mid_batch_then_resume_makes_the_same_images(tmp_path, invoke, tiny_sd):
    lines = (ROOT / "examples" / "prompts" / "diffusiondb_style.txt").read_text(encoding="utf-8").splitlines()[:24]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    clean, killed = tmp_path / "clean" / "p.db", tmp_path / "killed" / "p.db"
    args = ["--model", tiny_sd, "--steps", "12", "--width", "32", "--height", "32", "--batch-size", "3"]
    for db in (clean, killed):
        invoke("01_collect", "text", prompts, db=db)
    invoke("05_generate", "diffusers", *args, db=clean)

    env = {**os.environ, "PROMPTMILL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(paths.STEPS_DIR / "05_generate.py"), "diffusers", "--db",
                                str(killed), *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(generated(killed) if killed.exists() else {}) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(generated(killed))
    assert 3 <= partial < 24, "the kill should land mid-run"

    # Same thread count as the clean run: CPU float reductions may differ in the last bit across thread counts.
    result = run_script("05_generate", "diffusers", "--db", killed, *args, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert generated(killed) == generated(clean) and len(generated(clean)) == 24
    with sqlite3.connect(killed) as conn:
        statuses = [s for (s,) in conn.execute("SELECT status FROM runs WHERE step = '05_generate' ORDER BY id")]
        assert conn.execute("SELECT count(*) FROM generations").fetchone()[0] == 24
    assert statuses == ["interrupted", "ok"]


def test_bad_model_exits_2_with_one_line(tmp_path):
    result = run_script("05_generate", "diffusers", "--db", tmp_path / "p.db", "--model", tmp_path / "missing")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "missing" in result.stderr


def test_benchmark_quick_smoke():
    spec = importlib.util.spec_from_file_location("generate_bench", ROOT / "benchmarks" / "generate_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick"])
    assert result["name"] == "generate" and result["ratio"] > 0 and "images/s" in result["figure"]
