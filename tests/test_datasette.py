"""The Datasette metadata, canned queries and image plugin, through Datasette's in-process client."""

import asyncio
import re

import pytest
import yaml
from curation_fixtures import add_library
from datasette.app import Datasette

import paths

METADATA = paths.SCHEMA_DIR / "datasette.yml"


@pytest.fixture
def library(store, run, invoke):
    ids = add_library(store, run)
    invoke("06_caption", "edit", "--kind", "wd14", "--dedup-tags", "--add-trigger", "sks")
    return ids


@pytest.fixture
def datasette(store, library):
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Datasette([str(store.path)])  # the plugin and its metadata come through the entry point


def get(datasette, path):
    return asyncio.run(datasette.client.get(path))


def rows(datasette, query, **params):
    args = "&".join(f"{key}={value}" for key, value in params.items())
    response = get(datasette, f"/promptmill/{query}.json?_shape=array&{args}")
    assert response.status_code == 200, response.text
    return response.json()


def test_every_core_table_and_column_is_described(store):
    metadata = yaml.safe_load(METADATA.read_text())["databases"]["promptmill"]
    core = (paths.SCHEMA_DIR / "migrations" / "001_core.sql").read_text()
    names = re.findall(r"^CREATE (?:TABLE|VIEW) (\w+)", core, re.M)
    names += re.findall(r"^CREATE VIEW (\w+)", (paths.SCHEMA_DIR / "migrations" / "070_curation_views.sql").read_text(),
                        re.M)
    assert len(names) > 15
    for name in names:
        table = metadata["tables"][name]
        assert table["description"], name
        if store.scalar("SELECT type FROM sqlite_master WHERE name = ?", (name,)) == "table":
            columns = {row["name"] for row in store.query(f"PRAGMA table_info([{name}])")} - {"id"}
            assert columns <= set(table["columns"]), (name, columns - set(table["columns"]))


def test_lineage_shows_the_whole_story_of_an_image(datasette, library):
    fox = library["images"][0]
    lineage = rows(datasette, "lineage", image_id=fox)
    what = [row["what"] for row in lineage]
    assert what[:4] == ["image", "found in imagefolder", "generation", "prompt"]
    assert {"prompt source imagefolder", "decision on image " + str(fox), "caption wd14", "caption edit",
            "label description", "score clip", "api call openai"} <= set(what)
    image_row = lineage[0]
    assert re.fullmatch(r"[0-9a-f]{64}", image_row["thumbnail"]) and image_row["run"] == "test fixture"
    edit = next(row for row in lineage if row["what"] == "caption edit")
    assert edit["detail"] == f"sks, fox, snow, outdoors [edit of caption {library['wd14']}]"
    assert edit["run"] == "06_caption edit" and edit["run_status"] == "ok"
    html = get(datasette, f"/promptmill/lineage?image_id={fox}").text
    assert f'src="/-/promptmill/thumb/{image_row["thumbnail"]}"' in html


def test_why_dropped_and_duplicates(datasette, library):
    owl_prompt = library["prompts"][1]
    (why,) = rows(datasette, "why_dropped", prompt_id=owl_prompt)
    assert (why["stage"], why["verdict"], why["rule"], why["current_state"]) == ("clean", "drop", "too_short", "drop")
    (twin,) = rows(datasette, "why_dropped", prompt_id=library["twin"])
    assert twin["representative_text"] == "a red fox in the snow" and twin["dropped_by"] == "dedup:exact"
    duplicates = rows(datasette, "prompt_duplicates", prompt_id=library["prompts"][0])
    assert [(row["prompt_id"], row["why"]) for row in duplicates] == [
        (library["twin"], "same normalised text"), (library["twin"], "duplicate of this prompt (exact)")]
    back = rows(datasette, "prompt_duplicates", prompt_id=library["twin"])
    assert {row["prompt_id"] for row in back} == {library["prompts"][0]}


def test_spend_history_tags_and_lengths(datasette, store, library):
    spend = rows(datasette, "api_spend")
    assert spend[0]["run_id"] == "all" and spend[0]["calls"] == 2 and spend[0]["failed"] == 1
    assert spend[0]["cost_usd"] == pytest.approx(0.0021) and spend[0]["calls_without_price"] == 1
    assert {(row["model"], row["calls"]) for row in spend[1:]} == {("gpt-4o-mini", 1), ("gpt-4o", 1)}
    history = rows(datasette, "run_history")
    assert [row["id"] for row in history] == sorted((r["id"] for r in store.query("SELECT id FROM runs")),
                                                    reverse=True)
    assert history[0]["step"] == "06_caption" and history[0]["seconds"] >= 0
    tags = {row["tag"]: row["captions"] for row in rows(datasette, "tag_frequency")}
    assert tags == {"sks": 2, "fox": 1, "snow": 1, "outdoors": 1, "owl": 1, "night": 1}
    lengths = rows(datasette, "caption_length")
    assert lengths == [{"lineage_kind": "wd14", "words_from": 0, "words_to": 9, "captions": 2}]


def test_tables_have_facets_and_thumbnails(datasette, library, store):
    captions = get(datasette, "/promptmill/captions.json").json()
    assert {"kind", "model", "author"} <= set(captions["facet_results"])
    decisions = get(datasette, "/promptmill/decisions.json").json()
    assert {"stage", "verdict"} <= set(decisions["facet_results"])
    sha = store.scalar("SELECT sha256 FROM images WHERE id = ?", (library["images"][0],))
    images_html = get(datasette, "/promptmill/images").text
    assert f'<img src="/-/promptmill/thumb/{sha}"' in images_html
    captions_html = get(datasette, "/promptmill/captions").text
    assert f'src="/-/promptmill/thumb/{sha}"' in captions_html
    sources_html = get(datasette, "/promptmill/sources").text
    assert "/-/promptmill/thumb/" not in sources_html  # source hashes are not images


def test_image_routes_serve_only_the_blob_store(datasette, store, library, tmp_path):
    sha, ext = store.query("SELECT sha256, ext FROM images WHERE id = ?", (library["images"][0],))[0].values()
    original = get(datasette, f"/-/promptmill/image/{sha}")
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.content == store.blobs.path_for(sha, ext).read_bytes()
    thumb = get(datasette, f"/-/promptmill/thumb/{sha}")
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    secret = store.path.parent / "secret.txt"
    secret.write_text("not for you")
    stray = store.blobs.root / "ab" / "cd" / ("ab" + "c" * 62 + ".png")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(original.content)  # a file in the store that no image row names
    for bad in ("..%2Fsecret.txt", "..%2F..%2Fsecret.txt", sha.upper(), sha[:-1], sha + "0", "ab" + "c" * 62,
                "%2Fetc%2Fpasswd", f"{sha}%00.png"):
        for route in ("image", "thumb"):
            response = get(datasette, f"/-/promptmill/{route}/{bad}")
            assert response.status_code == 404, (route, bad)
            assert b"not for you" not in response.content


def test_thumbnails_are_cached_beside_the_database(datasette, store, library):
    sha = store.scalar("SELECT sha256 FROM images WHERE id = ?", (library["images"][0],))
    first = get(datasette, f"/-/promptmill/thumb/{sha}")
    cached = list((store.path.parent / "thumbs").rglob(f"{sha}.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content
    cached[0].write_bytes(b"\xff\xd8\xff from the cache")
    assert get(datasette, f"/-/promptmill/thumb/{sha}").content == b"\xff\xd8\xff from the cache"


def test_a_decompression_bomb_gets_no_thumbnail(store, run):
    """A PNG whose header claims 12,000 x 10,000 pixels (under Pillow's own bomb error) is refused before
    any pixel is decoded."""
    import struct
    import zlib

    from promptmill.collect.base import Collector, SourceInfo
    from promptmill.core.text import sha256_hex

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12_000, 10_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
    collector = Collector(store, run, SourceInfo(kind="imagefolder", uri="bombs", sha256=sha256_hex("bombs")))
    collector.add_image(0, bomb, "bomb.png")
    collector.finish(1)
    sha = store.scalar("SELECT sha256 FROM images")
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    response = get(Datasette([str(store.path)]), f"/-/promptmill/thumb/{sha}")
    assert (response.status_code, response.text) == (415, "cannot read image: TooManyPixels")
    assert not (store.path.parent / "thumbs").exists() or not list((store.path.parent / "thumbs").rglob("*.jpg"))


def test_thumbnails_show_16_bit_and_rotated_images_as_people_see_them(tmp_path):
    """Thumbnails go through the same 8-bit conversion as every other consumer (to_rgb8)."""
    import io

    import numpy as np
    from PIL import Image
    from png16 import png16

    from promptmill.datasette.plugin import thumbnail_bytes

    grey = tmp_path / "grey16.png"
    grey.write_bytes(png16(np.full((40, 40), 30000, dtype=np.uint16), color_type=0))
    with Image.open(io.BytesIO(thumbnail_bytes(grey))) as thumb:
        assert abs(thumb.convert("L").getpixel((20, 20)) - 117) <= 2  # 30000/65535 of white, not white

    landscape = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = landscape.getexif()
    exif[0x0112] = 6  # shown turned a quarter: portrait
    rotated = tmp_path / "rotated.jpg"
    landscape.save(rotated, exif=exif)
    with Image.open(io.BytesIO(thumbnail_bytes(rotated))) as thumb:
        assert thumb.height > thumb.width
