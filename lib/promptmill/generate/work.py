"""Generation as engine work: a work row is one image to make (prompt, index, seed), a result row the
stored image's sha256 and header with the seconds it took. Workers write the PNG to the blob store."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import pyarrow as pa

from promptmill.core.images import Probe
from promptmill.core.store import BlobStore
from promptmill.engine.base import Task
from promptmill.generate import diffusion
from promptmill.generate.diffusion import ImageJob, Settings

RESULT_SCHEMA = pa.schema([("key", pa.int64()), ("prompt_id", pa.int64()), ("image_index", pa.int64()),
                           ("text", pa.string()), ("seed", pa.int64()), ("sha256", pa.string()),
                           ("ext", pa.string()), ("format", pa.string()), ("width", pa.int64()),
                           ("height", pa.int64()), ("mode", pa.string()), ("bytes", pa.int64()),
                           ("seconds", pa.float64()), ("device", pa.string())])


def task(settings: Settings, row_params: dict, device: str, compile_unet: bool, channels_last: bool,
         blobs: BlobStore, batch_size: int) -> Task:
    """DEVICE is as requested ('auto': each worker's own GPU); the dtype is already resolved in SETTINGS."""
    spec = {"settings": asdict(settings), "row_params": row_params, "params_hash": settings.params_hash(),
            "device": device, "compile": compile_unet, "channels_last": channels_last,
            "write_blobs": str(blobs.root)}
    return Task("generate", "05_generate", "diffusers", settings.params_hash(), spec, batch_size)


def plan_rows(jobs: list[ImageJob]) -> list[dict]:
    return [{"key": i, **asdict(job)} for i, job in enumerate(jobs)]


class Worker:
    """The pipeline loaded once; each call makes a batch and stores its PNGs."""

    def __init__(self, spec: dict):
        from promptmill.engine.devices import pick_device, torch_dtype

        self.settings = Settings(**spec["settings"])
        self.device = pick_device(spec["device"])
        _, dtype = torch_dtype(self.settings.dtype, self.device)
        self.pipe = diffusion.load_pipeline(self.settings.model, self.settings.revision, self.settings.scheduler, dtype,
                                  self.device, spec["compile"], spec["channels_last"])
        self.label = diffusion.device_label(self.device)
        self.blobs = BlobStore(spec["write_blobs"])

    def __call__(self, rows: list[dict]) -> list[dict]:
        jobs = [ImageJob(r["prompt_id"], r["text"], r["image_index"], r["seed"]) for r in rows]
        started = time.perf_counter()
        pixels = diffusion.generate_batch(self.pipe, jobs, self.settings)
        seconds = (time.perf_counter() - started) / len(jobs)
        results = []
        for row, job, image in zip(rows, jobs, pixels):
            sha256, probe = diffusion.encode_and_store(self.blobs, image)
            results.append({"key": row["key"], **asdict(job), "sha256": sha256, "ext": probe.ext,
                            "format": probe.format, "width": probe.width, "height": probe.height,
                            "mode": probe.mode, "bytes": probe.bytes, "seconds": seconds, "device": self.label})
        return results


def commit(conn, run, spec: dict, rows: list[dict]) -> None:
    """The same image and generation rows as the in-process writer."""
    settings = Settings(**spec["settings"])
    params_json = json.dumps(spec["row_params"], sort_keys=True)
    for row in rows:
        probe = Probe(row["ext"], row["format"], row["width"], row["height"], row["mode"], row["bytes"])
        job = ImageJob(row["prompt_id"], row["text"], row["image_index"], row["seed"])
        diffusion.save_generation(conn, run, settings, params_json, spec["params_hash"], row["device"], job, row["sha256"],
                        probe, row["seconds"])
