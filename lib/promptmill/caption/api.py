"""Reverse prompts: captions of images written by Gemini or an OpenAI-compatible vision model.

Each kept image without a caption from this model and instruction becomes one
request. The ledger stores the request with the image as its sha256 (never the
bytes); the bytes travel only in the job's payload: raw bytes for Gemini, a
data URL for OpenAI-compatible servers (vLLM or Ollama serving JoyCaption,
Qwen-VL, ...), read only when the request is really sent. Captions (kind `gemini` or `vlm`) point at their ledger row.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from promptmill.core import resources
from promptmill.core.save import caption_key, save_caption
from promptmill.core.state import kept_images_sql
from promptmill.core.text import collapse_whitespace, sha256_hex
from promptmill.llm.runner import Job, Unparseable, estimate_tokens

DEFAULT_INSTRUCTION = resources.SCHEMA_DIR / "templates" / "gemini_reverse_prompt.txt"
IMAGE_TOKENS_ESTIMATE = 1_000
MIME_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
              "gif": "image/gif", "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff"}
_LABEL = re.compile(r"^(?:prompt|caption|reverse prompt)\s*:\s*", re.I)


def params_hash(kind: str, model: str, instruction: str, config: dict) -> str:
    return sha256_hex(json.dumps([kind, model, instruction, config], sort_keys=True))[:16]


def uncaptioned_images_sql(kind: str, phash: str) -> str:
    return kept_images_sql(
        f"NOT EXISTS (SELECT 1 FROM captions c WHERE c.image_id = i.id AND c.natural_key = "
        f"'{kind}:' || i.id || ':{phash}')")


def count_uncaptioned(store, kind: str, phash: str) -> int:
    return store.scalar(f"SELECT count(*) FROM ({uncaptioned_images_sql(kind, phash)})")


def _images(store, kind: str, phash: str, limit: int | None):
    sql = uncaptioned_images_sql(kind, phash) + (f" LIMIT {int(limit)}" if limit else "")
    for image_id, sha256, ext in store.execute(sql).fetchall():
        mime = MIME_TYPES.get(ext.lower())
        if mime:
            yield image_id, sha256, mime, store.blobs.path_for(sha256, ext)


def gemini_jobs(store, model: str, instruction: str, config: dict, limit: int | None = None) -> Iterator[Job]:
    phash = params_hash("gemini", model, instruction, config)
    for image_id, sha256, mime, path in _images(store, "gemini", phash, limit):
        request = {"model": model, "instruction": instruction, "image_sha256": sha256, "mime_type": mime,
                   "config": config}
        yield Job(request=request, item=f"image:{image_id}", item_type="image", item_id=image_id,
                  est_tokens_in=estimate_tokens(instruction) + IMAGE_TOKENS_ESTIMATE,
                  max_tokens_out=int(config.get("max_output_tokens") or 0),
                  payload=partial(_read_image, path, mime), context={"params_hash": phash})


def vlm_jobs(store, model: str, instruction: str, max_tokens: int, temperature: float,
             limit: int | None = None) -> Iterator[Job]:
    config = {"max_tokens": max_tokens, "temperature": temperature}
    phash = params_hash("vlm", model, instruction, config)
    for image_id, sha256, mime, path in _images(store, "vlm", phash, limit):
        def body(url: str) -> dict:
            content = [{"type": "text", "text": instruction}, {"type": "image_url", "image_url": {"url": url}}]
            return {"model": model, "messages": [{"role": "user", "content": content}], **config}

        yield Job(request=body(f"sha256:{sha256}"), item=f"image:{image_id}", item_type="image",
                  item_id=image_id, est_tokens_in=estimate_tokens(instruction) + IMAGE_TOKENS_ESTIMATE,
                  max_tokens_out=max_tokens, payload=partial(_data_url_body, path, mime, body),
                  context={"params_hash": phash})


def _read_image(path: Path, mime: str) -> dict:
    return {"image": path.read_bytes(), "mime_type": mime}


def _data_url_body(path: Path, mime: str, build) -> dict:
    return build(f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}")


def parse_caption(text: str, job: Job | None = None) -> str:
    caption = collapse_whitespace(_LABEL.sub("", text.strip().strip("\"'`").strip())).strip("\"'` ")
    if not caption:
        raise Unparseable("empty caption")
    return caption


def caption_writer(run, kind: str, model: str, config: dict):
    """Store a caption for a job's image, inside the ledger's transaction."""

    def write(conn, job: Job, caption: str, api_call_id: int):
        phash = job.context["params_hash"]
        if save_caption(conn, run, job.item_id, kind, caption, model=model, params=config, params_hash=phash,
                        api_call_id=api_call_id, natural_key=caption_key(kind, job.item_id, phash)) is not None:
            run.add("captions added")

    return write
