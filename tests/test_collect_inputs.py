"""Files as other tools save them: Excel CSVs, UTF-16 and gallery-dl sidecars, DiffusionDB parts and table."""

import csv
import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from promptmill.core.text import hash_author


def png(color, size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def excel_csv(path, rows):
    """What Excel writes for "CSV UTF-8 (Comma delimited)": a BOM, CRLF line ends, quotes only where needed."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))


def test_excel_metadata_csv_and_sidecars_of_every_encoding(tmp_path, invoke, store):
    folder = tmp_path / "set"
    (folder / "train").mkdir(parents=True)
    for index, color in enumerate(("red", "green", "blue")):
        (folder / "train" / f"{index}.png").write_bytes(png(color))
    excel_csv(folder / "train" / "metadata.csv", [["file_name", "text", "seed"], ["0.png", "a red door", "11"],
                                                  ["1.png", "café, green hills", "12"], ["2.png", "blue sea", "13"]])
    invoke("01_collect", "imagefolder", folder)
    rows = store.query("SELECT o.locator, o.meta, c.text FROM image_origins o JOIN captions c ON c.image_id = o.image_id "
                       "ORDER BY o.position")
    assert [(r["locator"], r["text"]) for r in rows] == [("train/0.png", "a red door"),
                                                          ("train/1.png", "café, green hills"),
                                                          ("train/2.png", "blue sea")]
    assert [json.loads(r["meta"]) for r in rows] == [{"seed": s, "split": "train"} for s in (11, 12, 13)]
    assert store.count("item_errors") == 0
    excel_csv(folder / "train" / "metadata.csv", [["File Name", "text"], ["0.png", "a red door"]])
    invoke("01_collect", "imagefolder", folder)
    assert store.query("SELECT reason, detail FROM item_errors") == [
        {"reason": "missing column", "detail": "no file_name column; it has: File Name, text"}]

    sidecars = tmp_path / "gallery"
    sidecars.mkdir()
    texts = {"a.jpg": ("a.jpg.txt", "utf-8", "gallery-dl caption"), "b.png": ("b.txt", "utf-16", "notepad unicode"),
             "c.png": ("c.caption", "utf-8-sig", "bom caption"), "d.png": ("d.txt", "utf-16-be", "big endian")}
    for index, (image, (sidecar, encoding, text)) in enumerate(texts.items()):
        Image.new("RGB", (20, 20), (index * 50, 0, 0)).save(sidecars / image)
        data = text.encode(encoding)
        if encoding == "utf-16-be":
            data = b"\xfe\xff" + data
        (sidecars / sidecar).write_bytes(data)
    invoke("01_collect", "imagefolder", sidecars)
    found = {r["locator"]: r["text"] for r in store.query(
        "SELECT o.locator, c.text FROM image_origins o JOIN captions c ON c.image_id = o.image_id "
        "JOIN sources s ON s.id = o.source_id WHERE s.uri = ?", (str(sidecars),))}
    assert found == {image: text for image, (_, _, text) in texts.items()}


def test_excel_table_csv_and_bom_jsonl(tmp_path, invoke, store):
    excel_csv(tmp_path / "prompts.csv", [["prompt", "seed"], ["a red door, oil", "5"], ["line one\nline two", "6"]])
    invoke("01_collect", "table", tmp_path / "prompts.csv", "--meta-column", "seed")
    (tmp_path / "prompts.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "a bom first line"}\r\n'
                                             + b'{"prompt": "second"}\r\n')
    invoke("01_collect", "table", tmp_path / "prompts.jsonl")
    rows = store.query("SELECT text, meta FROM prompts ORDER BY source_id, position")
    assert [(r["text"], r["meta"] and json.loads(r["meta"])) for r in rows] == [
        ("a red door, oil", {"seed": 5}), ("line one\nline two", {"seed": 6}),
        ("a bom first line", None), ("second", None)]


def diffusiondb_part(names_prompts) -> tuple[dict, dict]:
    """(file name -> PNG bytes, part json) as DiffusionDB's part-000001.zip holds them."""
    images, mapping = {}, {}
    for index, (name, prompt) in enumerate(names_prompts):
        images[name] = png((index * 40, 100, 50))
        mapping[name] = {"p": prompt, "se": 38753269 + index, "c": 12.0, "st": 50, "sa": "k_lms"}
    return images, mapping


def diffusiondb_table(path, names_prompts, users):
    n = len(names_prompts)
    pq.write_table(pa.table({
        "image_name": [name for name, _ in names_prompts], "prompt": [p for _, p in names_prompts],
        "part_id": pa.array([1] * n, pa.uint16()), "seed": pa.array([38753269 + i for i in range(n)], pa.uint32()),
        "step": pa.array([50] * n, pa.uint16()), "cfg": pa.array([12.0] * n, pa.float32()),
        "sampler": pa.array([8, 9, 1][:n], pa.uint8()),
        "width": pa.array([512] * n, pa.uint16()), "height": pa.array([512] * n, pa.uint16()),
        "user_name": users, "timestamp": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
        "image_nsfw": pa.array([0.1] * n, pa.float32()), "prompt_nsfw": pa.array([0.0] * n, pa.float32()),
    }), path)


NAMES = [("f3501e05-aef7-4225-a9e9-f516527408ac.png", "geodesic landscape, john chamberlain, 4 k, "),
         ("0a9b0c77-1d2e-4f10-9a3b-2c4d5e6f7a8b.png", "a lighthouse, trending on artstation"),
         ("9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a.png", "portrait of a fox")]


def test_diffusiondb_part_zip_then_table(tmp_path, invoke, store):
    images, mapping = diffusiondb_part(NAMES)
    with zipfile.ZipFile(tmp_path / "part-000001.zip", "w") as archive:
        for name, data in images.items():
            archive.writestr(name, data)
        archive.writestr("part-000001.json", json.dumps(mapping, indent=2))
    invoke("01_collect", "zip", tmp_path / "part-000001.zip")
    rows = store.query("SELECT o.locator, p.text, p.meta FROM image_origins o JOIN prompts p ON p.id = o.prompt_id "
                       "ORDER BY o.position")
    assert [(r["locator"], r["text"]) for r in rows] == [(n, p) for n, p in sorted(NAMES)]
    meta = json.loads(rows[0]["meta"])
    assert {k: meta[k] for k in ("seed", "steps", "cfg_scale", "sampler", "image_name")} == {
        "seed": 38753269 + 1, "steps": 50, "cfg_scale": 12.0, "sampler": "k_lms", "image_name": sorted(NAMES)[0][0]}
    diffusiondb_table(tmp_path / "metadata.parquet", NAMES, ["u1", "deleted_account", "deleted_account"])
    result = invoke("01_collect", "table", tmp_path / "metadata.parquet", "--preset", "diffusiondb")
    assert "table rows linked to part images 3" in result.output
    check_table_links(store)


def test_diffusiondb_table_then_part_folder(tmp_path, invoke, store):
    diffusiondb_table(tmp_path / "metadata.parquet", NAMES, ["u1", "deleted_account", "deleted_account"])
    invoke("01_collect", "table", tmp_path / "metadata.parquet", "--preset", "diffusiondb")
    images, mapping = diffusiondb_part(NAMES)
    part = tmp_path / "part-000001"
    part.mkdir()
    for name, data in images.items():
        (part / name).write_bytes(data)
    (part / "part-000001.json").write_text(json.dumps(mapping), encoding="utf-8")
    result = invoke("01_collect", "imagefolder", part)
    assert "table rows linked to part images 3" in result.output
    check_table_links(store)


def check_table_links(store):
    rows = store.query(
        "SELECT p.locator, p.text, p.author, p.meta, i.sha256, o.locator AS origin FROM prompts p "
        "JOIN sources s ON s.id = p.source_id AND s.kind = 'table' "
        "JOIN image_origins o ON o.prompt_id = p.id JOIN images i ON i.id = o.image_id ORDER BY p.position")
    assert [(r["locator"], r["text"]) for r in rows] == NAMES
    parts = {r["locator"]: r["sha256"] for r in store.query(
        "SELECT o.locator, i.sha256 FROM image_origins o JOIN images i ON i.id = o.image_id "
        "JOIN sources s ON s.id = o.source_id WHERE s.kind != 'table'")}
    assert all(parts[r["locator"]] == r["sha256"] for r in rows)
    assert [r["author"] for r in rows] == [hash_author("u1"), None, None]
    assert [json.loads(r["meta"])["sampler"] for r in rows] == ["k_lms", "others", "ddim"]
    meta = json.loads(rows[0]["meta"])
    assert (meta["seed"], meta["steps"], meta["cfg_scale"], meta["width"]) == (38753269, 50, 12.0, 512)


def test_datasets_reads_the_same_excel_folder_and_photo_sizes(tmp_path, invoke, store, monkeypatch):
    """The real consumer: `datasets` loads the Excel-saved imagefolder with the same captions, and decodes
    an EXIF-rotated photo at the size 01_collect recorded."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets

    folder = tmp_path / "set"
    folder.mkdir()
    Image.new("RGB", (64, 48), "red").save(folder / "0.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 48), "blue").save(folder / "1.jpg", exif=exif)
    excel_csv(folder / "metadata.csv", [["file_name", "text"], ["0.png", "a red square"], ["1.jpg", "café au lait"]])
    invoke("01_collect", "imagefolder", folder)
    ours = store.query("SELECT o.locator, c.text, i.width, i.height FROM image_origins o "
                       "JOIN images i ON i.id = o.image_id JOIN captions c ON c.image_id = i.id ORDER BY o.position")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    theirs = sorted((row["text"], row["image"].size) for row in loaded)
    assert sorted((r["text"], (r["width"], r["height"])) for r in ours) == theirs == [
        ("a red square", (64, 48)), ("café au lait", (48, 64))]


def test_text_files_with_a_bom(tmp_path, invoke, store):
    (tmp_path / "notepad.txt").write_bytes(b"\xef\xbb\xbfa red fox\r\nblue whale\r\n")
    (tmp_path / "unicode.txt").write_bytes("café au lait\r\n\r\nmoss on stones".encode("utf-16"))
    (tmp_path / "big-endian.txt").write_bytes(b"\xfe\xff" + "a heron\n".encode("utf-16-be"))
    invoke("01_collect", "text", tmp_path / "notepad.txt", tmp_path / "unicode.txt", tmp_path / "big-endian.txt")
    assert [r["text"] for r in store.query("SELECT text FROM prompts ORDER BY source_id, position")] == [
        "a red fox", "blue whale", "café au lait", "moss on stones", "a heron"]


def test_big_utf16_text_through_the_worker(tmp_path, store, run):
    from promptmill.collect import textfile
    from promptmill.collect.base import Collector

    lines = [f"prompt {i}, été" for i in range(3000)]
    path = tmp_path / "big.txt"
    path.write_bytes("\n".join(lines).encode("utf-16"))
    collector = Collector(store, run, textfile.source_info(path))
    collector.finish(textfile.collect_lines(collector, path, block_bytes=4096, worker=True))
    assert [r["text"] for r in store.query("SELECT text FROM prompts ORDER BY position")] == lines
