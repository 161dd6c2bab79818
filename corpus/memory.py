"""Give a Ray worker's freed memory back to the OS between tasks.

Workers are reused across tasks and stages, and an idle worker otherwise keeps the peak of its
last batch: Arrow's allocator keeps freed pages (measured ~200 MB a worker after encoding 250k
rows), and so does glibc's malloc for NumPy's large temporaries (seen as ~500 MB `ray::IDLE`
workers in the corpus benchmark).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl, macOS)


_LIBC = _libc()


def release_memory() -> None:
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
