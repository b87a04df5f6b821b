"""Giving freed memory back to the system after a session ends.

Frames, audio buffers and codec contexts come and go with sessions on many threads; glibc keeps the
freed pages in its per-thread arenas, so a server's resident memory stays at its peak long after
the load is gone. ``malloc_trim`` returns them. It is cheap but not free, so it runs at most every
``MIN_INTERVAL_S`` seconds; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time
from collections.abc import Callable

MIN_INTERVAL_S = 2.0

_lock = threading.Lock()
_last = -MIN_INTERVAL_S


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def trim_heap(force: bool = False) -> bool:
    """Return freed heap pages to the system (glibc); returns whether a trim ran."""
    global _last
    with _lock:
        now = time.monotonic()
        if not force and now - _last < MIN_INTERVAL_S:
            return False
        _last = now
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
