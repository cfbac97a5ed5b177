"""Train/validation/test assignment by dedup cluster, stable as data grows, and a leakage check.

A cluster is an item with every item that dedup dropped as its duplicate (followed
through chains of representatives). The split of a cluster is a function of its
kept member and the seed: a blake2b hash mapped to [0, 1) and cut at the
validation and test fractions. New data never moves an existing item, because the
kept member of an existing cluster does not change when duplicates join it. Items
imported with a split (an earlier release's validation/ folder) keep it, and so
does the rest of their cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np

from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.save import save_decisions
from promptmill.core.state import kept_prompts_sql
from promptmill.core.store import Store
from promptmill.dedup import clusters

WRITE_BATCH = 20_000


SPLITS = ("train", "validation", "test")  # a split's code is its index here


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from the seed and a cluster key."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def unit_hashes(seed: int, item_type: str, keys: np.ndarray) -> np.ndarray:
    """`unit_hash` of each cluster key, without a Python list of millions of them."""
    return np.fromiter((unit_hash(seed, f"{item_type}:{k}") for k in memoryview(keys)), dtype=np.float64,
                       count=len(keys))


def split_codes(u: np.ndarray, validation: float, test: float) -> np.ndarray:
    """The hash cut: validation below VALIDATION, then test, then train."""
    return np.where(u < validation, 1, np.where(u < validation + test, 2, 0)).astype(np.int8)


def scope_name(seed: int, validation: float, test: float, stratify: str | None) -> str:
    return f"seed={seed};validation={validation:g};test={test:g}" + (f";stratify={stratify}" if stratify else "")


def dedup_scopes(store: Store, item_type: str) -> list[str]:
    return [r[0] for r in store.execute(
        "SELECT DISTINCT scope FROM decisions WHERE item_type = ? AND stage = 'dedup'", (item_type,))]


def int_columns(cursor, width: int) -> np.ndarray:
    """The integer rows of CURSOR as an (n, WIDTH) array, read without a list of tuples."""
    return np.fromiter(chain.from_iterable(cursor), dtype=np.int64).reshape(-1, width)


def cluster_keepers(store: Store, item_type: str, ids: np.ndarray) -> np.ndarray:
    """For each id, the kept member of its dedup cluster (the lowest id not dropped by dedup, else the lowest)."""
    edges = int_columns(store.execute(
        "SELECT item_id, representative_id FROM decisions WHERE item_type = ? AND stage = 'dedup' "
        "AND verdict = 'drop' AND representative_id IS NOT NULL", (item_type,)), 2)
    universe = np.unique(np.concatenate([ids, edges.ravel()]))
    left, right = np.searchsorted(universe, edges[:, 0]), np.searchsorted(universe, edges[:, 1])
    del edges
    roots = clusters.union_find(len(universe), left, right)
    dropped = np.zeros(len(universe), dtype=bool)
    dropped[left] = True
    # Rank: kept members first, then by id (universe is sorted, so index order is id order).
    rank = np.arange(len(universe)) + np.where(dropped, len(universe), 0)
    keeper = clusters.representatives(roots, rank)
    return universe[keeper[np.searchsorted(universe, ids)]]


def lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray, missing: int = -1) -> np.ndarray:
    """The value of each query in the sorted KEYS, MISSING where it is not there."""
    if not len(keys):
        return np.full(len(queries), missing, dtype=values.dtype)
    at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[at] == queries, values[at], missing).astype(values.dtype)


@dataclass
class Known:
    """Splits already fixed for some items (ascending ids, split codes)."""

    ids: np.ndarray
    codes: np.ndarray

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The code of each of IDS, -1 where none is known."""
        return lookup(self.ids, self.codes, ids)


def known_splits(rows) -> Known:
    """Known splits from (item id, split name) rows; the last row of an id wins. Read into arrays, not a
    dict: a re-run after new data reads every split already made."""
    code_of = {name: code for code, name in enumerate(SPLITS)}
    pairs = np.fromiter(((item_id, code_of[name]) for item_id, name in rows), dtype=np.dtype((np.int64, 2)))
    order = np.argsort(pairs[:, 0], kind="stable")
    ids, codes = pairs[order, 0], pairs[order, 1].astype(np.int8)
    last = np.ones(len(ids), dtype=bool)
    last[:-1] = ids[1:] != ids[:-1]
    return Known(ids[last], codes[last])


def plan(keepers: np.ndarray, strata: np.ndarray, item_type: str, seed: int, validation: float, test: float,
         assigned: np.ndarray, stratify: bool) -> np.ndarray:
    """The split code of each item. `assigned` gives each item's cluster split if already fixed, else -1.
    Plain: the hash cut. Stratified: each stratum's new clusters fill its quota of validation and
    test by lowest hash, around the clusters already assigned."""
    unique_keepers, member_of = np.unique(keepers, return_inverse=True)
    u = unit_hashes(seed, item_type, unique_keepers)
    fixed = np.full(len(unique_keepers), -1, dtype=np.int8)
    fixed[member_of] = assigned
    codes = split_codes(u, validation, test)
    if stratify:
        stratum_of = np.zeros(len(unique_keepers), dtype=np.int64)
        stratum_of[member_of] = strata
        stratum_of = np.unique(stratum_of, return_inverse=True)[1].ravel()
        sizes = np.bincount(stratum_of)
        need = [np.maximum(0, np.round(share * sizes) - np.bincount(stratum_of[fixed == code], minlength=len(sizes)))
                for share, code in ((validation, 1), (test, 2))]
        fresh = np.flatnonzero(fixed < 0)
        fresh = fresh[np.lexsort((unique_keepers[fresh], u[fresh], stratum_of[fresh]))]
        stratum = stratum_of[fresh]
        rank = np.arange(len(fresh)) - np.searchsorted(stratum, stratum)  # position among its stratum's fresh
        codes[fresh] = np.where(rank < need[0][stratum], 1, np.where(rank < (need[0] + need[1])[stratum], 2, 0))
    return np.where(fixed >= 0, fixed, codes)[member_of]


def write_assignments(store: Store, run: Run, item_type: str, scope: str, ids: np.ndarray, codes: np.ndarray,
                      reasons: Callable[[np.ndarray], list[str]]) -> int:
    """Insert 'assign' decisions in id order, which appends along the decisions indexes instead of
    scattering over them. A killed run resumes to the same plan whichever of them it wrote: kept
    clusters fill each stratum's quota by lowest hash, so the planned ones come first among the rest.
    `reasons` gives the reasons of a batch of positions."""
    order = np.argsort(ids, kind="stable")
    written = 0
    with bar(total=len(order), desc=f"{item_type} splits", unit=item_type) as progress:
        for start in range(0, len(order), WRITE_BATCH):
            chunk = order[start:start + WRITE_BATCH]
            with store.transaction() as conn:
                written += save_decisions(conn, run, (
                    {"item_type": item_type, "item_id": item_id, "stage": "split", "verdict": "assign",
                     "scope": scope, "rule": "cluster-hash", "value": SPLITS[code], "reason": reason}
                    for item_id, code, reason in zip(ids[chunk].tolist(), codes[chunk].tolist(), reasons(chunk))))
            progress.update(len(chunk))
    return written


SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test", "testing": "test"}


def imported_splits(store: Store, item_type: str) -> Known:
    """The split each item's source put it in (an imported release's train/ or validation/ folder, a
    dataset's split), so merging an earlier release keeps its held-out items held out."""
    if item_type == "prompt":
        rows = store.execute("SELECT id, json_extract(meta, '$.split') FROM prompts "
                             "WHERE json_valid(meta) AND json_extract(meta, '$.split') IS NOT NULL ORDER BY id")
    else:
        rows = store.execute("SELECT image_id, json_extract(meta, '$.split') FROM image_origins "
                             "WHERE json_valid(meta) AND json_extract(meta, '$.split') IS NOT NULL ORDER BY id DESC")
    named = ((item_id, SPLIT_NAMES.get(str(split).lower())) for item_id, split in rows)
    return known_splits((item_id, name) for item_id, name in named if name)


def watermark(store: Store) -> tuple[int, int, int]:
    """(max prompt id, max image id, max decision id): a split depends on nothing else."""
    return tuple(store.scalar(f"SELECT COALESCE(max(id), 0) FROM {table}")
                 for table in ("prompts", "images", "decisions"))


def up_to_date(store: Store, scope: str) -> bool:
    """True when an assignment of `scope` finished with no prompt, image or decision added since."""
    prompts, images, decisions = watermark(store)
    return store.scalar("SELECT count(*) FROM split_passes WHERE scope = ? AND prompts_upto = ? AND images_upto = ? "
                        "AND decisions_upto = ?", (scope, prompts, images, decisions)) > 0


def record_pass(store: Store, run: Run, scope: str, seen: tuple[int, int, int]) -> bool:
    """Record what an assignment saw when it started (`seen`, a watermark) if nothing but its own
    decisions arrived while it ran; return whether it was recorded."""
    prompts, images, decisions = watermark(store)
    foreign = store.scalar("SELECT count(*) FROM decisions WHERE id > ? AND run_id != ?", (seen[2], run.id))
    if (prompts, images) != seen[:2] or foreign:
        return False
    with store.transaction() as conn:
        conn.execute("INSERT INTO split_passes (scope, prompts_upto, images_upto, decisions_upto, run_id) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (scope, prompts, images, decisions, run.id))
    return True


def existing_splits(store: Store, item_type: str, scope: str) -> Known:
    return known_splits(store.execute("SELECT item_id, value FROM decisions WHERE item_type = ? AND stage = 'split' "
                                      "AND scope = ? ORDER BY id", (item_type, scope)))


def kept_prompt_sources(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """(ids, source ids) of the prompts not dropped by cleaning or review; dedup drops don't count,
    as those members follow their cluster."""
    import json

    sql = kept_prompts_sql("1", "p.id, p.source_id", ":ignored")
    rows = int_columns(store.execute(sql, {"ignored": json.dumps(dedup_scopes(store, "prompt"))}), 2)
    return rows[:, 0].copy(), rows[:, 1].copy()


def assign_prompts(store: Store, run: Run, scope: str, seed: int, validation: float, test: float,
                   stratify: str | None) -> Known:
    """Assign every prompt not dropped by cleaning (dedup-dropped members follow their cluster)."""
    ids, source_ids = kept_prompt_sources(store)
    keepers = cluster_keepers(store, "prompt", ids)
    strata = lookup(ids, source_ids, keepers)  # a cluster's stratum is its kept member's source
    assigned = existing_splits(store, "prompt", scope).lookup(ids)
    imported = imported_splits(store, "prompt").lookup(ids)
    # An item's fixed split holds its whole cluster: one already assigned here first, else an imported one.
    assigned = cluster_choice(keepers, assigned, imported)
    codes = plan(keepers, strata, "prompt", seed, validation, test, assigned, bool(stratify))
    run.add("prompts assigned", write_assignments(
        store, run, "prompt", scope, ids, codes,
        lambda chunk: [f"cluster of prompt {k}" for k in keepers[chunk].tolist()]))
    return Known(ids, codes)


def cluster_choice(keepers: np.ndarray, *choices: np.ndarray) -> np.ndarray:
    """Per item, the split fixed for its cluster: the first of CHOICES (codes per item, -1 for none)
    that any member has, the lowest-id member's where members differ."""
    unique_keepers, member_of = np.unique(keepers, return_inverse=True)
    chosen = np.full(len(unique_keepers), -1, dtype=np.int8)
    for codes in choices:
        has = np.flatnonzero((codes >= 0) & (chosen[member_of] < 0))[::-1]  # lowest id written last: it wins
        chosen[member_of[has]] = codes[has]
    return chosen[member_of]


def assign_images(store: Store, run: Run, scope: str, seed: int, validation: float, test: float,
                  prompt_splits: Known) -> None:
    """A generated image follows its prompt, a collected one the prompt found with it, else its own cluster."""
    from promptmill.dedup.passes import load_images

    items = load_images(store, dedup_scopes(store, "image"))
    if not len(items.ids):
        return
    prompt_of = dict(store.execute("SELECT image_id, min(prompt_id) FROM generations GROUP BY image_id"))
    for image_id, prompt_id in store.execute(
            "SELECT image_id, min(prompt_id) FROM image_origins WHERE prompt_id IS NOT NULL GROUP BY image_id"):
        prompt_of.setdefault(image_id, prompt_id)
    keepers = cluster_keepers(store, "image", items.ids)
    existing = existing_splits(store, "image", scope)
    already, keeper_already = existing.lookup(items.ids), existing.lookup(keepers)
    imported = imported_splits(store, "image")
    own_import, keeper_import = imported.lookup(items.ids), imported.lookup(keepers)
    prompts = np.array([prompt_of.get(i, -1) for i in items.ids.tolist()], dtype=np.int64)
    followed = prompt_splits.lookup(prompts)
    u = unit_hashes(seed, "image", keepers)
    codes, reasons = split_codes(u, validation, test), []
    for i, (keeper, prompt_id) in enumerate(zip(keepers.tolist(), prompts.tolist())):
        if already[i] >= 0:
            codes[i] = already[i]
            reasons.append("already assigned")
        elif own_import[i] >= 0 or keeper_import[i] >= 0:
            codes[i] = own_import[i] if own_import[i] >= 0 else keeper_import[i]
            reasons.append("split of the imported source")
        elif followed[i] >= 0:
            codes[i] = followed[i]
            reasons.append(f"follows prompt {prompt_id}")
        else:
            codes[i] = keeper_already[i] if keeper_already[i] >= 0 else codes[i]
            reasons.append(f"cluster of image {keeper}")
    run.add("images assigned", write_assignments(store, run, "image", scope, items.ids, codes,
                                                 lambda chunk: [reasons[i] for i in chunk.tolist()]))


def counts(store: Store, scope: str | None) -> list[dict]:
    """Items per split and source for the latest split of each item (of `scope` when given)."""
    where = "AND scope = :scope" if scope else ""
    return store.query(f"""
        WITH latest AS (SELECT item_type, item_id, value FROM decisions WHERE id IN (
            SELECT max(id) FROM decisions WHERE stage = 'split' {where} GROUP BY item_type, item_id))
        SELECT 'prompt' AS items, l.value AS split, s.uri AS source, count(*) AS n
        FROM latest l JOIN prompts p ON p.id = l.item_id JOIN sources s ON s.id = p.source_id
        WHERE l.item_type = 'prompt' GROUP BY l.value, s.uri
        UNION ALL
        SELECT 'image', l.value, '', count(*) FROM latest l WHERE l.item_type = 'image' GROUP BY l.value
        ORDER BY 1, 2, 3""", {"scope": scope})


def leakage(store: Store, scope: str | None, methods: list[str], features: str = "wordset", k: int = 3,
            threshold: float = 0.75, model: str | None = None) -> list[dict]:
    """Near-duplicate pairs of kept prompts that sit in different splits."""
    from promptmill.dedup import passes as dedup

    items = dedup.load_prompts(store, [])
    where = "AND scope = ?" if scope else ""
    split_of = dict(store.execute(
        f"SELECT item_id, value FROM decisions WHERE id IN (SELECT max(id) FROM decisions "
        f"WHERE item_type = 'prompt' AND stage = 'split' {where} GROUP BY item_id)", (scope,) if scope else ()))
    items = items.subset(np.isin(items.ids, np.fromiter(split_of, dtype=np.int64, count=len(split_of))))
    splits = np.array([split_of[int(i)] for i in items.ids])
    found = []
    if len(items.ids) < 2:
        return found
    for method in methods:
        if method == "exact":
            links = dedup.exact_links(items)
        elif method == "simhash":
            links = dedup.simhash_links(items, features, k)
        elif method == "cascade":
            links = dedup.cascade_links(items, None)  # lexical stages: no model needed for a check
        else:
            from promptmill.dedup import semantic

            vectors, _ = semantic.embed(store, list(items.texts), model)
            left, right, _ = semantic.similar_pairs(vectors, threshold)
            links = dedup.Links(left, right, lambda a, b, v=vectors: semantic.cosine(v, a, b), "")
        cross = splits[links.left] != splits[links.right]
        left, right = links.left[cross], links.right[cross]
        if links.describe is not None:  # its own score per link (the cascade's)
            scores = [score for _, _, score, _ in links.describe(np.flatnonzero(cross))]
        else:
            scores = links.score(left, right) if len(left) else []
        for a, b, s, text_a, text_b in zip(left.tolist(), right.tolist(), list(scores), items.texts.take(left),
                                           items.texts.take(right)):
            found.append({"method": method, "a": int(items.ids[a]), "b": int(items.ids[b]),
                          "split_a": splits[a], "split_b": splits[b], "score": float(s),
                          "text_a": text_a, "text_b": text_b})
    return found
