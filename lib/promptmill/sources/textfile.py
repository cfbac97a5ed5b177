"""One prompt per line, from .txt or .txt.gz, streamed: a 10-million-line file is never held in memory."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from promptmill.collect import Collector, SourceInfo, file_sha256
from promptmill.progress import bar

MAX_LINE_BYTES = 16_384
_READ_CHUNK = 1 << 16


def open_binary(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def source_info(path: Path) -> SourceInfo:
    return SourceInfo(kind="text", uri=str(path), sha256=file_sha256(path), bytes=os.path.getsize(path))


def collect_lines(collector: Collector, path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> int:
    """Feed every line to the collector; return the number of lines read.

    Blank lines are counted and skipped; undecodable or over-long lines become item errors."""
    run = collector.run
    position = 0
    with open_binary(path) as fh, bar(os.path.getsize(path), f"text {path.name}", "B", True) as progress:
        raw_fh = fh.fileobj if isinstance(fh, gzip.GzipFile) else fh
        last_offset = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                break
            position += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while (rest := fh.readline(_READ_CHUNK)) and not rest.endswith(b"\n"):
                    pass
                if not collector.seen(position):
                    collector.add_error(position, "line too long", f"over {max_line_bytes} bytes")
                continue
            if collector.seen(position):
                continue
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                collector.add_error(position, "not utf-8", str(exc))
                continue
            if not text:
                run.add("blank lines skipped")
                continue
            collector.add_prompt(position, text)
            if position % 50_000 == 0:
                offset = raw_fh.tell()
                progress.update(offset - last_offset)
                last_offset = offset
        progress.update(os.path.getsize(path) - last_offset)
    return position
