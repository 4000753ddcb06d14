"""The Raft consensus algorithm as a pure state machine, and the on-disk log and state formats.

Nothing here does I/O on its own behalf beyond the storage files, reads a clock, or uses global randomness:
time is counted in ticks and randomness comes from an injected `random.Random` (tests/test_purity.py
checks the imports).  Imports nothing else of ours.
"""
