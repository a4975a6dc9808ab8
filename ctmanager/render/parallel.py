"""Split CPU-bound work across forked processes.

Fork, not spawn: the children inherit the parent's data (units, rendered bytes)
without pickling it; only each part's result travels back. Threads do not help
here: rendering is pure Python and holds the GIL, and four writer threads on two
cores spent most of their time handing the GIL around (5 s for 50,000 files that
one thread writes in under 1 s).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_JOB: tuple[Callable[[Any], list[Any]], Sequence[Any]] | None = None


def _run(index: int) -> list[Any]:
    assert _JOB is not None
    fn, parts = _JOB
    return fn(parts[index])


def fork_map(fn: Callable[[T], list[R]], parts: Sequence[T], workers: int) -> list[R]:
    """fn(p) for each part, concatenated in order; in `workers` forked processes
    when there is more than one.

    An exception in a child is re-raised here, with its type, as Pool does.
    """
    global _JOB
    workers = min(workers, len(parts))
    if workers <= 1:
        return [item for p in parts for item in fn(p)]
    _JOB = (fn, parts)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_run, range(len(parts)), chunksize=1)
    finally:
        _JOB = None
    return [item for part in results for item in part]


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def split(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """`items` cut into at most `parts` contiguous slices of near-equal size."""
    step = -(-len(items) // max(1, parts)) or 1
    return [items[i:i + step] for i in range(0, len(items), step)]
