"""Text-to-image generation with diffusers: seeded per prompt, batched, resumable, shardable.

The unit of work is one image: (prompt, image index, seed). Pending units are
those of kept prompts without a `generations` row for the same parameters hash,
so a second run only does what the first did not finish. Units are cut into
batches in a fixed order and each batch is committed in one transaction, so a
killed run leaves whole batches behind and the resumed run recomputes the same
batches with the same seeds: the same bytes come out.

On the hot path the GPU only denoises and decodes; the batch is turned into
uint8 in one tensor op, and PNG encoding, hashing and blob writing happen on a
thread pool while the next batch runs. One writer thread commits batches in order.
"""

from __future__ import annotations

import io
import json
import os
import queue
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from promptmill.core import save
from promptmill.core.errors import BadInput
from promptmill.core.images import probe_image
from promptmill.core.runs import Run
from promptmill.core.state import kept_prompts
from promptmill.core.store import BlobStore, Store
from promptmill.generate.seeds import SEED_RULE, image_seed

DEFAULT_MODEL = "stabilityai/stable-diffusion-2"
SCHEDULER_ALIASES = {
    "ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler", "dpm++_sde": "DPMSolverSDEScheduler",
    "unipc": "UniPCMultistepScheduler", "heun": "HeunDiscreteScheduler",
}


@dataclass(frozen=True)
class Settings:
    """What decides an image's pixels (hashed), resolved against the loaded pipeline."""

    model: str
    revision: str | None
    scheduler: str
    steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str | None
    dtype: str
    seed: int

    def params_hash(self) -> str:
        return save.params_hash(asdict(self))


@dataclass(frozen=True)
class ImageJob:
    prompt_id: int
    text: str
    image_index: int
    seed: int


@dataclass
class Shard:
    """This process's share of the prompts: prompt_id % count == index (stable across restarts)."""

    index: int = 0
    count: int = 1
    local_index: int = 0

    @classmethod
    def from_env(cls) -> Shard:
        """Set by `accelerate launch` / torchrun: RANK, WORLD_SIZE, LOCAL_RANK."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def load_pipeline(model: str, revision: str | None, scheduler: str | None, dtype, device: str,
                  compile_unet: bool = False, channels_last: bool = False):
    """Any diffusers text-to-image pipeline, by hub id or local folder, ready on DEVICE."""
    import diffusers
    import torch
    import transformers

    # Long prompts are truncated to the text encoder's limit by design; one warning per batch is noise.
    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    if not os.path.isdir(model) and (model.startswith(("/", ".", "~")) or model.count("/") != 1):
        raise BadInput(f"--model {model}: no such folder, and not a hub id (owner/name)")
    try:
        with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; the old name works everywhere
            warnings.simplefilter("ignore", FutureWarning)
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(model, revision=revision, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot load pipeline {model!r}: {str(exc).splitlines()[0]}") from exc
    if scheduler:
        name = SCHEDULER_ALIASES.get(scheduler, scheduler)
        scheduler_class = getattr(diffusers, name, None)
        if scheduler_class is None or not hasattr(scheduler_class, "from_config"):
            raise BadInput(f"unknown scheduler {scheduler!r} (a diffusers scheduler class or one of "
                           f"{', '.join(SCHEDULER_ALIASES)})")
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if channels_last:
        denoiser.to(memory_format=torch.channels_last)
        if getattr(pipe, "vae", None) is not None:
            pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        compiled = torch.compile(denoiser, fullgraph=False)
        setattr(pipe, "unet" if getattr(pipe, "unet", None) is not None else "transformer", compiled)
    return pipe


def default_size(pipe) -> int:
    """The pipeline's native resolution (768 for SD2), as diffusers itself would pick it."""
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample = denoiser.config.sample_size
    return int(sample * pipe.vae_scale_factor)


def attention_kind(pipe) -> str:
    """Which attention processor the denoiser runs (SDPA is AttnProcessor2_0)."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    processors = getattr(denoiser, "attn_processors", {}) or {}
    return ",".join(sorted({type(p).__name__ for p in processors.values()})) or "default"


def pending_jobs(store: Store, settings: Settings, images_per_prompt: int, shard: Shard,
                 limit: int | None = None) -> list[ImageJob]:
    """Images still to make for kept prompts of this shard, in prompt-id order."""
    params_hash = settings.params_hash()
    done = set(store.execute("SELECT prompt_id, image_index FROM generations WHERE params_hash = ?",
                             (params_hash,)))
    jobs, prompts = [], 0
    where = "p.id % ? = ?" if shard.count > 1 else "1"
    args = (shard.count, shard.index) if shard.count > 1 else ()
    for prompt_id, _source_id, text in kept_prompts(store, where, args):
        missing = [i for i in range(images_per_prompt) if (prompt_id, i) not in done]
        if not missing:
            continue
        if limit is not None and prompts >= limit:
            break
        prompts += 1
        jobs += [ImageJob(prompt_id, text, i, image_seed(settings.seed, prompt_id, i)) for i in missing]
    return jobs


def encode_and_store(blobs: BlobStore, pixels) -> tuple[str, object]:
    """PNG bytes of one HxWx3 uint8 image into the blob store (runs on a worker thread)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = buffer.getvalue()
    probe = probe_image(data, "image.png")
    sha256, _ = blobs.put(data, probe.ext)
    return sha256, probe


def save_generation(conn, run: Run, settings: Settings, params_json: str, params_hash: str, device: str,
                    job: ImageJob, sha256: str, probe, seconds: float) -> None:
    """The image row (once per sha256) and its generation row (once per prompt, parameter set and index)."""
    s = settings
    before = conn.total_changes
    conn.execute(
        "INSERT INTO images (sha256, ext, format, width, height, mode, bytes, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
        (sha256, probe.ext, probe.format, probe.width, probe.height, probe.mode, probe.bytes, run.id))
    if conn.total_changes == before:
        run.add("images already there")
    image_id = conn.execute("SELECT id FROM images WHERE sha256 = ?", (sha256,)).fetchone()[0]
    before = conn.total_changes
    conn.execute(
        "INSERT INTO generations (prompt_id, image_id, image_index, prompt_text, negative_prompt, "
        "model, revision, scheduler, seed, steps, guidance, width, height, dtype, device, seconds, "
        "params, params_hash, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (prompt_id, params_hash, image_index) DO NOTHING",
        (job.prompt_id, image_id, job.image_index, job.text, s.negative_prompt, s.model, s.revision,
         s.scheduler, job.seed, s.steps, s.guidance, s.width, s.height, s.dtype, device,
         round(seconds, 4), params_json, params_hash, run.id))
    run.add("images generated" if conn.total_changes > before else "generations already there")


@dataclass
class ImageWriter:
    """Encodes and stores images off the GPU's critical path; commits batches in order."""

    store: Store
    run: Run
    settings: Settings
    row_params: dict
    device_name: str
    progress: object = None
    encode_workers: int = 4
    max_pending_batches: int = 2
    error: BaseException | None = field(default=None, init=False)

    def __post_init__(self):
        self._encoder = ThreadPoolExecutor(self.encode_workers, thread_name_prefix="png")
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_pending_batches)
        self._params_json = json.dumps(self.row_params, sort_keys=True)
        self._params_hash = self.settings.params_hash()
        self._thread = threading.Thread(target=self._commit_loop, name="generation-writer", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[ImageJob], pixels, seconds_per_image: float):
        """Hand over a batch (uint8 array N x H x W x 3); returns at once unless the writer lags."""
        if self.error is not None:
            raise self.error
        futures = [self._encoder.submit(encode_and_store, self.store.blobs, pixels[i]) for i in range(len(jobs))]
        self._queue.put((jobs, futures, seconds_per_image))

    def close(self):
        """Commit every batch handed over, then stop."""
        self._queue.put(None)
        self._thread.join()
        self._encoder.shutdown()
        if self.error is not None:
            raise self.error

    def _commit_loop(self):
        while (item := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._commit(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    self.error = exc

    def _commit(self, jobs: list[ImageJob], futures, seconds: float):
        stored = [future.result() for future in futures]
        with self.store.transaction() as conn:
            for job, (sha256, probe) in zip(jobs, stored):
                save_generation(conn, self.run, self.settings, self._params_json, self._params_hash,
                                self.device_name, job, sha256, probe, seconds)
        if self.progress is not None:
            self.progress.update(len(jobs))


def generate_images(pipe, jobs: list[ImageJob], settings: Settings, batch_size: int, writer: ImageWriter):
    """Run the pipeline over JOBS in fixed-order batches; hand each batch to WRITER."""
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        started = time.perf_counter()
        pixels = generate_batch(pipe, batch, settings)
        writer.submit(batch, pixels, (time.perf_counter() - started) / len(batch))


def generate_batch(pipe, batch: list[ImageJob], settings: Settings):
    """One pipeline call with each image's own seeded generator; uint8 pixels (N x H x W x 3)."""
    import torch

    kwargs = {"num_inference_steps": settings.steps, "guidance_scale": settings.guidance,
              "width": settings.width, "height": settings.height, "output_type": "pt"}
    if settings.negative_prompt:
        kwargs["negative_prompt"] = [settings.negative_prompt] * len(batch)
    with torch.inference_mode():
        images = pipe(prompt=[job.text for job in batch],
                      generator=[torch.Generator("cpu").manual_seed(job.seed) for job in batch], **kwargs).images
        return images.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def row_params(pipe, settings: Settings, images_per_prompt: int, batch_size: int, compiled: bool,
               channels_last: bool) -> dict:
    """Everything beyond the generations columns needed to regenerate (and explain) an image."""
    from importlib import metadata

    return {
        "pipeline": type(pipe).__name__, "base_seed": settings.seed, "seed_rule": SEED_RULE,
        "generator_device": "cpu", "images_per_prompt": images_per_prompt, "batch_size": batch_size,
        "attention": attention_kind(pipe), "compile": compiled, "channels_last": channels_last,
        "output": "png", "diffusers": metadata.version("diffusers"), "torch": metadata.version("torch"),
    }


def device_label(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} {torch.cuda.get_device_name(torch.device(device))}"
    return device
