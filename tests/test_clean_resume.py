"""02_clean prompts killed with SIGKILL mid-run and run again ends exactly like one uninterrupted run."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import paths
from conftest import run_script, seed_lines

DECISION_COLUMNS = "item_id, verdict, scope, rule, reason, value"


def decisions(db) -> set[tuple]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE stage = 'clean'"))


@pytest.mark.slow
@pytest.mark.resilience
def test_sigkill_mid_run_then_rerun_matches_an_uninterrupted_run(tmp_path, invoke, db_path):
    lines = (seed_lines("900k_dedup_08_split_dedup_wt_wv.txt") + seed_lines(
        "openprompts_dedup_085_075_diff_pprc_085wt_075wv.txt") + seed_lines("prompts_filtered_4.0.txt"))
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(lines * 3) + "\n", encoding="utf-8")
    invoke("01_collect", "text", source)
    reference_db = tmp_path / "reference" / "promptmill.db"
    reference_db.parent.mkdir()
    with sqlite3.connect(db_path) as src, sqlite3.connect(reference_db) as dst:
        src.backup(dst)
        total = src.execute("SELECT count(*) FROM prompts").fetchone()[0]
    assert total > 190_000

    invoke("02_clean", "prompts", "--preset", "kaggle-i2p", db=reference_db)
    expected = decisions(reference_db)
    assert len(expected) == total

    process = subprocess.Popen(
        [sys.executable, str(paths.STEPS_DIR / "02_clean.py"), "prompts", "--db", str(db_path),
         "--preset", "kaggle-i2p"], env={**os.environ, "PROMPTMILL_PROGRESS": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    with sqlite3.connect(db_path, timeout=60) as conn:
        while not conn.execute("SELECT count(*) FROM decisions").fetchone()[0]:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = decisions(db_path)
    assert 0 < len(partial) < total and partial <= expected

    result = run_script("02_clean", "prompts", "--db", db_path, "--preset", "kaggle-i2p")
    assert result.returncode == 0, result.stderr
    assert decisions(db_path) == expected
    with sqlite3.connect(db_path) as conn:
        statuses = [row[0] for row in conn.execute("SELECT status FROM runs WHERE step = '02_clean' ORDER BY id")]
    assert statuses == ["interrupted", "ok"]
