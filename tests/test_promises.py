"""The README's promises, probed just beside the paths the other suites walk: two processes on one
database, signals, full disks, read-only databases, hostile and malformed content."""

import os
import subprocess
import sys

import pytest
from llm_fixtures import FAST_RETRIES, example_prompts, write_prompts
from PIL import Image

import paths
from conftest import run_script
from fakes.openai_server import FakeOpenAI
from promptmill.core.store import open_store

PAID_ENV = {**os.environ, "PROMPTMILL_PROGRESS": "0", "OPENAI_API_KEY": "sk-test-two-processes-0123456789"}


def run_together(*argvs, timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Start every command at once and wait for all of them."""
    procs = [subprocess.Popen(argv, env=PAID_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def paid_keys(store) -> tuple[int, int]:
    """(successful ledger rows, distinct keys among them)."""
    row = store.query("SELECT count(*) AS n, count(DISTINCT idempotency_key) AS keys FROM api_calls "
                      "WHERE status = 'ok'")[0]
    return row["n"], row["keys"]


# --- paid calls ---------------------------------------------------------------------------------


@pytest.mark.resilience
def test_two_describe_processes_pay_each_prompt_once(tmp_path):
    prompts = 80
    db = tmp_path / "db" / "promptmill.db"
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, example_prompts(prompts))).returncode == 0
    with FakeOpenAI(latency=0.02) as server:
        argv = [sys.executable, str(paths.STEPS_DIR / "07_label.py"), "describe", "--db", str(db), "--base-url",
                server.url + "/v1", "--model", "fake-model", "--concurrency", "4", *FAST_RETRIES]
        results = run_together(argv, argv)
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        billable = server.stats()["billable"]
    store = open_store(db)
    try:
        assert paid_keys(store) == (prompts, prompts)
        assert billable == prompts
        per_prompt = store.query("SELECT prompt_id, count(*) AS n FROM labels GROUP BY prompt_id")
        assert len(per_prompt) == prompts and {row["n"] for row in per_prompt} == {1}
        assert store.count("api_claims") == 0
    finally:
        store.close()


@pytest.mark.resilience
def test_two_augment_processes_share_one_target_and_pay_each_request_once(tmp_path):
    db = tmp_path / "db" / "promptmill.db"
    target, per_call, concurrency = 60, 5, 2
    with FakeOpenAI(latency=0.05) as server:
        argv = [sys.executable, str(paths.STEPS_DIR / "04_augment.py"), "openai", "--db", str(db),
                "--base-url", server.url + "/v1", "--model", "fake-model",
                "--seeds", str(paths.SCHEMA_DIR / "templates" / "augment_seeds.txt"), "--per-call", str(per_call),
                "--target", str(target), "--concurrency", str(concurrency), *FAST_RETRIES]
        assert run_script("04_augment", *argv[2:], "--dry-run").returncode == 0  # the seeds, imported once
        results = run_together(argv, argv)
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        billable = server.stats()["billable"]
    store = open_store(db)
    try:
        paid, keys = paid_keys(store)
        assert paid == keys == billable
        unique = store.scalar(
            "SELECT count(*) FROM prompts p JOIN sources s ON s.id = p.source_id WHERE s.kind = 'augment' "
            "AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item_type = 'prompt' AND d.item_id = p.id "
            "AND d.verdict = 'drop')")
        # Each process may have had its requests in flight when the target was reached, no more.
        assert target <= unique <= target + 2 * concurrency * per_call
    finally:
        store.close()


def test_credentials_in_urls_and_key_shaped_models_never_land(tmp_path):
    db = tmp_path / "db" / "promptmill.db"
    password, key_model = "hunter2-url-password", "sk-proj-keyshapedmodel0123456789"
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, example_prompts(6))).returncode == 0
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "red.png")
    assert run_script("01_collect", "imagefolder", tmp_path / "images", "--db", db).returncode == 0
    with FakeOpenAI() as server:
        url = server.url.replace("http://", f"http://user:{password}@") + "/v1"
        described = subprocess.run(
            [sys.executable, str(paths.STEPS_DIR / "07_label.py"), "describe", "--db", str(db), "--base-url", url,
             "--model", key_model, *FAST_RETRIES], env=PAID_ENV, capture_output=True, text=True, timeout=120)
        assert described.returncode == 0, described.stderr
    tasks = tmp_path / "ls" / "tasks.json"
    assert run_script("07_label", "ls-export", tasks, "--db", db,
                      "--url-prefix", f"https://annotator:{password}@files.example/data/").returncode == 0
    assert run_script("08_split", "assign", "--db", db).returncode == 0
    exported = run_script("09_upload", "pairs", tmp_path / "pairs", "--db", db)
    assert exported.returncode == 0, exported.stderr
    store = open_store(db)
    try:
        dump = "\n".join(store.conn.iterdump())
        assert store.count("labels") == 6 and store.count("api_calls", "status = 'ok'") == 6
    finally:
        store.close()
    written = [dump, tasks.read_text()] + [p.read_text(errors="replace") for p in (tmp_path / "pairs").rglob("*") if p.is_file()]
    for text in written:
        assert password not in text and key_model not in text
    assert "http://[redacted]@127.0.0.1" in dump and "https://[redacted]@files.example" in tasks.read_text()
