"""Supervision primitives and a node's actor tree, and the node runner.

A node is a tree of supervised Trio actors (consensus, election timer, log writer, one replicator per peer,
applier, DB writer) talking over bounded memory channels.  May import `raft`, `store` and `proto`.
"""
