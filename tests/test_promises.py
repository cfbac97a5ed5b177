"""The README's promises, probed just beside the paths the other suites walk: two processes on one
database, signals, full disks, read-only databases, hostile and malformed content."""

import gzip
import hashlib
import io
import json
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm_fixtures import FAST_RETRIES, example_prompts, write_prompts
from PIL import Image

import paths
from conftest import run_script
from fakes.openai_server import FakeOpenAI, describe_answer
from promptmill.core.errors import RunStopped
from promptmill.core.runs import now, start_run
from promptmill.core.store import open_store
from promptmill.llm.ledger import Ledger, load_prices
from promptmill.llm.runner import CallRunner, CallSettings, Job

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
@pytest.mark.slow
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
@pytest.mark.slow
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


def on_another_host(argv: list[str], host: str = "otherhost") -> list[str]:
    """ARGV run under another host name (its own UTS namespace); skip where that is not permitted."""
    probe = subprocess.run(["unshare", "--uts", "hostname", host], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --uts is not permitted here: {probe.stderr.decode().strip()}")
    return ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *argv]


@pytest.mark.resilience
@pytest.mark.slow
def test_claims_of_a_run_killed_on_another_host_lapse_with_its_lease(tmp_path):
    prompts, lease = 8, 2
    db = tmp_path / "db" / "promptmill.db"
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, example_prompts(prompts))).returncode == 0
    released = threading.Event()

    def answer(text, serial):
        if serial <= 2:  # the other host's two requests: in flight until it is killed
            released.wait(120)
        return describe_answer(text)

    with FakeOpenAI(answer=answer) as server:
        argv = [sys.executable, str(paths.STEPS_DIR / "07_label.py"), "describe", "--db", str(db), "--base-url",
                server.url + "/v1", "--model", "fake-model", *FAST_RETRIES]
        elsewhere = subprocess.Popen(on_another_host([*argv, "--limit", "2", "--concurrency", "2"]),
                                     env={**PAID_ENV, "PROMPTMILL_CLAIM_LEASE": str(lease)},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        store = open_store(db)
        try:
            deadline = time.monotonic() + 60
            while server.stats()["in_flight"] < 2 and time.monotonic() < deadline and elsewhere.poll() is None:
                time.sleep(0.05)
            assert store.count("api_claims", "host = 'otherhost'") == 2, f"exit status {elsewhere.poll()}"
            time.sleep(lease + 1)  # its requests outlast its lease: renewals keep the claims

            respected = subprocess.run(argv, env=PAID_ENV, capture_output=True, text=True, timeout=120)
            assert respected.returncode == 0, respected.stderr
            assert store.count("labels") == prompts - 2 and server.stats()["billable"] == prompts - 2

            elsewhere.kill()
            elsewhere.wait()
            released.set()  # its answers go to a dead process: paid for, lost with the kill
            deadline = time.monotonic() + 60
            while server.stats()["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.05)
            paid_before = server.stats()["billable"]
            time.sleep(lease + 0.5)

            taken_over = subprocess.run(argv, env=PAID_ENV, capture_output=True, text=True, timeout=120)
            assert taken_over.returncode == 0, taken_over.stderr
            assert server.stats()["billable"] - paid_before == 2
            assert paid_keys(store) == (prompts, prompts) and store.count("labels") == prompts
            assert store.count("api_claims") == 0
            killed = store.query("SELECT status, error FROM runs WHERE host = 'otherhost'")[0]
            assert killed["status"] == "interrupted" and "no heartbeat from host otherhost" in killed["error"]
        finally:
            elsewhere.kill()
            released.set()
            store.close()


def claim_held_by(store, host: str, lease_until: str, pid: int | None = None):
    """(key, run) of a claim held by a running run on HOST whose lease runs until LEASE_UNTIL."""
    holder = start_run(store, "test", "holder", argv=["pytest"])
    key = f"key-of-run-{holder.id}"
    assert Ledger(store, holder, load_prices()).claim(key, False, "scope") == ("claimed", None)
    with store.transaction():
        store.execute("UPDATE runs SET host = ?, pid = coalesce(?, pid), lease_until = ? WHERE id = ?",
                      (host, pid, lease_until, holder.id))
        store.execute("UPDATE api_claims SET host = ?, pid = coalesce(?, pid) WHERE run_id = ?", (host, pid, holder.id))
    return key, holder


def test_a_claim_from_another_host_holds_while_its_lease_runs(store, run):
    ended = subprocess.Popen(["true"])
    ended.wait()
    fresh, _ = claim_held_by(store, "otherhost", now(60))
    lapsed, lapsed_run = claim_held_by(store, "otherhost", now(-1))
    dead_here, _ = claim_held_by(store, socket.gethostname(), now(60), pid=ended.pid)
    ledger = Ledger(store, run, load_prices())
    assert ledger.claimed_elsewhere("scope") == 1
    assert ledger.claim(fresh, False) == ("busy", None)
    assert ledger.claim(lapsed, False) == ("claimed", None)
    assert ledger.claim(dead_here, False) == ("claimed", None)
    taken = store.query("SELECT status, error FROM runs WHERE id = ?", (lapsed_run.id,))[0]
    assert taken["status"] == "interrupted" and "no heartbeat from host otherhost" in taken["error"]
    # Had it only stalled, its next renewal tells it that its claims were taken over.
    assert run.renew_lease(60) and not lapsed_run.renew_lease(60)


def test_a_run_whose_claims_were_taken_over_sends_nothing_more(store, run):
    with store.transaction():
        store.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?", (run.id,))
    provider = SimpleNamespace(name="fake", model="fake-model")  # never asked: nothing may be sent
    runner = CallRunner(store, run, provider, CallSettings(), load_prices(), write=None)
    with pytest.raises(RunStopped, match="claim lease"):
        runner.run_jobs([Job(request={}, item="prompt:1")])
    assert store.count("api_claims") == 0


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


# --- store failures: one line, never a traceback ---------------------------------------------------


def one_line_failure(result: subprocess.CompletedProcess, code: int = 1) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def full_disk(limit_bytes: int):
    """A preexec_fn: files can't grow past LIMIT_BYTES, as on a full disk (writes fail with EFBIG)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def step_line(step: str, *args) -> str:
    return shlex.join([sys.executable, str(paths.STEPS_DIR / f"{step}.py"), *map(str, args)])


def in_private_mounts(tmp_path, setup: str, lines: list[str], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run each shell line as root in a private mount namespace after SETUP (its mounts vanish with it),
    one result per line; skip where unshare or mount is not permitted."""
    results = tmp_path / "results"
    results.mkdir()
    script = [f"{setup} || exit 97"] + [f"( {line} ) >{results}/{i}.out 2>{results}/{i}.err; echo $? >{results}/{i}.rc"
                                         for i, line in enumerate(lines)]
    done = subprocess.run(["unshare", "--mount", "sh", "-c", "\n".join(script)], capture_output=True, text=True,
                          env={**os.environ, "PROMPTMILL_PROGRESS": "0"}, timeout=timeout)
    if done.returncode == 97 or not (results / "0.rc").exists():
        pytest.skip(f"no private mounts here: {done.stderr.strip()}")
    return [subprocess.CompletedProcess(line, int((results / f"{i}.rc").read_text()), (results / f"{i}.out").read_text(),
                                        (results / f"{i}.err").read_text()) for i, line in enumerate(lines)]


def copy_of(db: Path, to: Path) -> str:
    """A shell line that copies DB with its -wal and -shm into TO (a snapshot to open after the namespace)."""
    return f"mkdir -p {to} && cp {db} {db}-* {to}/"


def runs_and_prompts(db: Path) -> tuple[list[dict], list[tuple]]:
    store = open_store(db)
    try:
        return (store.query("SELECT status, counts, error FROM runs ORDER BY id"),
                store.execute("SELECT source_id, position, text FROM prompts ORDER BY id").fetchall())
    finally:
        store.close()


def noise_image(path, side: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)


def test_a_path_that_cannot_hold_a_database_is_one_line(tmp_path):
    prompts = write_prompts(tmp_path, ["a cat"])
    not_a_db = tmp_path / "README.md"
    not_a_db.write_text("# notes\n" * 200)
    assert "not a database" in one_line_failure(run_script("01_collect", "text", "--db", not_a_db, prompts))
    assert not_a_db.read_text() == "# notes\n" * 200
    one_line_failure(run_script("01_collect", "text", "--db", not_a_db / "x.db", prompts))
    one_line_failure(run_script("01_collect", "text", "--db", tmp_path, prompts), code=2)


def test_a_full_disk_while_storing_blobs_fails_the_run_in_one_line(tmp_path):
    db = tmp_path / "db" / "promptmill.db"
    noise_image(tmp_path / "images" / "noise.png", 1000)
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, ["a cat"])).returncode == 0
    result = run_script("01_collect", "imagefolder", "--db", db, tmp_path / "images", preexec_fn=full_disk(1_000_000))
    assert "File too large" in one_line_failure(result)
    store = open_store(db)
    try:
        assert store.query("SELECT status FROM runs ORDER BY id")[-1]["status"] == "failed"
    finally:
        store.close()


@pytest.mark.parametrize("room", [500_000, 1_500_000])
def test_a_full_disk_while_writing_the_database_fails_the_run_in_one_line(tmp_path, room):
    db = tmp_path / "db" / "promptmill.db"
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, ["a cat"])).returncode == 0
    lines = [f"prompt number {i} of a long list, a painting of a harbour at dusk" for i in range(60_000)]
    result = run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, lines, "many.txt"),
                        preexec_fn=full_disk(os.path.getsize(db) + room), timeout=300)
    # SQLite says "database or disk is full" or "disk I/O error", depending on which write hit the limit,
    # and has rolled the transaction back itself.
    line = one_line_failure(result)
    assert line.startswith("error: database: ") and "disk" in line
    runs, prompts = runs_and_prompts(db)
    assert runs[-1]["status"] == "failed" and "disk" in runs[-1]["error"], runs
    assert json.loads(runs[-1]["counts"]).get("prompts added", 0) == len(prompts) - 1


@pytest.mark.parametrize("room", ["some", "none"])
def test_a_real_full_disk_fails_the_run_with_its_reason_and_a_rerun_completes_it(tmp_path, room):
    """A 6 MB tmpfs: the import fills it mid-way, or (room none) the disk is full from its first batch, when
    the status write fits only in the space the reserve beside the database held back."""
    disk, saved = tmp_path / "disk", tmp_path / "saved"
    db = disk / "promptmill.db"
    one = write_prompts(tmp_path, ["a cat"])
    many = write_prompts(tmp_path, [f"prompt number {i} of a long list, a painting of a harbour at dusk"
                                    for i in range(60_000)], "many.txt")
    fill = f"dd if=/dev/zero of={disk}/filler bs=1k count=$(( $(df -k --output=avail {disk} | tail -1) - 48 ))"
    results = in_private_mounts(tmp_path, f"mkdir {disk} && mount -t tmpfs -o size=6m tmpfs {disk}", [
        step_line("01_collect", "text", "--db", db, one),
        fill if room == "none" else "true",
        step_line("01_collect", "text", "--db", db, many),
        copy_of(db, saved / "failed"),
        f"rm -f {disk}/filler && mount -o remount,size=64m {disk}",
        step_line("01_collect", "text", "--db", db, many),
        copy_of(db, saved / "after"),
    ])
    assert [r.returncode for r in results[:2]] == [0, 0], results
    assert "disk" in one_line_failure(results[2])
    runs, prompts = runs_and_prompts(saved / "failed" / "promptmill.db")
    assert runs[-1]["status"] == "failed" and "disk" in runs[-1]["error"], runs
    assert json.loads(runs[-1]["counts"]).get("prompts added", 0) == len(prompts) - 1
    assert results[5].returncode == 0, results[5].stderr
    runs, prompts = runs_and_prompts(saved / "after" / "promptmill.db")
    assert [run["status"] for run in runs] == ["ok", "failed", "ok"]
    reference = tmp_path / "reference" / "promptmill.db"
    for path in (one, many):
        assert run_script("01_collect", "text", "--db", reference, path).returncode == 0
    assert prompts == runs_and_prompts(reference)[1]


READ_ONLY_COMMANDS = [("03_dedup", "report"), ("08_split", "report", "--method", "exact"), ("06_caption", "stats"),
                      ("09_upload", "diff", "#1", "#1")]


def test_read_only_commands_never_create_a_database(tmp_path):
    missing = tmp_path / "typo" / "promptmill.db"
    for command in READ_ONLY_COMMANDS:
        assert "no database" in one_line_failure(run_script(*command, "--db", missing), code=2)
    assert not (tmp_path / "typo").exists()


def immutable(*paths) -> bool:
    """chattr +i PATHS (refused even to root); False where the filesystem or user can't."""
    return all(subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0 for p in paths)


@pytest.fixture
def frozen(tmp_path):
    """A closed promptmill database with one release, and a way to make it (and its folder) immutable."""
    db = tmp_path / "db" / "promptmill.db"
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, ["a cat", "a dog"])).returncode == 0
    assert run_script("08_split", "assign", "--db", db).returncode == 0
    assert run_script("09_upload", "prompts", tmp_path / "out", "--db", db).returncode == 0
    frozen_paths = []

    def freeze(*paths):
        if not immutable(*paths):
            pytest.skip("chattr +i is not available here")
        frozen_paths.extend(paths)

    yield db, freeze
    for path in frozen_paths:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@pytest.mark.parametrize("folder_too", [False, True], ids=["file", "file-and-folder"])
def test_a_read_only_database_is_read_and_never_written(frozen, tmp_path, folder_too):
    db, freeze = frozen
    freeze(db, db.parent) if folder_too else freeze(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for command in READ_ONLY_COMMANDS:
        result = run_script(*command, "--db", db)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)
    assert "1 added" not in run_script("09_upload", "diff", "#1", "#1", "--db", db).stdout
    one_line_failure(run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, ["a fox"], "more.txt")))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


BROWSE_RELEASES = """
import socket, subprocess, sys, time, urllib.request
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "promptmill", "browse", "--db", sys.argv[1], "--port", str(port)],
                          stdout=subprocess.DEVNULL)
try:
    for _ in range(300):
        try:
            print(urllib.request.urlopen(f"http://127.0.0.1:{port}/promptmill/releases.json?_shape=array").read().decode())
            break
        except OSError:
            if server.poll() is not None:
                sys.exit(server.returncode)
            time.sleep(0.2)
finally:
    server.terminate()
    server.wait()
"""


def leave_wal_open(db: Path, *steps):
    """Run STEPS while another process holds the database open, then SIGKILL that one: what the steps wrote
    stays in <db>-wal, indexed by <db>-shm, as after a crash."""
    holder = subprocess.Popen([sys.executable, "-c", f"import sqlite3, sys, time; sqlite3.connect({str(db)!r})"
                               ".execute('SELECT count(*) FROM runs').fetchall(); print(flush=True); time.sleep(300)"],
                              stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    try:
        for step in steps:
            assert run_script(*step).returncode == 0
    finally:
        holder.kill()
        holder.wait()


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("wal", ["none", "with-shm", "without-shm"])
def test_a_database_on_a_read_only_mount_is_read_and_never_written(frozen, tmp_path, wal):
    """A read-only bind mount of the database folder: a closed database, one whose WAL a crash left with its
    index (read as it is, WAL included), and one whose WAL lost its index (refused, never read stale)."""
    db, _ = frozen
    last = "#1"
    if wal != "none":
        leave_wal_open(db, ("01_collect", "text", "--db", db, write_prompts(tmp_path, ["a fox"], "fox.txt")),
                       ("09_upload", "prompts", tmp_path / "out2", "--db", db))
        assert db.with_name(f"{db.name}-wal").stat().st_size and db.with_name(f"{db.name}-shm").exists()
        last = "#2"
    if wal == "without-shm":
        db.with_name(f"{db.name}-shm").unlink()
    before = folder_digest(db.parent)
    folder = db.parent
    commands = [*READ_ONLY_COMMANDS, ("09_upload", "diff", "#1", last)]
    results = in_private_mounts(tmp_path, f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}", [
        *(step_line(*command, "--db", db) for command in commands),
        shlex.join([sys.executable, "-c", BROWSE_RELEASES, str(db)]),
        step_line("01_collect", "text", "--db", db, write_prompts(tmp_path, ["a hen"], "hen.txt")),
    ])
    *reads, browse, write = results
    if wal == "without-shm":
        for result in [*reads, browse]:
            assert "-shm" in one_line_failure(result), result.args
    else:
        for command, result in zip(commands, reads):
            assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)
        assert ("1 added" in reads[-1].stdout) == (wal == "with-shm")
        assert [release["id"] for release in json.loads(browse.stdout)] == ([1, 2] if last == "#2" else [1])
    one_line_failure(write)
    assert folder_digest(db.parent) == before


# --- inputs that must not reach what they shouldn't ----------------------------------------------------


def png(side: int = 8, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (side, side), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def errors_by_reason(store) -> dict[str, int]:
    return dict(store.execute("SELECT reason, count(*) FROM item_errors GROUP BY reason").fetchall())


def blob_contents(db) -> list[bytes]:
    return [p.read_bytes() for p in (db.parent / "blobs").rglob("*") if p.is_file()]


def test_hf_image_paths_are_read_only_inside_the_dataset(tmp_path, invoke, store, db_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    secret = tmp_path / "hf_token"
    secret.write_text("hf_thisisthetokenfile0123456789")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "inside.png").write_bytes(png(9))
    rows = [{"bytes": None, "path": "/etc/passwd"}, {"bytes": None, "path": str(secret)},
            {"bytes": None, "path": "../hf_token"}, {"bytes": None, "path": "inside.png"},
            {"bytes": png(10), "path": "embedded.png"}]
    features = datasets.Features({"prompt": datasets.Value("string"), "image": datasets.Image()})
    monkeypatch.chdir(folder)  # the writer looks at each path (relative ones from here)
    datasets.Dataset.from_dict({"prompt": [f"p{i}" for i in range(len(rows))], "image": rows},
                               features=features).to_parquet(str(folder / "train.parquet"))
    invoke("01_collect", "hf", folder, "--prompt-column", "prompt", "--image-column", "image")
    assert store.count("images") == 2 and errors_by_reason(store) == {"no image": 3}
    assert all(b"hf_thisisthetokenfile" not in blob and b"root:" not in blob for blob in blob_contents(db_path))


def test_gelbooru_file_urls_are_never_read(tmp_path, store, db_path):
    from fakes.gelbooru import FakeGelbooru, make_posts

    secret = tmp_path / "token.png"
    secret.write_bytes(b"hf_secret-token-contents" * 10)
    images = {"ok.png": png(8)}
    with FakeGelbooru([], images) as fake:
        fake.posts = make_posts(fake.base_url, images, {"ok.png": "landscape"})
        fake.posts.append({**fake.posts[0], "id": 999, "file_url": secret.as_uri(), "md5": "0" * 32})
        result = run_script("01_collect", "gelbooru", "--db", db_path, "--tags", "landscape", "--base-url",
                            fake.base_url, "--delay", "0", env={"GELBOORU_API_KEY": "k3y", "GELBOORU_USER_ID": "42"})
        assert result.returncode == 0, result.stderr
        assert store.count("images") == 1 and errors_by_reason(store) == {"download refused": 1}
        assert all(b"hf_secret" not in blob for blob in blob_contents(db_path))
        refused = run_script("01_collect", "gelbooru", "--db", db_path, "--tags", "x", "--base-url",
                             tmp_path.as_uri(), env={"GELBOORU_API_KEY": "k3y", "GELBOORU_USER_ID": "42"})
        assert "http(s)" in one_line_failure(refused, code=2)


def bomb_png() -> bytes:
    """A small file whose header claims 13000 x 13000 RGBA pixels (~676 MB decoded)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.new("L", (13000, 13000), 0).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bomb_png()


def test_the_pixel_limit_is_checked_from_the_header_before_any_decode(bomb, tmp_path):
    from promptmill.caption.base import open_rgb
    from promptmill.core.images import MAX_PIXELS, TooManyPixels, open_image
    from promptmill.datasette.plugin import thumbnail_bytes

    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    assert len(bomb) < 2_000_000 and 13000 * 13000 > MAX_PIXELS
    with pytest.raises(TooManyPixels):
        open_image(path)
    with pytest.raises(TooManyPixels):
        thumbnail_bytes(path)
    store = open_store(tmp_path / "db" / "promptmill.db")
    try:
        sha, _ = store.blobs.put(bomb, "png")
        with pytest.raises(TooManyPixels):
            open_rgb(store.blobs, sha, "png")
    finally:
        store.close()
    assert open_image(io.BytesIO(png(8))).size == (8, 8)


def test_dedup_images_records_a_bomb_without_decoding_it(bomb, tmp_path, db_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(bomb)
    (folder / "fine.png").write_bytes(png(16))
    assert run_script("01_collect", "imagefolder", "--db", db_path, folder).returncode == 0
    result = run_script("03_dedup", "images", "--db", db_path, "--method", "phash",
                        preexec_fn=memory_limit(1_500_000_000))
    assert result.returncode == 0, result.stderr
    store = open_store(db_path)
    try:
        errors = [e for (e,) in store.execute("SELECT error FROM image_phashes WHERE error IS NOT NULL")]
        assert len(errors) == 1 and "TooManyPixels" in errors[0]
    finally:
        store.close()


def memory_limit(limit_bytes: int):
    """A preexec_fn capping the address space, so a decoded bomb would fail the command."""

    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


def test_a_huge_sidecar_caption_is_an_item_error(tmp_path, invoke, store):
    import zipfile

    from promptmill.collect.imagefolder import MAX_CAPTION_BYTES

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", png(8))
        zf.writestr("big.txt", "masterpiece, " * 1_000_000)
        zf.writestr("small.png", png(9))
        zf.writestr("small.txt", "a red square")
    assert archive.stat().st_size < 200_000
    invoke("01_collect", "zip", archive)
    assert errors_by_reason(store) == {"caption too long": 1}
    assert [c for (c,) in store.execute("SELECT text FROM captions")] == ["a red square"]
    assert store.scalar("SELECT max(length(text)) FROM captions") < MAX_CAPTION_BYTES


# --- idempotency ------------------------------------------------------------------------------------


def current_texts(store) -> list[str]:
    return [t for (t,) in store.execute("SELECT text FROM current_captions ORDER BY image_id")]


def test_the_same_caption_edit_never_applies_twice_to_a_chain(invoke, store, run):
    from curation_fixtures import add_caption, add_images

    for image_id in add_images(store, run, ["a.png", "b.png"]):
        add_caption(store, run, image_id, "wd14", "1girl, solo")
    prefix = ("06_caption", "edit", "--kind", "wd14", "--regex", "--replace", "^", "masterpiece, ")
    invoke(*prefix)
    invoke(*prefix)
    assert current_texts(store) == ["masterpiece, 1girl, solo"] * 2
    first_run = store.scalar("SELECT min(id) FROM runs WHERE command = 'edit'")
    invoke("06_caption", "edit", "--undo", first_run)
    assert current_texts(store) == ["1girl, solo"] * 2
    invoke(*prefix)  # undone, so it may be applied again, once
    invoke(*prefix)
    assert current_texts(store) == ["masterpiece, 1girl, solo"] * 2
    invoke("06_caption", "edit", "--kind", "wd14", "--add-trigger", "sks")
    invoke(*prefix)  # another edit in between: still the same edit of the same chain
    assert current_texts(store) == ["sks, masterpiece, 1girl, solo"] * 2


def test_counts_exclude_a_rolled_back_batch(store, run):
    with store.transaction():
        run.add("prompts added", 3)
    with pytest.raises(RuntimeError), store.transaction():
        run.add("prompts added", 5)
        raise RuntimeError("the disk filled up")
    run.add("outside any transaction")
    assert run.counts == {"prompts added": 3, "outside any transaction": 1}


# --- processes that must end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_text(tmp_path_factory) -> tuple:
    """A text file over the size parsed in a worker process, and a truncated .txt.gz of it."""
    folder = tmp_path_factory.mktemp("big-text")
    data = "".join(f"prompt {i}, a painting of a harbour at dusk with boats\n" for i in range(200_000)).encode()
    plain = folder / "big.txt"
    plain.write_bytes(data)
    packed = gzip.compress(data)
    truncated = folder / "big.txt.gz"
    truncated.write_bytes(packed[:len(packed) // 2])
    return plain, truncated


def stored(db) -> tuple[list[dict], int]:
    store = open_store(db)
    try:
        return store.query("SELECT status, counts, error FROM runs ORDER BY id"), store.count("prompts")
    finally:
        store.close()


@pytest.mark.slow
def test_sigterm_ends_a_big_text_import_as_interrupted(big_text, tmp_path):
    db = tmp_path / "db" / "promptmill.db"
    argv = [sys.executable, str(paths.STEPS_DIR / "01_collect.py"), "text", "--db", str(db), str(big_text[0])]
    proc = subprocess.Popen(argv, env={**os.environ, "PROMPTMILL_PROGRESS": "0"}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not (db.exists() and stored(db)[1]):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)  # it used to wait forever on its parser process
    runs, prompts = stored(db)
    if proc.returncode == 0:
        pytest.skip("the import finished before the signal landed")
    assert proc.returncode == 143 and err.strip().splitlines() == ["interrupted (SIGTERM)"], err
    assert runs[-1]["status"] == "interrupted"
    assert json.loads(runs[-1]["counts"]).get("prompts added", 0) == prompts


@pytest.mark.parametrize("size", ["small", "big"])
def test_a_truncated_gzip_fails_the_run_in_one_line(big_text, tmp_path, size):
    source = big_text[1]
    if size == "small":
        packed = gzip.compress(b"a cat\na dog\n" * 100)
        source = tmp_path / "small.txt.gz"
        source.write_bytes(packed[:-20])
    db = tmp_path / "db" / "promptmill.db"
    result = run_script("01_collect", "text", "--db", db, source, timeout=120)
    assert "truncated or corrupt" in one_line_failure(result)
    runs, prompts = stored(db)
    assert runs[-1]["status"] == "failed" and json.loads(runs[-1]["counts"]).get("prompts added", 0) == prompts


@pytest.mark.slow
def test_a_writer_error_ends_a_big_text_import(big_text, tmp_path):
    db = tmp_path / "db" / "promptmill.db"
    assert run_script("01_collect", "text", "--db", db, write_prompts(tmp_path, ["a cat"])).returncode == 0
    result = run_script("01_collect", "text", "--db", db, big_text[0], timeout=120,
                        preexec_fn=full_disk(os.path.getsize(db) + 2_000_000))
    assert one_line_failure(result).startswith("error: database: ")


# --- bad input: reported, never fatal, never garbled ------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
GOOD_MESSAGE = {"id": "1", "type": "Default", "timestamp": "t", "content": "a quiet harbour at dawn",
                "author": {"id": "5", "isBot": False}}


def reasons(store) -> list[str]:
    return [r for (r,) in store.execute("SELECT reason FROM item_errors ORDER BY id")]


def test_a_non_utf8_file_name_is_imported_with_a_readable_locator(tmp_path, invoke, store):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "fine.png").write_bytes(png(8))
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as fh:
        fh.write(png(9))
    invoke("01_collect", "imagefolder", folder)
    locators = sorted(r for (r,) in store.execute("SELECT locator FROM image_origins"))
    assert locators == ["caf\\xe9.png", "fine.png"]


def test_json_nested_100k_deep_is_reported_and_keeps_what_came_before(tmp_path, invoke, store):
    discord = tmp_path / "export.json"
    discord.write_text(json.dumps({"guild": {}, "channel": {}, "messages": [GOOD_MESSAGE]})[:-2]
                       + ", " + DEEP + "]}")
    invoke("01_collect", "discord", discord, "--format", "messages")
    assert store.count("prompts") == 1 and reasons(store) == ["malformed export"]

    table = tmp_path / "rows.jsonl"
    table.write_text('{"prompt": "a red fox"}\n' + DEEP + '\n{"prompt": "a blue owl"}\n')
    invoke("01_collect", "table", table)
    assert store.count("prompts") == 3 and reasons(store)[1:] == ["malformed JSON"]

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(8))
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a red square"}\n' + DEEP + "\n")
    invoke("01_collect", "imagefolder", folder)
    assert store.count("image_origins") == 1 and reasons(store)[2:] == ["bad metadata row"]

    # A Label Studio export: the task nested too deep is that task's error; the tasks around it are read.
    export = tmp_path / "ls.json"
    export.write_text('[{"id": 1, "data": {"image": "x.png"}, "annotations": []}, ' + DEEP
                      + ', {"id": 3, "data": {"image": "y.png"}, "annotations": []}]')
    invoke("07_label", "ls-import", export)
    assert reasons(store)[3:] == ["malformed task"]
    assert store.scalar("SELECT detail FROM item_errors ORDER BY id DESC LIMIT 1") == "nested too deep to read"


def test_an_endless_quoted_csv_field_is_one_error_not_millions_of_prompts(tmp_path, invoke, store):
    table = tmp_path / "prompts.csv"
    with open(table, "w", encoding="utf-8") as fh:
        fh.write('prompt\na red fox\n"' + "an endless, quoted field\n" * 700_000 + "\na blue owl\n")
    assert table.stat().st_size > 16 << 20
    invoke("01_collect", "table", table)
    assert [t for (t,) in store.execute("SELECT text FROM prompts")] == ["a red fox"]
    assert reasons(store) == ["malformed row"]


def test_nul_only_cr_only_and_wrong_typed_cells(tmp_path, invoke, store):
    table = tmp_path / "nul.csv"
    table.write_text("prompt\n\x00\n\x00\x00 \na red fox\n")
    invoke("01_collect", "table", table)
    assert [t for (t,) in store.execute("SELECT text FROM prompts")] == ["a red fox"]
    assert reasons(store) == ["empty", "empty"]

    mac = tmp_path / "mac.txt"
    mac.write_bytes(b"\r".join(f"prompt {i}, a lighthouse".encode() for i in range(1000)) + b"\r")
    invoke("01_collect", "text", mac)
    assert store.count("prompts") == 1001 and len(reasons(store)) == 2

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"bytes": pa.array([b"a cat on a mat", b"\xff\xfe"]), "lists": pa.array([["a", "cat"], ["dog"]]),
               "floats": pa.array([float("nan"), 2.5])}
    for name, values in columns.items():
        pq.write_table(pa.table({"prompt": values}), tmp_path / f"{name}.parquet")
        invoke("01_collect", "table", tmp_path / f"{name}.parquet")
    texts = [t for (t,) in store.execute("SELECT text FROM prompts WHERE text NOT LIKE 'prompt %' ORDER BY id")]
    assert texts == ["a red fox", "a cat on a mat", "2.5"]
    assert not any(t.startswith(("b'", "[")) or t == "nan" for t in texts)
    assert reasons(store)[2:] == ["not text", "not text", "not text", "empty"]


def test_duplicate_and_dot_only_names_in_a_zip_are_reported(tmp_path, invoke, store):
    import zipfile

    archive = tmp_path / "set.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("a.png", png(8))
            zf.writestr("a.png", png(9))
            zf.writestr("..png", png(10))
            zf.writestr("....png", png(11))
            zf.writestr("b.png", png(12))
    invoke("01_collect", "zip", archive)
    assert store.count("image_origins") == 2
    assert sorted(reasons(store)) == ["duplicate member", "hidden file", "hidden file"]


# --- every reader, fuzzed ----------------------------------------------------------------------------

FRAGMENTS = ["a red fox", "prompt", "text", "file_name", '"', "'", ",", "\t", "\n", "\r", "\r\n", "\x00", "{", "}",
             "[", "]", ":", "\\", "é", "😀", "messages", "content", "a.png", "../a.png", "/etc/passwd", "..png",
             '{"prompt": "a cat"}', '{"file_name": "a.png", "text": "sky"}', DEEP[:2000] + DEEP[-2000:]]
RAW = st.one_of(st.binary(max_size=400),
                st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(lambda parts: "".join(parts).encode()),
                st.lists(st.sampled_from(FRAGMENTS), max_size=20).map(
                    lambda parts: "".join(parts).encode("utf-8") + b"\xff\xfe\xc3"))


def discord_export(body: bytes) -> bytes:
    return b'{"guild": {}, "channel": {}, "messages": [' + json.dumps(GOOD_MESSAGE).encode() + b", " + body


MEMBER_NAMES = st.sampled_from(["a.png", "a.txt", "b.png", "b.txt", "..png", "....png", ".hidden.png", "../up.png",
                                "/abs.png", "dir/c.png", "dir/c.caption", "metadata.jsonl", "x.bin"])


def zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buffer.getvalue()


MEMBER_DATA = st.one_of(RAW, st.just(png(8)), st.just(png(9)[:40]))
READERS = {
    "text": (("01_collect", "text"), "in.txt", RAW),
    "table-csv": (("01_collect", "table"), "in.csv", RAW.map(lambda body: b"prompt,author\n" + body)),
    "table-jsonl": (("01_collect", "table"), "in.jsonl", RAW),
    "discord": (("01_collect", "discord", "--format", "messages"), "in.json", RAW.map(discord_export)),
    "zip": (("01_collect", "zip"), "in.zip",
            st.lists(st.tuples(MEMBER_NAMES, MEMBER_DATA), max_size=8).map(zip_bytes)),
    "ls-import": (("07_label", "ls-import"), "in.json", RAW),
}


def source_accounting(db) -> list[tuple[int, int]]:
    """(items the reader says it read, rows + item errors + skipped items) per completed source (a cut-off
    export is left incomplete, to be read whole later)."""
    store = open_store(db)
    try:
        skipped = sum(n for row in store.query("SELECT counts FROM runs")
                      for key, n in json.loads(row["counts"] or "{}").items()
                      if key in ("blank lines skipped", "messages without a prompt"))
        return [(row["items"], store.scalar(
            "SELECT count(*) FROM (SELECT position FROM prompts WHERE source_id = :s UNION SELECT position "
            "FROM image_origins WHERE source_id = :s UNION SELECT position FROM item_errors WHERE source_id = :s)",
            {"s": row["id"]}) + skipped)
            for row in store.query("SELECT id, items FROM sources WHERE kind != 'labelstudio' AND items IS NOT NULL")]
    finally:
        store.close()


def fuzz_one(command: tuple, file_name: str, data: bytes, metadata: bytes | None = None):
    from click.testing import CliRunner

    from conftest import load_step

    with tempfile.TemporaryDirectory(dir=FUZZ_DIR) as work:
        work = Path(work)
        (work / "in").mkdir()
        target = work / "in" / file_name
        if metadata is not None:
            target = work / "in" / "folder"
            target.mkdir()
            (target / "a.png").write_bytes(png(8))
            (target / "b.png").write_bytes(data)
            (target / "metadata.jsonl").write_bytes(metadata)
        else:
            target.write_bytes(data)
        db = work / "db" / "promptmill.db"
        result = CliRunner().invoke(load_step(command[0]).cli, [command[1], "--db", str(db), *command[2:],
                                                                str(target)])
        if result.exit_code != 0:  # a bad command or a damaged file: one line through click, no traceback
            assert isinstance(result.exception, SystemExit), result.exception
            assert len(result.output.strip().splitlines()) == 1, result.output
        else:
            for items, accounted in source_accounting(db):
                assert items == accounted
        outside = [p for p in work.rglob("*") if not (p.is_relative_to(work / "in") or p.is_relative_to(work / "db"))]
        assert outside == []


FUZZ_DIR = Path(tempfile.gettempdir())
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.slow
@pytest.mark.parametrize("reader", list(READERS))
def test_fuzzed_input_never_crashes_a_reader_and_every_item_is_accounted_for(reader):
    command, file_name, strategy = READERS[reader]

    @FUZZ
    @given(strategy)
    def check(data):
        fuzz_one(command, file_name, data)

    check()


@pytest.mark.slow
@FUZZ
@given(MEMBER_DATA, st.lists(st.one_of(RAW, st.builds(
    lambda name, text: json.dumps({"file_name": name, "text": text}).encode(),
    MEMBER_NAMES, st.text(max_size=30))), max_size=6).map(b"\n".join))
def test_fuzzed_imagefolder_metadata_never_crashes_and_every_item_is_accounted_for(image, metadata):
    fuzz_one(("01_collect", "imagefolder"), "", image, metadata)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_the_parser_process_dies_with_a_sigkilled_import(big_text, tmp_path):
    from promptmill.core.runs import pid_alive

    db = tmp_path / "db" / "promptmill.db"
    argv = [sys.executable, str(paths.STEPS_DIR / "01_collect.py"), "text", "--db", str(db), str(big_text[0])]
    proc = subprocess.Popen(argv, env={**os.environ, "PROMPTMILL_PROGRESS": "0"}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not (db.exists() and stored(db)[1]):
        time.sleep(0.05)
    workers = children_of(proc.pid)
    proc.kill()
    proc.wait()
    if not workers:
        pytest.skip("the import finished before the kill")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in workers)


def test_a_push_that_changes_nothing_records_no_second_push(tmp_path, invoke, store, db_path):
    from upload_fixtures import build_release_db

    from fakes.hub_server import FakeHub

    build_release_db(store)
    invoke("09_upload", "prompts", tmp_path / "prompts", "--release", "plist", "--no-card")
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": hub.token}
        for _ in range(2):
            result = run_script("09_upload", "push", "--db", db_path, "me/prompts", "--release", "plist", env=env)
            assert result.returncode == 0, result.stderr
        assert len(hub.repos["me/prompts"].commits) == 1
    assert store.count("release_pushes") == 1
