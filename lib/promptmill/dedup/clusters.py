"""Clusters from linked pairs, and which member of each cluster is kept.

Exact duplicates are an equivalence, so they cluster by union-find: it runs
vectorised, every round hooking the larger of two differing roots onto the
smaller (``np.minimum.at``) and then compressing paths by pointer jumping.

Near-duplicates are not transitive (A ~ B and B ~ C says nothing of A and C), so
they cluster as stars (`star`): items are visited in keep order; one that no
earlier kept item has claimed is kept and claims every unclaimed item linked to
it. Every dropped item then names a kept item it was itself linked to, and
nothing leaves through a chain. Which member is *kept* first is a separate,
documented choice (`KEEP_RULES`).
"""

from __future__ import annotations

import numpy as np

KEEP_RULES = ("oldest", "longest", "source-priority")


def _compress(parent: np.ndarray) -> np.ndarray:
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def union_find(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Root (lowest member index) of each of n items after joining every (left, right) pair."""
    parent = np.arange(n, dtype=np.int64)
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    while len(left):
        root_left, root_right = parent[left], parent[right]
        differ = root_left != root_right
        if not differ.any():
            break
        left, right = left[differ], right[differ]
        high = np.maximum(root_left[differ], root_right[differ])
        low = np.minimum(root_left[differ], root_right[differ])
        np.minimum.at(parent, high, low)
        parent = _compress(parent)
    return parent


def keep_order(ids: np.ndarray, lengths: np.ndarray, source_ids: np.ndarray, rule: str,
               source_priority: list[int] | None = None) -> np.ndarray:
    """A rank per item, lower is better, for choosing the kept member of a cluster.

    oldest: the first collected (lowest id). longest: the longest text, ties to the oldest.
    source-priority: the earliest source in `source_priority` (unlisted sources last), ties to the oldest.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if rule == "oldest":
        keys = (ids,)
    elif rule == "longest":
        keys = (ids, -np.asarray(lengths, dtype=np.int64))
    elif rule == "source-priority":
        position = {source: i for i, source in enumerate(source_priority or [])}
        priority = np.array([position.get(int(s), len(position)) for s in source_ids], dtype=np.int64)
        keys = (ids, priority)
    else:
        raise ValueError(f"unknown keep rule {rule!r}")
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.lexsort(keys)] = np.arange(len(ids))
    return rank


def representatives(roots: np.ndarray, rank: np.ndarray, fixed: np.ndarray | None = None) -> np.ndarray:
    """Index of the kept member of each item's cluster.

    A cluster with reference (`fixed`) items keeps its best-ranked reference item and drops
    every other non-reference member; reference items always stay. Otherwise the best-ranked member.
    """
    n = len(roots)
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    # Reference items rank before all others, so they win whenever a cluster has one.
    score = rank + np.where(fixed, 0, n)
    best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, roots, score)
    winner_of_root = np.empty(n, dtype=np.int64)
    winners = np.flatnonzero(best[roots] == score)
    winner_of_root[roots[winners]] = winners
    return winner_of_root[roots]


def dropped(roots: np.ndarray, kept: np.ndarray, fixed: np.ndarray | None = None) -> np.ndarray:
    """Indices of items to drop: every member that is not its cluster's kept item or a reference item."""
    fixed = np.zeros(len(roots), dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    return np.flatnonzero((kept != np.arange(len(roots))) & ~fixed)


def star(n: int, left: np.ndarray, right: np.ndarray, rank: np.ndarray, fixed: np.ndarray | None = None,
         group: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept item of each item, index of the link that dropped it or -1) by star clustering.

    Items are visited by `rank` (reference items first); a visited item that no kept item has
    claimed is kept and claims its unclaimed linked items. Reference items are never claimed.
    Items with the same `group` value (an identical fingerprint) count as one: the best-ranked
    of them stands for all, and the others follow it, to it or to its claimer."""
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    node = np.arange(n) if group is None else np.unique(group, return_inverse=True)[1].ravel()
    nodes = int(node.max()) + 1 if n else 0
    score = np.asarray(rank, dtype=np.int64) + np.where(fixed, 0, n)
    best = np.full(nodes, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, node, score)
    leader = np.empty(nodes, dtype=np.int64)
    winners = np.flatnonzero(best[node] == score)
    leader[node[winners]] = winners
    node_fixed = np.zeros(nodes, dtype=bool)
    node_fixed[node[fixed]] = True

    # Each link in both directions, grouped by end (the order within an end changes nothing); 32-bit
    # indices where they fit, as tens of millions of links are common.
    index = np.int32 if max(nodes, len(left)) < 2**31 else np.int64
    a, b = node[np.asarray(left, dtype=np.int64)].astype(index), node[np.asarray(right, dtype=np.int64)].astype(index)
    link = np.flatnonzero(a != b).astype(index)
    a, b = a[link], b[link]
    ends = np.concatenate([a, b])
    order = np.argsort(ends, kind="stable")
    starts = np.searchsorted(ends[order], np.arange(nodes + 1))
    del ends
    partners, links = np.concatenate([b, a])[order], np.concatenate([link, link])[order]
    del a, b, link, order
    center = np.arange(nodes)
    via = np.full(nodes, -1, dtype=np.int64)
    linked = np.flatnonzero(np.diff(starts) > 0)
    # Memoryviews give Python ints one at a time: the loop holds no list of millions of them.
    partner_of, link_of, start_of = memoryview(partners), memoryview(links), memoryview(starts)
    best_of, is_fixed, claimed = memoryview(best), memoryview(node_fixed), bytearray(nodes)
    center_of, via_of = memoryview(center), memoryview(via)
    for current in memoryview(linked[np.argsort(best[linked], kind="stable")]):
        if claimed[current]:
            continue
        # Every better-ranked neighbour was visited first and would have claimed this one.
        for k in range(start_of[current], start_of[current + 1]):
            other = partner_of[k]
            if not claimed[other] and not is_fixed[other] and best_of[other] > best_of[current]:
                claimed[other] = True
                center_of[other] = current
                via_of[other] = link_of[k]
    item_center = center[node]
    kept = leader[item_center]
    keeps_itself = fixed | (kept == np.arange(n))
    kept = np.where(keeps_itself, np.arange(n), kept)
    item_via = np.where(keeps_itself | (item_center == node), -1, via[node])
    return kept, item_via
