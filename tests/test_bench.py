"""`railraft bench` (gateway/bench.py): the consistency checker on hand-built databases, and one short real run.

The real run starts its own 3-node cluster and load-generator processes; the test checks the JSON it prints,
that the run was consistent, and that every process it started is gone and its temporary directory removed.
It measures nothing: throughput on a shared test machine means little, the benchmark is for humans.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.bench import (
    Acked,
    acked_overlaps,
    build_preloaded_state,
    check_databases,
    latency_summary,
    percentile,
    pid_alive,
    spread_for,
)
from gateway.cluster import port_is_free
from raft.filestorage import FileStorage
from store import schema

from .cluster_harness import ROOT

RUN = 1
COACHES = {1: "B1", 2: "B2"}


def make_db(path: Path, bookings: list[tuple[str, int, int, int, int, bool]], applied: int = 10) -> Path:
    """A database with one run and `bookings` = [(pnr, from_seq, to_seq, coach_no, seat_no, allocated)],
    each HELD with one active passenger in that seat (and an allocation row if `allocated`)."""
    conn = schema.connect(path)
    conn.execute("BEGIN")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'applied_index'", (applied,))
    conn.execute("INSERT INTO runs (id, train_id, run_date, depart_ms, status, created_ms) "
                 "VALUES (?, 1, '2030-01-01', 0, 'SCHEDULED', 0)", (RUN,))
    for no, label in COACHES.items():
        conn.execute("INSERT INTO run_coaches VALUES (?, ?, ?, 'AC3', 72, 'LOWER')", (RUN, no, label))
    for i, (pnr, f, t, coach, seat, allocated) in enumerate(bookings, start=1):
        conn.execute(
            "INSERT INTO bookings (id, pnr, user_id, run_id, travel_class, from_seq, to_seq, board_ms, status, "
            "amount_paise, paid_paise, refunded_paise, hold_expires_ms, pending_until_ms, created_ms, updated_ms, "
            "events) VALUES (?, ?, 2, ?, 'AC3', ?, ?, 0, 'HELD', 100, 0, 0, 1, 1, 0, 0, 1)",
            (i, pnr, RUN, f, t))
        conn.execute("INSERT INTO passengers VALUES (?, 1, 'Bench Passenger', 30, '', 100, 'ACTIVE', ?, ?)",
                     (i, coach, seat))
        if allocated:
            conn.execute("INSERT INTO allocations VALUES (?, ?, ?, ?, ?, 'AC3', ?)", (RUN, coach, seat, f, t, i))
    conn.execute("COMMIT")
    conn.close()
    return path


def acked_of(bookings: list[tuple[str, int, int, int, int, bool]]) -> list[Acked]:
    return [Acked(pnr, RUN, f, t, ((COACHES[coach], seat),)) for pnr, f, t, coach, seat, _ in bookings]


GOOD = [("AAAAAAAAAA", 0, 3, 1, 5, True), ("BBBBBBBBBB", 3, 6, 1, 5, True), ("CCCCCCCCCC", 0, 9, 2, 1, True)]


def test_identical_clean_databases_are_consistent(tmp_path: Path) -> None:
    dbs = {1: make_db(tmp_path / "n1.db", GOOD), 2: make_db(tmp_path / "n2.db", GOOD)}
    got = check_databases(dbs, acked_of(GOOD))
    assert got["consistent"], got["problems"]
    assert got["identical"] is True
    assert {n["bookings"] for n in got["nodes"].values()} == {3}


@pytest.mark.parametrize("allocated", [True, False], ids=["allocation-rows", "bookings-only"])
def test_a_seat_sold_twice_on_overlapping_segments_is_flagged(tmp_path: Path, allocated: bool) -> None:
    # Node 2 sold seat B1-5 to BBBBBBBBBB from stop 2, while AAAAAAAAAA holds it until stop 3.
    bad = [GOOD[0], ("BBBBBBBBBB", 2, 6, 1, 5, allocated), GOOD[2]]
    dbs = {1: make_db(tmp_path / "n1.db", GOOD), 2: make_db(tmp_path / "n2.db", bad)}
    got = check_databases(dbs, acked_of(GOOD))
    assert not got["consistent"]
    assert got["nodes"][1]["double_sold"] == 0
    assert got["nodes"][2]["double_sold"] >= 1
    assert any(p.startswith("node 2:") and "seat 5" in p for p in got["problems"]), got["problems"]
    # BBBBBBBBBB's segment on node 2 is not the one the client was told, and the databases differ.
    assert got["nodes"][2]["acked_problems"] == 1
    assert got["identical"] is False


def test_missing_booking_and_wrong_seat_are_flagged(tmp_path: Path) -> None:
    other_seat = [GOOD[0], GOOD[1], ("CCCCCCCCCC", 0, 9, 2, 2, True)]
    dbs = {1: make_db(tmp_path / "n1.db", GOOD[:2]), 2: make_db(tmp_path / "n2.db", other_seat)}
    got = check_databases(dbs, acked_of(GOOD))
    assert not got["consistent"]
    text = "\n".join(got["problems"])
    assert "node 1: acknowledged PNR CCCCCCCCCC is missing" in text
    assert "node 2: PNR CCCCCCCCCC: seats [('B2', 2)]" in text


def test_client_side_overlap_of_acknowledged_holds() -> None:
    ok = [Acked("A", 1, 0, 3, (("B1", 5),)), Acked("B", 1, 3, 6, (("B1", 5),)), Acked("C", 2, 0, 6, (("B1", 5),))]
    assert acked_overlaps(ok) == []
    bad = ok + [Acked("D", 1, 5, 8, (("B1", 5),))]
    problems = acked_overlaps(bad)
    assert len(problems) == 1 and "PNR B" in problems[0] and "PNR D" in problems[0]


def test_percentiles() -> None:
    assert percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    s = latency_summary([5.0, 1.0, 3.0])
    assert s["p50_ms"] == 3.0 and s["max_ms"] == 5.0 and s["count"] == 3


def test_snapshot_preload_gives_every_node_the_same_state_as_a_raft_snapshot(tmp_path: Path) -> None:
    info = build_preloaded_state(tmp_path, [1, 2, 3], bookings=300, trains=2, days=2, coaches=2, seats=72,
                                 start_date="2099-01-01", admin_user="admin", admin_password="bench-password",
                                 seed=1, say=lambda _text: None)
    assert info["bookings"] == 300 and info["sold_out"] == 0
    k = info["index"]
    dbs = {}
    for nid in (1, 2, 3):
        node = tmp_path / f"node{nid}"
        rec = FileStorage(node / "raft").load()
        # As if the cluster had committed K entries in term 1 and compacted its log: nothing after K.
        assert (rec.snapshot.index, rec.snapshot.term) == (k, 1)
        assert rec.snapshot.conf.voters == frozenset({1, 2, 3})
        assert (rec.hard_state.term, rec.hard_state.commit) == (1, k) and rec.entries == []
        assert (node / "snapshots" / f"snap-{k}.db").is_file()
        dbs[nid] = node / f"Node{nid}TicketBooking.db"
    got = check_databases(dbs, [])
    assert got["consistent"] and got["identical"], got
    assert {n["applied_index"] for n in got["nodes"].values()} == {k}
    assert {n["bookings"] for n in got["nodes"].values()} == {300}
    assert not (tmp_path / "preload.db").exists()


@pytest.mark.slow
def test_short_bench_run_prints_one_consistent_json_object_and_cleans_up(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TMPDIR"] = str(tmp_path)  # the bench's temporary cluster directory goes here, and must be removed
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "--duration", "2", "--clients", "4", "--trains", "2",
         "--days", "2", "--json"],
        capture_output=True, text=True, timeout=240, env=env, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-3000:]
    r = json.loads(lines[0])
    for key in ("bookings_per_s", "reads_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "consistent",
                "nodes", "log_bytes_per_booking", "linearizable_reads_per_s", "stale_reads_per_s"):
        assert key in r, key
    assert r["ok"] is True
    assert r["consistent"] is True, r["consistency"]
    assert r["consistency"]["identical"] is True
    assert r["bookings_per_s"] > 0 and r["reads_per_s"] > 0
    assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert isinstance(r["errors"], dict)
    assert len(r["nodes"]) == 3
    for n in r["nodes"]:
        assert n["cpu_s"] is not None and n["cpu_s"] >= 0
        assert n["peak_rss_mb"] and n["peak_rss_mb"] > 0
        assert n["log_bytes_per_booking"] and n["log_bytes_per_booking"] > 0
    # Every process the bench started is gone, its ports are free and its temporary directory removed.
    pids = r["node_pids"] + r["loadgen"]["pids"]
    assert len(pids) == 3 + 1
    assert not [pid for pid in pids if pid_alive(pid)]
    assert all(port_is_free(int(a.rpartition(":")[2])) for a in r["config"]["addresses"])
    assert r["data_dir"] is None
    assert not list(tmp_path.glob("railraft-bench-*"))
    # By default the client library batches, and then the clients send their bookings to the leader.
    assert r["config"]["writes"] == "leader" and r["config"]["batch"] is True


@pytest.mark.parametrize(("writes", "clients", "batch", "spread"), [
    ("auto", 64, True, False), ("auto", 64, False, True), ("auto", 1, False, False), ("spread", 1, True, True),
    ("leader", 64, False, False)])
def test_where_the_clients_send_their_bookings(writes: str, clients: int, batch: bool, spread: bool) -> None:
    assert spread_for(writes, clients, batch) is spread
