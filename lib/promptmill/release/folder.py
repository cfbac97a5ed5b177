"""OUT, the folder a release is written into: locked, staged, and only ever touching its own files.

One export at a time holds OUT's lock (``.promptmill-lock``); a second one
fails at once with one line instead of interleaving its files. Files are
written under ``.promptmill-staging/`` and moved into place only when all of
them are complete. The marker (``.promptmill-export.json``) lists every file
the release wrote with its sha256: a re-export replaces and removes only
those, so whatever else is in OUT (a user's notes, kohya's ``.npz`` latents, a
regularisation folder) stays, and ``check`` and ``push`` can tell the
release's files from the rest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from promptmill.core.errors import BadInput, PromptmillError
from promptmill.core.progress import bar

MARKER = ".promptmill-export.json"
STAGING = ".promptmill-staging"
LOCK = ".promptmill-lock"
MARKER_TMP = MARKER + ".tmp"
OWN_ENTRIES = (MARKER, MARKER_TMP, STAGING, LOCK)


class FolderBusy(PromptmillError):
    """Another export holds OUT's lock."""


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def manifest_sha256(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_marker(out: Path) -> dict:
    """The marker of the export in OUT ({} when there is none or it is unreadable)."""
    try:
        marker = json.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def unchanged_since_export(out: Path, marker: dict) -> bool:
    """True when every file the marker lists is there with its sha256 (reading them costs far less than
    writing them again, and no edit goes unnoticed)."""
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False
    try:
        with bar(len(files), "checking OUT", "file") as progress:
            for name, sha in files.items():
                if sha256_file(Path(out) / name) != sha:
                    return False
                progress.update()
    except OSError:
        return False
    return True


def is_own(relative: str) -> bool:
    """True for the export machinery's own entries, which are never part of a release."""
    return relative.split("/", 1)[0] in OWN_ENTRIES


def folder_files(out: Path) -> set[str]:
    """Every regular file under OUT as a relative POSIX path, the machinery's own left out."""
    found = set()
    for root, dirs, files in os.walk(out):
        relative_root = Path(root).relative_to(out).as_posix()
        if relative_root == ".":
            dirs[:] = [d for d in dirs if d not in OWN_ENTRIES]
        for name in files:
            relative = name if relative_root == "." else f"{relative_root}/{name}"
            if not is_own(relative) and not os.path.islink(os.path.join(root, name)):
                found.add(relative)
    return found


@contextlib.contextmanager
def locked(out: Path):
    """Hold OUT's lock for the duration; another holder makes this fail with one line."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is a file, not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise FolderBusy(f"{out} is being written by another export (pid {holder}); "
                             f"run this one when it has finished") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            if not (out / MARKER).exists():  # nothing exported here: leave the folder as it was found
                os.unlink(out / LOCK)
                if created and not os.listdir(out):
                    out.rmdir()
    finally:
        os.close(fd)


class ExportFolder:
    """OUT, written through a staging folder inside it (use it while holding :func:`locked`).

    OUT must be missing, empty, or an earlier promptmill export. Known hashes
    (image blobs are named by theirs) spare reading files twice for the manifest.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.previous: dict[str, str] = read_marker(self.out).get("files", {})
        if self.out.is_dir() and not (self.out / MARKER).exists():
            foreign = sorted(entry for entry in os.listdir(self.out) if entry not in OWN_ENTRIES)
            if foreign:
                raise BadInput(f"{self.out} is not empty and not a promptmill export (it has {foreign[0]!r}); "
                               f"choose an empty folder")
        self.staging = self.out / STAGING
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.known_sha256: dict[str, str] = {}

    def path(self, relative: str) -> Path:
        """The staging path of a file; creates its folder."""
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_bytes(self, relative: str, data: bytes):
        self.path(relative).write_bytes(data)
        self.known_sha256[relative] = hashlib.sha256(data).hexdigest()

    def write_text(self, relative: str, text: str):
        self.write_bytes(relative, text.encode("utf-8"))

    def copy_blob(self, relative: str, blob: Path, sha256: str):
        shutil.copyfile(blob, self.path(relative))
        self.known_sha256[relative] = sha256

    def manifest(self) -> dict[str, str]:
        manifest = {}
        for path in sorted(p for p in self.staging.rglob("*") if p.is_file()):
            relative = path.relative_to(self.staging).as_posix()
            manifest[relative] = self.known_sha256.get(relative) or sha256_file(path)
        return manifest

    def commit(self, manifest: dict[str, str], marker: dict) -> list[str]:
        """Put the staged files in place of the previous release's; return the files in OUT that are not ours.

        The marker first claims both releases' files, so a kill while files move
        leaves nothing that the next run would mistake for a user's file."""
        present = folder_files(self.out)
        clashes = sorted((present & manifest.keys()) - self.previous.keys())
        if clashes:
            raise BadInput(f"{self.out / clashes[0]} exists and was not written by promptmill; move it away "
                           f"({len(clashes)} such file(s))")
        self._write_marker({**marker, "files": {**self.previous, **manifest}})
        for relative in sorted(self.previous.keys() - manifest.keys()):
            with contextlib.suppress(FileNotFoundError):
                (self.out / relative).unlink()
            self._remove_empty_parents(relative)
        for relative in sorted(manifest):
            target = self.out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / relative, target)
        shutil.rmtree(self.staging)
        self._write_marker({**marker, "files": manifest})
        return sorted(present - self.previous.keys() - manifest.keys())

    def _write_marker(self, marker: dict):
        tmp = self.out / MARKER_TMP
        tmp.write_text(json.dumps(marker, sort_keys=True, indent=1) + "\n")
        os.replace(tmp, self.out / MARKER)

    def _remove_empty_parents(self, relative: str):
        parent = (self.out / relative).parent
        while parent != self.out:
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent

    def abandon(self):
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.staging)
