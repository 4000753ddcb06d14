"""The `.proto` sources and, under `proto.gen`, the betterproto modules generated from them.

The generated code is committed.  `make proto` (scripts/gen_proto.py) regenerates it, and
tests/test_proto_drift.py fails when the committed code differs from what the sources generate.
"""

from . import speedups

# Every import of a generated module goes through this package first, so all messages get the faster (same
# behaviour) attribute access; see proto/speedups.py.
speedups.install()
