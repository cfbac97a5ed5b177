"""Kill -9 in the middle of a big text import, run again: exactly the rows of one clean run."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, seed_lines
from promptmill.collect.textfile import parse_block
from promptmill.core.text import normalize, text_hash

LINE_TEXT = st.text(alphabet=st.sampled_from(list("aZ é.,;:!?-_*\"'`\t\r\x0b\x0c\x1c\x1fﬁß\u00a0\u2028Σ") +
                                             ["Ǆ", "x", " "]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE_TEXT, min_size=1, max_size=12))
def test_block_parsing_equals_per_line_normalize(lines):
    lines = [line.replace("\n", " ") for line in lines]
    parsed = parse_block("\n".join(lines).encode("utf-8"))
    expected = [(i, line.strip(), text_hash(normalize(line))) for i, line in enumerate(lines)
                if line.strip() and normalize(line)]
    assert list(zip(parsed.indexes, parsed.texts, parsed.hashes)) == expected


def test_block_parsing_on_real_prompts():
    lines = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 5000)
    parsed = parse_block("\n".join(lines).encode("utf-8"))
    assert list(parsed.hashes) == [text_hash(normalize(line)) for line in lines]


def count_prompts(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.resilience
def test_sigkill_mid_import_then_rerun(tmp_path):
    base = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt")
    lines = [f"{base[i % len(base)]} #{i // len(base)}" if i % 3 else base[i % len(base)] for i in range(1_000_000)]
    path = tmp_path / "million.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "db" / "promptmill.db"
    command = [sys.executable, str(ROOT / "steps" / "01_collect.py"), "text", "--db", str(db), str(path)]
    env = {**os.environ, "PROMPTMILL_PROGRESS": "0"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while count_prompts(db) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = count_prompts(db)
    assert 0 < partial < len(lines)
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT position, text, norm_hash FROM prompts ORDER BY position").fetchall()
        statuses = [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY id")]
    assert len(rows) == len(lines)
    assert [r[0] for r in rows] == list(range(1, len(lines) + 1))
    assert all(text == line for (_, text, _), line in zip(rows, lines))
    sample = range(0, len(lines), 997)
    assert [rows[i][2] for i in sample] == [text_hash(normalize(lines[i])) for i in sample]
    assert statuses == ["interrupted", "ok"]


WIDE_LINE_TEXT = st.lists(st.sampled_from(
    list("aZq é.,;:!?-_*\"'`\t\r\x0b\x0c\x1c\x1d\x1e\x1f\x00ﬁßİΣς\u00a0\u0085\u1680\u2028\u3000\u0301\u0308\u1100\u1161")
    + ["Ǆ", "xy", "  ", " . ", "ABC"]), max_size=25).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(WIDE_LINE_TEXT, min_size=1, max_size=16), st.booleans())
def test_block_parsing_sorts_every_line_like_normalize(lines, with_bad_bytes):
    """Kept, blank and punctuation-only lines, each exactly as the per-line functions decide."""
    lines = [line.replace("\n", " ") for line in lines]
    raw = [line.encode("utf-8") for line in lines]
    if with_bad_bytes:
        raw[len(raw) // 2] = b"bad \xff\xfe bytes"
    parsed = parse_block(b"\n".join(raw))
    kept, blanks, errors = [], 0, []
    for index, line in enumerate(raw):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            errors.append((index, "not utf-8"))
            continue
        if not text.strip():
            blanks += 1
        elif not normalize(text):
            errors.append((index, "empty"))
        else:
            kept.append((index, text.strip(), text_hash(normalize(text))))
    assert list(zip(parsed.indexes, parsed.texts, parsed.hashes)) == kept
    assert parsed.blanks == blanks
    assert [(index, reason) for index, reason, _ in parsed.errors] == errors
