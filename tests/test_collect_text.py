import gzip
import io
import json

import pytest

from conftest import run_script, seed_lines
from promptmill.collect import textfile
from promptmill.collect.base import Collector
from promptmill.core.runs import start_run
from promptmill.core.text import normalize, text_hash


def test_text_collects_every_line_once(tmp_path, invoke, store):
    lines = seed_lines("prompts_filtered_4.0.txt", 500)
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines[:250]) + "\n\n   \n" + "\n".join(lines[250:]) + "\n", encoding="utf-8")
    invoke("01_collect", "text", path)
    assert store.count("prompts") == 500
    assert store.scalar("SELECT count(*) FROM runs WHERE status = 'ok'") == 1
    first = store.query("SELECT * FROM prompts ORDER BY id LIMIT 1")[0]
    assert first["text"] == lines[0] and first["position"] == 1
    source = store.query("SELECT * FROM sources")[0]
    assert source["kind"] == "text" and len(source["sha256"]) == 64 and source["completed_run_id"]
    invoke("01_collect", "text", path)
    assert store.count("prompts") == 500


def test_text_gz_and_bad_lines_are_recorded(tmp_path, invoke, store):
    path = tmp_path / "p.txt.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"a red fox in the snow\n\xff\xfe broken bytes\n" + b"x" * 20_000 + b"\nlast prompt\n")
    invoke("01_collect", "text", path)
    assert [r["text"] for r in store.query("SELECT text FROM prompts ORDER BY position")] == [
        "a red fox in the snow", "last prompt"]
    reasons = {r["position"]: r["reason"] for r in store.query("SELECT position, reason FROM item_errors")}
    assert reasons == {2: "not utf-8", 3: "line too long"}


def test_missing_file_exits_2_with_one_line(tmp_path):
    result = run_script("01_collect", "text", "--db", tmp_path / "x.db", tmp_path / "nope.txt")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()


def awkward_lines(count: int) -> list[str]:
    """Real prompts with the cases the block path treats apart: case, runs of spaces, edge
    whitespace, non-ASCII, blank and punctuation-only lines."""
    base = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 400)
    variants = [lambda p: p, str.upper, lambda p: "  " + p.replace(" ", "   ") + " .", lambda p: p + " — café ﬁne",
                lambda p: "\t" + p + "\x1c", lambda p: "", lambda p: " \u3000 ", lambda p: "..!", lambda p: p + "\u00a0"]
    return [variants[i % len(variants)](base[i % len(base)]) for i in range(count)]


@pytest.mark.parametrize("worker", [False, True])
def test_text_rows_match_per_line_functions(tmp_path, store, worker):
    lines = awkward_lines(2_345)  # not a multiple of the rows per INSERT statement
    path = tmp_path / "awkward.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with start_run(store, "01_collect", "text", {}, argv=["pytest"]) as run:
        collector = Collector(store, run, textfile.source_info(path), batch_rows=700)
        collector.finish(textfile.collect_lines(collector, path, block_bytes=4096, worker=worker))
    expected = [(position, line.strip(), text_hash(normalize(line)))
                for position, line in enumerate(lines, 1) if line.strip() and normalize(line)]
    rows = store.conn.execute("SELECT position, text, norm_hash FROM prompts ORDER BY position").fetchall()
    assert rows == expected
    assert store.scalar("SELECT count(*) FROM prompts WHERE typeof(text) != 'text'") == 0
    empties = [position for position, line in enumerate(lines, 1) if line.strip() and not normalize(line)]
    assert [r[0] for r in store.conn.execute("SELECT position FROM item_errors ORDER BY position")] == empties
    counts = json.loads(store.scalar("SELECT counts FROM runs"))
    assert counts["prompts added"] == len(expected) and counts["items rejected"] == len(empties)
    assert counts["blank lines skipped"] == sum(1 for line in lines if not line.strip())
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.scalar("PRAGMA foreign_keys") == 1


@pytest.mark.parametrize("block_bytes", [7, 64, 1000])
def test_blocks_say_truly_where_they_lie_in_the_file(block_bytes):
    """The worker sends a block as its place in the file when it can; that place must hold it."""
    data = b"".join(
        [b"short\n", b"x" * 300 + b"\n", b"\n", b"y" * 90, b"\n", "caf\u00e9 \u2014 ok\n".encode(), b"z" * 2000]
        * 3 + [b"\nend"])
    blocks = list(textfile.read_blocks(io.BytesIO(data), block_bytes, max_line_bytes=100))
    placed = [(block, at) for block, _, at in blocks if block is not None and at is not None]
    assert placed
    for block, at in placed:
        assert data[at:at + len(block)] == block
    assert sum(consumed for _, consumed, _ in blocks) == len(data)
    lines = [line for block, _, _ in blocks if block is not None for line in block.split(b"\n")]
    assert [len(line) > 100 for line in lines] == [len(line) > 100 for line in data.split(b"\n")]


def test_text_resumes_inside_a_block_without_duplicates(tmp_path, store):
    """A run that stopped after some batches: the next one adds exactly the rest."""
    lines = awkward_lines(1_500)
    path = tmp_path / "resume.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with start_run(store, "01_collect", "text", {}, argv=["pytest"]) as run:
        collector = Collector(store, run, textfile.source_info(path))
        done = 0
        for first, parsed, *_ in textfile.parsed_blocks(path, -1, textfile.MAX_LINE_BYTES, 8192):
            positions = [first + i for i in parsed.indexes]
            collector.add_text_rows(positions, parsed.texts, parsed.hashes)
            done += len(positions)
            if done > 300:
                break
        collector.flush()
    partial = store.count("prompts")
    assert 300 < partial < len(lines)
    with start_run(store, "01_collect", "text", {}, argv=["pytest"]) as run:
        collector = Collector(store, run, textfile.source_info(path))
        assert collector.done_upto > 0
        collector.finish(textfile.collect_lines(collector, path, block_bytes=4096, worker=True))
        assert run.counts["prompts added"] == sum(1 for line in lines if normalize(line)) - partial
    positions = [r[0] for r in store.conn.execute("SELECT position FROM prompts ORDER BY position")]
    assert positions == [i for i, line in enumerate(lines, 1) if normalize(line)]
