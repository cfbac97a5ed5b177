"""Captioning as engine work: a work row is an image (and its prompt), a result row a caption or score."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa

from promptmill.caption import base
from promptmill.caption.base import Captioner, Item
from promptmill.core.store import Store
from promptmill.engine.base import Task

RESULT_SCHEMA = pa.schema([("key", pa.int64()), ("image_id", pa.int64()), ("prompt_id", pa.int64()),
                           ("text", pa.string()), ("tags", pa.string()), ("score", pa.float64()),
                           ("params", pa.string()), ("error", pa.string())])


def task(captioner: Captioner, requested: dict, store: Store, batch_size: int) -> Task:
    """The task of running CAPTIONER; REQUESTED are its options as given (a worker resolves its own device)."""
    options = {**requested, **({"dtype": captioner.options["dtype"]} if "dtype" in requested else {})}
    spec = {"name": captioner.name, "kind": captioner.kind, "model": captioner.model,
            "params_hash": captioner.params_hash,
            "revision": captioner.revision, "options": options, "read_blobs": str(store.blobs.root)}
    return Task("caption", "06_caption", captioner.name, captioner.params_hash, spec, batch_size)


def plan_rows(captioner: Captioner, store: Store, limit: int | None) -> list[dict]:
    return [{"key": i, **item.__dict__} for i, item in enumerate(captioner.pending(store, limit))]


class Worker:
    """The captioner loaded once; each call decodes a batch on threads and captions it."""

    def __init__(self, spec: dict):
        from promptmill.core.store import BlobStore

        self.captioner = base.load_captioner(spec["name"])(spec["model"], spec["revision"], **spec["options"])
        self.captioner.load()
        self.blobs = BlobStore(spec["read_blobs"])

    def __call__(self, rows: list[dict]) -> list[dict]:
        items = [Item(r["image_id"], r["sha256"], r["ext"], r.get("prompt_id"), r.get("prompt")) for r in rows]
        _, inputs = next(base.decoded_batches(self.blobs, items, len(items), self.captioner.prepare))
        results = base.caption_batch(self.captioner, items, inputs)
        for row, result in zip(rows, results):
            result["key"] = row["key"]
            result["tags"] = json.dumps(result["tags"]) if result["tags"] is not None else None
        return results


def commit(conn, run, spec: dict, rows: list[dict]) -> None:
    """Write result rows as the in-process loop does (natural keys: nothing twice)."""
    identity = SimpleNamespace(name=spec["name"], kind=spec["kind"], model=spec["model"],
                               params_hash=spec["params_hash"])
    base.save_results(conn, run, identity, [{**row, "tags": json.loads(row["tags"]) if row["tags"] else None}
                                       for row in rows])

