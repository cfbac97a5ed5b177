"""Kill every long step with SIGKILL at several random points, run it again, and compare.

For each step a base database is prepared, then the step is run once without
interruption (the reference) and, on a copy of the same base, started and
SIGKILLed at random moments several times before a final run to the end. The
database content afterwards (run bookkeeping aside) must equal the reference,
and a paid call whose answer was stored is never sent again.

Run alone with ``pytest -m resilience``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llm_fixtures import FAST_RETRIES

import paths
from conftest import SEED_PROMPTS
from fakes.openai_server import FakeOpenAI
from promptmill.core.store import open_store

pytestmark = [pytest.mark.resilience, pytest.mark.slow]

KILLS = 3
RNG_SEED = int(os.environ.get("PROMPTMILL_RESILIENCE_SEED", "20261121"))
# Columns that say when, how long or in which run, not what.
BOOKKEEPING = {"id", "run_id", "completed_run_id", "api_call_id", "created_at", "seconds", "latency_s",
               "attempts", "request_id", "finished_at", "applied_at"}
SKIP_TABLES = {"runs", "schema_migrations", "api_calls", "release_pushes"}
ENV = {**os.environ, "PROMPTMILL_PROGRESS": "0", "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "sk-test-resilience-0000"}


def step_argv(step: str, *args) -> list[str]:
    return [sys.executable, str(paths.STEPS_DIR / f"{step}.py"), *[str(a) for a in args]]


def run_ok(argv: list[str]):
    result = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{argv}\n{result.stderr[-3000:]}"


def prompt_lines(count: int) -> list[str]:
    """Real prompts, then edited copies of them once the real ones run out (duplicates for dedup)."""
    path = SEED_PROMPTS / "900k_dedup_08_split_dedup_wt_wv.txt"
    if not path.exists():
        path = paths.EXAMPLES_DIR / "prompts" / "diffusiondb_style.txt"
    real = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for i in range(count):
        text = real[i % len(real)]
        round_ = i // len(real)
        out.append(text if round_ == 0 else (f"{text}, trending on artstation" if round_ % 2 else text.upper()))
    return out


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- snapshots

def _keys(conn) -> dict[str, dict]:
    """Stable names for auto-increment ids, so rows written in another order still compare equal."""
    def table_map(sql):
        return {row[0]: row[1:] for row in conn.execute(sql)}

    return {
        "source": table_map("SELECT id, kind, sha256, options FROM sources"),
        "prompt": table_map("SELECT p.id, s.sha256, s.kind, p.position FROM prompts p JOIN sources s ON s.id = p.source_id"),
        "image": table_map("SELECT id, sha256 FROM images"),
        "caption": table_map("SELECT id, natural_key FROM captions"),
        "label": table_map("SELECT id, natural_key FROM labels"),
        "release": table_map("SELECT id, name, format, manifest_sha256 FROM releases"),
    }


ID_COLUMNS = {"source_id": "source", "prompt_id": "prompt", "related_prompt_id": "prompt", "image_id": "image",
              "caption_id": "caption", "parent_id": "caption", "release_id": "release"}


def _stable_meta(value: str | None):
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        return value
    if isinstance(data, dict):
        for key in BOOKKEEPING:
            data.pop(key, None)
    return data


def snapshot(db: Path) -> dict[str, list]:
    conn = open_store(db).conn
    keys = _keys(conn)
    tables = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    snap = {}
    for table in tables:
        if table in SKIP_TABLES or "_fts" in table:
            continue
        cursor = conn.execute(f"SELECT * FROM [{table}]")
        names = [d[0] for d in cursor.description]
        rows = []
        for values in cursor:
            row = dict(zip(names, values))
            for column in list(row):
                if column in BOOKKEEPING:
                    del row[column]
                elif column in ID_COLUMNS and row[column] is not None:
                    row[column] = keys[ID_COLUMNS[column]].get(row[column])
                elif column in ("meta", "params", "counts") and isinstance(row[column], str):
                    row[column] = _stable_meta(row[column])
            if table == "decisions":
                kind = row["item_type"]
                row["item_id"] = keys.get(kind, {}).get(row["item_id"], row["item_id"])
                if row.get("representative_id") is not None:
                    row["representative_id"] = keys.get(kind, {}).get(row["representative_id"])
            rows.append(json.dumps(row, sort_keys=True, default=str))
        snap[table] = sorted(rows)
    paid = [row for row in conn.execute(
        "SELECT idempotency_key, count(*) FROM api_calls WHERE status = 'ok' GROUP BY idempotency_key")]
    snap["api_calls(ok keys)"] = sorted(key for key, _ in paid)
    assert all(n == 1 for _, n in paid), "a paid request was stored twice"
    conn.close()
    return snap


def assert_same(reference: dict, resumed: dict):
    assert reference.keys() == resumed.keys()
    for table in reference:
        ref, got = reference[table], resumed[table]
        if ref != got:
            missing = sorted(set(ref) - set(got))[:3]
            extra = sorted(set(got) - set(ref))[:3]
            pytest.fail(f"{table}: {len(ref)} rows in the clean run, {len(got)} after kills\n"
                        f"missing: {missing}\nextra: {extra}")


def tree_digest(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the kill loop

def runs_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def start_step(argv: list[str], db: Path, log: Path) -> tuple[subprocess.Popen, float]:
    """Start a step and wait until it has recorded its run (imports done, work begun).

    Output goes to a file, not a pipe: a pipe inherited by a helper process
    would keep a reader waiting after the step itself was killed."""
    before = runs_count(db)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    while runs_count(db) == before and proc.poll() is None:
        time.sleep(0.01)
    return proc, time.monotonic()


def kill_and_resume(base: Path, work: Path, argv_for, rng: random.Random) -> tuple[dict, dict, list[str]]:
    """Return (reference snapshot, resumed snapshot, what each kill hit).

    Kills land at random moments of the step's own work, measured from when its
    run row appears (so they don't all hit the interpreter starting up)."""
    clean_dir, killed_dir = work / "clean", work / "killed"
    shutil.copytree(base, clean_dir)
    shutil.copytree(base, killed_dir)
    clean_db, killed_db = clean_dir / "promptmill.db", killed_dir / "promptmill.db"

    log = work / "step.log"
    proc, began = start_step(argv_for(clean_db, "clean"), clean_db, log)
    assert proc.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]
    duration = time.monotonic() - began

    hits = []
    # On a loaded machine the killed runs may go faster than the clean one did and finish before any
    # kill: then start over from the base, killing earlier.
    for round_ in range(4):
        for attempt in range(KILLS):
            label = f"killed{attempt}" if not round_ else f"retry{round_}.{attempt}"
            proc, _ = start_step(argv_for(killed_db, label), killed_db, log)
            delay = rng.uniform(0.05, 0.8) * duration / 2 ** round_
            time.sleep(delay)
            alive = proc.poll() is None
            if alive:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            hits.append(f"{delay:.2f}s:{'killed' if alive else 'finished'}")
        if any(h.endswith("killed") for h in hits):
            break
        shutil.rmtree(killed_dir)
        shutil.copytree(base, killed_dir)
    run_ok(argv_for(killed_db, "final"))
    print(f"\nwork of the clean run {duration:.1f}s; kills at {', '.join(hits)}")
    assert any(h.endswith("killed") for h in hits), "no kill landed while the step was running"
    return snapshot(clean_db), snapshot(killed_db), hits


def prepared(tmp_path: Path, *setup: list[str]) -> Path:
    """A base database folder made by running setup commands (argv lists taking the db path)."""
    base = tmp_path / "base"
    base.mkdir()
    db = base / "promptmill.db"
    for argv in setup:
        run_ok([a if a != "{db}" else str(db) for a in argv])
    open_store(db).close()
    return base


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("resilience-models"), ["tiny-sd", "tiny-blip"])


@pytest.fixture
def rng(request):
    return random.Random(f"{RNG_SEED}:{request.node.name}")


# ---------------------------------------------------------------- one test per long step

def test_collect(tmp_path, rng):
    big = write_lines(tmp_path / "big.txt", prompt_lines(400_000))
    base = prepared(tmp_path)
    reference, resumed, _ = kill_and_resume(
        base, tmp_path, lambda db, _: step_argv("01_collect", "text", "--db", db, big), rng)
    assert len(reference["prompts"]) == 400_000
    assert_same(reference, resumed)


def test_clean(tmp_path, rng):
    lines = write_lines(tmp_path / "lines.txt", prompt_lines(150_000))
    base = prepared(tmp_path, step_argv("01_collect", "text", "--db", "{db}", lines))
    reference, resumed, _ = kill_and_resume(
        base, tmp_path, lambda db, _: step_argv("02_clean", "prompts", "--db", db, "--preset", "kaggle-i2p"), rng)
    assert len(reference["decisions"]) == 150_000
    assert_same(reference, resumed)


def test_dedup(tmp_path, rng):
    lines = write_lines(tmp_path / "lines.txt", prompt_lines(120_000))
    base = prepared(tmp_path, step_argv("01_collect", "text", "--db", "{db}", lines))
    reference, resumed, _ = kill_and_resume(
        base, tmp_path,
        lambda db, _: step_argv("03_dedup", "prompts", "--db", db, "--method", "exact,simhash", "--batch-rows", 2000),
        rng)
    assert any('"verdict": "drop"' in row for row in reference["decisions"])
    assert_same(reference, resumed)


def test_split(tmp_path, rng):
    """A stratified assignment killed anywhere resumes to the clean run's splits, whichever items it wrote."""
    lines = prompt_lines(120_000)
    base = prepared(tmp_path, step_argv("01_collect", "text", "--db", "{db}",
                                        write_lines(tmp_path / "a.txt", lines[:70_000]),
                                        write_lines(tmp_path / "b.txt", lines[60_000:])),
                    step_argv("03_dedup", "prompts", "--db", "{db}", "--method", "exact,simhash"))
    reference, resumed, _ = kill_and_resume(
        base, tmp_path,
        lambda db, _: step_argv("08_split", "assign", "--db", db, "--validation", "0.1", "--test", "0.05",
                                "--stratify", "source"),
        rng)
    assert sum('"value": "validation"' in row for row in reference["decisions"]) > 1000
    assert_same(reference, resumed)


def test_augment_pays_each_request_once(tmp_path, rng):
    seeds = paths.SCHEMA_DIR / "templates" / "augment_seeds.txt"
    lines = write_lines(tmp_path / "lines.txt", prompt_lines(200))
    base = prepared(tmp_path, step_argv("01_collect", "text", "--db", "{db}", lines))
    with FakeOpenAI(latency=0.15) as server:
        def argv(db, _):
            return step_argv("04_augment", "openai", "--db", db, "--base-url", server.url + "/v1",
                             "--model", "fake-model", "--seeds", seeds, "--target", 60, "--concurrency", 1,
                             *FAST_RETRIES)

        reference, resumed, hits = kill_and_resume(base, tmp_path, argv, rng)
        billable = server.stats()["billable"]
    clean_calls = len(reference["api_calls(ok keys)"])
    kills = sum(h.endswith("killed") for h in hits)
    repeated = billable - 2 * clean_calls
    print(f"augment: {clean_calls} paid calls in the clean run; {repeated} paid twice across {kills} kills")
    assert_same(reference, resumed)
    # Each kill can lose at most the one answer in flight (concurrency 1).
    assert 0 <= repeated <= kills


def test_describe_pays_each_prompt_once(tmp_path, rng):
    lines = write_lines(tmp_path / "lines.txt", prompt_lines(120))
    base = prepared(tmp_path, step_argv("01_collect", "text", "--db", "{db}", lines))
    concurrency = 4
    with FakeOpenAI(latency=0.05) as server:
        def argv(db, _):
            return step_argv("07_label", "describe", "--db", db, "--base-url", server.url + "/v1",
                             "--model", "fake-model", "--concurrency", concurrency, *FAST_RETRIES)

        reference, resumed, hits = kill_and_resume(base, tmp_path, argv, rng)
        billable = server.stats()["billable"]
    kills = sum(h.endswith("killed") for h in hits)
    repeated = billable - 2 * 120
    print(f"describe: {repeated} answers paid twice across {kills} kills (concurrency {concurrency})")
    assert len(reference["labels"]) == 120
    assert_same(reference, resumed)
    assert 0 <= repeated <= kills * concurrency


def test_generate(tmp_path, rng, tiny_models):
    lines = write_lines(tmp_path / "lines.txt", prompt_lines(48))
    base = prepared(tmp_path, step_argv("01_collect", "text", "--db", "{db}", lines))
    reference, resumed, _ = kill_and_resume(
        base, tmp_path,
        lambda db, _: step_argv("05_generate", "diffusers", "--db", db, "--model", tiny_models["tiny-sd"],
                                "--steps", 2, "--width", 32, "--height", 32, "--batch-size", 4), rng)
    assert len(reference["generations"]) == 48
    assert_same(reference, resumed)


def test_caption(tmp_path, rng, tiny_models):
    lines = write_lines(tmp_path / "lines.txt", prompt_lines(40))
    base = prepared(
        tmp_path,
        step_argv("01_collect", "text", "--db", "{db}", lines),
        step_argv("05_generate", "diffusers", "--db", "{db}", "--model", tiny_models["tiny-sd"],
                  "--steps", 1, "--width", 32, "--height", 32, "--batch-size", 8),
    )
    reference, resumed, _ = kill_and_resume(
        base, tmp_path,
        lambda db, _: step_argv("06_caption", "blip", "--db", db, "--model", tiny_models["tiny-blip"],
                                "--batch-size", 4, "--max-length", 12), rng)
    assert len(reference["captions"]) == 40
    assert_same(reference, resumed)


def test_export(tmp_path, rng):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i, text in enumerate(prompt_lines(400)):
        Image.new("RGB", (48, 40), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(folder / f"img_{i:04d}.png")
        (folder / f"img_{i:04d}.txt").write_text(text, encoding="utf-8")
    base = prepared(tmp_path, step_argv("01_collect", "imagefolder", "--db", "{db}", folder))
    out, clean_copy = tmp_path / "out", tmp_path / "out-clean"

    def argv(db, label):
        if label == "killed0":  # the clean export is done: keep it aside, the killed runs write the same path
            shutil.move(out, clean_copy)
        return step_argv("09_upload", "parquet", out, "--db", db, "--release", "r1", "--text-from",
                         "caption:imported")

    reference, resumed, _ = kill_and_resume(base, tmp_path, argv, rng)
    assert_same(reference, resumed)
    assert tree_digest(clean_copy) == tree_digest(out)
