"""The Captioner interface, the registry of captioners, and the one loop that runs any of them.

A captioner loads its model once and turns a batch of decoded RGB images into
captions (with tags) or scores. Everything else is the loop's: which images still
need it, decoding one batch ahead on threads, unreadable images as item errors,
and writing rows under their natural keys in one transaction per batch. So a new
captioner is one module: a :class:`Captioner` subclass with its options, listed in
:data:`BUILTIN` or registered by another package through the ``promptmill.captioners``
entry point group, which makes it ``promptmill caption NAME``.

The model side (:func:`caption_batch`) and the database side (:func:`save_results`)
meet in plain result rows, so an engine can run the first on other machines and
the second in the driver.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import ClassVar

from promptmill.core import save
from promptmill.core.errors import BadInput, PromptmillError
from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.store import BlobStore, Store

ENTRY_POINT_GROUP = "promptmill.captioners"
# command name -> "module:class"; third-party names never replace these.
BUILTIN = {
    "blip": "promptmill.caption.blip:BlipCaptioner",
    "wd14": "promptmill.caption.wd14:WD14Captioner",
    "clipscore": "promptmill.caption.clipscore:ClipScorer",
}


@dataclass(frozen=True)
class Item:
    """An image to caption; scorers that compare with a prompt also get the prompt."""

    image_id: int
    sha256: str
    ext: str
    prompt_id: int | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class Caption:
    """A caption and its tags as (tag, score, category, position); ratings have no position."""

    text: str
    tags: tuple[tuple[str, float | None, str | None, int | None], ...] = ()


@dataclass(frozen=True)
class Score:
    value: float


class Captioner(ABC):
    """Subclass, set the class attributes, implement :meth:`load` and :meth:`caption`.

    The class docstring is the command's help. Options are click options whose values
    arrive as keyword arguments; :meth:`settings` (hashed) says which of them decide
    the output, so changing one makes new rows beside the old ones."""

    name: ClassVar[str]                # the command: promptmill caption NAME
    kind: ClassVar[str]                # captions.kind (or scores.kind) of the rows it writes
    default_model: ClassVar[str]
    default_batch_size: ClassVar[int] = 16
    cli_options: ClassVar[tuple[Callable, ...]] = ()   # click.option(...) decorators
    unhashed: ClassVar[tuple[str, ...]] = ()           # options that don't change the output

    def __init__(self, model: str, revision: str | None = None, **options):
        self.model, self.revision, self.options = model, revision, options

    def settings(self) -> dict:
        """What decides the output; its hash is part of every row's natural key."""
        chosen = {key: value for key, value in self.options.items() if key not in self.unhashed}
        return {"model": self.model, "revision": self.revision, **chosen}

    @property
    def params_hash(self) -> str:
        return save.params_hash(self.settings())

    def run_params(self) -> dict:
        """Recorded with the run beside the settings (device, options outside the hash)."""
        return {key: self.options[key] for key in self.unhashed}

    def row_params(self) -> dict:
        """The JSON stored with each caption; call after :meth:`load`."""
        return self.settings()

    @abstractmethod
    def load(self) -> None:
        """Load the model (once per process)."""

    def prepare(self, image):
        """Per-image preprocessing, run on the decode threads (default: the RGB image itself)."""
        return image

    @abstractmethod
    def caption(self, items: list[Item], inputs: list) -> list[Caption | Score]:
        """One result per item, in order, from the prepared inputs."""

    def pending(self, store: Store, limit: int | None = None) -> list[Item]:
        """Kept images without a caption of this kind and these settings, in id order."""
        from promptmill.core.state import kept_images

        done = {row[0] for row in store.execute("SELECT image_id FROM captions WHERE kind = ? AND params_hash = ?",
                                                (self.kind, self.params_hash))}
        items = [Item(*row) for row in kept_images(store) if row[0] not in done]
        return items[:limit] if limit else items

    def finish(self, store: Store, run: Run) -> None:  # noqa: B027 - an optional hook, not abstract
        """After the loop: decisions that need every result (default: nothing)."""


def torch_options(f):
    """--device and --dtype, shared by every captioner on torch."""
    import click

    from promptmill.engine.devices import DTYPES

    f = click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
                     help="auto: fp16 on CUDA, fp32 on CPU.")(f)
    return click.option("--device", default="auto", show_default=True, help="auto: cuda when there, else cpu.")(f)


class TorchCaptioner(Captioner):
    """A captioner on torch: --device and --dtype, resolved once; the dtype name is hashed."""

    cli_options = (torch_options,)
    unhashed = ("device",)

    def __init__(self, model: str, revision: str | None = None, *, device: str = "auto", dtype: str = "auto",
                 **options):
        from promptmill.engine.devices import pick_device, torch_dtype

        device = pick_device(device)
        dtype_name, self.torch_dtype = torch_dtype(dtype, device)
        super().__init__(model, revision, device=device, dtype=dtype_name, **options)
        self.device = device

    def load_pretrained(self, label: str, model_class, processor_class):
        """(model on its device in eval mode, processor) through transformers' own loaders."""
        try:
            processor = processor_class.from_pretrained(self.model, revision=self.revision)
            net = model_class.from_pretrained(self.model, revision=self.revision, dtype=self.torch_dtype)
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot load {label} model {self.model!r}: {str(exc).splitlines()[0]}") from exc
        return net.to(self.device).eval(), processor


# --- the registry ---


def captioner_names() -> list[str]:
    """Built-ins first, then the names third-party packages registered."""
    extra = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)} - set(BUILTIN))
    return [*BUILTIN, *extra]


def load_captioner(name: str) -> type[Captioner]:
    """The Captioner class registered as NAME (a built-in or an entry point)."""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        return getattr(import_module(module), attr)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            found = entry_point.load()
        except Exception as exc:  # a broken plugin is reported, not a traceback
            raise PromptmillError(f"captioner {name!r} ({entry_point.value}) failed to load: {exc}") from exc
        if not (isinstance(found, type) and issubclass(found, Captioner)):
            raise PromptmillError(f"captioner {name!r} ({entry_point.value}) is not a Captioner subclass")
        return found
    raise KeyError(name)


# --- the loop ---


def open_rgb(blobs: BlobStore, sha256: str, ext: str):
    """The stored image as people see it, in 8-bit RGB (`promptmill.core.images.to_rgb8`)."""
    from promptmill.core.images import open_image, to_rgb8

    with open_image(blobs.path_for(sha256, ext)) as image:
        return to_rgb8(image)


def decoded_batches(blobs: BlobStore, items: list[Item], batch_size: int, prepare: Callable | None = None,
                    workers: int = 4) -> Iterator[tuple[list[Item], list]]:
    """Yield (items, inputs) per batch; an image that fails to decode is an Exception in its place.

    The next batch is decoded while the caller runs the model on this one."""

    def load(item: Item):
        try:
            image = open_rgb(blobs, item.sha256, item.ext)
            return prepare(image) if prepare else image
        except Exception as exc:  # noqa: BLE001 - recorded per image by the caller
            return exc

    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        ahead = [pool.submit(load, item) for item in batches[0]] if batches else []
        for index, batch in enumerate(batches):
            current = ahead
            ahead = [pool.submit(load, item) for item in batches[index + 1]] if index + 1 < len(batches) else []
            yield batch, [future.result() for future in current]


def caption_batch(captioner: Captioner, items: list[Item], inputs: list) -> list[dict]:
    """The model side: one plain result row per item (a caption, a score or the decode error)."""
    good = [(item, value) for item, value in zip(items, inputs) if not isinstance(value, Exception)]
    outputs = iter(captioner.caption([item for item, _ in good], [value for _, value in good]) if good else [])
    params = json.dumps(captioner.row_params(), sort_keys=True)
    rows = []
    for item, value in zip(items, inputs):
        row = {"image_id": item.image_id, "prompt_id": item.prompt_id, "text": None, "tags": None, "score": None,
               "params": params, "error": None}
        if isinstance(value, Exception):
            row["error"] = f"{type(value).__name__}: {value}"
        else:
            output = next(outputs)
            if isinstance(output, Score):
                row["score"] = float(output.value)
            else:
                row["text"], row["tags"] = output.text, [list(tag) for tag in output.tags]
        rows.append(row)
    return rows


def save_results(conn, run: Run, captioner: Captioner, rows: list[dict]) -> None:
    """The database side: write result rows under their natural keys (inside the caller's transaction)."""
    phash = captioner.params_hash
    for row in rows:
        image_id = row["image_id"]
        if row["error"] is not None:
            save.save_item_error(conn, run, f"{captioner.name}: unreadable image", position=image_id,
                                 locator=f"image:{image_id}", detail=row["error"])
            run.add("images unreadable")
        elif row["score"] is not None:
            key = f"{captioner.kind}:{image_id}:{row['prompt_id']}:{phash}"
            added = save.save_score(conn, run, image_id, captioner.kind, round(row["score"], 6), natural_key=key,
                                    prompt_id=row["prompt_id"], model=captioner.model, params_hash=phash)
            run.add("scores added" if added else "scores already there")
        else:
            caption_id = save.save_caption(conn, run, image_id, captioner.kind, row["text"],
                                           natural_key=save.caption_key(captioner.kind, image_id, phash),
                                           model=captioner.model, params=row["params"], params_hash=phash)
            if caption_id is None:
                run.add("captions already there")
                continue
            run.add("captions added")
            tags = [tuple(tag) for tag in row["tags"] or ()]
            if tags:
                run.add("tags added", save.save_tags(conn, caption_id, tags))


def caption_images(store: Store, run: Run, captioner: Captioner, batch_size: int, limit: int | None = None,
                   decode_workers: int = 4) -> None:
    """Caption what is still missing, in process: load once, decode ahead, one transaction per batch."""
    items = captioner.pending(store, limit)
    if items:
        captioner.load()
        with bar(len(items), desc=captioner.name, unit="img") as progress:
            for batch, inputs in decoded_batches(store.blobs, items, batch_size, captioner.prepare, decode_workers):
                rows = caption_batch(captioner, batch, inputs)
                with store.transaction() as conn:
                    save_results(conn, run, captioner, rows)
                progress.update(len(batch))
    captioner.finish(store, run)
