"""One prompt per line, from .txt or .txt.gz, streamed: a 10-million-line file is never held in memory.

The file is read in blocks of whole lines and each block is normalised and hashed
with a few whole-block byte and array operations instead of one Python call chain
per line; only lines with non-ASCII characters take the per-line
:func:`promptmill.text.normalize`. The result is the same as normalising each
line on its own (tests check that). Big files are parsed in a forked worker while
the main process only writes (multi-row INSERTs, see :class:`Collector`).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import gzip
import hashlib
import multiprocessing
import os
import signal
import struct
import zlib
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from queue import Empty, Full

from promptmill.collect.base import Collector, SourceInfo, file_sha256
from promptmill.core.errors import PromptmillError
from promptmill.core.progress import bar
from promptmill.core.text import _EDGE_PUNCTUATION, normalize

MAX_LINE_BYTES = 16_384
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
BLOCK_BYTES = 1 << 20
# Parsed blocks the worker may run ahead of the writer: more than one batch of rows, so it
# keeps parsing while a batch is written.
QUEUED_BLOCKS = 8
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_EDGE_BYTES = _EDGE_PUNCTUATION.encode()
# Upper case ASCII to lower case, and the ASCII characters str.split() treats as whitespace
# (besides space and newline) to spaces: what normalize() does to ASCII, in one pass.
_FOLD_ASCII = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\t\r\x0b\x0c\x1c\x1d\x1e\x1f",
                              b"abcdefghijklmnopqrstuvwxyz" + b" " * 8)


def open_binary(path: Path):
    """The file's bytes as UTF-8: gzip unpacked, UTF-16 with a byte order mark (Notepad's
    "Unicode") recoded as it is read."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic in UTF16_BOMS:
        return codecs.EncodedFile(open(path, "rb"), "utf-8", "utf-16")
    return open(path, "rb")


def underlying_file(fh):
    """(the file on disk under FH, whether FH's bytes are the file's own) for offsets and re-reads."""
    if isinstance(fh, gzip.GzipFile):
        return fh.fileobj, False
    if isinstance(fh, codecs.StreamRecoder):
        return fh.stream, False
    return fh, True


def source_info(path: Path) -> SourceInfo:
    return SourceInfo(kind="text", uri=str(path), sha256=file_sha256(path), bytes=os.path.getsize(path))


@dataclass
class ParsedBlock:
    """Lines of one block: kept prompts by index, plus the problems and blanks found.

    It holds the block's bytes and the packed 8-byte hashes rather than Python
    objects per line, so the parse worker hands it to the writer as a few memory
    copies; building the texts there costs the writer less than unpickling them."""

    block: bytes
    indexes: range | list[int]
    digests: bytes  # big-endian signed 64-bit norm hash of each kept line
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    blanks: int = 0
    strip: list[int] = field(default_factory=list)  # ASCII lines with whitespace at an edge
    non_ascii: dict[int, str] = field(default_factory=dict)  # such lines, decoded and stripped

    @property
    def texts(self) -> list[str]:
        """The kept lines, decoded and stripped.

        Latin-1 decodes a block in one cheap pass and is exact for ASCII lines; the
        other lines were decoded as UTF-8 by the parser already."""
        texts = self.block.decode("latin-1").split("\n")
        for index in self.strip:
            texts[index] = texts[index].strip()
        for index, text in self.non_ascii.items():
            texts[index] = text
        return texts if isinstance(self.indexes, range) else [texts[i] for i in self.indexes]

    @property
    def hashes(self) -> tuple[int, ...]:
        """promptmill.text.text_hash of each kept line."""
        return struct.unpack(f">{len(self.indexes)}q", self.digests)


@dataclass
class LineLayout:
    """Where a block's lines are and which need more than the common path, found with array
    operations over the whole block: a bytes search for b"  " crawls, as single spaces are
    everywhere, and a Python pass per line is what the block path avoids."""

    spans: dict[int, tuple[int, int]]  # (start, end) of each non-ASCII line, by index
    too_long: list[int]
    space_runs: list[int]  # two spaces in a row
    edge_spaces: list[int]  # a space first or last
    non_ascii: list[int]


def line_layout(folded: bytes, max_line_bytes: int) -> LineLayout:
    import numpy as np

    codes = np.frombuffer(folded, dtype=np.uint8)
    if not len(codes):
        return LineLayout({}, [], [], [], [])
    spaces = codes == 32
    newlines = np.flatnonzero(codes == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(codes)]))  # exclusive
    filled = starts < ends
    first = spaces[np.minimum(starts, len(codes) - 1)]
    last = spaces[np.maximum(ends - 1, 0)]
    non_ascii = _distinct(np.searchsorted(newlines, np.flatnonzero(codes >= 128)))
    return LineLayout(
        spans=dict(zip(non_ascii.tolist(), zip(starts[non_ascii].tolist(), ends[non_ascii].tolist()))),
        too_long=np.flatnonzero(ends - starts > max_line_bytes).tolist(),
        space_runs=_distinct(np.searchsorted(newlines, np.flatnonzero(spaces[1:] & spaces[:-1]))).tolist(),
        edge_spaces=np.flatnonzero(filled & (first | last)).tolist(),
        non_ascii=non_ascii.tolist(),
    )


def _distinct(ascending):
    """The distinct values of an ascending array (np.unique would sort it again)."""
    import numpy as np

    return ascending[np.concatenate(([True], ascending[1:] != ascending[:-1]))] if len(ascending) else ascending


def _hash_digests(normalized: list[bytes]) -> bytes:
    """The 8-byte blake2b digest of each line, concatenated (a copied hasher starts cheaper)."""
    template = hashlib.blake2b(digest_size=8)
    digests = []
    append = digests.append
    for line in normalized:
        hasher = template.copy()
        hasher.update(line)
        append(hasher.digest())
    return b"".join(digests)


def parse_block(block: bytes, max_line_bytes: int = MAX_LINE_BYTES) -> ParsedBlock:
    """Split, check, normalise and hash the lines of a block (no trailing newline).

    ASCII lines are normalised with whole-block byte operations (lower case and
    other whitespace to spaces in one translate), then stripped of edge
    punctuation line by line; the few lines with runs of spaces are collapsed and
    lines with other characters go through :func:`promptmill.text.normalize` itself."""
    folded = block.translate(_FOLD_ASCII)
    layout = line_layout(folded, max_line_bytes)
    problems = {index: ("line too long", f"over {max_line_bytes} bytes") for index in layout.too_long}
    folded_lines = folded.split(b"\n")
    normalized = list(map(bytes.strip, folded_lines, repeat(_EDGE_BYTES)))
    for index in layout.space_runs:
        normalized[index] = b" ".join(normalized[index].split())
    blank_non_ascii = set()
    non_ascii = {}
    for index in layout.non_ascii:
        start, end = layout.spans[index]
        try:
            text = block[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.setdefault(index, ("not utf-8", str(exc)))
            continue
        non_ascii[index] = stripped = text.strip()
        if not stripped:
            blank_non_ascii.add(index)
        normalized[index] = normalize(stripped).encode("utf-8")
    digests = _hash_digests(normalized)
    if not problems and b"" not in normalized:
        return ParsedBlock(block, range(len(normalized)), digests, strip=layout.edge_spaces, non_ascii=non_ascii)
    # Only a line that normalises to nothing can be blank: whitespace alone, or punctuation too.
    keep, errors, blanks = [], [], 0
    for index, norm in enumerate(normalized):
        if index in problems:
            errors.append((index, *problems[index]))
        elif norm:
            keep.append(index)
        elif not folded_lines[index].strip() or index in blank_non_ascii:
            blanks += 1
        else:
            errors.append((index, "empty", "no text after normalisation"))
    digests = b"".join([digests[8 * i:8 * i + 8] for i in keep])
    return ParsedBlock(block, keep, digests, errors, blanks, layout.edge_spaces, non_ascii)


def read_blocks(fh, block_bytes: int = BLOCK_BYTES, max_line_bytes: int = MAX_LINE_BYTES):
    """Yield (block of whole lines without the final newline, bytes consumed, where the block
    starts in the stream, or None when it is not the stream's bytes as they are).

    A line longer than max_line_bytes is never held whole: it is cut down to
    max_line_bytes + 1 bytes, enough to be reported as too long."""
    pending, pending_at = b"", 0  # pending_at is None once pending was cut short
    overlong = False
    offset = 0
    while chunk := fh.read(block_bytes):
        consumed, chunk_at = len(chunk), offset
        offset += consumed
        if overlong:
            cut = chunk.find(b"\n")
            if cut < 0:
                yield None, consumed, None
                continue
            overlong = False
            chunk = chunk[cut:]
        data, data_at = pending + chunk, pending_at if pending else chunk_at
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > max_line_bytes:
                pending, pending_at, overlong = data[:max_line_bytes + 1], None, True
            else:
                pending, pending_at = data, data_at
            yield None, consumed, None
            continue
        pending = data[cut + 1:]
        pending_at = None if data_at is None else data_at + cut + 1
        if len(pending) > max_line_bytes:
            pending, pending_at, overlong = pending[:max_line_bytes + 1], None, True
        yield data[:cut], consumed, data_at
    if pending:
        yield pending, 0, pending_at


class CarriageReturns:
    """A file whose lines end in a lone CR (classic Mac OS), read as if they ended in LF."""

    def __init__(self, fh):
        self.fh = fh

    def read(self, size: int) -> bytes:
        return self.fh.read(size).replace(b"\r", b"\n")


def parsed_blocks(path: Path, done_upto: int, max_line_bytes: int, block_bytes: int):
    """Yield (first position, ParsedBlock or None when already committed, lines read, file offset,
    where the parsed lines start in the file or None) per block. Damaged compressed data (a
    truncated .txt.gz) ends it with a PromptmillError after the lines before the damage."""
    try:
        yield from _parsed_blocks(path, done_upto, max_line_bytes, block_bytes)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PromptmillError(f"{path.name} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                              "the lines decoded before it are stored") from None


def _parsed_blocks(path: Path, done_upto: int, max_line_bytes: int, block_bytes: int):
    position = 0  # lines read so far; the first line is position 1
    with open_binary(path) as fh:
        raw_fh, as_is = underlying_file(fh)
        head = fh.peek(block_bytes)[:block_bytes] if hasattr(fh, "peek") else b""
        cr_only = b"\r" in head and b"\n" not in head
        lines = CarriageReturns(fh) if cr_only else fh
        as_is = as_is and not cr_only  # lines ended in CR are not the file's bytes as they are
        for block, _, block_at in read_blocks(lines, block_bytes, max_line_bytes):
            if block is None:
                continue
            first = position + 1
            if first == 1 and block.startswith(UTF8_BOM):  # Notepad's and Excel's UTF-8 mark, not text
                block, block_at = block[len(UTF8_BOM):], None if block_at is None else block_at + len(UTF8_BOM)
            position += block.count(b"\n") + 1
            parsed = None
            if position > done_upto:
                if first <= done_upto:  # resume inside this block
                    skip = done_upto - first + 1
                    rest = block.split(b"\n", skip)[-1]
                    block_at = None if block_at is None else block_at + len(block) - len(rest)
                    block, first = rest, first + skip
                parsed = parse_block(block, max_line_bytes)
            yield first, parsed, position, raw_fh.tell(), block_at if as_is else None


def _produce(path, done_upto, max_line_bytes, block_bytes, queue, parent_pid):
    """Worker process: parse blocks ahead of the writer; exit if the writer was killed.

    A block that is the file's bytes as they are travels as its place in the file: the
    writer reads it back from the page cache for less than a trip through the pipe. A
    failure travels as ("failed", why)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: SIGTERM simply ends it
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    _die_with_parent(parent_pid)
    try:
        for first, parsed, position, offset, block_at in parsed_blocks(path, done_upto, max_line_bytes,
                                                                       block_bytes):
            span = None
            if parsed is not None and block_at is not None:
                span, parsed.block = (block_at, len(parsed.block)), b""
            _put(queue, (first, parsed, position, offset, span), parent_pid)
    except BaseException as exc:  # noqa: BLE001 - whatever it was, the writer must hear of it
        _put(queue, ("failed", str(exc) if isinstance(exc, PromptmillError) else f"{type(exc).__name__}: {exc}"),
             parent_pid)
    else:
        _put(queue, None, parent_pid)


def _die_with_parent(parent_pid: int):
    """On Linux, have the kernel end this worker when the writer dies (kill -9 included): a worker
    done parsing would otherwise wait forever to flush its last blocks into a pipe nobody reads."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the writer died before the request was made
        os._exit(0)


def _put(queue, item, parent_pid):
    while True:
        try:
            queue.put(item, timeout=1)
            return
        except Full:
            if os.getppid() != parent_pid:
                os._exit(0)


def parsed_blocks_in_worker(path: Path, done_upto: int, max_line_bytes: int, block_bytes: int):
    """parsed_blocks, computed in a forked process so parsing overlaps the database writes.
    Close it (or exhaust it) so the worker is ended on every path out."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue(maxsize=QUEUED_BLOCKS)
    worker = context.Process(target=_produce, daemon=True,
                             args=(path, done_upto, max_line_bytes, block_bytes, queue, os.getpid()))
    worker.start()
    try:
        with open(path, "rb") as fh:
            while (item := _get(queue, worker)) is not None:
                if item[0] == "failed":
                    raise PromptmillError(item[1])
                first, parsed, position, offset, span = item
                if span is not None:
                    parsed.block = os.pread(fh.fileno(), span[1], span[0])
                yield first, parsed, position, offset, span
    finally:
        worker.kill()
        worker.join()


def _get(queue, worker):
    """The next item from the worker; a worker that died without a word is a failure, not a hang."""
    while True:
        try:
            return queue.get(timeout=1)
        except Empty:
            if not worker.is_alive():
                with contextlib.suppress(Empty):
                    return queue.get(timeout=1)
                raise PromptmillError(f"the parser process ended unexpectedly (exit code {worker.exitcode})") from None


def collect_lines(collector: Collector, path: Path, max_line_bytes: int = MAX_LINE_BYTES,
                  block_bytes: int = BLOCK_BYTES, worker: bool | None = None) -> int:
    """Feed every line to the collector; return the number of lines read.

    Blank lines are counted and skipped; undecodable, over-long or punctuation-only
    lines become item errors. Lines an earlier killed run committed are skipped.
    Files bigger than a few blocks are parsed in a worker process (``worker=None``)."""
    size = os.path.getsize(path)
    if worker is None:
        worker = size > 4 * block_bytes and "fork" in multiprocessing.get_all_start_methods()
    blocks = (parsed_blocks_in_worker if worker else parsed_blocks)(
        path, collector.done_upto, max_line_bytes, block_bytes)
    position, last_offset = 0, 0
    with contextlib.closing(blocks), bar(size, f"text {path.name}", "B", True) as progress:
        try:
            for first, parsed, lines_read, offset, _ in blocks:
                position = lines_read
                if parsed is not None:
                    _add_block(collector, first, parsed)
                progress.update(offset - last_offset)
                last_offset = offset
        except PromptmillError:
            collector.flush()  # damaged input: keep the lines read before the damage
            raise
    return position


def _add_block(collector: Collector, first: int, parsed: ParsedBlock):
    for index, reason, detail in parsed.errors:
        collector.add_error(first + index, reason, detail)
    indexes = parsed.indexes
    positions = (range(first, first + len(indexes)) if isinstance(indexes, range)
                 else [first + i for i in indexes])
    collector.add_text_rows(positions, parsed.texts, parsed.hashes)
    if parsed.blanks:
        collector.run.add("blank lines skipped", parsed.blanks)
