"""--engine ray on one local Ray (4 CPUs, no GPU): the same rows as --engine local, and a killed driver resumes.

Every test here shares one Ray started once for the session; the file runs on one
xdist worker (loadfile, and the 'ray' group for loadgroup)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from test_caption_local import add_image

import paths
from conftest import ROOT
from tiny_models import build_all

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
torch.set_num_threads(1)
TINY_SD = ["--steps", "2", "--width", "32", "--height", "32"]


@pytest.fixture(scope="session")
def ray_address():
    # num_cpus above the real cores: with 2, an actor pool and the read tasks wait on each other.
    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models", ["tiny-sd", "tiny-wd14", "tiny-clip"])


def prompts(tmp_path, count, name="openprompts.txt"):
    lines = (ROOT / "examples" / "prompts" / name).read_text(encoding="utf-8").splitlines()[:count]
    path = tmp_path / f"prompts-{count}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows(db, sql) -> set[tuple]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute(sql))


GENERATED = ("SELECT g.prompt_id, g.image_index, i.sha256, g.seed, g.params_hash, g.device FROM generations g "
             "JOIN images i ON i.id = g.image_id")
# Images are compared by their bytes' hash: an engine may store them in another order, so ids can differ.
CAPTIONS = ("SELECT i.sha256, c.kind, c.text, c.params_hash, c.params, group_concat(t.tag || '=' || t.score, ';') "
            "FROM captions c JOIN images i ON i.id = c.image_id LEFT JOIN tags t ON t.caption_id = c.id "
            "GROUP BY c.id")
SCORES = ("SELECT i.sha256, p.text, s.kind, s.value, s.params_hash FROM scores s JOIN images i ON i.id = s.image_id "
          "JOIN prompts p ON p.id = s.prompt_id")


def test_generate_tag_and_score_on_ray_equal_local(tmp_path, invoke, models, ray_address):
    local, on_ray = tmp_path / "local" / "p.db", tmp_path / "ray" / "p.db"
    source = prompts(tmp_path, 6)
    for db in (local, on_ray):
        invoke("01_collect", "text", source, db=db)
    invoke("05_generate", "diffusers", "--model", models["tiny-sd"], *TINY_SD, "--batch-size", "2", db=local)
    result = invoke("05_generate", "diffusers", "--model", models["tiny-sd"], *TINY_SD, "--batch-size", "2",
                    "--engine", "ray", "--workers", "2", db=on_ray)
    assert "images generated 6" in result.output and "shards done 1" in result.output
    assert rows(on_ray, GENERATED) == rows(local, GENERATED) and len(rows(local, GENERATED)) == 6

    for command, model, query in (("wd14", "tiny-wd14", CAPTIONS), ("clipscore", "tiny-clip", SCORES)):
        invoke("06_caption", command, "--model", models[model], "--batch-size", "4", db=local)
        invoke("06_caption", command, "--model", models[model], "--batch-size", "4", "--engine", "ray", db=on_ray)
        assert rows(on_ray, query) == rows(local, query) and len(rows(local, query)) == 6
    with sqlite3.connect(on_ray) as conn:
        assert conn.execute("SELECT count(*) FROM work_shards").fetchone()[0] == 3
        assert conn.execute("SELECT count(*), min(engine), max(engine) FROM work_shard_done").fetchone() == (
            3, "ray", "ray")


@pytest.mark.resilience
def test_driver_killed_mid_run_resumes_to_a_clean_local_run(tmp_path, invoke, models, ray_address):
    clean, killed = tmp_path / "clean" / "p.db", tmp_path / "killed" / "p.db"
    source = prompts(tmp_path, 24, "diffusiondb_style.txt")
    args = ["--model", models["tiny-sd"], "--steps", "40", "--width", "32", "--height", "32", "--batch-size", "2"]
    for db in (clean, killed):
        invoke("01_collect", "text", source, db=db)
    invoke("05_generate", "diffusers", *args, db=clean)

    driver = subprocess.Popen([sys.executable, str(paths.STEPS_DIR / "05_generate.py"), "diffusers", "--db",
                               str(killed), *map(str, args), "--engine", "ray", "--address", ray_address],
                              env={**os.environ, "PROMPTMILL_PROGRESS": "0"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(rows(killed, GENERATED)) < 2 and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    partial = len(rows(killed, GENERATED))
    assert 2 <= partial < 24, "the kill should land mid-run"

    invoke("05_generate", "diffusers", *args, "--engine", "ray", db=killed)
    assert rows(killed, GENERATED) == rows(clean, GENERATED) and len(rows(clean, GENERATED)) == 24
    with sqlite3.connect(killed) as conn:
        statuses = [s for (s,) in conn.execute("SELECT status FROM runs WHERE step = '05_generate' ORDER BY id")]
        plans = conn.execute("SELECT count(DISTINCT plan_id) FROM work_shards").fetchone()[0]
    assert statuses == ["interrupted", "ok"] and plans == 2


@pytest.mark.resilience
def test_captioning_driver_killed_mid_run_resumes_to_a_clean_local_run(tmp_path, invoke, models, ray_address):
    clean, killed = tmp_path / "clean" / "p.db", tmp_path / "killed" / "p.db"
    source = prompts(tmp_path, 16, "diffusiondb_style.txt")
    for db in (clean, killed):
        invoke("01_collect", "text", source, db=db)
        invoke("05_generate", "diffusers", "--model", models["tiny-sd"], *TINY_SD, "--batch-size", "4", db=db)
    tag = ["--model", models["tiny-wd14"], "--batch-size", "1"]
    invoke("06_caption", "wd14", *tag, db=clean)

    driver = subprocess.Popen([sys.executable, str(paths.STEPS_DIR / "06_caption.py"), "wd14", "--db", str(killed),
                               *map(str, tag), "--engine", "ray", "--address", ray_address],
                              env={**os.environ, "PROMPTMILL_PROGRESS": "0"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not rows(killed, CAPTIONS) and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    invoke("06_caption", "wd14", *tag, "--engine", "ray", db=killed)
    assert rows(killed, CAPTIONS) == rows(clean, CAPTIONS) and len(rows(clean, CAPTIONS)) == 16
    with sqlite3.connect(killed) as conn:
        statuses = [s for (s,) in conn.execute("SELECT status FROM runs WHERE step = '06_caption' ORDER BY id")]
    assert statuses[-1] == "ok" and statuses[0] in ("interrupted", "ok")


def test_semantic_dedup_embeds_on_ray_with_the_same_vectors_and_decisions(tmp_path, invoke, ray_address):
    import numpy as np

    local, on_ray = tmp_path / "local" / "p.db", tmp_path / "ray" / "p.db"
    source = prompts(tmp_path, 60, "diffusiondb_style.txt")
    for db in (local, on_ray):
        invoke("01_collect", "text", source, db=db)
    invoke("03_dedup", "prompts", "--method", "semantic", "--threshold", "0.8", "--batch-size", "16", db=local)
    result = invoke("03_dedup", "prompts", "--method", "semantic", "--threshold", "0.8", "--batch-size", "16",
                    "--engine", "ray", "--workers", "2", db=on_ray)
    assert "embeddings computed 60" in result.output

    def vectors(db):
        with sqlite3.connect(db) as conn:
            return {h: np.frombuffer(v, dtype=np.float32)
                    for h, v in conn.execute("SELECT text_hash, vector FROM embeddings")}

    here, there = vectors(local), vectors(on_ray)
    assert here.keys() == there.keys() and len(here) == 60
    assert max(float(np.abs(here[h] - there[h]).max()) for h in here) < 1e-5
    decisions = "SELECT item_id, verdict, representative_id FROM decisions WHERE stage = 'dedup'"
    assert rows(on_ray, decisions) == rows(local, decisions)


def test_a_model_that_fails_to_load_on_the_workers_is_a_one_line_bad_input(tmp_path, invoke, store, run,
                                                                          ray_address):
    add_image(store, run, Image.new("RGB", (20, 20), (200, 30, 30)))
    empty = tmp_path / "not-a-tagger"
    empty.mkdir()
    result = invoke("06_caption", "wd14", "--model", empty, "--engine", "ray", expect=2)
    assert "missing model.onnx, selected_tags.csv" in result.output
    assert store.count("captions") == 0 and store.count("work_shard_done") == 0
