"""A small database with everything a release draws on: collected and generated images, prompts,
captions with tags, CLIP scores, description labels, clean/dedup drops and split decisions.

Rows are written the way the steps write them (the Collector, plain inserts with a run), so the
exports are tested against the real schema without depending on the other steps' code."""

from __future__ import annotations

import hashlib
import io
import json

from PIL import Image

from promptmill.collect.base import Collector, SourceInfo
from promptmill.core.images import probe_image
from promptmill.core.runs import start_run
from promptmill.core.store import Store

NOW = "2026-01-01T00:00:00.000000Z"


def image_bytes(seed: int, size=(24, 16), fmt="PNG") -> bytes:
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    for x in range(0, size[0], 3):
        image.putpixel((x, seed % size[1]), (255 - (seed % 256), 0, 255))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def add_generated(store: Store, run_id: int, prompt_id: int, prompt_text: str, data: bytes, seed: int) -> int:
    """An image as 05_generate stores it: blob, images row, generations row."""
    probe = probe_image(data)
    sha256, _ = store.blobs.put(data, probe.ext)
    with store.transaction() as conn:
        conn.execute("INSERT INTO images (sha256, ext, format, width, height, mode, bytes, run_id) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                     (sha256, probe.ext, probe.format, probe.width, probe.height, probe.mode, probe.bytes, run_id))
        image_id = conn.execute("SELECT id FROM images WHERE sha256 = ?", (sha256,)).fetchone()[0]
        conn.execute(
            "INSERT INTO generations (prompt_id, image_id, prompt_text, model, revision, scheduler, seed, steps, "
            "guidance, width, height, params_hash, run_id) VALUES (?, ?, ?, 'tiny/sd-test', 'abc123', 'ddim', ?, 20, "
            "7.5, ?, ?, 'p1', ?)",
            (prompt_id, image_id, prompt_text, seed, probe.width, probe.height, run_id))
    return image_id


def decide(conn, item_type, item_id, stage, verdict, scope, run_id, value=None, rule=None):
    conn.execute("INSERT INTO decisions (item_type, item_id, stage, verdict, scope, rule, value, run_id) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                 (item_type, item_id, stage, verdict, scope, rule, value, run_id))


def build_release_db(store: Store, images: int = 10) -> dict:
    """Fill STORE; return the ids the tests look at."""
    with start_run(store, "01_collect", "imagefolder", {}, argv=["fixture"]) as run:
        collector = Collector(store, run, SourceInfo(kind="imagefolder", uri="fixture/images", sha256="f" * 64))
        for position in range(1, images + 1):
            collector.add_image(position, image_bytes(position, (24 + position, 16)), f"img_{position}.png",
                                caption=f"imported caption {position}",
                                prompt=f"a painting of a red fox number {position}, ohwx, trending on artstation")
        collector.add_image(images + 1, image_bytes(99, fmt="GIF"), "anim.gif", caption="a gif",
                            prompt="a gif of a cat")
        collector.add_image(images + 2, image_bytes(98, fmt="JPEG"), "Ünïcödé photo / with spaces.jpg",
                            prompt="Ünïcödé prompt, with ../slashes/ and \"quotes\"")
        collector.add_image(images + 3, b"not an image at all", "broken.png", prompt="broken")
        collector.finish(images + 3)
        text_source = Collector(store, run, SourceInfo(kind="text", uri="fixture/prompts.txt", sha256="e" * 64))
        for position in range(1, 9):
            text_source.add_prompt(position, f"  A castle on a hill number {position},  golden hour  ")
        text_source.finish(8)
    ids = {row["locator"]: row["image_id"] for row in store.query("SELECT locator, image_id FROM image_origins")}
    prompts = [row["id"] for row in store.query("SELECT id FROM prompts WHERE source_id = ? ORDER BY id",
                                                (text_source.source_id,))]
    with start_run(store, "05_generate", "diffusers", {}, argv=["fixture"]) as run:
        generated = [add_generated(store, run.id, prompts[i], f"A castle on a hill number {i + 1}, golden hour",
                                   image_bytes(200 + i, (32, 48)), seed=1000 + i) for i in range(3)]
    with start_run(store, "06_caption", "wd14", {}, argv=["fixture"]) as run, store.transaction() as conn:
        for n, image_id in enumerate([ids["img_1.png"], ids["img_2.png"], generated[0]]):
            for kind, text in (("blip", f"a blip caption {n}"), ("wd14", "fox, red_fur, ohwx, outdoors")):
                cursor = conn.execute(
                    "INSERT INTO captions (image_id, kind, text, model, natural_key, created_at, run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (image_id, kind, text, f"tiny-{kind}", f"{kind}:{image_id}", NOW, run.id))
                if kind == "wd14":
                    conn.executemany("INSERT INTO tags (caption_id, tag, score, category, position) VALUES (?, ?, ?, ?, ?)",
                                     [(cursor.lastrowid, tag, 0.9 - i / 10, "general", i)
                                      for i, tag in enumerate(["fox", "red_fur", "ohwx", "outdoors"])])
            conn.execute("INSERT INTO scores (image_id, kind, value, model, natural_key, run_id) "
                         "VALUES (?, 'clip', ?, 'tiny-clip', ?, ?)", (image_id, 25.5 + n, f"clip:{image_id}", run.id))
    with start_run(store, "07_label", "describe", {}, argv=["fixture"]) as run, store.transaction() as conn:
        for n, prompt_id in enumerate(prompts):
            text = "_no_object" if n == 5 else f"a castle\non a hill {n + 1}"
            conn.execute("INSERT INTO labels (prompt_id, kind, text, model, natural_key, created_at, run_id) "
                         "VALUES (?, 'description', ?, 'gpt-test', ?, ?, ?)",
                         (prompt_id, text, f"describe:{prompt_id}", NOW, run.id))
        conn.execute("INSERT INTO labels (prompt_id, kind, text, model, natural_key, created_at, run_id) "
                     "VALUES (?, 'no_object', 'true', 'gpt-test', ?, ?, ?)",
                     (prompts[6], f"no_object:{prompts[6]}", NOW, run.id))
    with start_run(store, "02_clean", "prompts", {}, argv=["fixture"]) as run, store.transaction() as conn:
        for n, prompt_id in enumerate(prompts):
            decide(conn, "prompt", prompt_id, "clean", "keep", "default", run.id,
                   value=f"A castle on a hill number {n + 1}, golden hour")
        decide(conn, "prompt", prompts[7], "dedup", "drop", "exact", run.id, rule="exact")
        decide(conn, "image", ids["img_3.png"], "dedup", "drop", "phash", run.id, rule="phash")
    with start_run(store, "08_split", "assign", {}, argv=["fixture"]) as run, store.transaction() as conn:
        decide(conn, "image", ids["img_4.png"], "split", "assign", "seed0", run.id, value="validation")
        decide(conn, "image", ids["img_5.png"], "split", "assign", "seed0", run.id, value="validation")
        decide(conn, "image", generated[1], "split", "assign", "seed0", run.id, value="test")
        decide(conn, "prompt", prompts[1], "split", "assign", "seed0", run.id, value="test")
        decide(conn, "prompt", prompts[2], "split", "assign", "seed0", run.id, value="test")
    return {"images": ids, "generated": generated, "prompts": prompts,
            "broken": ids["broken.png"], "dropped_image": ids["img_3.png"]}


def sha256_tree(root) -> dict[str, str]:
    """relative path -> sha256 of every file under ROOT."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
