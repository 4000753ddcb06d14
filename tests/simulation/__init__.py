"""Deterministic whole-cluster simulation of the Raft core (see cluster.py); `python -m tests.simulation.run`."""
