"""The garbage collector's settings for a long-running server process: a node, the web app.

CPython's cyclic collector walks every container object of the generations it collects, and its oldest
generation holds everything a process made at start-up -- modules, classes, functions, the protobuf and
grpclib machinery: about 50,000 objects in a node.  A busy leader collected that generation every second
or two, each time holding its event loop for 20-130 ms (10 ms for the start-up objects alone on this
machine), which landed on the bookings in flight.  `settle` moves what start-up made out of the collector's
way (`gc.freeze`: those objects live as long as the process anyway).

The collection thresholds stay CPython's.  Collecting the young generation every 10,000 allocations instead
of 700 saved a leader another 3% of its CPU, but buffers held by cyclic garbage then waited that much longer
to be freed: a node catching up from a 1.26 GB snapshot peaked at 750 MB instead of about 100.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Once a server process has started: collect, then move every object it still holds out of the
    collector's way for good (`gc.freeze`).  Returns how many objects were frozen.

    For a process that owns its heap (never a test process hosting many nodes: what it froze would stay).
    Frozen objects are still freed when nothing refers to them; only a cycle among them would never be."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
