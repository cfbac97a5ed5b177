import json
import signal
import subprocess
import sys
import time

import pytest
from curation_fixtures import add_caption, add_images

import paths
from conftest import run_script
from promptmill.caption.edit import EditOps, apply_ops, load_blacklist
from promptmill.caption.stats import clip_token_estimate
from promptmill.core.runs import now, start_run
from promptmill.core.store import open_store


def test_trigger_is_added_once_at_the_chosen_position():
    text = "1girl, solo, red hair"
    assert apply_ops(text, EditOps(trigger="sks"), 7) == "sks, 1girl, solo, red hair"
    assert apply_ops(text, EditOps(trigger="sks", position="end"), 7) == "1girl, solo, red hair, sks"
    assert apply_ops("sks, 1girl", EditOps(trigger="sks", position="end"), 7) == "sks, 1girl"
    placed = {apply_ops(text, EditOps(trigger="sks", position="random"), image_id) for image_id in range(40)}
    assert len(placed) > 1  # different images, different places
    assert all(apply_ops(text, EditOps(trigger="sks", position="random"), i)
               == apply_ops(text, EditOps(trigger="sks", position="random"), i) for i in range(40))
    again = apply_ops(apply_ops(text, EditOps(trigger="sks", position="random"), 3),
                      EditOps(trigger="sks", position="random"), 3)
    assert again.split(", ").count("sks") == 1


def test_replace_and_remove_work_on_whole_tags():
    text = "cat, catgirl, black cat, long_hair"
    assert apply_ops(text, EditOps(replace=(("cat", "dog"),)), 1) == "dog, catgirl, black cat, long_hair"
    assert apply_ops(text, EditOps(remove_tags=("cat", "long hair")), 1) == "catgirl, black cat"
    assert apply_ops(text, EditOps(replace=((r"\bcat\b", "dog"),), regex=True), 1) == \
        "dog, catgirl, black dog, long_hair"
    assert apply_ops(text, EditOps(replace=(("cat", ""),)), 1) == "catgirl, black cat, long_hair"


def test_dedup_keeps_first_and_sort_keeps_trigger_first(tmp_path):
    text = "b tag, A tag, b_tag, c tag, a tag"
    assert apply_ops(text, EditOps(dedup_tags=True), 1) == "b tag, A tag, c tag"
    assert apply_ops(text, EditOps(dedup_tags=True, sort=True, trigger="zz"), 1) == "zz, A tag, b tag, c tag"
    blacklist = tmp_path / "blacklist.txt"
    blacklist.write_text("# unwanted\nwatermark\nsignature, text  # both\n", encoding="utf-8")
    assert load_blacklist(blacklist) == ("watermark", "signature", "text")
    assert apply_ops("1girl, watermark, Signature, textured", EditOps(blacklist=load_blacklist(blacklist)), 1) == \
        "1girl, textured"


def _captioned(store, run, n=4):
    image_ids = add_images(store, run, [f"img{i}.png" for i in range(n)])
    wd14 = [add_caption(store, run, image_id, "wd14", "1girl, solo, watermark, solo",
                        tags=[("1girl", 0.9), ("solo", 0.8), ("watermark", 0.5)]) for image_id in image_ids]
    blip = [add_caption(store, run, image_id, "blip", "a girl standing in a field") for image_id in image_ids]
    return image_ids, wd14, blip


def test_edit_writes_children_and_is_idempotent(invoke, store, run):
    image_ids, wd14, blip = _captioned(store, run)
    invoke("06_caption", "edit", "--kind", "wd14", "--add-trigger", "sks", "--remove-tags", "watermark",
           "--dedup-tags")
    edits = store.query("SELECT * FROM captions WHERE kind = 'edit' ORDER BY id")
    assert [e["parent_id"] for e in edits] == wd14
    assert {e["text"] for e in edits} == {"sks, 1girl, solo"}
    edit_run = edits[0]["run_id"]
    assert store.scalar("SELECT step || ' ' || command FROM runs WHERE id = ?", (edit_run,)) == "06_caption edit"
    params = json.loads(edits[0]["params"])
    assert params["root_kind"] == "wd14" and params["root_id"] == wd14[0] and params["ops"]["trigger"] == "sks"
    scores = {r["tag"]: r["score"] for r in store.query("SELECT tag, score FROM tags WHERE caption_id = ?",
                                                        (edits[0]["id"],))}
    assert scores == {"sks": None, "1girl": 0.9, "solo": 0.8}
    current = store.query("SELECT image_id, lineage_kind, text FROM current_captions ORDER BY image_id, lineage_kind")
    assert current[:2] == [{"image_id": image_ids[0], "lineage_kind": "blip", "text": "a girl standing in a field"},
                           {"image_id": image_ids[0], "lineage_kind": "wd14", "text": "sks, 1girl, solo"}]
    result = invoke("06_caption", "edit", "--kind", "wd14", "--add-trigger", "sks", "--remove-tags", "watermark",
                    "--dedup-tags")
    assert "captions unchanged 4" in result.output
    assert store.count("captions", "kind = 'edit'") == 4
    # A second edit extends the chain from its head.
    invoke("06_caption", "edit", "--kind", "wd14", "--replace", "solo", "alone")
    second = store.query("SELECT parent_id, text FROM captions WHERE kind = 'edit' ORDER BY id")[4:]
    assert [row["parent_id"] for row in second] == [e["id"] for e in edits]
    assert {row["text"] for row in second} == {"sks, 1girl, alone"}


def test_edit_scope_by_source(invoke, store, run):
    first = add_images(store, run, ["a.png", "b.png"], source_uri="first")
    second = add_images(store, run, ["c.png"], source_uri="second", sizes=[(40, 40)])
    for image_id in first + second:
        add_caption(store, run, image_id, "imported", "photo")
    source = store.scalar("SELECT id FROM sources WHERE uri = 'second'")
    invoke("06_caption", "edit", "--source", source, "--add-trigger", "ohwx", "--position", "end")
    assert store.query("SELECT image_id, text FROM captions WHERE kind = 'edit'") == [
        {"image_id": second[0], "text": "photo, ohwx"}]


def test_undo_restores_parents_and_can_be_undone(invoke, store, run):
    image_ids, wd14, blip = _captioned(store, run, n=3)
    invoke("06_caption", "edit", "--add-trigger", "sks")
    edit_run = store.scalar("SELECT max(run_id) FROM captions WHERE kind = 'edit'")
    invoke("06_caption", "edit", "--undo", edit_run)
    current = {(r["image_id"], r["lineage_kind"]): r["text"] for r in store.query("SELECT * FROM current_captions")}
    assert current[(image_ids[0], "wd14")] == "1girl, solo, watermark, solo"
    assert current[(image_ids[0], "blip")] == "a girl standing in a field"
    total = store.count("captions")
    assert total == 6 + 6 + 6
    result = invoke("06_caption", "edit", "--undo", edit_run)
    assert "undos already there 6" in result.output and store.count("captions") == total
    undo_run = store.scalar("SELECT max(run_id) FROM captions")
    invoke("06_caption", "edit", "--undo", undo_run)  # redo
    assert store.scalar("SELECT text FROM current_captions WHERE image_id = ? AND lineage_kind = 'blip'",
                        (image_ids[1],)) == "sks, a girl standing in a field"


def test_undo_leaves_edits_that_were_edited_again(invoke, store, run):
    _captioned(store, run, n=2)
    invoke("06_caption", "edit", "--kind", "blip", "--add-trigger", "sks")
    first = store.scalar("SELECT max(run_id) FROM captions WHERE kind = 'edit'")
    invoke("06_caption", "edit", "--kind", "blip", "--replace", "sks", "ohwx")
    result = invoke("06_caption", "edit", "--undo", first)
    assert "edits edited again later, kept 2" in result.output
    assert {r["text"] for r in store.query("SELECT text FROM current_captions WHERE lineage_kind = 'blip'")} == {
        "ohwx, a girl standing in a field"}


def test_bad_edit_commands_exit_2(tmp_path, invoke, store, run):
    _captioned(store, run, n=1)
    db = store.path
    for args in (["--undo", "1", "--sort"], [], ["--regex", "--replace", "(", "x"], ["--undo", "999"],
                 ["--blacklist", tmp_path / "missing.txt"]):
        result = run_script("06_caption", "edit", "--db", db, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_stats_reports_tags_lengths_trigger_and_sizes(tmp_path, invoke, store, run):
    image_ids = add_images(store, run, ["a.png", "b.png", "c.png"], sizes=[(64, 32), (64, 32), (20, 20)])
    long_caption = ", ".join(f"tag{i} word" for i in range(80))
    add_caption(store, run, image_ids[0], "wd14", "sks, 1girl, solo")
    add_caption(store, run, image_ids[1], "wd14", "1girl, " + long_caption)
    add_caption(store, run, image_ids[2], "blip", "sks, a photo of a red fox standing in deep snow, winter light, "
                                                  "seen from a low angle with soft morning haze")
    out = tmp_path / "out" / "stats.json"
    result = invoke("06_caption", "stats", "--trigger", "sks", "--json", out)
    figures = json.loads(out.read_text())
    assert figures["captions"] == 3 and figures["images"] == 3
    assert sorted(figures["tag_frequency"][:2]) == [["1girl", 2], ["sks", 2]]
    assert figures["trigger"] == {"word": "sks", "covered": 2, "of": 3}
    assert figures["resolutions"] == [["64x32", 2], ["20x20", 1]]
    assert figures["tokens"]["flagged"] == {"under_20": 1, "over_77": 1, "over_200": 1}
    assert "trigger 'sks': in 2 of 3 captions" in result.output
    wd14_only = json.loads((invoke("06_caption", "stats", "--kind", "wd14", "--json", out), out.read_text())[1])
    assert wd14_only["captions"] == 2


def test_clip_token_estimate_counts_words_and_punctuation():
    assert clip_token_estimate("a red fox, in snow.") == 7 + 2
    assert clip_token_estimate("long_hair") == 3 + 2


def _many_captions(db_path, n):
    store = open_store(db_path)
    with start_run(store, "test", "fixture", {}, argv=["pytest"]) as run:
        image_ids = add_images(store, run, [f"{i}.png" for i in range(20)])
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO captions (image_id, kind, text, natural_key, created_at, run_id) "
                "VALUES (?, 'wd14', ?, ?, ?, ?)",
                [(image_ids[i % 20], f"tag{i}, solo, watermark, solo", f"t:{i}", now(), run.id) for i in range(n)])
    store.close()


@pytest.mark.resilience
def test_edit_killed_and_rerun_ends_like_one_run(tmp_path):
    n = 30_000
    killed, clean = tmp_path / "killed" / "p.db", tmp_path / "clean" / "p.db"
    _many_captions(killed, n)
    _many_captions(clean, n)
    args = ["edit", "--add-trigger", "sks", "--remove-tags", "watermark", "--dedup-tags"]
    process = subprocess.Popen([sys.executable, str(paths.STEPS_DIR / "06_caption.py"), *args, "--db", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watcher = open_store(killed)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not watcher.count("captions", "kind = 'edit'"):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = watcher.count("captions", "kind = 'edit'")
    assert 0 < partial
    assert run_script("06_caption", *args, "--db", killed).returncode == 0
    assert run_script("06_caption", *args, "--db", clean).returncode == 0

    def final(path):
        s = open_store(path)
        rows = s.query("SELECT p.natural_key AS parent, c.text FROM captions c JOIN captions p ON p.id = c.parent_id "
                       "WHERE c.kind = 'edit' ORDER BY p.natural_key")
        s.close()
        return rows

    assert final(killed) == final(clean) and len(final(clean)) == n
    watcher.close()
