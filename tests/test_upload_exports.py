"""09_upload exports, each read back by its real consumer: datasets' imagefolder and parquet loaders,
a checker of kohya's folder rules, csv/json readers; re-exports byte-identical and recorded once."""

import csv
import json
import re

import pytest
import yaml
from upload_fixtures import build_release_db, jsonl, sha256_tree

from conftest import run_script
from promptmill.release.check import check_folder
from promptmill.release.folder import MARKER, STAGING, is_own


@pytest.fixture
def ids(store):
    return build_release_db(store)


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    return cache


def expected_images(ids):
    """Every image except the dedup-dropped and the unreadable one."""
    return set(ids["images"].values()) - {ids["broken"], ids["dropped_image"]} | set(ids["generated"])


def outside_tree(tmp_path, *inside):
    """Files under tmp_path that are not under one of INSIDE (the db folder, OUT, the datasets cache)."""
    return {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
            if p.is_file() and not any(p.is_relative_to(root) for root in inside)}


def test_imagefolder_loads_with_datasets(tmp_path, invoke, store, ids, datasets_cache, db_path):
    from datasets import load_dataset

    out = tmp_path / "out" / "release-1"
    before = outside_tree(tmp_path, db_path.parent, datasets_cache)
    invoke("09_upload", "imagefolder", out, "--release", "v1")
    assert outside_tree(tmp_path, db_path.parent, out, datasets_cache) == before

    rows = {split: jsonl(out / split / "metadata.jsonl") for split in ("train", "validation", "test")}
    assert {len(r) for r in rows.values()} and sum(map(len, rows.values())) == len(expected_images(ids))
    assert {row["image_id"] for split_rows in rows.values() for row in split_rows} == expected_images(ids)
    all_rows = [row for split_rows in rows.values() for row in split_rows]
    assert sorted(row["id"] for row in all_rows) == list(range(1, len(all_rows) + 1))
    assert len({tuple(row) for row in all_rows}) == 1  # same keys, same order, every row
    for row in all_rows:
        assert re.fullmatch(r"[a-z0-9-]{1,64}-?[0-9a-f]{8}\.(png|jpg|gif)", row["file_name"]), row["file_name"]
    generated = next(row for row in all_rows if row["image_id"] == ids["generated"][0])
    assert (generated["model"], generated["seed"], generated["steps"], generated["guidance"]) == (
        "tiny/sd-test", 1000, 20, 7.5)
    assert generated["description"] == "a castle\non a hill 1" and generated["source_kind"] == "generated"
    assert generated["tags"] == "fox, red_fur, ohwx, outdoors" and generated["clip_score"] == 27.5
    assert rows["test"][0]["image_id"] == ids["generated"][1]
    assert check_folder(out) == ([], len(sha256_tree(out)) - 2, [])  # the marker and the lock are not files of it

    dataset = load_dataset("imagefolder", data_dir=str(out))
    assert {split: len(dataset[split]) for split in dataset} == {split: len(r) for split, r in rows.items()}
    first = dataset["train"][0]
    by_id = {row["image_id"]: row for row in all_rows}
    assert first["image"].size == (by_id[first["image_id"]]["width"], by_id[first["image_id"]]["height"])
    assert first["text"] == by_id[first["image_id"]]["text"]
    assert dataset["train"].features["seed"].dtype == "int64"
    # The card's `configs` give the same splits when the folder is loaded as a Hub repository would be.
    assert {split: len(d) for split, d in load_dataset(str(out)).items()} == {s: len(r) for s, r in rows.items()}


def test_parquet_loads_with_datasets(tmp_path, invoke, store, ids, datasets_cache, run, monkeypatch):
    import pyarrow.parquet as pq
    from datasets import load_dataset
    from upload_fixtures import image_bytes

    from promptmill.collect.base import Collector, SourceInfo
    from promptmill.release import parquet
    from promptmill.release.folder import ExportFolder
    from promptmill.release.parquet import ROWS_PER_GROUP, ParquetExporter

    collector = Collector(store, run, SourceInfo(kind="zip", uri="more.zip", sha256="d" * 64))
    for position in range(1, 231):
        collector.add_image(position, image_bytes(1000 + position, (20, 20)), f"more/{position}.png")
    collector.finish(230)
    out = tmp_path / "pq"
    invoke("09_upload", "parquet", out, "--release", "pq1", "--text-from", "caption:blip")
    shards = sorted(p.relative_to(out).as_posix() for p in (out / "data").glob("*.parquet"))
    assert shards == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
                      "data/validation-00000-of-00001.parquet"]
    train = pq.ParquetFile(out / "data/train-00000-of-00001.parquet")
    assert train.metadata.num_row_groups == 3
    assert all(train.metadata.row_group(i).num_rows <= ROWS_PER_GROUP for i in range(3))
    assert check_folder(out)[0] == []

    dataset = load_dataset("parquet", data_dir=str(out / "data"))
    assert len(dataset["train"]) == train.metadata.num_rows == len(expected_images(ids)) - 3 + 230
    row = dataset["train"][0]
    assert row["image"].size == (row["width"], row["height"]) and row["text"] == "a blip caption 0"
    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert card["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train-*"}
    assert {f["name"]: f["dtype"] for f in card["dataset_info"]["features"]}["image"] == "image"
    shard_bytes = {split: sum(p.stat().st_size for p in (out / "data").glob(f"{split}-*")) for split in
                   ("train", "validation", "test")}
    assert card["dataset_info"]["splits"] == [
        {"name": split, "num_bytes": shard_bytes[split], "num_examples": len(dataset[split])}
        for split in ("train", "validation", "test")]
    assert card["dataset_info"]["download_size"] == sum(shard_bytes.values())
    assert card["license"] == "other" and card["license_name"] == "mixed-sources"
    assert card["license_link"] == "README.md#license" and "\n## License\n" in (out / "README.md").read_text()

    # Shards close before they pass the byte budget: at most budget-worth of images each.
    monkeypatch.setattr(parquet, "MB", 1)  # --max-shard-mb 4000 is then 4,000 bytes
    staged = ExportFolder(tmp_path / "small-shards")
    released = list(ParquetExporter({"text_from": "prompt", "splits": (), "max_shard_mb": 4000}).write(store, staged))
    names = sorted(p.name for p in (staged.staging / "data").glob("train-*"))
    assert len(names) > 2 and names[0] == f"train-00000-of-{len(names):05d}.parquet"
    assert sum(pq.ParquetFile(staged.staging / "data" / n).metadata.num_rows for n in names) == sum(
        1 for item in released if item["split"] == "train")


@pytest.mark.parametrize("trigger", ["", "a/b", "ohwx,man"])
def test_kohya_rejects_bad_trigger_words(tmp_path, db_path, trigger):
    result = run_script("09_upload", "kohya", tmp_path / "lora", "--db", db_path, "--trigger", trigger)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lora").exists()


def test_pairs_in_every_format(tmp_path, invoke, store, ids):
    invoke("09_upload", "pairs", tmp_path / "j", "--format", "jsonl")
    train, test = jsonl(tmp_path / "j/train.jsonl"), jsonl(tmp_path / "j/test.jsonl")
    prompts = ids["prompts"]
    # 8 prompts: #6 labelled _no_object, #7 kind no_object, #8 dropped by dedup; #2, #3 in test.
    assert [r["prompt_id"] for r in train] == [prompts[0], prompts[3], prompts[4]]
    assert [r["prompt_id"] for r in test] == [prompts[1], prompts[2]]
    assert train[0] == {"id": 1, "prompt_id": prompts[0], "description": "a castle\non a hill 1",
                        "prompt": "A castle on a hill number 1, golden hour", "source_kind": "text",
                        "label_model": "gpt-test"}

    invoke("09_upload", "pairs", tmp_path / "c", "--format", "csv")
    with open(tmp_path / "c/train.csv", newline="") as fh:
        assert [row["description"] for row in csv.DictReader(fh)] == [r["description"] for r in train]

    invoke("09_upload", "pairs", tmp_path / "s", "--format", "strings")
    assert sorted(p.name for p in (tmp_path / "s").glob("*.txt")) == ["test_strings.txt", "train_strings.txt"]
    assert (tmp_path / "s/train_strings.txt").read_text().splitlines()[0] == (
        "a castle on a hill 1\tA castle on a hill number 1, golden hour")
    invoke("09_upload", "pairs", tmp_path / "i", "--format", "strings",
           "--template", "Describe: {description} => {prompt}<|endoftext|>")
    assert (tmp_path / "i/test_strings.txt").read_text().splitlines() == [
        "Describe: a castle on a hill 2 => A castle on a hill number 2, golden hour<|endoftext|>",
        "Describe: a castle on a hill 3 => A castle on a hill number 3, golden hour<|endoftext|>"]
    assert store.count("releases", "format = 'pairs'") == 4


def test_pairs_bad_template_exits_2(tmp_path, db_path):
    result = run_script("09_upload", "pairs", tmp_path / "s", "--db", db_path, "--format", "strings",
                        "--template", "{prompt} {secret}")
    assert result.returncode == 2 and "--template" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_prompts_export_txt_and_jsonl(tmp_path, invoke, store, ids):
    invoke("09_upload", "prompts", tmp_path / "t")
    lines = (tmp_path / "t/prompts.txt").read_text().splitlines()
    assert "A castle on a hill number 1, golden hour" in lines
    assert "A castle on a hill number 8, golden hour" not in lines  # dropped by dedup
    assert len(lines) == store.count("prompts") - 1
    invoke("09_upload", "prompts", tmp_path / "j", "--format", "jsonl", "--split", "test")
    rows = jsonl(tmp_path / "j/prompts.jsonl")
    assert [(r["id"], r["prompt_id"], r["split"], r["source_kind"]) for r in rows] == [
        (1, ids["prompts"][1], "test", "text"), (2, ids["prompts"][2], "test", "text")]


def release_files(out) -> dict[str, str]:
    return {path: sha for path, sha in sha256_tree(out).items() if not is_own(path)}


def test_reexport_is_byte_identical_and_recorded_once(tmp_path, invoke, store, ids, run):
    for fmt in ("imagefolder", "parquet"):
        out = tmp_path / fmt
        invoke("09_upload", fmt, out, "--release", "same")
        first = release_files(out)
        with store.transaction() as conn:  # something new that is not in the release: the export runs again
            conn.execute("INSERT INTO sources (kind, uri, sha256, run_id) VALUES ('text', ?, ?, ?)",
                         (f"unrelated-{fmt}", fmt * 10, run.id))
        result = invoke("09_upload", fmt, out, "--release", "same")
        assert "releases already recorded 1" in result.stderr and "skipped" not in result.stderr
        assert release_files(out) == first
        rows = store.query("SELECT manifest, manifest_sha256 FROM releases WHERE format = ?", (fmt,))
        assert len(rows) == 1
        assert json.loads(rows[0]["manifest"]) == first
        assert json.loads((out / MARKER).read_text())["manifest_sha256"] == rows[0]["manifest_sha256"]
    assert store.count("release_items", "release_id = 1") == len(expected_images(ids))


def test_an_export_with_nothing_new_is_skipped_unless_its_files_changed(tmp_path, invoke, store, ids):
    out = tmp_path / "p"
    invoke("09_upload", "prompts", out)
    written = (out / "prompts.txt").stat().st_mtime_ns
    again = invoke("09_upload", "prompts", out)
    assert "exports skipped: nothing changed since the last one 1" in again.stderr
    assert (out / "prompts.txt").stat().st_mtime_ns == written
    (out / "prompts.txt").write_text("edited\n")
    restored = invoke("09_upload", "prompts", out)
    assert "skipped" not in restored.stderr and (out / "prompts.txt").read_text() != "edited\n"
    assert store.count("releases") == 1


def test_card_describes_the_release(tmp_path, invoke, store, ids):
    out = tmp_path / "if"
    invoke("09_upload", "imagefolder", out, "--release", "cards", "--license", "cc-by-4.0", "--pretty-name", "Foxes")
    text = (out / "README.md").read_text()
    _, front, body = text.split("---", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "Foxes"
    assert meta["task_categories"] == ["text-to-image", "image-to-text"] and meta["size_categories"] == ["n<1K"]
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["train", "validation", "test"]
    assert "| generated | 3 |" in body and "| train | 11 |" in body
    assert "generation: `tiny/sd-test`" in body and "caption (wd14): `tiny-wd14`" in body
    for step in ("01_collect", "05_generate", "06_caption", "08_split"):
        assert f"| {step} |" in body
    charts = sorted(p.name for p in (out / "card").iterdir())
    assert charts == ["resolution.png", "sources.png", "text_length.png", "top_tags.png"]
    assert all((out / "card" / name).read_bytes().startswith(b"\x89PNG") for name in charts)
    assert all(f"](card/{name})" in body for name in charts)

    preview = tmp_path / "preview"
    invoke("09_upload", "card", preview, "--release", "cards")
    assert yaml.safe_load((preview / "README.md").read_text().split("---")[1])["license"] == "cc-by-4.0"


def test_diff_lists_added_removed_and_changed(tmp_path, invoke, store, ids, run):
    from upload_fixtures import add_generated, decide, image_bytes

    invoke("09_upload", "imagefolder", tmp_path / "a", "--release", "weekly")
    new_image = add_generated(store, run.id, ids["prompts"][4], "A castle on a hill number 5, golden hour",
                              image_bytes(500, (40, 40)), 7)
    with store.transaction() as conn:
        decide(conn, "image", ids["images"]["img_6.png"], "dedup", "drop", "manual", run.id)
        decide(conn, "image", ids["images"]["img_7.png"], "split", "assign", "seed1", run.id, value="test")
    invoke("09_upload", "imagefolder", tmp_path / "b", "--release", "weekly")
    assert store.count("releases", "name = 'weekly'") == 2

    result = invoke("09_upload", "diff", "#1", "weekly", "--json")
    diff = json.loads(result.stdout)
    assert [(i["item_type"], i["item_id"]) for i in diff["added"]] == [("image", new_image)]
    assert [i["item_id"] for i in diff["removed"]] == [ids["images"]["img_6.png"]]
    [changed] = diff["changed"]
    assert changed["item_id"] == ids["images"]["img_7.png"]
    assert changed["changes"]["split"] == ["train", "test"]
    text = invoke("09_upload", "diff", "#1", "#2").stdout
    assert text.splitlines()[0].startswith("weekly #1 -> weekly #2: 1 added, 1 removed, 1 changed")


def test_out_folder_with_foreign_files_is_refused(tmp_path, db_path, store, ids):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_script("09_upload", "imagefolder", out, "--db", db_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_check_reports_what_the_viewer_rejects(tmp_path):
    out = tmp_path / "bad"
    (out / "train").mkdir(parents=True)
    (out / "train" / "a.png").write_bytes(b"x")
    rows = [
        {"file_name": "a.png", "text": "ok", "score": 1.5, "tags": []},
        {"file_name": "/etc/passwd", "text": "x", "score": 2.0, "tags": []},
        {"file_name": "../a.png", "text": "x", "score": 2.0, "tags": []},
        {"file_name": "missing.png", "text": None, "score": 3, "tags": []},
        {"file_name": "a.png", "score": 1.0, "tags": []},
    ]
    (out / "train" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    crowded = out / "crowded"
    crowded.mkdir()
    for n in range(10_000):
        (crowded / f"{n}.txt").touch()
    (out / STAGING).mkdir()
    problems, _, _ = check_folder(out)
    text = "\n".join(problems)
    for expected in ("'/etc/passwd' is absolute", "'../a.png' climbs out", "'missing.png' names no file",
                     "text is null", "score is int but float", "keys differ", "not JSON",
                     "crowded/ has 10,000 files", "tags is an empty list in every row", "did not finish"):
        assert expected in text, expected
    result = run_script("09_upload", "check", out)
    assert result.returncode == 1 and "is absolute" in result.stdout


def test_big_splits_are_spread_over_sub_folders(tmp_path, store, ids, run, monkeypatch):
    from promptmill.release import imagefolder as export_imagefolder
    from promptmill.release.base import CardSettings, export

    monkeypatch.setattr(export_imagefolder, "IMAGES_PER_FOLDER", 4)
    out = tmp_path / "big"
    exporter = export_imagefolder.ImagefolderExporter({"text_from": "prompt", "splits": ()})
    export(store, run, exporter, out, "big", CardSettings(enabled=False))
    names = [row["file_name"] for row in jsonl(out / "train" / "metadata.jsonl")]
    assert [name.split("/")[0] for name in names] == ["000"] * 4 + ["001"] * 4 + ["002"] * (len(names) - 8)
    assert all("/" not in row["file_name"] for row in jsonl(out / "validation" / "metadata.jsonl"))
    assert check_folder(out)[0] == []


def test_text_from_follows_edits_and_falls_back_in_order(store, ids, invoke):
    from promptmill.release.items import image_items

    invoke("06_caption", "edit", "--kind", "wd14", "--add-trigger", "sks", "--position", "start")
    by_image = {item["image_id"]: item["text"] for item in image_items(store, "caption:wd14")}
    assert by_image[ids["images"]["img_1.png"]] == "sks, fox, red_fur, ohwx, outdoors"
    assert by_image[ids["images"]["img_6.png"]] == ""
    chained = {item["image_id"]: item["text"] for item in image_items(store, "caption:wd14,caption:imported")}
    assert chained[ids["images"]["img_1.png"]].startswith("sks, ")
    assert chained[ids["images"]["img_6.png"]] == "imported caption 6"
    with pytest.raises(Exception, match="comma-separated"):
        image_items(store, "prompt,caption")


def test_normalize_writes_upright_rgb_and_is_recorded(tmp_path, invoke, store, run):
    import io

    from PIL import Image

    from promptmill.collect.base import Collector, SourceInfo

    rotated = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = rotated.getexif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to display
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif)
    collector = Collector(store, run, SourceInfo(kind="imagefolder", uri="rot", sha256="9" * 64))
    collector.add_image(1, buffer.getvalue(), "rotated.jpg", prompt="a rotated photo")
    collector.finish(1)

    invoke("09_upload", "imagefolder", tmp_path / "as-is")
    [row] = jsonl(tmp_path / "as-is" / "train" / "metadata.jsonl")
    assert row["file_name"].endswith(".jpg") and (row["width"], row["height"]) == (20, 40)  # as displayed
    assert (tmp_path / "as-is" / "train" / row["file_name"]).read_bytes() == buffer.getvalue()

    invoke("09_upload", "imagefolder", tmp_path / "upright", "--normalize")
    [row] = jsonl(tmp_path / "upright" / "train" / "metadata.jsonl")
    with Image.open(tmp_path / "upright" / "train" / row["file_name"]) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (20, 40))
    assert (row["width"], row["height"]) == (20, 40)
    params = json.loads(store.scalar("SELECT params FROM releases WHERE name = 'upright'"))
    assert params["normalize"] is True
