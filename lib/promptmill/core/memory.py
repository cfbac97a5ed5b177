"""Hand memory freed between the phases of a large step back to the operating system.

glibc keeps freed heap memory for reuse, and the arrays a pass over millions of
items makes and drops (candidate pairs, sort keys) leave hundreds of MB of it in
holes it cannot reuse for the next phase's larger arrays: the process's resident
size grows by that much, not by what it holds. `malloc_trim` returns those pages.
"""

import contextlib
import ctypes
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (macOS, musl, Windows): there freed memory is returned its own way."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return ctypes.CDLL(None).malloc_trim
    return None


def release_freed_memory() -> None:
    """Return the free pages of the heap to the operating system (a few ms; nothing where unsupported)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
