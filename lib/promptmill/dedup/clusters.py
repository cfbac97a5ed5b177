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

    center = np.arange(nodes)
    via = np.full(nodes, -1, dtype=np.int64)
    starts, better, links = _better_ends(node, best, left, right)
    # An item is claimed by its best-ranked kept better-ranked neighbour, if it has one: visited in
    # rank order, each list of better neighbours is decided before it is read. Memoryviews give
    # Python ints one at a time, so the loop holds no list of millions of them.
    is_kept = bytearray(b"\x01") * nodes
    start_of, better_of, link_of, best_of = memoryview(starts), memoryview(better), memoryview(links), memoryview(best)
    center_of, via_of, is_fixed = memoryview(center), memoryview(via), memoryview(node_fixed)
    listed = np.flatnonzero(np.diff(starts) > 0)
    for current in memoryview(listed[np.argsort(best[listed], kind="stable")]):
        if is_fixed[current]:
            continue
        claimer, claimer_best, claimer_link = -1, 0, -1
        for k in range(start_of[current], start_of[current + 1]):
            other = better_of[k]
            if is_kept[other] and (claimer < 0 or best_of[other] < claimer_best):
                claimer, claimer_best, claimer_link = other, best_of[other], link_of[k]
        if claimer >= 0:
            is_kept[current] = 0
            center_of[current] = claimer
            via_of[current] = claimer_link
    item_center = center[node]
    kept = leader[item_center]
    keeps_itself = fixed | (kept == np.arange(n))
    kept = np.where(keeps_itself, np.arange(n), kept)
    item_via = np.where(keeps_itself | (item_center == node), -1, via[node])
    return kept, item_via


def _better_ends(node: np.ndarray, best: np.ndarray, left: np.ndarray, right: np.ndarray, batch: int = 1 << 20):
    """(starts, better, links): for each node, the better-ranked node at the other end of each of its
    links and the link's index, grouped by node (CSR). Each link is held once, as one int64 sort key
    (node << bits | link) and then two 32-bit columns: tens of millions of links are common."""
    left, right = np.asarray(left), np.asarray(right)
    nodes = len(best)
    bits = max(1, len(left).bit_length())
    if nodes.bit_length() + bits > 62:
        raise ValueError(f"{len(left):,} links over {nodes:,} items are more than one sort key can hold")
    keys = np.empty(len(left), dtype=np.int64)
    for start in range(0, len(left), batch):
        a, b = node[left[start:start + batch]], node[right[start:start + batch]]
        worse = np.where(best[a] > best[b], a, b)
        worse[a == b] = nodes  # a link inside one node claims nothing: sorted past the last node
        keys[start:start + batch] = (worse.astype(np.int64) << bits) | np.arange(start, start + len(a))
    keys.sort()
    starts = np.searchsorted(keys, np.arange(nodes + 1, dtype=np.int64) << bits)
    index = np.int32 if max(nodes, len(left)) < 2**31 else np.int64
    total = int(starts[-1])
    links = np.empty(total, dtype=index)
    for start in range(0, total, batch):
        links[start:start + batch] = keys[start:min(start + batch, total)] & ((1 << bits) - 1)
    del keys
    better = np.empty(total, dtype=index)
    for start in range(0, total, batch):
        link = links[start:start + batch]
        a, b = node[left[link]], node[right[link]]
        better[start:start + len(link)] = np.where(best[a] < best[b], a, b)
    return starts, better, links
