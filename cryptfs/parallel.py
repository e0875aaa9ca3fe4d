"""Spread the blocks of one large request over the CPU cores.

libsodium releases the GIL, so decrypting the 64 blocks of a 1 MiB read in two halves on
two threads takes about half the time (measured in-process: 1.39 -> 2.42 GB/s on 2 cores).
Small requests stay on the calling thread: a hand-off to a pool thread and back costs
~50 us here, the time of 4-5 blocks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

MIN_BLOCKS_PER_PART = 8  # 128 KiB at the default block size

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_helpers = max(0, min(3, (os.cpu_count() or 1) - 1))


def _get_pool() -> ThreadPoolExecutor | None:
    global _pool
    if _helpers == 0:
        return None
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(_helpers, thread_name_prefix="crypto")
    return _pool


def _forget_pool_in_child() -> None:
    """A forked child (the mount daemon) has none of the parent's threads."""
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool_in_child)


def set_helpers(count: int) -> None:
    """Change the number of helper threads (0 = everything on the calling thread)."""
    global _pool, _helpers
    with _pool_lock:
        old, _pool, _helpers = _pool, None, max(0, count)
    if old is not None:
        old.shutdown(wait=True)


def run_split(first: int, stop: int, work: Callable[[int, int], None]) -> None:
    """Call ``work(a, b)`` over consecutive sub-ranges covering ``[first, stop)``, the
    first part on this thread and the others on helper threads; re-raise the first error
    in range order, after every part has finished."""
    count = stop - first
    parts = min(_helpers + 1, count // MIN_BLOCKS_PER_PART)
    pool = _get_pool() if parts > 1 else None
    if pool is None:
        work(first, stop)
        return
    bounds = [first + count * k // parts for k in range(parts + 1)]
    futures: list[Future] = []
    try:
        for k in range(1, parts):
            futures.append(pool.submit(work, bounds[k], bounds[k + 1]))
    except RuntimeError:  # pool shut down (interpreter exit): do the rest here
        for k in range(len(futures) + 1, parts):
            work(bounds[k], bounds[k + 1])
    error: BaseException | None = None
    try:
        work(bounds[0], bounds[1])
    except BaseException as exc:  # re-raised below, after the helpers
        error = exc
    for fut in futures:
        try:
            fut.result()
        except BaseException as exc:
            if error is None:
                error = exc
    if error is not None:
        raise error
