"""The `.proto` sources and, under `proto.gen`, the betterproto modules generated from them.

The generated code is committed.  `make proto` (scripts/gen_proto.py) regenerates it, and
tests/test_proto_drift.py fails when the committed code differs from what the sources generate.
"""
