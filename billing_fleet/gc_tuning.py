"""Cyclic garbage collector settings for the long-running processes."""

from __future__ import annotations

import gc
from typing import Final

BATCH_YOUNG_THRESHOLD: Final = 50_000
"""Net container allocations between young collections for batch consumers (CPython's
default: 700). A batch keeps hundreds of thousands of objects alive until it commits; at
700 every young collection traverses and promotes part of them, and the older
generations traverse them again: ~15 % of a worker's CPU in ``bench worker``, 1 % here.
The cost is at most this many uncollected cyclic objects (a few MB)."""


def freeze_startup(young_threshold: int | None = None) -> None:
    """Exempt every object alive now (modules, settings, a catalog) from the cyclic GC: full
    collections then scan only what the process made since. ``young_threshold`` also
    spaces young collections out."""
    gc.freeze()
    if young_threshold is not None:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)
