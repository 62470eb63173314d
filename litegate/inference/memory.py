"""Give freed heap memory back to the operating system after unloading a session."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (absent on musl)
        return libc
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """``malloc_trim(0)`` on glibc; True when memory was returned to the OS."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
