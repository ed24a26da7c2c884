"""Memory that a burst of requests does not keep.

Two things held on to what a burst had used, measured with `python -m vit.bench.burst` (docs/performance.md):
- glibc's malloc keeps freed memory in its heaps, one arena per thread that allocated (Gradio answers on
  a pool of worker threads), and returns it to the system only when asked (`malloc_trim`);
- ONNX Runtime's CPU arena grows to the largest run (the score's batches of perturbed copies) and keeps
  that size (vit.runtime.engines shrinks it after the batched runs).

`Released` counts the requests in flight; when the last one has ended and no other has begun for two
seconds, the freed heap is handed back with `malloc_trim(0)`, so memory falls back after a burst, nothing
is trimmed while requests still run, and no answer waits for a trim.
`limit_arenas` caps the number of malloc arenas, so that many worker threads do not each keep a heap.
On a system without glibc both are no-ops.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt's parameter number (glibc malloc.h)
ARENAS = 2  # one per core of the 2-core host: the two requests that compute at once
IDLE_S = 2.0  # seconds with no request in flight before the heap is trimmed (a burst has ended)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (each thread that allocates may otherwise get its own); True if done."""
    return bool(LIBC is not None and LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Hand freed heap memory back to the system; True if some was."""
    return bool(LIBC is not None and LIBC.malloc_trim(0))


class Released:
    """`with released:` around every request; once the last one has ended and none has begun for `idle_s`,
    the heap is trimmed, on a timer thread: never on a request's own path (an answer does not wait for the
    trim, and a visitor's next click, a second later, does not fault back in the pages a trim between the
    two would have handed back)."""

    def __init__(self, idle_s: float = IDLE_S, trim: Callable[[], bool] | None = None) -> None:
        self.idle_s, self.in_flight, self.trims = idle_s, 0, 0
        self._trim = trim  # None: the module's `trim`, looked up when the timer fires
        self._begun = 0  # requests begun so far: a timer trims only if none has begun since it was set
        self._lock = threading.Lock()

    def __enter__(self) -> "Released":
        with self._lock:
            self.in_flight += 1
            self._begun += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.in_flight -= 1
            begun = self._begun if self.in_flight == 0 else None
        if begun is not None:
            timer = threading.Timer(self.idle_s, self._trim_if_idle, args=(begun,))
            timer.daemon = True
            timer.start()

    def _trim_if_idle(self, begun: int) -> None:
        with self._lock:
            idle = self.in_flight == 0 and self._begun == begun
        if idle:
            (self._trim or trim)()
            self.trims += 1


RELEASED = Released()  # the process's requests
