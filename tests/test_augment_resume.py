"""04_augment SIGKILLed mid-run and run again ends with the prompts of one clean run, paying once per request."""

import os
import signal
import subprocess
import sys
import time

import pytest
from llm_fixtures import FAST_RETRIES

import paths
from fakes.openai_server import FakeOpenAI
from promptmill.core.store import open_store

SEEDS = paths.SCHEMA_DIR / "templates" / "augment_seeds.txt"


def augment_argv(db, server):
    return [sys.executable, str(paths.STEPS_DIR / "04_augment.py"), "openai", "--db", str(db), "--base-url",
            server.url + "/v1", "--model", "fake-model", "--seeds", str(SEEDS), "--per-call", "4",
            "--target", "40", "--concurrency", "1", *FAST_RETRIES]


def augmented(db):
    store = open_store(db)
    try:
        return store.query("SELECT p.position, p.text FROM prompts p JOIN sources s ON s.id = p.source_id "
                           "WHERE s.kind = 'augment' ORDER BY p.position")
    finally:
        store.close()


@pytest.mark.resilience
@pytest.mark.slow
def test_augment_killed_and_resumed_equals_a_clean_run(tmp_path):
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0", "OPENAI_API_KEY": "sk-test-augment-0123456789"}
    with FakeOpenAI(latency=0.1) as clean_server:
        clean_db = tmp_path / "clean" / "promptmill.db"
        assert subprocess.run(augment_argv(clean_db, clean_server), env=env, capture_output=True).returncode == 0
        clean_requests = clean_server.stats()["billable"]

    with FakeOpenAI(latency=0.1) as server:
        db = tmp_path / "killed" / "promptmill.db"
        argv = augment_argv(db, server)
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if db.exists() and len(augmented(db)) >= 12:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert 12 <= len(augmented(db)) < 40, "the kill must land mid-run"
        resumed = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert augmented(db) == augmented(clean_db)
        assert clean_requests <= server.stats()["billable"] <= clean_requests + 1  # + the one in flight
