"""One prompt per line, from .txt or .txt.gz, streamed: a 10-million-line file is never held in memory.

The file is read in blocks of whole lines and each block is normalised and hashed
with a few whole-block byte operations instead of one Python call chain per
line; only lines with non-ASCII characters take the per-line
:func:`promptmill.text.normalize`. The result is the same as normalising each
line on its own (a test checks that).
"""

from __future__ import annotations

import gzip
import hashlib
import multiprocessing
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full

from promptmill.collect import Collector, SourceInfo, file_sha256
from promptmill.progress import bar
from promptmill.text import normalize

MAX_LINE_BYTES = 16_384
BLOCK_BYTES = 1 << 22
_EDGE_BYTES = b" \t\r\n.,;:!?-_*\"'`"
# ASCII characters str.split() treats as whitespace, besides space and newline, become spaces.
_ASCII_SPACE_TO_SPACE = bytes.maketrans(b"\t\r\x0b\x0c\x1c\x1d\x1e\x1f", b" " * 8)
_SPACE_RUN = re.compile(rb"  +")


def open_binary(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def source_info(path: Path) -> SourceInfo:
    return SourceInfo(kind="text", uri=str(path), sha256=file_sha256(path), bytes=os.path.getsize(path))


@dataclass
class ParsedBlock:
    """Lines of one block: kept prompts by index, plus the problems and blanks found."""

    indexes: range | list[int]
    texts: list[str]
    hashes: list[int] | tuple[int, ...]
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    blanks: int = 0


def normalized_bytes(block: bytes, raw_lines: list[bytes]) -> list[bytes]:
    """UTF-8 of normalize(line) for every line of a block (lines joined by b"\\n")."""
    folded = block.lower().translate(_ASCII_SPACE_TO_SPACE)
    if b"  " in folded:
        folded = _SPACE_RUN.sub(b" ", folded)
    strip = bytes.strip
    normalized = [strip(line, _EDGE_BYTES) for line in folded.split(b"\n")]
    if not block.isascii():
        for index in [i for i, line in enumerate(raw_lines) if not line.isascii()]:
            try:
                normalized[index] = normalize(raw_lines[index].decode("utf-8")).encode("utf-8")
            except UnicodeDecodeError:
                normalized[index] = b""
    return normalized


def hashes_of(normalized: list[bytes]) -> tuple[int, ...]:
    """promptmill.text.text_hash of each line, with one struct.unpack for all of them."""
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(line, digest_size=8).digest() for line in normalized])
    return struct.unpack(f">{len(normalized)}q", digests)


def parse_block(block: bytes, max_line_bytes: int = MAX_LINE_BYTES) -> ParsedBlock:
    """Split, decode, strip, normalise and hash the lines of a block (no trailing newline)."""
    raw_lines = block.split(b"\n")
    errors: list[tuple[int, str, str]] = []
    bad: set[int] = set()
    if max(map(len, raw_lines)) > max_line_bytes:
        for index, line in enumerate(raw_lines):
            if len(line) > max_line_bytes:
                errors.append((index, "line too long", f"over {max_line_bytes} bytes"))
                bad.add(index)
    try:
        texts = [line.strip() for line in block.decode("utf-8").split("\n")]
    except UnicodeDecodeError:
        texts = []
        for index, line in enumerate(raw_lines):
            try:
                texts.append(line.decode("utf-8").strip())
            except UnicodeDecodeError as exc:
                texts.append("")
                if index not in bad:
                    errors.append((index, "not utf-8", str(exc)))
                    bad.add(index)
    normalized = normalized_bytes(block, raw_lines)
    hashes = hashes_of(normalized)
    blanks = 0
    if bad or "" in texts or b"" in normalized:
        keep = []
        for index, (text, norm) in enumerate(zip(texts, normalized)):
            if index in bad:
                continue
            if not text:
                blanks += 1
            elif not norm:
                errors.append((index, "empty", "no text after normalisation"))
            else:
                keep.append(index)
        return ParsedBlock(keep, [texts[i] for i in keep], [hashes[i] for i in keep], sorted(errors), blanks)
    return ParsedBlock(range(len(texts)), texts, hashes)


def read_blocks(fh, block_bytes: int = BLOCK_BYTES, max_line_bytes: int = MAX_LINE_BYTES):
    """Yield (block of whole lines without the final newline, bytes consumed).

    A line longer than max_line_bytes is never held whole: it is cut down to
    max_line_bytes + 1 bytes, enough to be reported as too long."""
    pending = b""
    overlong = False
    while chunk := fh.read(block_bytes):
        consumed = len(chunk)
        if overlong:
            cut = chunk.find(b"\n")
            if cut < 0:
                yield None, consumed
                continue
            overlong = False
            chunk = chunk[cut:]
        data = pending + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > max_line_bytes:
                pending, overlong = data[:max_line_bytes + 1], True
            else:
                pending = data
            yield None, consumed
            continue
        pending = data[cut + 1:]
        if len(pending) > max_line_bytes:
            pending, overlong = pending[:max_line_bytes + 1], True
        yield data[:cut], consumed
    if pending:
        yield pending, 0


def parsed_blocks(path: Path, done_upto: int, max_line_bytes: int, block_bytes: int):
    """Yield (first position, ParsedBlock or None when already committed, file offset) per block."""
    position = 0  # lines read so far; the first line is position 1
    with open_binary(path) as fh:
        raw_fh = fh.fileobj if isinstance(fh, gzip.GzipFile) else fh
        for block, _ in read_blocks(fh, block_bytes, max_line_bytes):
            if block is None:
                continue
            first = position + 1
            position += block.count(b"\n") + 1
            parsed = None
            if position > done_upto:
                if first <= done_upto:  # resume inside this block
                    skip = done_upto - first + 1
                    block = block.split(b"\n", skip)[-1]
                    first += skip
                parsed = parse_block(block, max_line_bytes)
            yield first, parsed, position, raw_fh.tell()


def _produce(path, done_upto, max_line_bytes, block_bytes, queue, parent_pid):
    """Worker process: parse blocks ahead of the writer; exit if the writer was killed."""
    for item in parsed_blocks(path, done_upto, max_line_bytes, block_bytes):
        while True:
            try:
                queue.put(item, timeout=1)
                break
            except Full:
                if os.getppid() != parent_pid:
                    os._exit(0)
    queue.put(None)


def parsed_blocks_in_worker(path: Path, done_upto: int, max_line_bytes: int, block_bytes: int):
    """parsed_blocks, computed in a forked process so parsing overlaps the database writes."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue(maxsize=4)
    worker = context.Process(target=_produce, daemon=True,
                             args=(path, done_upto, max_line_bytes, block_bytes, queue, os.getpid()))
    worker.start()
    try:
        while (item := queue.get()) is not None:
            yield item
    finally:
        worker.kill()
        worker.join()


def collect_lines(collector: Collector, path: Path, max_line_bytes: int = MAX_LINE_BYTES,
                  block_bytes: int = BLOCK_BYTES, worker: bool | None = None) -> int:
    """Feed every line to the collector; return the number of lines read.

    Blank lines are counted and skipped; undecodable, over-long or punctuation-only
    lines become item errors. Lines an earlier killed run committed are skipped.
    Files bigger than a few blocks are parsed in a worker process (``worker=None``)."""
    run = collector.run
    size = os.path.getsize(path)
    if worker is None:
        worker = size > 4 * block_bytes and "fork" in multiprocessing.get_all_start_methods()
    blocks = (parsed_blocks_in_worker if worker else parsed_blocks)(
        path, collector.done_upto, max_line_bytes, block_bytes)
    position, last_offset = 0, 0
    with bar(size, f"text {path.name}", "B", True) as progress:
        for first, parsed, lines_read, offset in blocks:
            position = lines_read
            if parsed is not None:
                for index, reason, detail in parsed.errors:
                    collector.add_error(first + index, reason, detail)
                indexes = parsed.indexes
                positions = (range(first, first + len(indexes)) if isinstance(indexes, range)
                             else [first + i for i in indexes])
                collector.add_text_rows(positions, parsed.texts, parsed.hashes)
                if parsed.blanks:
                    run.add("blank lines skipped", parsed.blanks)
            progress.update(offset - last_offset)
            last_offset = offset
    return position
