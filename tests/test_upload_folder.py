"""OUT belongs to the user: one export at a time (real processes), files the release did not write are
kept and listed, `check` holds the folder to its manifest; a third-party exporter installed as a package
runs through `promptmill upload`."""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
from upload_fixtures import build_release_db, sha256_tree

from conftest import run_script
from promptmill.release.base import Exporter
from promptmill.release.check import check_folder
from promptmill.release.folder import LOCK


@pytest.fixture
def ids(store):
    return build_release_db(store)


def test_reexport_keeps_files_it_did_not_write_and_removes_its_own(tmp_path, invoke, store, ids, run):
    from upload_fixtures import decide

    out = tmp_path / "lora"
    invoke("09_upload", "kohya", out, "--trigger", "ohwx")
    images = sorted((out / "10_ohwx").glob("*.png"))
    foreign = {"10_ohwx/" + images[0].stem + ".npz": b"latents", "10_ohwx/notes.md": b"mine",
               "1_reg_woman/w.png": b"reg", "1_reg_woman/w.txt": b"woman", ".git/HEAD": b"ref"}
    for relative, data in foreign.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
    dropped = images[1]
    dropped_id = store.scalar("SELECT item_id FROM release_items WHERE file_name = ?",
                              ("10_ohwx/" + dropped.name,))
    with store.transaction() as conn:
        decide(conn, "image", dropped_id, "dedup", "drop", "manual", run.id)

    result = invoke("09_upload", "kohya", out, "--trigger", "ohwx")
    assert all((out / relative).read_bytes() == data for relative, data in foreign.items())
    assert not dropped.exists() and not dropped.with_suffix(".txt").exists()
    assert "kept (not from this release): 1_reg_woman/w.png" in result.stderr
    problems, _, extra = check_folder(out)
    assert problems == [] and set(extra) == set(foreign)

    checked = run_script("09_upload", "check", out)
    assert checked.returncode == 0 and "5 not in the release" in checked.stdout
    dry = run_script("09_upload", "push", "me/lora", "--db", store.path, "--release", "lora", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "not in the release, not uploaded: 1_reg_woman/w.png" in dry.stderr
    assert not any(name in dry.stdout for name in foreign)


def test_a_users_file_where_the_release_writes_is_not_overwritten(tmp_path, invoke, store, ids):
    out = tmp_path / "if"
    invoke("09_upload", "imagefolder", out)
    (out / "train" / "metadata.jsonl").unlink()  # ours, gone: will be rewritten
    marker = json.loads((out / ".promptmill-export.json").read_text())
    del marker["files"]["README.md"]  # pretend README.md was never ours
    (out / ".promptmill-export.json").write_text(json.dumps(marker))
    (out / "README.md").write_text("my own readme")
    result = run_script("09_upload", "imagefolder", out, "--db", store.path)
    assert result.returncode == 2 and "README.md exists and was not written by promptmill" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and (out / "README.md").read_text() == "my own readme"


def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, store, ids, db_path, run):
    from promptmill.core.errors import BadInput
    from promptmill.release.base import CardSettings, export
    from promptmill.release.text import PromptsExporter

    out = tmp_path / "file"
    out.write_text("not a folder")
    result = run_script("09_upload", "kohya", out, "--db", db_path, "--trigger", "ohwx")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "is a file" in result.stderr
    with pytest.raises(BadInput, match="is a file, not a folder"):
        export(store, run, PromptsExporter({"fmt": "txt"}), out, "p", CardSettings())
    assert out.read_text() == "not a folder"


def test_check_fails_when_the_folder_lost_or_changed_files(tmp_path, invoke, store, ids):
    out = tmp_path / "pq"
    invoke("09_upload", "parquet", out)
    assert check_folder(out)[0] == []
    shard = next((out / "data").glob("train-*.parquet"))
    shard.unlink()
    (out / "README.md").write_text("edited")
    problems = check_folder(out)[0]
    assert f"data/{shard.name}: in the release but missing" in problems
    assert "README.md: changed since the export (sha256 differs)" in problems


def test_an_export_into_a_folder_another_export_holds_fails_in_one_line(tmp_path, store, ids, db_path):
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(f"{os.getpid()}\n")
        held.flush()
        result = run_script("09_upload", "imagefolder", out, "--db", db_path)
    assert result.returncode == 1 and f"being written by another export (pid {os.getpid()})" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == [LOCK] and store.count("releases") == 0


def test_two_exports_into_one_folder_at_once_leave_one_whole_release(tmp_path, store, ids, db_path):
    out = tmp_path / "race"
    argv = [sys.executable, "-m", "promptmill", "upload", "imagefolder", str(out), "--db", str(db_path)]
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0"}
    processes = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert any(code == 0 for code, _ in results)
    for code, stderr in results:
        assert code == 0 or (code == 1 and "being written by another export" in stderr
                             and len(stderr.strip().splitlines()) == 1), stderr
    assert check_folder(out)[0] == []
    [release] = store.query("SELECT manifest FROM releases")
    tree = sha256_tree(out)
    assert all(tree[name] == sha for name, sha in json.loads(release["manifest"]).items())


def test_prompt_releases_keep_text_hashes_not_copies(tmp_path, invoke, store, ids):
    invoke("09_upload", "prompts", tmp_path / "p", "--format", "jsonl")
    rows = store.query("SELECT item_id, sha256, text FROM release_items")
    texts = dict(store.execute("SELECT id, text FROM prompts"))
    cleaned = {row["item_id"]: row["value"] for row in store.query(
        "SELECT item_id, value FROM decisions WHERE stage = 'clean' AND value IS NOT NULL")}
    assert rows and all(row["text"] is None for row in rows)
    for row in rows:
        text = cleaned.get(row["item_id"], texts[row["item_id"]])
        assert row["sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_an_exporter_without_card_tasks_cannot_be_defined():
    with pytest.raises(TypeError, match="tasks"):
        type("NoTasks", (Exporter,), {"name": "notasks", "write": lambda *a: iter(()),
                                      "data_files": lambda *a: {}, "how_to_load": lambda *a: ""})


TOY_MODULE = '''
"""A toy exporter: one line per kept prompt, reversed."""

import click

from promptmill.release.base import Exporter
from promptmill.release.items import prompt_items


class ReversedPrompts(Exporter):
    """Every kept prompt, reversed, in reversed.txt."""

    name = "toy"
    tasks = ("text-generation",)
    item_type = "prompt"
    options = (click.option("--upper", is_flag=True),)

    def write(self, store, folder):
        lines = []
        for item in prompt_items(store):
            text = item["text"][::-1]
            lines.append(text.upper() if self.params["upper"] else text)
            yield {"item_type": "prompt", "item_id": item["prompt_id"], "split": item["split"],
                   "file_name": "reversed.txt", "text": item["text"]}
        folder.write_text("reversed.txt", "\\n".join(lines) + "\\n")

    def data_files(self, splits):
        return {"train": ["reversed.txt"]}

    def how_to_load(self, out):
        return "open('reversed.txt').read().splitlines()"
'''


def test_an_installed_exporter_runs_through_promptmill_upload(tmp_path, store, ids, db_path):
    site = tmp_path / "site"
    (site / "toy-0.1.dist-info").mkdir(parents=True)
    (site / "toy_exporter.py").write_text(TOY_MODULE)
    (site / "toy-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy\nVersion: 0.1\n")
    (site / "toy-0.1.dist-info" / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [promptmill.exporters]
            toy = toy_exporter:ReversedPrompts
            """))
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    promptmill = [sys.executable, "-m", "promptmill"]
    listed = subprocess.run([*promptmill, "upload", "-h"], capture_output=True, text=True, env=env)
    assert "toy" in listed.stdout and "reversed" in listed.stdout
    out = tmp_path / "toy-out"
    result = subprocess.run([*promptmill, "upload", "toy", str(out), "--db", str(db_path), "--upper"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    lines = (out / "reversed.txt").read_text().splitlines()
    assert "A castle on a hill number 1, golden hour"[::-1].upper() in lines
    card = (out / "README.md").read_text()
    assert "- text-generation" in card and "open('reversed.txt')" in card
    assert store.scalar("SELECT format FROM releases") == "toy"
    assert json.loads(store.scalar("SELECT params FROM releases"))["upper"] is True
