"""Give memory freed by image and audio decoding back to the operating system (glibc; a no-op elsewhere).

A decode allocates tens to hundreds of MB in a worker thread. With glibc's defaults those blocks
come from per-thread arenas once the dynamic mmap threshold has grown past their size (it grows
to 32 MB after the first large free), and stay mapped after they are freed: a burst of decodes
left the API process holding 2.2 GB (bench/RESULTS.md). Two knobs fix it:

* :func:`map_large_allocations`: a fixed ``M_MMAP_THRESHOLD`` (1 MiB), so pixel buffers are
  always their own mappings and a ``free`` unmaps them at once;
* :func:`trim`: ``malloc_trim(0)`` after each decode returns what is left free in the arenas.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # <malloc.h>


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


@functools.cache
def map_large_allocations(threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold for this process (once); False where there is no glibc."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; decode memory may stay mapped after use")
    return ok


def trim() -> None:
    """Return free heap memory to the OS (cheap: milliseconds for a few hundred MB of arenas)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
