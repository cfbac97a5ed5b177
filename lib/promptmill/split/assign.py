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
from dataclasses import dataclass

import numpy as np

from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.save import save_decisions
from promptmill.core.store import Store
from promptmill.dedup import clusters

WRITE_BATCH = 20_000


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from the seed and a cluster key."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def split_for(u: float, validation: float, test: float) -> str:
    if u < validation:
        return "validation"
    if u < validation + test:
        return "test"
    return "train"


def scope_name(seed: int, validation: float, test: float, stratify: str | None) -> str:
    return f"seed={seed};validation={validation:g};test={test:g}" + (f";stratify={stratify}" if stratify else "")


def dedup_scopes(store: Store, item_type: str) -> list[str]:
    return [r[0] for r in store.execute(
        "SELECT DISTINCT scope FROM decisions WHERE item_type = ? AND stage = 'dedup'", (item_type,))]


def cluster_keepers(store: Store, item_type: str, ids: np.ndarray) -> np.ndarray:
    """For each id, the kept member of its dedup cluster (the lowest id not dropped by dedup, else the lowest)."""
    edges = np.array(store.execute(
        "SELECT item_id, representative_id FROM decisions WHERE item_type = ? AND stage = 'dedup' "
        "AND verdict = 'drop' AND representative_id IS NOT NULL", (item_type,)).fetchall(),
        dtype=np.int64).reshape(-1, 2)
    universe = np.unique(np.concatenate([ids, edges.ravel()]))
    left, right = np.searchsorted(universe, edges[:, 0]), np.searchsorted(universe, edges[:, 1])
    roots = clusters.union_find(len(universe), left, right)
    dropped = np.zeros(len(universe), dtype=bool)
    dropped[left] = True
    # Rank: kept members first, then by id (universe is sorted, so index order is id order).
    rank = np.arange(len(universe)) + np.where(dropped, len(universe), 0)
    keeper = clusters.representatives(roots, rank)
    return universe[keeper[np.searchsorted(universe, ids)]]


@dataclass
class Plan:
    item_ids: np.ndarray
    keepers: np.ndarray
    u: np.ndarray
    splits: list[str]


def plan(keepers: np.ndarray, strata: np.ndarray, item_type: str, seed: int, validation: float, test: float,
         existing: dict[int, str], stratify: bool) -> tuple[np.ndarray, list[str]]:
    """(u, split) per item. Plain: the hash cut. Stratified: each stratum's new clusters fill its
    quota of validation and test by lowest hash, around the clusters already assigned."""
    unique_keepers = np.unique(keepers)
    u_of = {int(k): unit_hash(seed, f"{item_type}:{k}") for k in unique_keepers.tolist()}
    u = np.array([u_of[int(k)] for k in keepers.tolist()])
    split_of_keeper = {k: split_for(v, validation, test) for k, v in u_of.items()}
    if stratify:
        stratum_of = dict(zip(keepers.tolist(), strata.tolist()))
        assigned = {k: existing[k] for k in u_of if k in existing}
        by_stratum: dict[int, list[int]] = {}
        for k in u_of:
            by_stratum.setdefault(stratum_of[k], []).append(k)
        for members in by_stratum.values():
            quota_validation = round(validation * len(members))
            quota_test = round(test * len(members))
            have_validation = sum(assigned.get(k) == "validation" for k in members)
            have_test = sum(assigned.get(k) == "test" for k in members)
            fresh = sorted((k for k in members if k not in assigned), key=u_of.__getitem__)
            need_validation = max(0, quota_validation - have_validation)
            need_test = max(0, quota_test - have_test)
            for i, k in enumerate(fresh):
                split_of_keeper[k] = ("validation" if i < need_validation else
                                      "test" if i < need_validation + need_test else "train")
        split_of_keeper.update(assigned)
    else:
        split_of_keeper.update({k: existing[k] for k in u_of if k in existing})
    return u, [split_of_keeper[int(k)] for k in keepers.tolist()]


def write_assignments(store: Store, run: Run, item_type: str, scope: str, ids: np.ndarray, u: np.ndarray,
                      splits: list[str], reasons: list[str]) -> int:
    """Insert 'assign' decisions in hash order (so a killed stratified run resumes to the same plan)."""
    order = np.lexsort((ids, u)).tolist()
    written = 0
    with bar(total=len(order), desc=f"{item_type} splits", unit=item_type) as progress:
        for start in range(0, len(order), WRITE_BATCH):
            chunk = order[start:start + WRITE_BATCH]
            with store.transaction() as conn:
                written += save_decisions(conn, run, (
                    {"item_type": item_type, "item_id": int(ids[i]), "stage": "split", "verdict": "assign",
                     "scope": scope, "rule": "cluster-hash", "value": splits[i], "reason": reasons[i]}
                    for i in chunk))
            progress.update(len(chunk))
    return written


SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test", "testing": "test"}


def imported_splits(store: Store, item_type: str) -> dict[int, str]:
    """item id -> the split its source put it in (an imported release's train/ or validation/ folder, a
    dataset's split), so merging an earlier release keeps its held-out items held out."""
    if item_type == "prompt":
        rows = store.execute("SELECT id, json_extract(meta, '$.split') FROM prompts "
                             "WHERE json_valid(meta) AND json_extract(meta, '$.split') IS NOT NULL ORDER BY id")
    else:
        rows = store.execute("SELECT image_id, json_extract(meta, '$.split') FROM image_origins "
                             "WHERE json_valid(meta) AND json_extract(meta, '$.split') IS NOT NULL ORDER BY id DESC")
    return {item_id: SPLIT_NAMES[str(split).lower()] for item_id, split in rows if str(split).lower() in SPLIT_NAMES}


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


def existing_splits(store: Store, item_type: str, scope: str) -> dict[int, str]:
    return dict(store.execute("SELECT item_id, value FROM decisions WHERE item_type = ? AND stage = 'split' "
                              "AND scope = ?", (item_type, scope)))


def assign_prompts(store: Store, run: Run, scope: str, seed: int, validation: float, test: float,
                   stratify: str | None) -> dict[int, str]:
    """Assign every prompt not dropped by cleaning (dedup-dropped members follow their cluster)."""
    from promptmill.dedup.passes import load_prompts

    items = load_prompts(store, dedup_scopes(store, "prompt"))
    keepers = cluster_keepers(store, "prompt", items.ids)
    source_of = dict(zip(items.ids.tolist(), items.source_ids.tolist()))
    strata = np.array([source_of.get(int(k), -1) for k in keepers], dtype=np.int64)
    existing = existing_splits(store, "prompt", scope)
    existing_keepers = {int(k): existing[int(i)] for i, k in zip(items.ids, keepers) if int(i) in existing}
    imported = imported_splits(store, "prompt")
    for i, k in zip(items.ids.tolist(), keepers.tolist()):
        if i in imported:
            existing_keepers.setdefault(k, imported[i])
    u, splits = plan(keepers, strata, "prompt", seed, validation, test, existing_keepers, bool(stratify))
    reasons = [f"cluster of prompt {int(k)}" for k in keepers]
    run.add("prompts assigned", write_assignments(store, run, "prompt", scope, items.ids, u, splits, reasons))
    return {int(i): s for i, s in zip(items.ids, splits)}


def assign_images(store: Store, run: Run, scope: str, seed: int, validation: float, test: float,
                  prompt_splits: dict[int, str]) -> None:
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
    imported = imported_splits(store, "image")
    u = np.array([unit_hash(seed, f"image:{int(k)}") for k in keepers])
    splits, reasons = [], []
    for image_id, keeper, value in zip(items.ids.tolist(), keepers.tolist(), u.tolist()):
        prompt_id = prompt_of.get(image_id)
        if image_id in existing:
            splits.append(existing[image_id])
            reasons.append("already assigned")
        elif image_id in imported or keeper in imported:
            splits.append(imported.get(image_id) or imported[keeper])
            reasons.append("split of the imported source")
        elif prompt_id is not None and prompt_id in prompt_splits:
            splits.append(prompt_splits[prompt_id])
            reasons.append(f"follows prompt {prompt_id}")
        else:
            splits.append(existing.get(keeper) or split_for(value, validation, test))
            reasons.append(f"cluster of image {keeper}")
    run.add("images assigned", write_assignments(store, run, "image", scope, items.ids, u, splits, reasons))


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

            vectors, _ = semantic.embed(store, items.texts, model)
            left, right, _ = semantic.similar_pairs(vectors, threshold)
            links = dedup.Links(left, right, lambda a, b, v=vectors: semantic.cosine(v, a, b), "")
        cross = splits[links.left] != splits[links.right]
        left, right = links.left[cross], links.right[cross]
        scores = links.score(left, right) if len(left) else []
        for a, b, s in zip(left.tolist(), right.tolist(), list(scores)):
            found.append({"method": method, "a": int(items.ids[a]), "b": int(items.ids[b]),
                          "split_a": splits[a], "split_b": splits[b], "score": float(s),
                          "text_a": items.texts[a], "text_b": items.texts[b]})
    return found
