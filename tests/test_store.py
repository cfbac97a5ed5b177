import json
import os
import signal
import subprocess
import sys
import textwrap

from promptmill.core.runs import redact_argv, start_run
from promptmill.core.store import RESERVE_BYTES, migration_files, open_store


def test_open_applies_every_migration_once(db_path):
    store = open_store(db_path)
    versions = [row["version"] for row in store.query("SELECT version FROM schema_migrations")]
    assert versions == [number for number, _, _ in migration_files()]
    store.close()
    again = open_store(db_path)
    assert again.count("schema_migrations") == len(versions)
    assert again.scalar("PRAGMA journal_mode") == "wal"
    assert again.scalar("PRAGMA foreign_keys") == 1
    assert again.scalar("PRAGMA busy_timeout") > 0


def test_blob_store_is_content_addressed(store):
    sha, path = store.blobs.put(b"hello", "png")
    assert path == store.path.parent / "blobs" / sha[:2] / sha[2:4] / f"{sha}.png"
    assert path.read_bytes() == b"hello"
    assert store.blobs.put(b"hello", "png") == (sha, path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_run_records_status_counts_and_versions(store):
    with start_run(store, "01_collect", "text", {"files": ["a.txt"]}, argv=["x", "--api-key", "sk-secret123456"]) as run:
        run.add("prompts added", 3)
    row = store.query("SELECT * FROM runs")[0]
    assert row["status"] == "ok"
    assert json.loads(row["counts"]) == {"prompts added": 3}
    assert "sk-secret123456" not in row["argv"]
    assert json.loads(row["library_versions"])["python"]
    assert row["code_version"] and row["host"] and row["finished_at"]


def test_a_signal_landing_just_after_commit_still_counts_what_was_stored(store):
    """SIGTERM's exception is raised between two bytecodes: here, the first after COMMIT returned."""
    last_sql = []
    store.conn.set_trace_callback(last_sql.append)

    def interrupt_after_commit(frame, event, arg):
        if event == "c_return" and getattr(arg, "__name__", "") == "execute" and last_sql[-1:] == ["COMMIT"]:
            sys.setprofile(None)
            raise KeyboardInterrupt

    try:
        with start_run(store, "01_collect", "text", {}, argv=[]) as run:
            store.execute("CREATE TABLE scratch (text TEXT)")
            with store.transaction() as conn:
                conn.execute("INSERT INTO scratch VALUES ('a cat')")
                run.add("prompts added")
                sys.setprofile(interrupt_after_commit)
    except KeyboardInterrupt:
        pass
    finally:
        sys.setprofile(None)
        store.conn.set_trace_callback(None)
    row = store.query("SELECT status, counts FROM runs")[0]
    assert row["status"] == "interrupted" and store.count("scratch") == 1
    assert json.loads(row["counts"]) == {"prompts added": 1}


def test_failed_run_is_marked_failed(store):
    try:
        with start_run(store, "02_clean", "prompts", {}, argv=[]):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert store.query("SELECT status, error FROM runs")[0] == {"status": "failed", "error": "RuntimeError: boom"}


def test_redaction():
    os.environ["HF_TOKEN"] = "hf_abcdefghijklmnop"
    try:
        argv = redact_argv(["push", "--token", "abc", "--api-key=xyz", "sk-1234567890abcdef",
                            "x=hf_abcdefghijklmnop", "--model", "gpt"])
    finally:
        del os.environ["HF_TOKEN"]
    assert argv == ["push", "--token", "[redacted]", "--api-key=[redacted]", "[redacted]", "x=[redacted]",
                    "--model", "gpt"]


def test_sigkilled_run_is_shown_interrupted_by_next_run(db_path):
    open_store(db_path).close()
    code = textwrap.dedent(f"""
        import time
        from promptmill.core.store import open_store
        from promptmill.core.runs import start_run
        store = open_store({str(db_path)!r})
        with start_run(store, "01_collect", "text", {{}}, argv=[]):
            print("started", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = open_store(db_path)
    assert store.scalar("SELECT status FROM runs") == "running"
    with start_run(store, "02_clean", "prompts", {}, argv=[]):
        pass
    assert [r["status"] for r in store.query("SELECT status FROM runs ORDER BY id")] == ["interrupted", "ok"]


def test_sigterm_marks_run_interrupted(db_path):
    open_store(db_path).close()
    code = textwrap.dedent(f"""
        import time
        from promptmill.core.store import open_store
        from promptmill.core.runs import start_run
        store = open_store({str(db_path)!r})
        with start_run(store, "01_collect", "text", {{}}, argv=[]):
            print("started", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert open_store(db_path).scalar("SELECT status FROM runs") == "interrupted"


def test_the_state_views_and_the_kept_queries_are_one_rule(store, run):
    """prompt_state/image_state (built by a migration from promptmill.core.state) agree with kept_*."""
    from promptmill.core.save import save_decisions
    from promptmill.core.state import kept_images, kept_prompts

    with store.transaction() as conn:
        source = conn.execute("INSERT INTO sources (kind, uri, sha256, run_id) VALUES ('text', 'x', 'h', ?)",
                              (run.id,)).lastrowid
        prompts = [conn.execute("INSERT INTO prompts (source_id, position, text, norm_hash, run_id) "
                                "VALUES (?, ?, ?, ?, ?)", (source, i, f"prompt {i}", i, run.id)).lastrowid
                   for i in range(6)]
        images = [conn.execute("INSERT INTO images (sha256, ext, bytes, run_id) VALUES (?, 'png', 1, ?)",
                               (f"{i:064x}", run.id)).lastrowid for i in range(4)]
        save_decisions(conn, run, [
            {"item_type": "prompt", "item_id": prompts[0], "stage": "clean", "verdict": "drop", "scope": "a"},
            {"item_type": "prompt", "item_id": prompts[1], "stage": "dedup", "verdict": "drop", "scope": "b"},
            {"item_type": "prompt", "item_id": prompts[1], "stage": "review", "verdict": "keep", "scope": "r1"},
            {"item_type": "prompt", "item_id": prompts[2], "stage": "review", "verdict": "keep", "scope": "r1"},
            {"item_type": "prompt", "item_id": prompts[2], "stage": "review", "verdict": "drop", "scope": "r2"},
            {"item_type": "prompt", "item_id": prompts[3], "stage": "clean", "verdict": "keep", "scope": "a",
             "value": "cleaned 3"},
            {"item_type": "prompt", "item_id": prompts[4], "stage": "split", "verdict": "assign", "scope": "s",
             "value": "validation"},
            {"item_type": "image", "item_id": images[0], "stage": "score", "verdict": "drop", "scope": "c"},
            {"item_type": "image", "item_id": images[1], "stage": "clean", "verdict": "drop", "scope": "a"},
            {"item_type": "image", "item_id": images[1], "stage": "review", "verdict": "keep", "scope": "r1"},
        ])
    view = {row["prompt_id"]: row for row in store.query("SELECT * FROM prompt_state")}
    assert {i for i, row in view.items() if row["state"] == "keep"} == {row[0] for row in kept_prompts(store)}
    assert {i for i, row in view.items() if row["state"] == "keep"} == {prompts[1], prompts[3], prompts[4],
                                                                        prompts[5]}
    assert view[prompts[3]]["clean_text"] == "cleaned 3" and view[prompts[4]]["split"] == "validation"
    assert view[prompts[0]]["dropped_by"] == "clean:"
    image_view = {row["image_id"]: row["state"] for row in store.query("SELECT * FROM image_state")}
    assert {i for i, state in image_view.items() if state == "keep"} == {row[0] for row in kept_images(store)}
    assert image_view == {images[0]: "drop", images[1]: "keep", images[2]: "keep", images[3]: "keep"}


def test_a_run_whose_end_finds_no_room_even_in_the_reserve_is_recorded_by_the_next_run(db_path):
    code = textwrap.dedent(f"""
        import sqlite3
        from promptmill.core.store import open_store
        from promptmill.core.runs import Run, start_run
        def no_room(self, status, error=None):
            raise sqlite3.OperationalError("database or disk is full")
        store = open_store({str(db_path)!r})
        run = start_run(store, "01_collect", "text", {{}}, argv=[])
        Run.finish = no_room
        with run:
            run.add("prompts added", 2)
            raise sqlite3.OperationalError("database or disk is full")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "OperationalError: database or disk is full" in proc.stderr
    store = open_store(db_path)
    assert store.scalar("SELECT status FROM runs") == "running"
    with start_run(store, "02_clean", "prompts", {}, argv=[]):
        pass
    first = store.query("SELECT status, error, counts, finished_at FROM runs ORDER BY id")[0]
    assert first["status"] == "failed" and first["error"] == "OperationalError: database or disk is full"
    assert json.loads(first["counts"]) == {"prompts added": 2} and first["finished_at"]
    assert store.reserve.notes() == [] and store.reserve.path.stat().st_size == RESERVE_BYTES
