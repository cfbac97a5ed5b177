"""The bad-input corpus through every step that reads input: nothing crashes, every item is accounted for.

Static files live in tests/bad_input/; images, ZIPs and huge lines are made here.
Each step runs as a subprocess from an empty working folder, so a stray write
(a zip-slip, a shell injection) would show up as a new file there.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, run_script
from promptmill.core.store import open_store

CORPUS = ROOT / "tests" / "bad_input"
INJECTIONS = [line for line in (CORPUS / "injection_prompts.txt").read_text(encoding="utf-8").splitlines() if line]


def png(size=(80, 80), color=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(size=(80, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 100, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def bomb_png(side=120_000) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def broken_images(folder: Path) -> dict[str, str]:
    """Write one image per kind of damage; return file name -> what is wrong with it."""
    folder.mkdir(parents=True)
    good = png()
    files = {
        "good.png": (good, "fine"),
        "truncated.png": (good[: len(good) // 2], "truncated"),
        "empty.jpg": (b"", "0 bytes"),
        "bomb.png": (bomb_png(), "decompression bomb"),
        "liar.png": (jpeg(), "a JPEG named .png"),
        "noise.webp": (os.urandom(2048), "random bytes"),
        "tiny.png": (png((4, 4)), "4x4 pixels"),
        "sliver.png": (png((1000, 10)), "aspect 100:1"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
        (folder / name).with_suffix(".txt").write_text(f"caption of {name}; DROP TABLE captions; --", encoding="utf-8")
    return {name: why for name, (_, why) in files.items()}


def hostile_zip(path: Path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("top/ok.png", png())
        archive.writestr("top/ok.txt", "a fine caption")
        archive.writestr("top/../../evil.png", png(color=(1, 2, 3)))
        archive.writestr("/abs/evil2.png", png(color=(3, 2, 1)))
        link = zipfile.ZipInfo("top/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("top/zeros.png", b"\x00" * 5_000_000)  # compresses ~1000:1
        archive.writestr("top/broken.png", png()[:40])


@pytest.fixture
def workdir(tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    return work


def collect(db, workdir, *args, expect=(0,)):
    result = run_script("01_collect", *args, "--db", db, cwd=workdir)
    assert result.returncode in expect, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def accounted(store, source_id: int) -> tuple[int, int]:
    """(positions recorded as rows or errors, items the source said it read)."""
    recorded = store.scalar(
        "SELECT count(*) FROM (SELECT position FROM prompts WHERE source_id = :s UNION "
        "SELECT position FROM image_origins WHERE source_id = :s UNION "
        "SELECT position FROM item_errors WHERE source_id = :s)", {"s": source_id})
    return recorded, store.scalar("SELECT items FROM sources WHERE id = ?", (source_id,))


def test_bad_text_inputs_every_line_accounted_for(tmp_path, workdir):
    db = tmp_path / "db" / "promptmill.db"
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"short prompt before\n" + b"word " * 400_000 + b"\nshort prompt after\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    inputs = [CORPUS / n for n in ("injection_prompts.txt", "latin1.txt", "utf16.txt", "nul_bytes.txt")] + [huge, empty]
    collect(db, workdir, "text", *inputs)
    store = open_store(db)
    for source in store.query("SELECT id, uri FROM sources"):
        recorded, items = accounted(store, source["id"])
        assert recorded == items, source["uri"]
    stored = {row["text"] for row in store.query("SELECT text FROM prompts")}
    assert set(INJECTIONS) <= stored, "injection strings are data, stored verbatim"
    assert {"short prompt before", "short prompt after"} <= stored
    reasons = {row["reason"] for row in store.query("SELECT reason FROM item_errors")}
    assert {"not utf-8", "line too long"} <= reasons
    assert store.count("runs", "status = 'ok'") == 1
    assert list(workdir.iterdir()) == []


def test_bad_exports_and_tables(tmp_path, workdir):
    db = tmp_path / "db" / "promptmill.db"
    collect(db, workdir, "discord", CORPUS / "truncated_discord.json", "--format", "messages")
    collect(db, workdir, "discord", CORPUS / "odd_discord.json", "--format", "messages")
    collect(db, workdir, "table", CORPUS / "ragged.csv", "--column", "prompt")
    collect(db, workdir, "table", CORPUS / "broken.jsonl", "--column", "prompt")
    missing = run_script("01_collect", "table", CORPUS / "ragged.csv", "--column", "nope", "--db", db, cwd=workdir)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    store = open_store(db)
    texts = {row["text"] for row in store.query("SELECT text FROM prompts")}
    assert {"a red boat", "a green field under a storm", "a'); DROP TABLE runs; -- moon", "a quiet harbor at dawn",
            "a snowy owl", "an old mill by a river"} <= texts
    assert store.count("item_errors") >= 4
    for table in ("runs", "prompts", "decisions"):
        assert store.scalar("SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)) == 1
    assert list(workdir.iterdir()) == []


def test_broken_images_and_hostile_zip_through_collect_clean_dedup_export(tmp_path, workdir):
    db = tmp_path / "db" / "promptmill.db"
    damage = broken_images(tmp_path / "images")
    archive = tmp_path / "hostile.zip"
    hostile_zip(archive)
    collect(db, workdir, "imagefolder", tmp_path / "images")
    collect(db, workdir, "zip", archive, expect=(0, 2))
    store = open_store(db)
    for source in store.query("SELECT id, uri FROM sources WHERE completed_run_id IS NOT NULL"):
        recorded, items = accounted(store, source["id"])
        assert recorded == items, source["uri"]

    result = run_script("02_clean", "images", "--db", db, cwd=workdir)
    assert result.returncode == 0, result.stderr
    verdicts = {row["locator"]: row["verdict"] for row in store.query(
        "SELECT o.locator, d.verdict FROM image_origins o JOIN decisions d ON d.item_id = o.image_id "
        "AND d.item_type = 'image' AND d.stage = 'clean' JOIN sources s ON s.id = o.source_id "
        "WHERE s.kind = 'imagefolder'")}
    assert verdicts.pop("good.png") == "keep"
    judged = {name for name in damage if name != "good.png" and name in verdicts}
    assert judged and all(verdicts[name] == "drop" for name in judged), verdicts
    unjudged = {name for name in damage if name not in verdicts and name != "good.png"}
    errors = {row["locator"] for row in store.query("SELECT locator FROM item_errors")}
    assert unjudged <= errors, f"{unjudged} neither judged nor recorded as errors"

    for argv in (("03_dedup", "images"), ("03_dedup", "prompts"), ("08_split", "assign")):
        result = run_script(*argv, "--db", db, cwd=workdir)
        assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    result = run_script("09_upload", "imagefolder", out, "--db", db, "--text-from", "caption:imported", cwd=workdir)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == store.count("image_state", "state = 'keep'")
    assert list(workdir.iterdir()) == []
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_injection_prompts_survive_every_text_step(tmp_path, workdir):
    db = tmp_path / "db" / "promptmill.db"
    collect(db, workdir, "text", CORPUS / "injection_prompts.txt")
    for argv in (("02_clean", "prompts", "--preset", "basic"), ("03_dedup", "prompts", "--method", "exact,simhash"),
                 ("08_split", "assign")):
        result = run_script(*argv, "--db", db, cwd=workdir)
        assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    result = run_script("09_upload", "prompts", out, "--db", db, "--format", "jsonl", cwd=workdir)
    assert result.returncode == 0, result.stderr
    store = open_store(db)
    assert store.count("prompts") == len(INJECTIONS)
    decided = store.scalar("SELECT count(DISTINCT item_id) FROM decisions WHERE stage = 'clean'")
    assert decided == len(INJECTIONS), "every prompt got a clean decision"
    exported = [json.loads(line) for path in out.glob("*.jsonl") for line in path.read_text().splitlines()]
    assert len(exported) == store.count("prompt_state", "state = 'keep'")
    assert not Path("/tmp/promptmill-pwned").exists()
    assert list(workdir.iterdir()) == []


def test_malformed_label_studio_exports(tmp_path, workdir):
    db = tmp_path / "db" / "promptmill.db"
    collect(db, workdir, "imagefolder", ROOT / "examples" / "images")
    bad = tmp_path / "export.json"
    bad.write_text(json.dumps([
        {"id": 1, "data": {"image": "/data/local-files/?d=nowhere.png"}, "annotations": [
            {"id": 5, "was_cancelled": False, "result": [{"type": "textarea", "value": {"text": None}}]}]},
        {"id": 2, "data": {}, "annotations": "not a list"},
        "not a task",
        {"id": 3},
    ]), encoding="utf-8")
    result = run_script("07_label", "ls-import", bad, "--db", db, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    truncated = tmp_path / "truncated.json"
    truncated.write_text('[{"id": 1, "data": {"ima', encoding="utf-8")
    result = run_script("07_label", "ls-import", truncated, "--db", db, cwd=workdir)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert list(workdir.iterdir()) == []


EMPTY_DB_COMMANDS = [
    ("02_clean", "prompts", "--preset", "basic"), ("02_clean", "images"),
    ("03_dedup", "prompts"), ("03_dedup", "images"), ("03_dedup", "report"),
    ("06_caption", "edit", "--add-trigger", "sks"), ("06_caption", "stats"),
    ("07_label", "ls-export", "{tmp}/tasks.json"),
    ("08_split", "assign"), ("08_split", "report"),
    ("09_upload", "imagefolder", "{tmp}/out1"), ("09_upload", "prompts", "{tmp}/out2"),
    ("09_upload", "pairs", "{tmp}/out3"), ("09_upload", "diff", "a", "b"),
]


@pytest.mark.parametrize("argv", EMPTY_DB_COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_every_command_on_an_empty_database(tmp_path, argv):
    """Nothing to do is an answer, not a crash: exit 0, or 2 with one line saying what is missing."""
    from click.testing import CliRunner

    from conftest import load_step

    step, command, *rest = argv
    args = [command, "--db", str(tmp_path / "db" / "promptmill.db"), *(a.format(tmp=tmp_path) for a in rest)]
    result = CliRunner().invoke(load_step(step).cli, args)
    assert result.exit_code in (0, 2), f"{argv}: {result.output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
