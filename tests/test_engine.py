"""Engines without Ray: plans recorded once, the sequential in-process engine, --shard/ingest."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_caption_local import add_image

from promptmill.caption import work as caption_work
from promptmill.caption.wd14 import WD14Captioner
from promptmill.cli import promptmill
from promptmill.core.runs import start_run
from promptmill.core.store import open_store
from promptmill.engine import base as engine
from tiny_models import build_all

torch.set_num_threads(1)
TINY_SD = ["--steps", "2", "--width", "32", "--height", "32"]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models", ["tiny-sd", "tiny-wd14"])


def captions(db) -> set[tuple]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute("SELECT c.image_id, c.kind, c.text, c.params_hash, c.natural_key, "
                                "group_concat(t.tag || '=' || t.score || '/' || t.category, ';') FROM captions c "
                                "LEFT JOIN tags t ON t.caption_id = c.id GROUP BY c.id"))


def generated(db) -> dict[tuple[int, int], tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT g.prompt_id, g.image_index, i.sha256, g.seed, g.params_hash, g.model, g.steps "
                            "FROM generations g JOIN images i ON i.id = g.image_id").fetchall()
    return {(row[0], row[1]): row[2:] for row in rows}


def ingest(folder, db):
    result = CliRunner().invoke(promptmill, ["ingest", "--db", str(db), str(folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def coloured_images(store, run, count=7):
    ids = [add_image(store, run, Image.new("RGB", (36, 36), (30 * i, 200 - 20 * i, 90))) for i in range(count)]
    add_image(store, run, None, "PNG", b"\x89PNG\r\n\x1a\n cut short")
    return ids


def wd14_task(store, model):
    captioner = WD14Captioner(str(model))
    return captioner, caption_work.task(captioner, {"threads": 1}, store, batch_size=2)


def test_a_plan_is_named_by_its_work_and_recorded_once(store, run, models):
    coloured_images(store, run)
    captioner, task = wd14_task(store, models["tiny-wd14"])
    rows = caption_work.plan_rows(captioner, store, None)
    first = engine.plan_work(store, run, task, rows, 3)
    again = engine.plan_work(store, run, task, rows, 3)
    assert first == again and len(first.shards) == 3
    assert [s.items for s in first.shards] == [3, 3, 2] and all(s.path.exists() for s in first.shards)
    assert store.count("work_shards") == 3
    stored = store.query("SELECT * FROM work_shards ORDER BY shard_index")
    assert [(r["first_key"], r["last_key"]) for r in stored] == [(0, 2), (3, 5), (6, 7)]
    assert {(r["step"], r["command"], r["params_hash"]) for r in stored} == {("06_caption", "wd14",
                                                                              captioner.params_hash)}
    assert str(stored[0]["path"]).startswith("work/") and not str(stored[0]["path"]).startswith("/")
    fewer = engine.plan_work(store, run, task, rows[:5], 3)
    assert fewer.id != first.id and store.count("work_shards") == 6


def with_coloured_images(*dbs):
    """The same coloured images collected into each database."""
    for db in dbs:
        store = open_store(db)
        with start_run(store, "test", "images", {}, argv=["pytest"]) as run:
            coloured_images(store, run)
        store.close()


def test_local_engine_interrupted_then_replanned_equals_the_in_process_loop(tmp_path, invoke, models, monkeypatch):
    clean, resumed = tmp_path / "clean" / "p.db", tmp_path / "resumed" / "p.db"
    with_coloured_images(clean, resumed)
    invoke("06_caption", "wd14", "--model", models["tiny-wd14"], db=clean)

    monkeypatch.setattr(engine, "SHARD_ROWS", 3)
    store = open_store(resumed)
    try:
        calls = {"n": 0}
        real_worker = caption_work.Worker

        class Dies(real_worker):
            def __call__(self, rows):
                calls["n"] += 1
                if calls["n"] == 3:
                    raise KeyboardInterrupt
                return super().__call__(rows)

        monkeypatch.setattr(caption_work, "Worker", Dies)
        captioner, task = wd14_task(store, models["tiny-wd14"])
        with pytest.raises(KeyboardInterrupt), start_run(store, "06_caption", "wd14", {}, argv=["pytest"]) as run:
            engine.run_local(store, run, task, engine.plan_work(store, run, task,
                                                                caption_work.plan_rows(captioner, store, None)))
        assert store.count("work_shard_done") == 1 and 0 < store.count("captions") < 7

        monkeypatch.setattr(caption_work, "Worker", real_worker)
        with start_run(store, "06_caption", "wd14", {}, argv=["pytest"]) as run:
            plan = engine.plan_work(store, run, task, caption_work.plan_rows(captioner, store, None))
            assert sum(s.items for s in plan.shards) == 8 - store.count("captions")
            engine.run_local(store, run, task, plan)
        with start_run(store, "06_caption", "wd14", {}, argv=["pytest"]) as run:
            plan = engine.plan_work(store, run, task, caption_work.plan_rows(captioner, store, None))
            assert sum(s.items for s in plan.shards) == 1  # only the unreadable image is ever planned again
            engine.run_local(store, run, task, plan)
        assert store.count("item_errors") == 1
    finally:
        store.close()
    assert captions(resumed) == captions(clean) and len(captions(clean)) == 7


def test_shards_on_other_machines_then_ingest_equals_a_clean_run(tmp_path, invoke, models, prompts_file):
    clean, driver = tmp_path / "clean" / "p.db", tmp_path / "driver" / "p.db"
    for db in (clean, driver):
        invoke("01_collect", "text", prompts_file, db=db)
    sd = ["--model", models["tiny-sd"], *TINY_SD]
    invoke("05_generate", "diffusers", *sd, "--batch-size", "4", db=clean)

    out = tmp_path / "results"
    for k in ("1/2", "0/2"):
        result = invoke("05_generate", "diffusers", *sd, "--batch-size", "2", "--shard", k, "--out-dir", out,
                        db=driver)
        assert "items done 3" in result.output
    assert generated(driver) == {} and not (driver.parent / "blobs").exists()
    assert len(list(out.glob("*/result-*.json"))) == 2 and len(list((out / "blobs").rglob("*.png"))) == 6

    first = ingest(out, driver)
    assert "result shards ingested 2" in first.output and "files copied 6" in first.output
    assert generated(driver) == generated(clean) and len(generated(clean)) == 6
    again = ingest(out, driver)
    assert "result shards already in 2" in again.output and len(generated(driver)) == 6
    with sqlite3.connect(driver) as conn:
        assert conn.execute("SELECT count(*), min(engine) FROM work_shard_done").fetchone() == (2, "ingest")
    # Nothing left to plan: the ingested images count as made.
    invoke("05_generate", "diffusers", *sd, db=driver)
    assert len(generated(driver)) == 6


def test_caption_shards_then_ingest_equal_the_in_process_loop(tmp_path, invoke, models):
    clean, driver = tmp_path / "clean" / "p.db", tmp_path / "driver" / "p.db"
    with_coloured_images(clean, driver)
    tagger = ["--model", models["tiny-wd14"], "--max-tags", "3"]
    invoke("06_caption", "wd14", *tagger, db=clean)
    out = tmp_path / "results"
    for k in ("0/3", "2/3", "1/3"):
        invoke("06_caption", "wd14", *tagger, "--batch-size", "2", "--shard", k, "--out-dir", out, db=driver)
    assert captions(driver) == set() and not (out / "blobs").exists()
    result = ingest(out, driver)
    assert "result shards ingested 3" in result.output and "captions added 7" in result.output
    assert "images unreadable 1" in result.output
    assert captions(driver) == captions(clean) and len(captions(clean)) == 7
    with sqlite3.connect(driver) as conn:
        assert conn.execute("SELECT count(*) FROM item_errors WHERE reason = 'wd14: unreadable image'").fetchone() \
            == (1,)


def test_ingest_refuses_a_shard_of_another_plan(tmp_path, invoke, models, prompts_file):
    driver, other = tmp_path / "driver" / "p.db", tmp_path / "other" / "p.db"
    for db in (driver, other):
        invoke("01_collect", "text", prompts_file, db=db)
    sd = ["--model", models["tiny-sd"], *TINY_SD]
    invoke("05_generate", "diffusers", *sd, "--limit", "2", db=other)  # the other database plans other work
    out = tmp_path / "foreign"
    invoke("05_generate", "diffusers", *sd, "--shard", "0/1", "--out-dir", out, db=other)
    result = ingest(out, driver)
    assert "result shards refused 1" in result.output
    with sqlite3.connect(driver) as conn:
        assert conn.execute("SELECT count(*) FROM generations").fetchone()[0] == 0
        assert conn.execute("SELECT reason FROM item_errors").fetchone()[0] == (
            "ingest: shard of a plan this database did not make")


def test_bad_engine_commands_exit_2_with_one_line(tmp_path):
    db = tmp_path / "p.db"
    for args in (["ingest", "--db", db, tmp_path],
                 ["generate", "diffusers", "--db", db, "--shard", "2/2", "--out-dir", tmp_path],
                 ["caption", "wd14", "--db", db, "--shard", "0/2"],
                 ["caption", "wd14", "--db", db, "--engine", "ray", "--shard", "0/2", "--out-dir", tmp_path]):
        result = subprocess.run([sys.executable, "-m", "promptmill", *map(str, args)], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "PROMPTMILL_PROGRESS": "0"})
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
