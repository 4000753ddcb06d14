"""gateway/heap.py: a server process's garbage collector, settled once it serves.

`settle` changes process-wide state that would outlive a test (frozen objects stay frozen), so its effects are
checked in a fresh interpreter; that a node process settles its heap is checked in tests/test_cli.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from .cluster_harness import ROOT


def _in_fresh_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=60, cwd=str(ROOT), check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_settle_takes_start_up_objects_out_of_full_collections_and_still_collects_new_cycles():
    got = _in_fresh_python("""
        import gc, json, time, weakref
        import gateway.runner  # what a node imports: the protobuf, grpclib and Trio machinery
        from gateway import heap

        def full_collection_walks():
            return len(gc.get_objects())  # the objects of the generations a full collection walks

        before = full_collection_walks()
        frozen = heap.settle()
        after = full_collection_walks()

        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made after settling: only the cyclic collector frees it
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        print(json.dumps({"before": before, "after": after, "frozen": frozen,
                          "threshold": gc.get_threshold(), "freeze_count": gc.get_freeze_count(),
                          "cycle_collected": gone() is None}))
    """)
    assert got["before"] > 20_000  # a node's start-up objects, all walked by every full collection...
    assert got["after"] < got["before"] // 10  # ...and, settled, almost none of them
    assert got["frozen"] == got["freeze_count"] > 20_000
    assert got["threshold"] == [700, 10, 10]  # CPython's: buffers in cyclic garbage are freed as soon as before
    assert got["cycle_collected"]
