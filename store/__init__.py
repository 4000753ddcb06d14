"""SQLite schema and migrations, the deterministic apply of booking commands, read queries, and snapshot
export/import.  May import `proto`.
"""
