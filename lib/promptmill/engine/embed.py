"""Sentence embeddings on Ray: an encoder with sentence-transformers' ``encode`` whose work runs in an actor pool.

03_dedup's semantic pass stores each vector under (model, text hash) as chunks
finish, so the cache is its natural key and resuming is skipping what is cached;
only the model calls move to the cluster (one model per actor, on a GPU when there is one).
"""

from __future__ import annotations

import numpy as np

from promptmill.engine.ray import connect, pool_size


class EmbedActor:
    def __init__(self, model: str | None, batch_size: int):
        from promptmill.dedup.semantic import load_model

        self.encoder, self.batch_size = load_model(model), batch_size

    def __call__(self, batch: dict) -> dict:
        vectors = self.encoder.encode(list(batch["text"]), batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        return {"key": batch["key"], "vector": vectors}


class RayEncoder:
    """Drop-in for a loaded SentenceTransformer in `semantic.embed`: same encode(), run on Ray."""

    def __init__(self, model: str | None, address: str | None = None, workers: int | None = None,
                 num_gpus_per_worker: float | None = None):
        connect(address)
        self.model, self.pool = model, pool_size(workers, num_gpus_per_worker)

    def encode(self, texts: list[str], batch_size: int = 64, **_options) -> np.ndarray:
        """Normalised float32 vectors of TEXTS, in order."""
        import ray

        actors, gpus = self.pool
        rows = [{"key": i, "text": text} for i, text in enumerate(texts)]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size))).map_batches(
            EmbedActor, fn_constructor_kwargs={"model": self.model, "batch_size": batch_size},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpus or None)
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            vectors = np.asarray(batch["vector"], dtype=np.float32)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[np.asarray(batch["key"])] = vectors
        return out
