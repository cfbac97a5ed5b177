"""Clusters from candidate pairs (union-find), and which member of each cluster is kept.

Union-find runs vectorised: every round hooks the larger of two differing roots
onto the smaller (``np.minimum.at``) and then compresses paths by pointer
jumping, until every pair shares a root. The root of a cluster is its lowest
index; which member is *kept* is a separate, documented choice (`KEEP_RULES`).
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
