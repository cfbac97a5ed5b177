import io
import json
import os
import stat
import struct
import zipfile
import zlib

from PIL import Image

from conftest import ROOT, run_script

EXAMPLES = ROOT / "examples"


def png_bytes(color=(200, 40, 40), size=(16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width=200_000, height=200_000) -> bytes:
    """A valid PNG header claiming 40 gigapixels (Pillow refuses it as a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_sidecar_folder_with_captions(invoke, store):
    invoke("01_collect", "imagefolder", EXAMPLES / "images")
    assert store.count("images") == 8 and store.count("image_origins") == 8
    caption = store.query("SELECT c.*, o.locator FROM captions c JOIN image_origins o ON o.image_id = c.image_id "
                          "WHERE o.locator = 'img_00.png'")[0]
    assert caption["kind"] == "imported"
    assert caption["text"] == (EXAMPLES / "images" / "img_00.txt").read_text(encoding="utf-8").strip()
    image = store.query("SELECT * FROM images WHERE id = ?", (caption["image_id"],))[0]
    assert image["format"] == "PNG" and store.blobs.path_for(image["sha256"], image["ext"]).exists()
    invoke("01_collect", "imagefolder", EXAMPLES / "images")
    assert (store.count("images"), store.count("captions"), store.count("image_origins")) == (8, 8, 8)


def test_hf_imagefolder_with_splits_as_prompts(invoke, store):
    invoke("01_collect", "imagefolder", EXAMPLES / "imagefolder", "--text-as", "both")
    rows = store.query("SELECT o.locator, o.meta, p.text FROM image_origins o JOIN prompts p ON p.id = o.prompt_id "
                       "ORDER BY o.position")
    assert len(rows) == 7 == store.count("captions")
    assert {json.loads(r["meta"])["split"] for r in rows} == {"train", "validation"}
    first = json.loads((EXAMPLES / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()[0])
    assert rows[0]["locator"] == "train/" + first["file_name"] and rows[0]["text"] == first["text"]


def test_bad_images_are_collected_and_counted(tmp_path, invoke, store):
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = png_bytes()
    (folder / "good.png").write_bytes(good)
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "bomb.png").write_bytes(bomb_png())
    (folder / "bomb.txt").write_text("a caption for the bomb", encoding="utf-8")
    os.symlink("/etc/hostname", folder / "link.png")
    result = invoke("01_collect", "imagefolder", folder)
    formats = {r["locator"]: r["format"] for r in store.query(
        "SELECT o.locator, i.format FROM image_origins o JOIN images i ON i.id = o.image_id")}
    assert formats["good.png"] == "PNG" and formats["empty.jpg"] is None and formats["bomb.png"] is None
    assert "truncated.png" in formats  # header may still read; 02_clean decodes it fully
    assert store.scalar("SELECT reason FROM item_errors WHERE locator = 'link.png'") == "symlink"
    assert "images unreadable" in result.output


def hostile_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pack/a.png", png_bytes((1, 2, 3)))
        archive.writestr("pack/a.txt", "a small red square")
        archive.writestr("pack/b.png", png_bytes((4, 5, 6)))
        archive.writestr("../evil.png", png_bytes((7, 8, 9)))
        archive.writestr("/abs/evil.png", png_bytes((9, 9, 9)))
        link = zipfile.ZipInfo("pack/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")


def test_zip_reads_members_in_place_and_refuses_hostile_ones(tmp_path, invoke, store, db_path):
    path = tmp_path / "in" / "pack.zip"
    path.parent.mkdir()
    hostile_zip(path)
    invoke("01_collect", "zip", path)
    assert sorted(r["locator"] for r in store.query("SELECT locator FROM image_origins")) == ["a.png", "b.png"]
    assert store.scalar("SELECT text FROM captions") == "a small red square"
    reasons = sorted(r["reason"] for r in store.query("SELECT reason FROM item_errors"))
    assert reasons == ["absolute path", "path outside archive", "symlink"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db", "in"]  # nothing beside the db folder
    assert not (tmp_path / "evil.png").exists() and not list(path.parent.glob("*.png"))
    written = {p for p in db_path.parent.rglob("*") if p.is_file()}
    assert all(str(p).startswith(str(db_path.parent)) for p in written)
    invoke("01_collect", "zip", path)
    assert store.count("image_origins") == 2 and store.count("item_errors") == 3


def test_zip_bomb_limits(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.png", b"\0" * 5_000_000)
    db = tmp_path / "db" / "x.db"
    result = run_script("01_collect", "zip", "--db", db, path, "--max-total-bytes", "1000000")
    assert result.returncode == 2 and "--max-total-bytes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_script("01_collect", "zip", "--db", db, path, "--max-member-bytes", "1000000")
    assert result.returncode == 0, result.stderr
    from promptmill.core.store import open_store
    store = open_store(db)
    assert store.scalar("SELECT reason FROM item_errors") == "unreadable file"
    store.close()


def test_example_zip_matches_the_folder(invoke, store):
    invoke("01_collect", "imagefolder", EXAMPLES / "images")
    invoke("01_collect", "zip", EXAMPLES / "archives" / "images.zip")
    assert store.count("images") == 8 and store.count("image_origins") == 16
    assert store.scalar("SELECT count(DISTINCT locator) FROM image_origins") == 8
