"""Unit, simulation, process-level cluster, browser and fault tests.  May import everything."""
