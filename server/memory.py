"""Giving memory that Python freed back to the system, so that the server's resident size comes
back down after a storm of big requests.

Python frees what a request used, but glibc's malloc keeps freed blocks in its heaps for reuse:
the kept differences of long misses (tens of kilobytes each) are freed in the middle of a heap
when the journal forgets them, and that space stays resident. Measured: 300 misses with
200 KB bodies left the process at 149 MB while Python held 36 MB; ``malloc_trim(0)`` brought it
to 90 MB. So:

- ``tune_allocator`` (called once by the command line, which owns the process) fixes glibc's
  mmap threshold at 128 KiB: blocks that size and larger (request bodies, their parsed copies)
  get their own mappings and are unmapped when freed. Left alone, glibc raises the threshold
  after the first big block is freed, up to 32 MiB, and later bodies come from the heap;
- ``Trimmer.soon`` runs ``malloc_trim(0)`` once, shortly after a lot was freed (the journal
  says when), in a thread of its own: never on the event loop, at most once per interval.

Elsewhere than glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
from typing import Any

log = logging.getLogger("cassette_server")

MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library to load
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold (see the module docstring); False where there is no glibc."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Give the free memory at the top and in the middle of glibc's heaps back to the system
    (a few milliseconds for a heap of a hundred megabytes). True when something was released."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


class Trimmer:
    """Trims once, ``delay`` seconds after the first call to ``soon`` since the last trim: a
    storm of calls costs one trim per ``delay``, and the last call is always followed by one."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._pending: threading.Timer | None = None

    def soon(self) -> None:
        if _LIBC is None:
            return
        with self._lock:
            if self._pending is not None:
                return
            self._pending = threading.Timer(self.delay, self._run)
            self._pending.daemon = True  # a process that exits does not wait for it
            self._pending.start()

    def _run(self) -> None:
        with self._lock:
            self._pending = None
        trim()


FULL_COLLECTION_AFTER = 100  # collections of the middle generation between full ones (CPython's default: 10)


def freeze_startup_objects() -> None:
    """Leave what startup built (modules, the loaded cassettes, their index) out of the cyclic
    garbage collector's work: it scans every tracked object in each full collection, and a full
    collection runs on the event loop, stalling every stream in flight. Measured with 500 paced
    streams and a small cassette directory: one full collection mid-run took 59 ms, and p99
    lateness went from 12 ms (collector off) to 75–100 ms; frozen, the collector scans only what
    came after. Frozen objects are still freed when nothing refers to them (a reload replacing
    cassettes frees the old ones); only cyclic garbage among them would stay, and startup is
    collected first. Called by the command line, which owns the process (the library does not
    freeze the objects of the process it runs in).

    Full collections are also made rarer (one per ``FULL_COLLECTION_AFTER`` collections of the
    middle generation, not 10): with 500 paced streams p99 lateness went from 14–25 ms (frozen,
    default thresholds) to 8–11 ms, as with the collector off. Young collections are as often
    as ever, so cyclic garbage of short requests is still collected at once."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
