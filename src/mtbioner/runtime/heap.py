"""Giving a long-lived process's memory back to the system (glibc's malloc), for the server (issue 43).

A server worker sees a few large requests among many small ones. What a large run allocated is freed, but glibc
keeps freed memory in its heaps unless told otherwise, so a worker's resident memory would rise to what its
largest request needed and stay there. :func:`configure_heap` makes glibc keep what is freed without page faults
in between, and :class:`HeapReleaser` hands it back after large runs (``malloc_trim``), at most once an interval
and soon after the last one. Everything here is a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
import threading
import time
from collections.abc import Callable

RELEASE_INTERVAL_S = 5.0
"""At most one release in this many seconds: after a release the next run maps what it needs afresh."""


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """A function of glibc's malloc (``malloc_trim``, ``mallopt``), or ``None`` where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already has, glibc's among them when linked against it
    except OSError:  # pragma: no cover - a static interpreter without dlopen
        return None
    return getattr(libc, name, None)


def release_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``); a no-op elsewhere.

    Returns whether it could: ``False`` where the C library is not glibc.
    """
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
SERVER_MMAP_THRESHOLD = 32 << 20  # blocks below it come from the heap (a batch's largest tensor is ~25 MB)
SERVER_TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top that glibc would give back unasked: never


def configure_heap(arenas: int) -> bool:
    """glibc's heap for a long-lived server: memory goes back to the system only at :func:`release_heap`.

    Three settings (``mallopt``, as the ``MALLOC_*`` environment variables would, for this process from now on):

    * at most ``arenas`` arenas; the server asks for one. glibc gives threads arenas of their own (up to 8 per
      core), and each keeps its own fragments: a server's event loop, its lanes' model threads and its splitter
      each held some. Replaying the soak's bursts in one process (16 requests of 64 texts, a queue of 8,000
      sentences, utterances beside them; RSS after ``malloc_trim``): 177 -> 185 MB over 4 bursts, creeping, with
      glibc's default; 162 -> 164 MB, flat after the first, with 2. But ``malloc_trim`` gives back the free top
      of the main arena only; a thread arena's top, where a large run's memory ends up once freed, stays resident
      (and with no trimming unasked, free() never shrinks it either). In the eighth soak a replacement worker
      whose model thread had its own arena jumped 177 -> 224 MB at its first large request and stayed there,
      Python's objects and glibc's memory in use flat, 74 MB free in glibc, 59 MB of it resident in one 64 MB
      thread heap. With one arena every free page can go back.
    * blocks under 32 MiB from the heap, and no trimming unasked. Without ONNX Runtime's arena, glibc otherwise
      maps a run's large tensors afresh and unmaps them (or trims the heap) after it: 48,000 page faults per
      64-sentence call, 12-14 % slower than with the arena (64 abstract sentences back to back, 20 paired rounds,
      idle host: 92 against 104 sentences/s). With these settings: 0 faults, the arena's speed (101.8 against
      101.2 sentences/s); memory then goes back only at :func:`release_heap`, which
      :class:`HeapReleaser` calls after large runs (at most once every ``RELEASE_INTERVAL_S``, and once more
      that long after the last).

    Returns whether it could (``False`` without glibc).
    """
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    settings = (
        (M_ARENA_MAX, arenas),
        (M_MMAP_THRESHOLD, SERVER_MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, SERVER_TRIM_THRESHOLD),
    )
    return all([mallopt(parameter, value) == 1 for parameter, value in settings])


class HeapReleaser:
    """Calls :func:`release_heap` after large runs: at once when the last release is ``interval`` seconds old, and
    once more ``interval`` seconds after the last large run (a timer).

    A busy worker so trims at most once an interval, and an idle one gives back what its last request left,
    including what was freed after its last run (the answer of a 5,000-sentence request is built and sent then).
    Without the trailing release that memory stayed with the worker until its next large request.

    ``clock`` and ``timer`` are ``time.monotonic`` and ``threading.Timer``; tests pass their own.
    """

    def __init__(
        self,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[..., threading.Timer] = threading.Timer,
    ) -> None:
        self.interval = RELEASE_INTERVAL_S if interval is None else interval
        self.clock = clock
        self.timer = timer
        self._last = -math.inf  # the last release
        self._latest = -math.inf  # the last large run
        self._pending: threading.Timer | None = None
        self._lock = threading.Lock()  # the server's two lanes call it from their own threads

    def __call__(self) -> None:
        with self._lock:
            now = self._latest = self.clock()
            if self._pending is None:
                self._schedule(self.interval)
            if now - self._last < self.interval:
                return
            self._last = now
        release_heap()

    def _schedule(self, wait: float) -> None:
        self._pending = self.timer(wait, self._release_later)
        self._pending.daemon = True
        self._pending.start()

    def _release_later(self) -> None:
        with self._lock:
            self._pending = None
            now = self.clock()
            wait = self._latest + self.interval - now
            if wait > 0:  # large runs since the timer was set: wait for an interval after the last of them
                self._schedule(wait)
                return
            self._last = now
        release_heap()
