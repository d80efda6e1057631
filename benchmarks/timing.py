"""Wall-clock timing of repeated calls, shared by the benchmark scripts (run from `benchmarks/`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def call_times(fn: Callable[[], object], repeats: int, warmup: int = 20) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, after `warmup` untimed calls.

    Example:

    >>> len(call_times(lambda: None, repeats=3, warmup=1))
    3
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times
