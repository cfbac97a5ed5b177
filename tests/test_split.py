import io

import numpy as np
from click.testing import CliRunner
from PIL import Image

from conftest import load_step, seed_lines
from promptmill.collect.base import Collector, SourceInfo
from promptmill.core.state import split_of


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def near_copies(lines):
    return [line.upper() for line in lines[::3]] + [line + ", trending on artstation" for line in lines[1::7]]


def representative_of(store):
    return {r["item_id"]: r["representative_id"] for r in store.query(
        "SELECT item_id, representative_id FROM decisions WHERE stage = 'dedup' AND item_type = 'prompt'")}


def test_clusters_never_straddle_splits_and_report_finds_no_leak(tmp_path, invoke, store):
    lines = seed_lines("prompts_filtered_4.0.txt", 600)
    invoke("01_collect", "text", write_lines(tmp_path / "a.txt", lines), write_lines(tmp_path / "b.txt",
                                                                                     near_copies(lines)))
    invoke("03_dedup", "prompts", "--method", "exact,simhash", "--near-dup-bits", "6")
    invoke("08_split", "assign", "--validation", "0.3", "--test", "0.1", "--seed", "7")
    splits = split_of(store, "prompt")
    assert len(splits) == store.count("prompts")
    assert set(splits.values()) == {"train", "validation", "test"}
    representatives = representative_of(store)
    assert len(representatives) > 200
    assert all(splits[item] == splits[rep] for item, rep in representatives.items())
    report = invoke("08_split", "report").output
    assert "leakage (exact, simhash): 0 cross-split pair(s)" in report
    assert "validation" in report and "a.txt" in report
    again = invoke("08_split", "assign", "--validation", "0.3", "--test", "0.1", "--seed", "7")
    assert "already assigned, nothing new" in again.output


def test_report_lists_pairs_that_cross_splits(tmp_path, invoke, store):
    lines = seed_lines("prompts_filtered_4.0.txt", 300)
    invoke("01_collect", "text", write_lines(tmp_path / "a.txt", lines + [line.upper() for line in lines]))
    invoke("08_split", "assign", "--validation", "0.5")    # no dedup: copies are their own clusters
    report = invoke("08_split", "report", "--method", "exact").output
    leaks = int(report.split("leakage (exact): ")[1].split()[0])
    assert 100 < leaks < 200
    # The cascade finds the same pairs (same words), each with its Jaccard of 1.
    from promptmill.split.assign import leakage

    found = leakage(store, None, ["cascade"])
    assert len(found) >= leaks and {leak["score"] for leak in found} == {1.0}
    assert all(leak["text_a"].upper() == leak["text_b"].upper() for leak in found)


def test_ten_percent_new_items_move_nothing(tmp_path, invoke, store, db_path):
    lines = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 2000)
    old, new = lines[:1800], lines[1800:] + near_copies(lines[:60])
    first, second = write_lines(tmp_path / "old.txt", old), write_lines(tmp_path / "new.txt", new)
    invoke("01_collect", "text", first)
    invoke("03_dedup", "prompts", "--lexical-only")
    invoke("08_split", "assign", "--validation", "0.2", "--seed", "3")
    before = split_of(store, "prompt")
    invoke("01_collect", "text", second)
    invoke("03_dedup", "prompts", "--lexical-only")
    invoke("08_split", "assign", "--validation", "0.2", "--seed", "3")
    after = split_of(store, "prompt")
    assert {k: after[k] for k in before} == before
    assert len(after) == len(before) + len(new)
    representatives = representative_of(store)
    assert all(after[item] == after[rep] for item, rep in representatives.items())
    # The same data assigned in one go gives the same splits: a function of cluster and seed.
    fresh = tmp_path / "fresh" / "p.db"
    invoke("01_collect", "text", first, second, db=fresh)
    invoke("03_dedup", "prompts", "--lexical-only", db=fresh)
    invoke("08_split", "assign", "--validation", "0.2", "--seed", "3", db=fresh)
    from promptmill.core.store import open_store

    other = open_store(fresh)
    assert split_of(other, "prompt") == after
    other.close()


def test_stratify_holds_out_each_sources_share(tmp_path, invoke, store):
    lines = seed_lines("openprompts_dedup_085_075_diff_pprc_085wt_075wv.txt", 1000)
    files = [write_lines(tmp_path / f"{i}.txt", lines[i * 250:(i + 1) * 250 - i * 60]) for i in range(4)]
    invoke("01_collect", "text", *files)
    invoke("08_split", "assign", "--validation", "0.1", "--stratify", "source")
    rows = store.query("SELECT p.source_id, d.value, count(*) AS n FROM decisions d JOIN prompts p "
                       "ON p.id = d.item_id WHERE d.stage = 'split' GROUP BY 1, 2")
    for source_id in {r["source_id"] for r in rows}:
        total = sum(r["n"] for r in rows if r["source_id"] == source_id)
        held = sum(r["n"] for r in rows if r["source_id"] == source_id and r["value"] == "validation")
        assert held == round(0.1 * total)


def test_images_follow_their_prompt_or_their_cluster(tmp_path, store, run, invoke, db_path):
    rng = np.random.default_rng(1)

    def png(seed_image):
        buffer = io.BytesIO()
        seed_image.save(buffer, "PNG")
        return buffer.getvalue()

    pictures = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((64, 64))
                for _ in range(30)]
    collector = Collector(store, run, SourceInfo("test", "images", "sha"))
    for i, picture in enumerate(pictures[:20]):
        collector.add_image(i, png(picture), f"{i}.png", prompt=f"prompt number {i} of a red fox")
    for i, picture in enumerate(pictures[20:]):
        collector.add_image(100 + i, png(picture), f"plain{i}.png")
    collector.add_image(200, png(pictures[25].resize((48, 48))), "copy.png")
    collector.finish(31)
    cli = load_step("03_dedup").cli
    assert CliRunner().invoke(cli, ["images", "--db", str(db_path)]).exit_code == 0
    invoke("08_split", "assign", "--validation", "0.5", "--seed", "2")
    prompt_splits, image_splits = split_of(store, "prompt"), split_of(store, "image")
    origins = store.query("SELECT image_id, prompt_id FROM image_origins WHERE prompt_id IS NOT NULL")
    assert len(origins) == 20
    assert all(image_splits[o["image_id"]] == prompt_splits[o["prompt_id"]] for o in origins)
    copy = store.scalar("SELECT image_id FROM image_origins WHERE locator = 'copy.png'")
    original = store.scalar("SELECT image_id FROM image_origins WHERE locator = 'plain5.png'")
    assert image_splits[copy] == image_splits[original]
    assert len(image_splits) == 31


def test_an_imported_release_keeps_its_splits(tmp_path, invoke, store):
    """Merging an earlier imagefolder release: its validation items stay in validation, with their clusters."""
    from conftest import ROOT

    invoke("01_collect", "imagefolder", ROOT / "examples" / "imagefolder", "--text-as", "both")
    lines = seed_lines("prompts_filtered_4.0.txt", 300)
    (tmp_path / "p.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    invoke("01_collect", "text", tmp_path / "p.txt")
    invoke("08_split", "assign", "--validation", "0.01", "--seed", "3")
    prompts, images = split_of(store, "prompt"), split_of(store, "image")
    for row in store.query("SELECT image_id, prompt_id, json_extract(meta, '$.split') AS split FROM image_origins"):
        assert images[row["image_id"]] == row["split"]
        assert prompts[row["prompt_id"]] == row["split"]
    assert "validation" in {row["split"] for row in store.query(
        "SELECT json_extract(meta, '$.split') AS split FROM image_origins")}


def example_lines(limit):
    from paths import EXAMPLES_DIR

    text = (EXAMPLES_DIR / "prompts" / "diffusiondb_style.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()][:limit]


def test_a_rerun_with_nothing_new_stops_at_once_and_new_items_are_still_assigned(tmp_path, invoke, store):
    lines = example_lines(400)
    invoke("01_collect", "text", write_lines(tmp_path / "a.txt", lines[:300]))
    invoke("03_dedup", "prompts", "--method", "exact,cascade", "--lexical-only")
    invoke("08_split", "assign", "--validation", "0.2")
    assert store.count("split_passes") == 1
    again = invoke("08_split", "assign", "--validation", "0.2")
    assert "already assigned, nothing new" in again.output and "prompts assigned" not in again.output
    # Another scope is not up to date; a new prompt or a new decision makes this one stale too.
    other = invoke("08_split", "assign", "--validation", "0.3")
    assert "prompts assigned 300" in other.output
    invoke("01_collect", "text", write_lines(tmp_path / "b.txt", lines[300:]))
    later = invoke("08_split", "assign", "--validation", "0.2")
    assert "prompts assigned 100" in later.output
    assert len(split_of(store, "prompt")) == 400
    report = invoke("08_split", "report", "--method", "exact,cascade", "--scope", "seed=0;validation=0.2;test=0").output
    assert "leakage (exact, cascade): 0 cross-split pair(s)" in report


def test_a_pass_is_not_recorded_when_other_writers_added_decisions_meanwhile(tmp_path, invoke, store, run):
    from promptmill.core.runs import start_run
    from promptmill.core.save import save_decisions
    from promptmill.split import assign

    invoke("01_collect", "text", write_lines(tmp_path / "a.txt", example_lines(20)))
    seen = assign.watermark(store)
    with start_run(store, "02_clean", "prompts", {}, argv=["pytest"]) as other, store.transaction() as conn:
        # a decision by another run lands while this one assigns
        save_decisions(conn, other, [{"item_type": "prompt", "item_id": 1, "stage": "clean", "verdict": "drop",
                                      "scope": "x"}])
    assert not assign.record_pass(store, run, "seed=0", seen)
    seen = assign.watermark(store)
    with store.transaction() as conn:
        save_decisions(conn, run, [{"item_type": "prompt", "item_id": 2, "stage": "split", "verdict": "assign",
                                    "scope": "seed=0", "value": "train"}])
    assert assign.record_pass(store, run, "seed=0", seen)
    assert assign.up_to_date(store, "seed=0") and not assign.up_to_date(store, "seed=1")
