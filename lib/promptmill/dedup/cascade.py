"""Near-duplicate prompts by a candidate-then-verify cascade.

1. Candidates: MinHash LSH over the distinct words of each prompt (case,
   punctuation and word order ignored), leaving out function words and the
   boilerplate that cleaning strips ("trending on artstation", "8k", "octane
   render"), so a tag tail neither makes two prompts alike nor a copy unlike its
   original. Only pairs sharing a band of ROWS signature values are looked at.
2. Lexical verification of those pairs: the exact Jaccard similarity of their word
   sets. At JACCARD or above a pair is linked.
3. Semantic verification of the grey zone only (Jaccard from GREY_FLOOR): linked
   when the MiniLM cosine of the two texts reaches COSINE. Only those texts are embedded, and cached as by the
   semantic method. Thresholds were chosen by measurement (benchmarks/dedup_peers.py).

Every word gets the simhash package's feature hash (md5, as the C extension's
simhash computes it); each of the PERMUTATIONS hash functions is a multiply-shift
of it and a signature value is the minimum over the prompt's words. Signatures are
computed one band at a time from the word sets (4-byte numbers into the vocabulary
of word hashes) and candidates verified as each band yields them, so memory holds
the word sets and the keys of the close pairs, not a signature matrix or every
candidate pair. The C extension tokenises and hashes, takes the minima and counts
shared words by merging sorted lists; numpy and Arrow give the same values where it
was not built.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from itertools import compress

import numpy as np

from promptmill.core.memory import release_freed_memory
from promptmill.dedup.fingerprints import (
    _groups,
    _indptr,
    _pairs_within_groups,
    _simhash,
    _words,
    chunks,
    fold,
    word_features,
)

BANDS = 25
ROWS = 4
PERMUTATIONS = BANDS * ROWS
TEXT_CHUNK = 100_000
PAIR_CHUNK = 200_000   # candidate pairs verified at once (bounds memory to some 100 MB)
BUCKET_LIMIT = 50  # members of a bucket paired with everyone; beyond, each pairs with the bucket's first ones
# Chosen on edited copies of 20,000 real prompts (benchmarks/dedup_peers.py, another seed than
# the table in the README): pair recall 0.91 at precision 0.993. Near-containment as a further
# way into the grey zone found no more true pairs there, only more texts to embed.
JACCARD = 0.8        # linked lexically at or above this word-set Jaccard
GREY_FLOOR = 0.5     # from here up to JACCARD a pair is embedded...
COSINE = 0.85        # ...and linked at or above this MiniLM cosine

# Tag-tail words: those cleaning's strip rules remove (art sites, render engines, "trending",
# "award winning") and the quality and resolution tags appended the same way. Ignored here so
# that appending them changes nothing.
BOILERPLATE = frozenset("""
    trending featured popular artstation cgsociety deviantart pixiv behance hq hd uhd 4k 8k 16k 64k
    octane render rendered unreal engine redshift vray cryengine unity3d blender
    masterpiece best quality highly detailed ultra hyper hyperdetailed intricate sharp focus
    award winning photorealistic hyperrealistic realistic cinematic lighting volumetric
    digital art illustration concept smooth elegant
""".split())
# Function words: in short prompts they would be the minimum of many hash functions at once and
# fill LSH buckets with unrelated prompts.
STOPWORDS = frozenset("""
    a an the of in on at to with and or for by from as is are be it its this that into onto over under
    near while his her their my your our made very
""".split())

_MULTIPLIERS = np.random.default_rng(20240601).integers(1, 2**63, size=PERMUTATIONS, dtype=np.uint64) * 2 + 1
_OFFSETS = np.random.default_rng(20240602).integers(0, 2**63, size=PERMUTATIONS, dtype=np.uint64)


def word_hashes(words: Sequence[bytes]) -> np.ndarray:
    """uint64 hash of each UTF-8 word: the simhash package's feature hash (last 8 bytes of md5),
    as the C extension computes it."""
    md5 = hashlib.md5
    digests = np.frombuffer(b"".join([md5(word).digest() for word in words]), dtype=np.uint8)
    return digests.reshape(-1, 16)[:, 8:].copy().view(">u8").ravel().astype(np.uint64)


@functools.cache
def _ignored_hashes() -> np.ndarray:
    return np.sort(word_hashes([w.encode() for w in BOILERPLATE | STOPWORDS]))


@dataclass
class Sketches:
    """Each text's distinct words (less boilerplate and function words) in CSR form: `words` are
    uint32 numbers into `vocabulary`, the ascending uint64 word hashes, so each text's words ascend
    by hash too. Half the memory of the hashes themselves; MinHash values are computed from them
    band by band (`band_keys`), so no signature matrix of PERMUTATIONS values per text is held."""

    indptr: np.ndarray
    words: np.ndarray
    vocabulary: np.ndarray

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        """Words per text (computed once: every batch of pairs reads them)."""
        return np.diff(self.indptr)

    @functools.cached_property
    def count_type(self) -> type:
        """The smallest unsigned type that holds every text's word count."""
        return np.uint16 if not len(self.sizes) or self.sizes.max() < 2**16 else np.uint32

    def hashes(self, start: int, end: int) -> np.ndarray:
        """The word hashes of texts start to end, text after text."""
        return self.vocabulary[self.words[self.indptr[start]:self.indptr[end]]]


class _Vocabulary:
    """Numbers word hashes in the order they are first seen; `ranks` renumbers them in hash order."""

    def __init__(self):
        self.known = np.zeros(0, dtype=np.uint64)     # sorted hashes
        self.numbers = np.zeros(0, dtype=np.uint32)   # the number of each

    def number(self, hashes: np.ndarray) -> np.ndarray:
        distinct, inverse = np.unique(hashes, return_inverse=True)
        at = np.searchsorted(self.known, distinct)
        seen = at < len(self.known)
        seen[seen] = self.known[at[seen]] == distinct[seen]
        numbers = np.empty(len(distinct), dtype=np.uint32)
        numbers[seen] = self.numbers[at[seen]]
        new = ~seen
        numbers[new] = np.arange(len(self.known), len(self.known) + new.sum(), dtype=np.uint32)
        self.known = np.insert(self.known, at[new], distinct[new])
        self.numbers = np.insert(self.numbers, at[new], numbers[new])
        return numbers[inverse.ravel()]

    def ranks(self) -> np.ndarray:
        """uint32 position in `known` of each number."""
        ranks = np.empty(len(self.numbers), dtype=np.uint32)
        ranks[self.numbers] = np.arange(len(self.numbers), dtype=np.uint32)
        return ranks


def _numpy_chunk(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(words per text, word hashes) of one batch, as the C extension computes them: ASCII texts
    are tokenised as bytes in one go; the others are folded first."""
    is_ascii = np.fromiter(map(str.isascii, texts), dtype=bool, count=len(texts))
    owners, hashes = [], []
    for part in (is_ascii, ~is_ascii):
        rows = np.flatnonzero(part)
        if not len(rows):
            continue
        part_texts = list(compress(texts, part))
        if not is_ascii[rows[0]]:
            part_texts = [" ".join(word_features(t)) for t in part_texts]
        vocabulary, ids, counts = _words(part_texts)
        values = word_hashes(vocabulary.to_pylist())
        keep = ~np.isin(values, _ignored_hashes())[ids]
        owners.append(np.repeat(rows, counts)[keep])
        hashes.append(values[ids[keep]])
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    value = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    order = np.lexsort((value, owner))
    owner, value = owner[order], value[order]
    first = np.ones(len(value), dtype=bool)
    first[1:] = (owner[1:] != owner[:-1]) | (value[1:] != value[:-1])
    return np.bincount(owner[first], minlength=len(texts)), value[first]


def _extension_chunk(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    folded = [text if text.isascii() else fold(text) for text in texts]
    counts, hashes = _simhash.word_sets_folded(folded, _ignored_hashes().tobytes())
    return np.frombuffer(counts, dtype=np.int64), np.frombuffer(hashes, dtype=np.uint64)


def _has_extension() -> bool:
    """The C extension with the cascade's functions (an older build lacks some)."""
    return _simhash is not None and all(hasattr(_simhash, name)
                                        for name in ("word_sets_folded", "minhash_sets", "common_words"))


def sketches(texts: Iterable[str]) -> Sketches:
    """Word sets of `texts`, TEXT_CHUNK at a time (C extension or numpy). The words go into one array
    sized from the words per text so far, not into parts joined at the end (twice the memory), and
    are numbered in hash order at the end, in place."""
    sketch = _extension_chunk if _has_extension() else _numpy_chunk
    total = len(texts) if isinstance(texts, Sized) else None
    vocabulary = _Vocabulary()
    counts, words, used = [], np.zeros(0, dtype=np.uint32), 0
    for chunk in chunks(texts, TEXT_CHUNK):
        sizes, hashes = sketch(chunk)
        counts.append(sizes)
        if used + len(hashes) > len(words):
            seen = sum(map(len, counts))
            rate = (used + len(hashes)) / seen
            expected = used + len(hashes) + (rate * (total - seen) * 1.1 if total and total > seen
                                             else used + len(hashes))
            grown = np.empty(int(expected) + 1, dtype=np.uint32)
            grown[:used] = words[:used]
            words = grown
        words[used:used + len(hashes)] = vocabulary.number(hashes)
        used += len(hashes)
    if not counts:
        return Sketches(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint64))
    words = words[:used]
    ranks = vocabulary.ranks()
    for start in range(0, used, TEXT_CHUNK * 10):
        words[start:start + TEXT_CHUNK * 10] = ranks[words[start:start + TEXT_CHUNK * 10]]
    return Sketches(_indptr(np.concatenate(counts)), words, vocabulary.known)


def minhashes(sets: Sketches, permutations: slice) -> np.ndarray:
    """(texts, permutations) uint32: the minimum over each text's words of each hash function
    (a multiply-shift of the word hash); all ones for a text without words."""
    multipliers, offsets = _MULTIPLIERS[permutations], _OFFSETS[permutations]
    # Each hash function's value of each vocabulary word, a row per word.
    table = ((sets.vocabulary[:, None] * multipliers[None, :] + offsets[None, :]) >> np.uint64(32)).astype(np.uint32)
    if _has_extension():
        values = _simhash.minhash_sets(sets.indptr.astype(np.int64, copy=False), sets.words, table, len(multipliers))
        return np.frombuffer(values, dtype=np.uint32).reshape(len(sets.indptr) - 1, len(multipliers))
    out = np.full((len(sets.indptr) - 1, len(multipliers)), np.iinfo(np.uint32).max, dtype=np.uint32)
    has_words = sets.sizes > 0
    for start in range(0, len(out), TEXT_CHUNK):
        end = min(start + TEXT_CHUNK, len(out))
        chunk_has = has_words[start:end]
        if not chunk_has.any():
            continue
        first = sets.indptr[start]
        # Starts of the texts with words rise strictly, so each slice is exactly one text's words.
        starts = sets.indptr[start:end][chunk_has] - first
        out[start:end][chunk_has] = np.minimum.reduceat(table[sets.words[first:sets.indptr[end]]], starts, axis=0)
    return out


def band_keys(sets: Sketches, band: int) -> np.ndarray:
    """uint64 LSH key of each text in BAND: its ROWS MinHash values hashed together."""
    block = minhashes(sets, slice(band * ROWS, (band + 1) * ROWS))
    keys = block[:, 0].astype(np.uint64)
    for column in range(1, ROWS):  # widened a column at a time: millions of texts are common
        keys = (keys * np.uint64(0x9E3779B97F4A7C15)) ^ block[:, column].astype(np.uint64)
    return keys


def _bucket_pairs(keys: np.ndarray, usable: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs of indices sharing a key, about PAIR_CHUNK at a time: all pairs in buckets up to
    BUCKET_LIMIT, and in larger buckets each member with the bucket's first BUCKET_LIMIT members
    (lowest index)."""
    index = np.flatnonzero(usable)
    order, starts, ends = _groups(keys[index])
    sizes = ends - starts
    small = (sizes > 1) & (sizes <= BUCKET_LIMIT)
    for left, right in _pairs_within_groups(order, starts[small], ends[small]):
        yield index[left], index[right]
    step = max(1, PAIR_CHUNK // BUCKET_LIMIT)
    for start, end in zip(starts[sizes > BUCKET_LIMIT].tolist(), ends[sizes > BUCKET_LIMIT].tolist()):
        leaders = index[order[start:start + BUCKET_LIMIT]]
        for first in range(start, end, step):
            members = index[order[first:min(first + step, end)]]
            others = np.repeat(members, len(leaders))
            partners = np.tile(leaders, len(members))
            differ = others != partners
            yield partners[differ], others[differ]


def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """KEYS (a fresh array, sorted in place) without repeats."""
    keys.sort()
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return keys[first]


def candidates(sets: Sketches, fixed: np.ndarray, usable: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Band by band, some PAIR_CHUNK at a time, the pairs (i < j) of `usable` texts with words
    that share the band, not both reference items.

    A pair sharing several bands comes once per band: `verify` checks each batch as it comes and
    keeps only the close pairs, so memory never holds every candidate pair, or one band's, at once."""
    n = len(fixed)
    usable = usable & (sets.sizes > 0)
    for band in range(BANDS):
        for left, right in _bucket_pairs(band_keys(sets, band), usable):
            low, high = np.minimum(left, right), np.maximum(left, right)
            useful = ~(fixed[low] & fixed[high])
            keys = _sorted_distinct(low[useful] * n + high[useful])
            yield keys // n, keys % n


def _common_words(sets: Sketches, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many words each pair shares: a merge of the two sorted lists in C, else the distinct
    (pair, word) keys counted in Arrow."""
    if _has_extension():
        return np.frombuffer(_simhash.common_words(sets.indptr.astype(np.int64, copy=False), sets.words,
                                                   np.ascontiguousarray(a, dtype=np.int64),
                                                   np.ascontiguousarray(b, dtype=np.int64)), dtype=np.int64)
    import pyarrow as pa
    import pyarrow.compute as pc

    sizes = sets.sizes
    members = np.concatenate([a, b])
    counts = sizes[members]
    pair = np.repeat(np.tile(np.arange(len(a), dtype=np.int64), 2), counts)
    positions = np.repeat(sets.indptr[members] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    shift = np.int64(max(len(sets.vocabulary) - 1, 1).bit_length())
    distinct = pc.unique(pa.array((pair << shift) | sets.words[positions].astype(np.int64))).to_numpy()
    return sizes[a] + sizes[b] - np.bincount(distinct >> shift, minlength=len(a))


def scores(common: np.ndarray, sizes_a: np.ndarray, sizes_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Jaccard, containment) of word sets of SIZES_A and SIZES_B words sharing COMMON."""
    common = np.asarray(common, dtype=np.float64)
    sizes_a, sizes_b = np.asarray(sizes_a, dtype=np.int64), np.asarray(sizes_b, dtype=np.int64)
    union = sizes_a + sizes_b - common
    shorter = np.minimum(sizes_a, sizes_b)
    return common / np.maximum(union, 1), common / np.maximum(shorter, 1)


def shared_words(sets: Sketches, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """How many words each pair shares, PAIR_CHUNK pairs at a time, as `count_type`."""
    common = np.zeros(len(left), dtype=sets.count_type)
    for start in range(0, len(left), PAIR_CHUNK):
        common[start:start + PAIR_CHUNK] = _common_words(sets, left[start:start + PAIR_CHUNK],
                                                         right[start:start + PAIR_CHUNK])
    return common


def overlaps(sets: Sketches, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Jaccard, containment) of the word sets of each pair."""
    return scores(shared_words(sets, left, right), sets.sizes[left], sets.sizes[right])


@dataclass
class Verified:
    """Linked pairs (left < right, ascending), how many words each shares, and, where `embed` was
    given, which were linked by the cosine and its value. With the texts' word counts, the shared
    words give every word-set score again (`scores`), so the word sets need not outlive `verify`."""

    left: np.ndarray
    right: np.ndarray
    common: np.ndarray           # words shared (uint16, or uint32 for texts of 65,536 words or more)
    semantic: np.ndarray | None  # bool: linked by the cosine, not by the word sets alone
    cosine: np.ndarray | None    # float32, NaN where the pair was not embedded
    checked: int                 # candidate pairs whose word sets were compared
    embedded: int


SET_MIXERS = ((0x9E3779B97F4A7C15, 0x632BE59BD9B4E019), (0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9))


def same_sets(sets: Sketches) -> np.ndarray:
    """A group number per text: texts with the same words share one (each text without words has its
    own). Only the first text of a group needs comparing: the others are its exact copies here."""
    sizes = sets.sizes
    has_words = sizes > 0
    # Two independent 64-bit sums of mixed word hashes, with the size, name a set.
    keys = np.zeros((len(sizes), 1 + len(SET_MIXERS)), dtype=np.uint64)
    keys[:, 0] = sizes
    for start in range(0, len(sizes), TEXT_CHUNK):
        end = min(start + TEXT_CHUNK, len(sizes))
        chunk_has = has_words[start:end]
        if not chunk_has.any():
            continue
        words = sets.hashes(start, end)
        starts = sets.indptr[start:end][chunk_has] - sets.indptr[start]
        for column, (multiplier, offset) in enumerate(SET_MIXERS, start=1):
            keys[start:end][chunk_has, column] = np.add.reduceat(words * np.uint64(multiplier) + np.uint64(offset),
                                                                 starts)
    group = np.arange(len(sizes), dtype=np.int64) + len(sizes)  # wordless texts: alone
    order = np.flatnonzero(has_words)
    if len(order):
        order = order[np.lexsort(keys[order].T[::-1])]
        ordered = keys[order]
        new_set = np.ones(len(order), dtype=bool)
        new_set[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
        group[order] = np.cumsum(new_set) - 1
    return group


def _absent(kept: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """KEYS not in the sorted KEPT."""
    if not len(kept):
        return keys
    return keys[kept[np.minimum(np.searchsorted(kept, keys), len(kept) - 1)] != keys]


def _merged(kept: np.ndarray, pending: list[np.ndarray]) -> np.ndarray:
    """Sorted distinct KEPT keys with the PENDING ones inserted, each once."""
    new = _absent(kept, _sorted_distinct(np.concatenate(pending))) if pending else np.zeros(0, dtype=np.int64)
    return np.insert(kept, np.searchsorted(kept, new), new) if len(new) else kept


def verify(sets: Sketches, batches: Iterable[tuple[np.ndarray, np.ndarray]],
           embed: Callable[[np.ndarray], np.ndarray] | None, jaccard_cut: float = JACCARD,
           cosine_cut: float = COSINE) -> Verified:
    """Link candidate pairs at Jaccard >= `jaccard_cut`; send the grey zone below it (Jaccard >=
    GREY_FLOOR) to the cosine of their embeddings (`embed` maps item indices to normalised
    vectors; None links lexically only). `batches` may repeat a pair (once per LSH band it shares):
    it is counted and kept once. Only the keys (left * n + right) of the close pairs are held."""
    n = len(sets.indptr) - 1
    kept = np.zeros(0, dtype=np.int64)  # keys of the close pairs merged so far, sorted
    pending, checked = [], 0
    # The cut is made here, in full precision. Without `embed` the grey zone can link nothing.
    floor = GREY_FLOOR if embed is not None else jaccard_cut
    for left, right in batches:
        pairs = _absent(kept, left * n + right)
        checked += len(pairs)
        pending.append(pairs[overlaps(sets, pairs // n, pairs % n)[0] >= floor])
        # A merge copies everything kept: it waits until the pending pairs are a share of that, small
        # enough that the merge's own arrays stay small beside it.
        if sum(map(len, pending)) > max(PAIR_CHUNK, len(kept) // 8):
            kept, pending = _merged(kept, pending), []
            release_freed_memory()
    kept = _merged(kept, pending)
    del pending
    index = np.int32 if n < 2**31 else np.int64
    left, right = np.empty(len(kept), dtype=index), np.empty(len(kept), dtype=index)
    for start in range(0, len(kept), PAIR_CHUNK):
        left[start:start + PAIR_CHUNK], right[start:start + PAIR_CHUNK] = np.divmod(kept[start:start + PAIR_CHUNK], n)
    del kept
    common = shared_words(sets, left, right)
    if embed is None:
        return Verified(left, right, common, None, None, checked, 0)
    grey = np.zeros(len(left), dtype=bool)
    for start in range(0, len(left), PAIR_CHUNK):
        part = slice(start, start + PAIR_CHUNK)
        grey[part] = scores(common[part], sets.sizes[left[part]], sets.sizes[right[part]])[0] < jaccard_cut
    cosine = np.full(len(left), np.nan, dtype=np.float32)
    embedded = 0
    if grey.any():
        texts, rows = np.unique(np.concatenate([left[grey], right[grey]]), return_inverse=True)
        vectors = embed(texts)
        embedded = len(texts)
        a, b = rows[:grey.sum()], rows[grey.sum():]
        cosine[grey] = np.einsum("ij,ij->i", vectors[a], vectors[b])
    linked = ~grey | (cosine >= cosine_cut)
    return Verified(left[linked], right[linked], common[linked], grey[linked], cosine[linked], checked, embedded)
