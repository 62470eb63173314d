"""Give freed heap memory back to the operating system after unloading a session."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (absent on musl)
        return libc
    except (OSError, AttributeError):
        return None


MEASURING = threading.Lock()
"""Held while a session is created (and measured) or freed: the heap difference around
a load then belongs to that session alone."""


def release_memory() -> bool:
    """``malloc_trim(0)`` on glibc; True when memory was returned to the OS."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_in_use() -> int | None:
    """Bytes malloc has handed out and not taken back (glibc ``mallinfo2``), or None.

    Unlike RSS this does not miss memory a new session reuses after an old one was
    freed, so the difference around a load is what the session holds.
    """
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return None
    fn.restype = _MallInfo2
    info = fn()
    return int(info.uordblks + info.hblkhd)
