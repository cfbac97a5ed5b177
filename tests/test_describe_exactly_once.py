"""A labeller SIGKILLed mid-run and run again pays for each prompt once (plus what was in flight)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from llm_fixtures import FAST_RETRIES, example_prompts, write_prompts

import paths
from conftest import run_script
from fakes.openai_server import FakeOpenAI
from promptmill.core.store import open_store

PROMPTS = 60
CONCURRENCY = 4


@pytest.mark.resilience
@pytest.mark.slow
def test_sigkill_mid_run_then_resume_labels_every_prompt_once(tmp_path):
    db = tmp_path / "db" / "promptmill.db"
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, example_prompts(PROMPTS))).returncode == 0
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0", "OPENAI_API_KEY": "sk-test-kill-0123456789"}
    with FakeOpenAI(latency=0.05) as server:
        argv = [sys.executable, str(paths.STEPS_DIR / "07_label.py"), "describe", "--db", str(db),
                "--base-url", server.url + "/v1", "--model", "fake-model", "--concurrency", str(CONCURRENCY),
                *FAST_RETRIES]
        labeller = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        store = open_store(db)
        deadline = time.monotonic() + 60
        while store.count("labels") < 10 and time.monotonic() < deadline and labeller.poll() is None:
            time.sleep(0.02)
        in_flight_at_kill = server.stats()["in_flight"]
        labeller.send_signal(signal.SIGKILL)
        labeller.wait()
        labelled_before = store.count("labels")
        assert 10 <= labelled_before < PROMPTS, "the kill must land mid-run"

        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        billable = server.stats()["billable"]
        extra = billable - PROMPTS
        print(f"\nbillable responses {billable} for {PROMPTS} prompts: {extra} paid twice; "
              f"{in_flight_at_kill} in flight at the server when killed (concurrency {CONCURRENCY})")
        assert 0 <= extra <= CONCURRENCY
        per_prompt = store.query("SELECT prompt_id, count(*) AS n FROM labels GROUP BY prompt_id")
        assert len(per_prompt) == PROMPTS and {row["n"] for row in per_prompt} == {1}
        assert store.count("api_calls", "status = 'ok'") == PROMPTS
        statuses = [r["status"] for r in store.query("SELECT status FROM runs WHERE command = 'describe' ORDER BY id")]
        assert statuses == ["interrupted", "ok"]

        requests_before = server.stats()["requests"]
        third = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert third.returncode == 0 and server.stats()["requests"] == requests_before
        assert store.count("labels") == PROMPTS
        store.close()
