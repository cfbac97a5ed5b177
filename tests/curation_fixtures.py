"""Images, captions and labels for the curation, Label Studio and Datasette tests,
written the way the steps write them: through the Collector and SQL inside a run."""

from __future__ import annotations

import io
import json

from PIL import Image

from promptmill.collect.base import Collector, SourceInfo
from promptmill.core.runs import now
from promptmill.core.text import sha256_hex


def png_bytes(index: int, size: tuple[int, int] = (32, 24)) -> bytes:
    image = Image.new("RGB", size, ((index * 40) % 256, (index * 90) % 256, (index * 150) % 256))
    image.putpixel((index % size[0], 0), (1, 2, 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def add_images(store, run, locators: list[str], prompts: list[str] | None = None,
               sizes: list[tuple[int, int]] | None = None, source_uri: str = "fixture-folder") -> list[int]:
    """One source with an image per locator (and the prompt found with it); returns image ids in order."""
    collector = Collector(store, run, SourceInfo(kind="imagefolder", uri=source_uri, sha256=sha256_hex(source_uri)))
    for position, locator in enumerate(locators):
        size = sizes[position] if sizes else (32, 24)
        collector.add_image(position, png_bytes(position, size), locator,
                            prompt=prompts[position] if prompts else None)
    collector.finish(len(locators))
    rows = store.query(
        "SELECT o.image_id FROM image_origins o WHERE o.source_id = ? ORDER BY o.position",
        (collector.source_id,))
    return [row["image_id"] for row in rows]


def add_caption(store, run, image_id: int, kind: str, text: str, tags: list[tuple[str, float]] | None = None,
                model: str | None = None) -> int:
    with store.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO captions (image_id, kind, text, model, natural_key, created_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (image_id, kind, text, model, f"test:{kind}:{image_id}:{sha256_hex(text)[:12]}", now(), run.id))
        caption_id = cursor.lastrowid
        for position, (tag, score) in enumerate(tags or []):
            conn.execute("INSERT INTO tags (caption_id, tag, score, category, position) VALUES (?, ?, ?, ?, ?)",
                         (caption_id, tag, score, "general", position))
    return caption_id


def add_label(store, run, kind: str, text: str, prompt_id: int | None = None, image_id: int | None = None,
              api_call_id: int | None = None) -> int:
    with store.transaction() as conn:
        return conn.execute(
            "INSERT INTO labels (prompt_id, image_id, kind, text, api_call_id, natural_key, created_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (prompt_id, image_id, kind, text, api_call_id, f"test:{kind}:{prompt_id}:{image_id}:{text}", now(),
             run.id)).lastrowid


def add_api_call(store, run, item_type: str, item_id: int, model: str = "gpt-4o-mini", cost: float | None = 0.0012,
                 status: str = "ok") -> int:
    with store.transaction() as conn:
        return conn.execute(
            "INSERT INTO api_calls (idempotency_key, provider, model, item_type, item_id, request, response, "
            "status, tokens_in, tokens_out, cost_usd, latency_s, created_at, run_id) "
            "VALUES (?, 'openai', ?, ?, ?, ?, ?, ?, 120, 30, ?, 0.8, ?, ?)",
            (sha256_hex(f"{model}:{item_type}:{item_id}:{status}"), model, item_type, item_id,
             json.dumps({"model": model}), json.dumps({"ok": True}), status, cost, now(), run.id)).lastrowid


def add_decision(store, run, item_type: str, item_id: int, stage: str, verdict: str, scope: str,
                 rule: str | None = None, reason: str | None = None, representative_id: int | None = None,
                 value: str | None = None) -> int:
    with store.transaction() as conn:
        return conn.execute(
            "INSERT INTO decisions (item_type, item_id, stage, verdict, scope, rule, reason, representative_id, "
            "value, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item_type, item_id, stage, verdict, scope, rule, reason, representative_id, value, run.id)).lastrowid


def add_library(store, run) -> dict:
    """A small database with one of everything the lineage of an image can show."""
    image_ids = add_images(store, run, ["set/fox.png", "set/owl.png"],
                           prompts=["a red fox in the snow", "an owl at night"], sizes=[(64, 48), (40, 40)])
    fox_prompt, owl_prompt = (store.scalar("SELECT prompt_id FROM image_origins WHERE image_id = ?", (i,))
                              for i in image_ids)
    with store.transaction() as conn:
        twin = conn.execute(
            "INSERT INTO prompts (source_id, position, text, norm_hash, run_id) "
            "SELECT source_id, 99, 'A red fox in the snow.', norm_hash, ? FROM prompts WHERE id = ?",
            (run.id, fox_prompt)).lastrowid
        conn.execute(
            "INSERT INTO generations (prompt_id, image_id, prompt_text, model, seed, steps, guidance, params_hash, "
            "run_id) VALUES (?, ?, 'a red fox in the snow', 'tiny-sd', 42, 2, 7.5, 'h', ?)",
            (fox_prompt, image_ids[0], run.id))
    wd14 = add_caption(store, run, image_ids[0], "wd14", "fox, snow, outdoors, fox",
                       tags=[("fox", 0.95), ("snow", 0.8), ("outdoors", 0.5)])
    add_caption(store, run, image_ids[1], "wd14", "owl, night", tags=[("owl", 0.9), ("night", 0.6)])
    call = add_api_call(store, run, "prompt", fox_prompt, cost=0.0021)
    add_api_call(store, run, "prompt", owl_prompt, model="gpt-4o", cost=None, status="failed")
    add_label(store, run, "description", "a fox", prompt_id=fox_prompt, api_call_id=call)
    add_decision(store, run, "prompt", twin, "dedup", "drop", "exact", rule="exact", reason="same text",
                 representative_id=fox_prompt)
    add_decision(store, run, "prompt", owl_prompt, "clean", "drop", "default", rule="too_short",
                 reason="fewer than 5 words")
    add_decision(store, run, "image", image_ids[0], "split", "assign", "seed-1", rule="cluster", value="train")
    with store.transaction() as conn:
        conn.execute("INSERT INTO scores (image_id, kind, value, model, natural_key, run_id) "
                     "VALUES (?, 'clip', 0.31, 'tiny-clip', 'clip-test', ?)", (image_ids[0], run.id))
    return {"images": image_ids, "prompts": [fox_prompt, owl_prompt], "twin": twin, "wd14": wd14,
            "api_call": call}
