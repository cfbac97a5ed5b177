import gzip

from conftest import run_script, seed_lines


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
