"""The machine a benchmark ran on, as its report's header states it.

This VM's speed changes from day to day (a plain Python loop has taken from under 1 s to
over 2.5 s), and every figure here shares two cores with its ceiling, its clients and its
servers: a report quotes the loop's time beside its CPUs, so runs of different days can be
told apart. ``described()`` times it once, when first called (``bench`` calls it before
any server starts, on a machine still quiet).
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Final

LOOP_ADDITIONS: Final = 10**7


def _loop_seconds() -> float:
    """The best of three runs of a pure-Python loop of ``LOOP_ADDITIONS`` additions."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(LOOP_ADDITIONS):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


@cache
def described() -> str:
    return f"{os.cpu_count()} CPUs (a Python loop of 10^7 additions: {_loop_seconds():.2f} s)"
