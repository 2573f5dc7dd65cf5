"""Spread element-wise NumPy work over the CPU cores (threads; NumPy releases the GIL in its loops).

BLAS already runs GEMMs on every core, but the rest of a forward pass — unfolding
columns, col2im, normalisation — is NumPy's single-threaded loops: on this
project's 2-core machine that left one core idle for about half of the reference's
time. Work is split into disjoint index ranges (planes or channels), so every
element sees exactly the arithmetic it would see in one thread: the results are
bit-identical, only the wall time changes.

Settings (module attributes, read at every call, so tests can force every branch on tiny inputs):

* ``THREADS``: the pool size; ``None`` follows the usual variables (``TEXTURE_NETS_THREADS``,
  then ``OMP_NUM_THREADS``, then ``OPENBLAS_NUM_THREADS``), else the usable CPUs.
* ``MIN_ELEMENTS_PER_THREAD``: small jobs stay in the calling thread, since below this many
  elements per thread the hand-off costs more than it saves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# Below this many elements per thread, splitting is not worth a thread hand-off (~20 µs).
MIN_ELEMENTS_PER_THREAD = 1 << 18
# A fixed thread count (tests set it); None: from the environment, else the usable CPUs.
THREADS: int | None = None
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def thread_count() -> int:
    """Threads to use for element-wise work (>= 1)."""
    if THREADS is not None:
        return max(1, int(THREADS))
    for name in ("TEXTURE_NETS_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    getter = getattr(os, "sched_getaffinity", None)
    return max(1, len(getter(0)) if getter else (os.cpu_count() or 1))


def split_ranges(count: int, elements_per_item: int) -> list[tuple[int, int]]:
    """Split ``range(count)`` into contiguous (start, stop) chunks, one per thread worth using."""
    if count <= 0:
        return []
    threads = min(thread_count(), count, max(1, (count * elements_per_item) // max(1, MIN_ELEMENTS_PER_THREAD)))
    bounds = [count * i // threads for i in range(threads + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(threads) if bounds[i] < bounds[i + 1]]


def parallel_ranges(count: int, elements_per_item: int, work: Callable[[int, int], None]) -> None:
    """Call ``work(start, stop)`` on disjoint chunks of ``range(count)``, concurrently when it pays."""
    ranges = split_ranges(count, elements_per_item)
    if len(ranges) <= 1:
        work(0, count)
        return
    pool = _pool(len(ranges))
    futures = [pool.submit(work, start, stop) for start, stop in ranges[1:]]
    work(*ranges[0])  # the calling thread takes the first chunk
    for future in futures:
        future.result()  # re-raises a worker's exception here


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    if _POOL is None or size > _POOL_SIZE:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="reference")
        _POOL_SIZE = size
    return _POOL
