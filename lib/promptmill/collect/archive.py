"""A ZIP of images and sidecar captions, read member by member straight into the store.

Nothing is extracted to disk, so zip-slip cannot write anywhere; still, members
with absolute paths, ``..`` parts or symlink attributes are refused and recorded
(an archive made to attack extractors deserves a note). Limits on the member
count and the declared and actual uncompressed sizes stop zip bombs. A single
top folder (``images/a.png``, ``images/a.txt``) is looked through.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from promptmill.collect.base import SourceInfo, file_sha256
from promptmill.collect.imagefolder import MAX_IMAGE_BYTES, hidden
from promptmill.core.images import is_image_name

MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 20 * 1024**3


class ArchiveTooBig(ValueError):
    """The archive declares more members or bytes than the limits allow."""


def member_problem(info: zipfile.ZipInfo) -> tuple[str, str] | None:
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symlink", "symbolic links are not followed"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path", name
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path outside archive", name
    return None


class ZipTree:
    """The regular members of a ZIP by safe relative name, read with size limits."""

    def __init__(self, path: Path, max_members: int = MAX_MEMBERS, max_total_bytes: int = MAX_TOTAL_BYTES,
                 max_member_bytes: int = MAX_IMAGE_BYTES):
        self.zip = zipfile.ZipFile(path)
        infos = self.zip.infolist()
        if len(infos) > max_members:
            raise ArchiveTooBig(f"{len(infos):,} members, over the limit of {max_members:,} (--max-members)")
        declared = sum(info.file_size for info in infos)
        if declared > max_total_bytes:
            raise ArchiveTooBig(f"{declared:,} bytes uncompressed, over the limit of {max_total_bytes:,} "
                                "(--max-total-bytes)")
        self.max_total_bytes = max_total_bytes
        self.max_member_bytes = max_member_bytes
        self.read_bytes = 0
        self.problems: list[tuple[str, str, str]] = []
        safe = {}
        for info in infos:
            if info.is_dir():
                continue
            problem = member_problem(info)
            if problem:
                self.problems.append((info.filename, *problem))
            elif info.filename in safe:
                self.problems.append((info.filename, "duplicate member", "a member of the same name came first"))
            elif hidden(info.filename) or info.filename.startswith("__MACOSX/"):
                if is_image_name(info.filename) and not info.filename.startswith("__MACOSX/"):
                    self.problems.append((info.filename, "hidden file", "names starting with a dot are skipped"))
            else:
                safe[info.filename] = info
        tops = {name.split("/", 1)[0] for name in safe}
        strip = len(tops) == 1 and all("/" in name for name in safe)
        self.members = {(name.split("/", 1)[1] if strip else name): info for name, info in safe.items()}
        self.names = sorted(self.members)

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The member's bytes, reading at most the limits whatever its header claims."""
        limit = min(limit or self.max_member_bytes, self.max_total_bytes - self.read_bytes)
        with self.zip.open(self.members[name]) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"member over {limit:,} bytes (size or total limit)")
        self.read_bytes += len(data)
        return data

    def close(self):
        self.zip.close()


def source_info(path: Path, text_column: str, text_as: str) -> SourceInfo:
    return SourceInfo(kind="zip", uri=str(path), sha256=file_sha256(path),
                      options={"text_column": text_column, "text_as": text_as}, bytes=path.stat().st_size)
