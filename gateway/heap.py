"""The garbage collector's settings for a long-running server process: a node, the web app.

CPython's cyclic collector walks every container object of the generations it collects, and its oldest
generation holds everything a process made at start-up -- modules, classes, functions, the protobuf and
grpclib machinery: about 50,000 objects in a node.  A busy leader collected that generation every second
or two, each time holding its event loop for 20-130 ms (10 ms for the start-up objects alone on this
machine), which landed on the bookings in flight.  `settle` moves what start-up made out of the collector's
way (`gc.freeze`: those objects live as long as the process anyway) and collects the young generation less
often, so that fewer short-lived objects are still alive when it runs and are promoted to be walked again.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

# Allocations (net of frees) between two collections of the young generation: CPython's default is 700.  At
# 10,000 a collection of a busy leader's young objects takes about 1 ms, at 50,000 up to 50 ms.
YOUNG_THRESHOLD = 10_000


@dataclass(frozen=True)
class Settled:
    """What `settle` did: objects moved to the permanent generation, and the young generation's threshold."""

    frozen: int
    young_threshold: int


def settle(young_threshold: int = YOUNG_THRESHOLD) -> Settled:
    """Once a server process has started: collect, move every object it still holds out of the collector's
    way for good (`gc.freeze`), and collect the young generation every `young_threshold` allocations.

    For a process that owns its heap (never a test process hosting many nodes: what it froze would stay).
    Frozen objects are still freed when nothing refers to them; only a cycle among them would never be."""
    if young_threshold < 1:
        raise ValueError(f"young_threshold must be at least 1, got {young_threshold}")
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    return Settled(gc.get_freeze_count(), young_threshold)
