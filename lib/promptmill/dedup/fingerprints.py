"""64-bit simhash fingerprints, bit-identical to the `simhash` package, computed in bulk.

The package hashes every feature with md5 and votes bit by bit, one text at a
time, at about 2 µs per feature. Here each distinct feature of a batch is
md5-hashed once and the vote is the package's (a bit is set when more than half
of the features have it). Two engines give the same values:
- the C extension `promptmill._simhash`, when it was built (setup.py; optional):
  tokenising, md5 and vote in one pass per text; Unicode folding stays here;
- numpy, everywhere: a batch is tokenised in C (one byte translation folds case
  and blanks out non-letters, Arrow splits the words and numbers the distinct
  ones) and the bits are summed per text with one sparse matrix product.
Near pairs come from a block index: with ``k + 1`` blocks at least one block of
two fingerprints within Hamming distance ``k`` is identical (pigeonhole), so
only texts sharing a block value are compared.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, islice

import numpy as np

try:
    from promptmill.dedup import _simhash
except ImportError:  # installed without a C compiler: the numpy path gives the same values
    _simhash = None

# The package's notion of a letter; its own tokenizer keeps only these characters.
WORD = re.compile(r"[\w\u4e00-\u9fcc]+")
CHAR_WIDTH = 4
TEXT_CHUNK = 100_000  # texts fingerprinted at once (bounds the feature arrays to a few hundred MB)
PAIR_CHUNK = 1_000_000   # candidate pairs checked at once (some 100 MB of index arrays)

_ASCII_LETTERS = [i for i in range(128) if WORD.fullmatch(chr(i))]
# UTF-8 bytes -> folded letters, every other ASCII byte -> space. Bytes >= 0x80 are left
# alone: they only occur in non-ASCII texts, which are folded and tokenised beforehand.
_BLANK_NON_LETTERS = bytes(ord(chr(i).lower()) if i in _ASCII_LETTERS else 32 if i < 128 else i
                           for i in range(256))
_NON_LETTERS = bytes(i for i in range(128) if i not in _ASCII_LETTERS)
# Keys of up to four 16-bit characters: the top `length` characters of a shorter content.
_SHORT_CONTENT_MASKS = np.array([0, 0xFFFF << 48, 0xFFFFFFFF << 32, 0xFFFFFFFFFFFF << 16], dtype=np.uint64)


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


def feature_bits(features: Sequence[bytes]) -> np.ndarray:
    """(len(features), 64) 0/1 matrix of the package's hash bits of UTF-8 features."""
    md5 = hashlib.md5
    digests = np.frombuffer(b"".join([md5(feature).digest() for feature in features]), dtype=np.uint8)
    return np.unpackbits(digests.reshape(-1, 16)[:, 8:], axis=1)


def vote(indptr: np.ndarray, columns: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The package's vote: bit j is set when more than half of a text's features have it.

    Text i's features are the rows ``columns[indptr[i]:indptr[i + 1]]`` of `bits`
    (a repeat counts again). One sparse (texts x features) @
    (features x 64) product sums the bits of all texts, in int16 (twice as fast as
    float32) unless a text has too many features for it."""
    from scipy import sparse

    counts = np.diff(indptr)
    dtype = np.int16 if len(counts) == 0 or counts.max() <= np.iinfo(np.int16).max else np.int64
    matrix = sparse.csr_array((np.ones(len(columns), dtype=dtype), columns, indptr),
                              shape=(len(indptr) - 1, len(bits)))
    # sum > count / 2 exactly when sum > count // 2, for whole numbers
    votes = (matrix @ bits.astype(dtype)) > (counts // 2).astype(dtype)[:, None]
    return np.packbits(votes, axis=1).view(">u8").ravel().astype(np.uint64)


def _indptr(counts: np.ndarray) -> np.ndarray:
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def fingerprints_of_features(feature_lists: Sequence[list[str]]) -> np.ndarray:
    """uint64 ``Simhash(features).value`` for each list of (unweighted, possibly repeated) features."""
    counts = np.fromiter(map(len, feature_lists), dtype=np.int64, count=len(feature_lists))
    position: dict[str, int] = {}
    columns = np.array([position.setdefault(feature, len(position))
                        for features in feature_lists for feature in features], dtype=np.int64)
    bits = feature_bits([feature.encode("utf-8") for feature in position])
    return vote(_indptr(counts), columns, bits)


def _words(texts: Sequence[str]):
    """Tokenise a batch: (distinct words as an Arrow binary array, word ids in text order, words per text).

    ASCII texts (nearly all prompts) go through one byte translation that lower-cases
    letters and blanks everything else; the rest are folded and split by the regex first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    joined = "".join(texts)
    if joined.isascii():
        data, lengths = joined.encode(), map(len, texts)
    else:
        encoded = [" ".join(word_features(text)).encode() for text in texts]
        data, lengths = b"".join(encoded), map(len, encoded)
    offsets = _indptr(np.fromiter(lengths, dtype=np.int64, count=len(texts)))
    blanked = data.translate(_BLANK_NON_LETTERS)
    array = pa.LargeStringArray.from_buffers(len(texts), pa.py_buffer(offsets), pa.py_buffer(blanked))
    words = pc.ascii_split_whitespace(array)
    numbered = pc.dictionary_encode(words.flatten())
    word_offsets = words.offsets.to_numpy()
    ids = numbered.indices.to_numpy().astype(np.int64)
    empty = pc.index(numbered.dictionary, "").as_py()
    if empty >= 0:  # a blank at either end of a text splits off an empty word: drop those
        positions = np.flatnonzero(ids == empty)
        word_offsets = word_offsets - np.searchsorted(positions, word_offsets)
        ids = np.delete(ids, positions)
    return numbered.dictionary.cast(pa.large_binary()), ids, np.diff(word_offsets)


def _word_chunk(texts: Sequence[str]) -> np.ndarray:
    vocabulary, ids, counts = _words(texts)
    return vote(_indptr(counts), ids, feature_bits(vocabulary.to_pylist()))


def _wordset_chunk(texts: Sequence[str]) -> np.ndarray:
    vocabulary, ids, counts = _words(texts)
    # (text, word) keys, sorted: text order is kept and a repeated word lands next to itself.
    shift = np.int64(max(len(vocabulary) - 1, 1).bit_length())
    keys = np.sort((np.repeat(np.arange(len(counts), dtype=np.int64), counts) << shift) | ids)
    first = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    keys = keys[first]
    counts = np.bincount(keys >> shift, minlength=len(counts))
    return vote(_indptr(counts), keys & ((np.int64(1) << shift) - 1), feature_bits(vocabulary.to_pylist()))


def _word2_chunk(texts: Sequence[str]) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    vocabulary, ids, counts = _words(texts)
    size = len(vocabulary) + 1  # pair key a * size + b; b = size - 1 marks a lone word
    ends = np.cumsum(counts)
    starts = ends - counts
    following = np.empty_like(ids)
    following[:-1] = ids[1:]
    keep = np.ones(len(ids), dtype=bool)
    keep[ends[counts > 0] - 1] = False          # a text's last word starts no pair...
    lone = starts[counts == 1]
    keep[lone] = True                           # ...unless it is its only word
    following[lone] = size - 1
    numbered = pc.dictionary_encode(pa.array((ids * size + following)[keep]))
    keys = numbered.dictionary.to_numpy()
    first, second = keys // size, keys % size
    second_words = vocabulary.take(pa.array(second, mask=second == size - 1))
    names = pc.binary_join_element_wise(vocabulary.take(pa.array(first)), second_words, pa.scalar(b" ", pa.large_binary()),
                                        null_handling="skip")
    pair_counts = np.where(counts > 1, counts - 1, counts)
    return vote(_indptr(pair_counts), numbered.indices.to_numpy().astype(np.int64), feature_bits(names.to_pylist()))


def _char4_chunk(texts: Sequence[str]) -> np.ndarray:
    """4-character shingles as 64-bit keys: windows of 8 bytes over the contents in UTF-16-BE.

    Contents are joined with a 0 after each (0 is no letter): a window from a text's
    last three characters or its 0 is no shingle, and a content shorter than four
    characters is one feature, its window cut after its characters."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "".join(texts).isascii():
        contents = [text.encode().translate(_BLANK_NON_LETTERS, _NON_LETTERS) for text in texts]
        codes = np.frombuffer(b"\x00".join(contents) + b"\x00", dtype=np.uint8)
    else:
        contents = ["".join(word_features(text)) for text in texts]
        codes = np.frombuffer(("\x00".join(contents) + "\x00").encode("utf-32-le"), dtype=np.uint32)
    lengths = np.fromiter(map(len, contents), dtype=np.int64, count=len(contents))
    alphabet = None
    if codes.max() > 0xFFFF:
        # Characters beyond 16 bits: number the distinct ones instead (0 stays 0, the smallest).
        alphabet, codes = np.unique(codes, return_inverse=True)
        if len(alphabet) > 0x10000:
            return fingerprints_of_features([char4_features(text) for text in texts])
    characters = np.concatenate([codes, np.zeros(CHAR_WIDTH - 1, dtype=codes.dtype)]).astype(">u2")
    windows = np.ndarray(shape=(len(codes),), dtype=">u8", buffer=characters, strides=(2,))
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    is_shingle = np.ones(len(codes), dtype=bool)
    long, short = lengths >= CHAR_WIDTH, lengths < CHAR_WIDTH
    for back in range(CHAR_WIDTH):
        is_shingle[starts[long] + lengths[long] - back] = False
    for ahead in range(1, CHAR_WIDTH):
        cut = short & (lengths >= ahead)
        is_shingle[starts[cut] + ahead] = False
    keys = windows[is_shingle].astype(np.uint64)
    indptr = _indptr(np.where(long, lengths - CHAR_WIDTH + 1, 1))
    keys[indptr[:-1][short]] &= _SHORT_CONTENT_MASKS[lengths[short]]
    numbered = pc.dictionary_encode(pa.array(keys))
    distinct = numbered.dictionary.to_numpy().astype(">u8")
    if alphabet is None:
        text = distinct.tobytes().decode("utf-16-be")
    else:
        text = alphabet[distinct.view(">u2")].astype("<u4").tobytes().decode("utf-32-le")
    shingles = [text[i:i + CHAR_WIDTH] for i in range(0, len(text), CHAR_WIDTH)]
    for i in np.flatnonzero((distinct & np.uint64(0xFFFF)) == 0).tolist():
        shingles[i] = shingles[i].rstrip("\x00")
    bits = feature_bits([shingle.encode() for shingle in shingles])
    return vote(indptr, numbered.indices.to_numpy().astype(np.int64), bits)


_CHUNK = {"word": _word_chunk, "wordset": _wordset_chunk, "word2": _word2_chunk, "char4": _char4_chunk}


def engine() -> str:
    """Which implementation `fingerprints` uses (both give the same values)."""
    return "numpy" if _simhash is None else "C extension"


def chunks(texts: Iterable[str], size: int = TEXT_CHUNK) -> Iterator[list[str]]:
    """`texts` SIZE at a time, so a pass over millions of texts holds one chunk of them."""
    iterator = iter(texts)
    while chunk := list(islice(iterator, size)):
        yield chunk


def fingerprints(texts: Iterable[str], features: str = "word") -> np.ndarray:
    """uint64 simhash of each text over the named FEATURES, equal to
    ``Simhash(FEATURES[features](text)).value``."""
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose from {', '.join(FEATURES)}")
    parts = [_fingerprint_chunk(chunk, features) for chunk in chunks(texts)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _fingerprint_chunk(texts: list[str], features: str) -> np.ndarray:
    distinct = list(dict.fromkeys(texts))  # a repeated text is fingerprinted once
    if _simhash is not None:
        # The extension lower-cases ASCII itself; other texts are folded here.
        folded = [text if text.isascii() else fold(text) for text in distinct]
        values = np.frombuffer(_simhash.fingerprints_folded(folded, features), dtype=np.uint64)
    else:
        # ASCII texts (nearly all) and the others apart: a batch of ASCII is folded as bytes.
        values = np.zeros(len(distinct), dtype=np.uint64)
        is_ascii = np.fromiter(map(str.isascii, distinct), dtype=bool, count=len(distinct))
        for part in (is_ascii, ~is_ascii):
            rows = np.flatnonzero(part)
            if len(rows):
                values[rows] = _CHUNK[features](list(compress(distinct, part)))
    if len(distinct) == len(texts):
        return values
    position = dict(zip(distinct, range(len(distinct))))
    return values[np.fromiter(map(position.__getitem__, texts), dtype=np.int64, count=len(texts))]


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


def _pair_keys(left: np.ndarray, right: np.ndarray, n: int) -> np.ndarray:
    """Each pair as one int64, low * n + high."""
    return np.minimum(left, right).astype(np.int64) * n + np.maximum(left, right)


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
    seen = np.unique(_pair_keys(members[same_link], member_leads[same_link], n))
    del group_of, free_sorted, free_positions, first_free, members, member_leads, same_link

    distinct = values[leads]
    distinct_fixed = ~has_free
    for shift, mask in block_masks(k):
        keys = (distinct >> np.uint64(shift)) & np.uint64(mask)
        block_order, block_starts, block_ends = _groups(keys)
        del keys
        multi = (block_ends - block_starts) > 1
        found = []
        for left, right in _pairs_within_groups(block_order, block_starts[multi], block_ends[multi]):
            keep = hamming(distinct[left], distinct[right]) <= k
            keep &= ~(distinct_fixed[left] & distinct_fixed[right])
            found.append(_pair_keys(leads[left[keep]], leads[right[keep]], n))
        # The same pair can share several blocks: memory holds each once, not once per block.
        seen = np.union1d(seen, np.concatenate(found)) if found else seen
    low, high = seen // n, seen % n
    return low, high, hamming(values[low], values[high])
