"""02_clean images: every check drops the image it should, with its rule; good images are kept."""

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from promptmill.collect.base import Collector, SourceInfo
from promptmill.core.runs import start_run


def encode(size=(128, 96), fmt="PNG", color=(200, 30, 30), noise=False) -> bytes:
    image = Image.new("RGB", size, color)
    if noise:
        image = Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims WIDTH x HEIGHT: what a decompression bomb looks like before decoding."""
    data = bytearray(encode((8, 8)))
    ihdr = bytearray(data[12:29])  # b'IHDR' + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


CASES = {  # locator -> (bytes, expected verdict, expected rule)
    "good.png": (encode(), "keep", None),
    "good.jpg": (encode((300, 200), "JPEG", (10, 120, 200)), "keep", None),
    "good.webp": (encode((100, 100), "WEBP"), "keep", None),
    "truncated.png": (encode((256, 256), noise=True)[:-40_000], "drop", "truncated"),
    "empty.png": (b"", "drop", "empty-file"),
    "bomb.png": (png_with_header_size(30_000, 30_000), "drop", "decompression-bomb"),
    "big-header.png": (png_with_header_size(9_000, 9_000), "drop", "decompression-bomb"),
    "lying.png": (encode((200, 150), "JPEG", (1, 2, 3)), "drop", "extension-mismatch"),
    "tiny.png": (encode((32, 32), color=(9, 9, 9)), "drop", "too-small"),
    "banner.png": (encode((1000, 100), color=(5, 50, 5)), "drop", "extreme-aspect"),
    "notes.png": (b"these are not pixels, just text in a file named like an image", "drop", "not-an-image"),
    "scan.tif": (encode((100, 100), "TIFF", (7, 7, 7)), "drop", "format-not-allowed"),
}


@pytest.fixture
def images_db(store, db_path):
    with start_run(store, "01_collect", "fixture", {}, argv=["pytest"]) as run:
        collector = Collector(store, run, SourceInfo(kind="imagefolder", uri="fixture", sha256="f" * 64))
        for position, (locator, (data, _, _)) in enumerate(CASES.items()):
            collector.add_image(position, data, locator)
        collector.finish(len(CASES))
    return db_path


def decisions(store) -> dict[str, dict]:
    rows = store.query(
        "SELECT o.locator, d.* FROM decisions d JOIN image_origins o ON o.image_id = d.item_id "
        "WHERE d.item_type = 'image' AND d.stage = 'clean'")
    return {row["locator"]: row for row in rows}


def test_each_bad_image_is_dropped_with_its_rule_and_good_ones_kept(images_db, invoke, store):
    invoke("02_clean", "images")
    found = decisions(store)
    assert set(found) == set(CASES)
    for locator, (_, verdict, rule) in CASES.items():
        assert (found[locator]["verdict"], found[locator]["rule"]) == (verdict, rule), (locator, found[locator])
        if verdict == "drop":
            assert found[locator]["reason"]
    assert found["lying.png"]["reason"] == "named 'lying.png' but is JPEG"
    scope = found["good.png"]["scope"]
    assert scope.startswith("images:min_side=64,") and "formats=bmp+gif+jpg+png+webp" in scope
    state = {row["image_id"]: row["state"] for row in store.query("SELECT * FROM image_state")}
    assert sorted(state.values()).count("keep") == 3

    invoke("02_clean", "images")  # idempotent: a second run judges nothing
    assert store.count("decisions") == len(CASES)


def test_options_make_their_own_scope(images_db, invoke, store):
    invoke("02_clean", "images", "--min-side", "16", "--aspect", "0.1..10", "--formats", "JPEG,png,.webp,tiff",
           "--extension-mismatch", "warn", "--max-pixels", "100000000")
    found = decisions(store)
    assert found["tiny.png"]["verdict"] == found["banner.png"]["verdict"] == found["scan.tif"]["verdict"] == "keep"
    assert found["big-header.png"]["rule"] == "truncated"  # allowed by size, but its pixels are not there
    assert found["bomb.png"]["rule"] == "decompression-bomb"  # Pillow's own guard still refuses it
    assert (found["lying.png"]["verdict"], found["lying.png"]["reason"]) == (
        "keep", "warning: extension-mismatch: named 'lying.png' but is JPEG")


def test_missing_blob_is_dropped_and_the_run_goes_on(images_db, invoke, store):
    sha, ext = store.execute("SELECT sha256, ext FROM images i JOIN image_origins o ON o.image_id = i.id "
                             "WHERE o.locator = 'good.webp'").fetchone()
    store.blobs.path_for(sha, ext).unlink()
    invoke("02_clean", "images")
    found = decisions(store)
    assert found["good.webp"]["rule"] == "missing-file"
    assert found["good.png"]["verdict"] == "keep"


@pytest.mark.parametrize("option, value", [("--aspect", "4..1"), ("--aspect", "wide"), ("--formats", ","),
                                           ("--formats", "png,heic")])
def test_bad_options_exit_2(images_db, invoke, option, value):
    invoke("02_clean", "images", option, value, expect=2)


def test_unknown_format_is_one_line_and_exit_2(tmp_path):
    from conftest import run_script

    result = run_script("02_clean", "images", "--db", tmp_path / "x.db", "--formats", "jpg,heic")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --formats: unknown format heic (known: avif, bmp, dib, gif, ico, jfif, "
                                     "jpe, jpeg, jpg, mpo, png, pnm, ppm, tif, tiff, webp)")
