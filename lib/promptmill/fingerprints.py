"""64-bit simhash fingerprints, bit-identical to the `simhash` package, computed in bulk.

The package hashes every feature with md5 and votes bit by bit, one text at a
time. Here each distinct feature of a batch is hashed once (and kept in a
cache), word features come from one regex pass over the joined batch, and the
bits are summed per text with one sparse matrix product; the vote is the
package's (a bit is set when more than half of the features have it). Near pairs come from a block index: with ``k + 1``
blocks at least one block of two fingerprints within Hamming distance ``k`` is
identical (pigeonhole), so only texts sharing a block value are compared.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

# The package's notion of a letter; its own tokenizer keeps only these characters.
WORD = re.compile(r"[\w\u4e00-\u9fcc]+")
SEPARATOR = "\x00"  # not a letter, unchanged by NFKC and casefold: marks where a text ends
WORD_OR_SEPARATOR = re.compile(r"[\w\u4e00-\u9fcc]+|\x00")
CHAR_WIDTH = 4
TEXT_CHUNK = 100_000  # texts tokenised at once (bounds the token list to ~100 MB)
PAIR_CHUNK = 5_000_000   # candidate pairs checked at once


def fold(text: str) -> str:
    """NFKC (for non-ASCII text) and case folding, as promptmill.text.normalize does."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text.casefold()


def word_features(text: str) -> list[str]:
    """Words of the folded text: blind to case, punctuation and spacing."""
    return WORD.findall(fold(text))


def wordset_features(text: str) -> list[str]:
    """Each distinct word once, so repeated filler words ("a", "of") do not outvote the rest."""
    return list(dict.fromkeys(word_features(text)))


def word2_features(text: str) -> list[str]:
    """Adjacent word pairs (a lone word stands for itself): also sensitive to word order."""
    words = word_features(text)
    if len(words) < 2:
        return words
    return [f"{a} {b}" for a, b in zip(words, words[1:])]


def char4_features(text: str) -> list[str]:
    """The package's default: 4-character shingles of the letters with spaces removed,
    so ``Simhash(char4_features(t)).value == Simhash(fold(t)).value``."""
    content = "".join(WORD.findall(fold(text)))
    return [content[i:i + CHAR_WIDTH] for i in range(max(len(content) - CHAR_WIDTH + 1, 1))]


FEATURES: dict[str, Callable[[str], list[str]]] = {
    "word": word_features,
    "wordset": wordset_features,
    "word2": word2_features,
    "char4": char4_features,
}


def feature_hash(feature: str) -> int:
    """The package's per-feature hash: the last 8 bytes of md5, read big-endian."""
    return int.from_bytes(hashlib.md5(feature.encode("utf-8")).digest()[-8:], "big")


class FeatureHashes:
    """feature -> row of a growing (n, 64) 0/1 matrix; each feature is md5-hashed once per process."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self._digests: list[bytes] = []
        self._bits = np.zeros((0, 64), dtype=np.float32)

    def rows(self, features: Sequence[str]) -> np.ndarray:
        index = self.index
        try:
            return np.array(list(map(index.__getitem__, features)), dtype=np.int64)
        except KeyError:
            for feature in set(features).difference(index):
                index[feature] = len(index)
                self._digests.append(hashlib.md5(feature.encode("utf-8")).digest()[-8:])
            return np.array(list(map(index.__getitem__, features)), dtype=np.int64)

    @property
    def bits(self) -> np.ndarray:
        if len(self._bits) < len(self._digests):
            fresh = np.frombuffer(b"".join(self._digests[len(self._bits):]), dtype=np.uint8)
            self._bits = np.concatenate([self._bits, np.unpackbits(fresh).reshape(-1, 64).astype(np.float32)])
        return self._bits


def vote(rows: np.ndarray, counts: np.ndarray, cache: FeatureHashes) -> np.ndarray:
    """The package's vote: bit j is set when more than half of a text's features have it.

    `rows` are the cache rows of every text's features in text order, `counts` how many
    each text has. One sparse (texts x features) @ (features x 64) product sums the bits."""
    from scipy import sparse

    indptr = np.concatenate([[0], np.cumsum(counts)])
    bits = cache.bits
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), rows, indptr),
                               shape=(len(counts), len(bits)))
    sums = np.asarray(matrix @ bits)
    votes = 2 * sums > counts[:, None]
    return np.packbits(votes, axis=1).view(">u8").ravel().astype(np.uint64)


def fingerprints_of_features(feature_lists: Sequence[list[str]], cache: FeatureHashes | None = None) -> np.ndarray:
    """uint64 ``Simhash(features).value`` for each list of (unweighted, possibly repeated) features."""
    cache = cache or FeatureHashes()
    counts = np.fromiter(map(len, feature_lists), dtype=np.int64, count=len(feature_lists))
    rows = cache.rows([feature for features in feature_lists for feature in features])
    return vote(rows, counts, cache)


def _word_stream(texts: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tokenise many texts with one regex pass over their join: (vocabulary, token ids, text of each token)."""
    joined = SEPARATOR.join(text.replace(SEPARATOR, " ") for text in texts) + SEPARATOR
    tokens = WORD_OR_SEPARATOR.findall(fold(joined))
    vocabulary = list(dict.fromkeys(tokens))
    position = {token: i for i, token in enumerate(vocabulary)}
    ids = np.array(list(map(position.__getitem__, tokens)), dtype=np.int64)
    is_separator = ids == position[SEPARATOR]
    text_of = np.cumsum(is_separator) - is_separator
    return vocabulary, ids[~is_separator], text_of[~is_separator]


def _word_chunk(texts: Sequence[str], cache: FeatureHashes) -> np.ndarray:
    vocabulary, ids, text_of = _word_stream(texts)
    rows = cache.rows(vocabulary)[ids]
    return vote(rows, np.bincount(text_of, minlength=len(texts)), cache)


def _wordset_chunk(texts: Sequence[str], cache: FeatureHashes) -> np.ndarray:
    vocabulary, ids, text_of = _word_stream(texts)
    keys = np.unique(text_of * len(vocabulary) + ids)
    text_of, ids = keys // len(vocabulary), keys % len(vocabulary)
    rows = cache.rows(vocabulary)[ids]
    return vote(rows, np.bincount(text_of, minlength=len(texts)), cache)


def _word2_chunk(texts: Sequence[str], cache: FeatureHashes) -> np.ndarray:
    vocabulary, ids, text_of = _word_stream(texts)
    size = len(vocabulary) + 1
    words_per_text = np.bincount(text_of, minlength=len(texts))
    adjacent = np.flatnonzero(text_of[:-1] == text_of[1:])
    lone = np.flatnonzero(words_per_text[text_of] == 1)
    # Feature key: a * size + b + 1 for the pair "a b", a * size for a lone word a.
    keys = np.concatenate([ids[adjacent] * size + ids[adjacent + 1] + 1, ids[lone] * size])
    owners = np.concatenate([text_of[adjacent], text_of[lone]])
    order = np.argsort(owners, kind="stable")
    keys, owners = keys[order], owners[order]
    distinct, inverse = np.unique(keys, return_inverse=True)
    first, second = distinct // size, distinct % size
    names = [vocabulary[a] if b == 0 else f"{vocabulary[a]} {vocabulary[b - 1]}"
             for a, b in zip(first.tolist(), second.tolist())]
    rows = cache.rows(names)[inverse]
    return vote(rows, np.bincount(owners, minlength=len(texts)), cache)


_FAST = {"word": _word_chunk, "wordset": _wordset_chunk, "word2": _word2_chunk}


def fingerprints(texts: Sequence[str], features: str = "word", cache: FeatureHashes | None = None) -> np.ndarray:
    """uint64 simhash of each text over the named FEATURES, equal to
    ``Simhash(FEATURES[features](text)).value``; word features take a one-pass batch tokeniser."""
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose from {', '.join(FEATURES)}")
    cache = cache or FeatureHashes()
    texts = list(texts)
    out = np.zeros(len(texts), dtype=np.uint64)
    for start in range(0, len(texts), TEXT_CHUNK):
        chunk = texts[start:start + TEXT_CHUNK]
        if features in _FAST:
            out[start:start + len(chunk)] = _FAST[features](chunk, cache)
        else:
            out[start:start + len(chunk)] = fingerprints_of_features([FEATURES[features](t) for t in chunk], cache)
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def block_masks(k: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, mask) of k + 1 nearly equal contiguous blocks covering the fingerprint."""
    blocks = k + 1
    sizes = [bits // blocks + (1 if i < bits % blocks else 0) for i in range(blocks)]
    out, shift = [], 0
    for size in sizes:
        out.append((shift, (1 << size) - 1))
        shift += size
    return out


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, ends) of the runs of equal keys in sorted order."""
    order = np.argsort(keys, kind="stable")
    boundaries = np.flatnonzero(np.diff(keys[order])) + 1
    starts = np.concatenate([[0], boundaries]).astype(np.int64)
    ends = np.concatenate([boundaries, [len(keys)]]).astype(np.int64)
    return order, starts, ends


def _pairs_within_groups(order: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Yield (left, right) index arrays of every pair inside each group, about PAIR_CHUNK at a time."""
    sizes = ends - starts
    cumulative = np.cumsum(sizes * (sizes - 1) // 2)
    first = 0
    while first < len(sizes):
        done = cumulative[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(cumulative, done + PAIR_CHUNK, side="right")))
        group_sizes = sizes[first:last]
        member_starts = np.cumsum(group_sizes) - group_sizes
        positions = (np.repeat(starts[first:last], group_sizes)
                     + np.arange(int(group_sizes.sum())) - np.repeat(member_starts, group_sizes))
        partners = np.repeat(ends[first:last], group_sizes) - positions - 1
        left = np.repeat(positions, partners)
        run_starts = np.cumsum(partners) - partners
        right = left + 1 + (np.arange(len(left)) - np.repeat(run_starts, partners))
        yield order[left], order[right]
        first = last


def near_pairs(values: np.ndarray, k: int, fixed: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Pairs (i, j) linking every group of fingerprints within Hamming distance k, with distances.

    Identical fingerprints are linked to the first of their group, and the block index
    runs over distinct values only, so a thousand copies cost a thousand links, not half a
    million pairs. The links span the same clusters as all pairs would. `fixed` marks
    reference items: links between two of them are not wanted.
    """
    values = np.asarray(values, dtype=np.uint64)
    n = len(values)
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    order, starts, ends = _groups(values)
    # Within a group of identical values, a free (non-reference) member leads when there is one,
    # so that two reference items are never the only link.
    group_of = np.repeat(np.arange(len(starts)), ends - starts)
    free_sorted = ~fixed[order]
    free_positions = np.flatnonzero(free_sorted)
    first_free = np.full(len(starts), n, dtype=np.int64)
    np.minimum.at(first_free, group_of[free_positions], free_positions)
    has_free = first_free < n
    leads = order[np.where(has_free, first_free, starts)]
    members = order
    member_leads = leads[group_of]
    same_link = (members != member_leads) & ~(fixed[members] & fixed[member_leads])
    links_left = [members[same_link]]
    links_right = [member_leads[same_link]]

    distinct = values[leads]
    distinct_fixed = ~has_free
    for shift, mask in block_masks(k):
        keys = (distinct >> np.uint64(shift)) & np.uint64(mask)
        block_order, block_starts, block_ends = _groups(keys)
        multi = (block_ends - block_starts) > 1
        for left, right in _pairs_within_groups(block_order, block_starts[multi], block_ends[multi]):
            keep = hamming(distinct[left], distinct[right]) <= k
            keep &= ~(distinct_fixed[left] & distinct_fixed[right])
            links_left.append(leads[left[keep]])
            links_right.append(leads[right[keep]])
    left = np.concatenate(links_left).astype(np.int64)
    right = np.concatenate(links_right).astype(np.int64)
    low, high = np.minimum(left, right), np.maximum(left, right)
    # The same pair can share several blocks: keep it once.
    unique = np.unique(low * n + high)
    low, high = unique // n, unique % n
    return low, high, hamming(values[low], values[high])
