"""The errors the library raises; the command line turns each into one line and an exit status."""

import errno
import sqlite3


class PromptmillError(Exception):
    """A problem the user can act on, said in one line."""

    exit_code = 1


class BadInput(PromptmillError):
    """An unusable command or input (missing file, wrong option, unknown preset): exit 2."""

    exit_code = 2


class RunStopped(PromptmillError):
    """The run can't go on (no quota left): exit 1, results so far are kept."""


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def storage_error(exc: BaseException) -> PromptmillError | None:
    """A database or disk failure (full disk, read-only file or mount, a file that is not a database)
    as one line for the user, or None when EXC is something else."""
    if isinstance(exc, sqlite3.Error):
        return PromptmillError(f"database: {exc}")
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        return PromptmillError(f"{exc.strerror or exc}{where}")
    return None
