"""store/facts.py: the catalogue rows a connection remembers (a run's coaches and classes, a train's stops).

A hold reads them once per run and class, not once per booking; what is absent is read again; a rolled-back
batch forgets everything; and a connection that remembers nothing applies the same log to the same bytes
(tests/test_store_booking_props.py replays every random history on one).
"""

from __future__ import annotations

import sqlite3

import pytest

from store import booking_queries as bq
from store import facts, schema
from store.commands import AddTrain, CoachSpec, HoldSeats, PassengerSpec, ScheduleRuns
from store.state_machine import KIND_NORMAL, ApplyOrderError, apply_batch
from tests.test_store_booking import ADMIN, ALICE, BOB, DAY, ROUTE, World

CATALOGUE_READS = ("FROM run_coaches", "FROM run_classes", "FROM train_stops", "FROM stations")


def _catalogue_reads(conn: sqlite3.Connection, fn) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        conn.set_trace_callback(None)
    return [s for s in seen if any(t in s for t in CATALOGUE_READS)]


@pytest.fixture
def world(tmp_path):
    w = World(schema.connect(tmp_path / "node.db")).setup()
    yield w
    w.conn.close()


def test_project_connections_remember_and_plain_ones_do_not(tmp_path):
    conn = schema.connect(tmp_path / "a.db")
    plain = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    try:
        assert isinstance(conn, facts.Connection) and conn.facts == {}
        reads = []
        for c in (conn, conn, plain, plain):
            assert facts.fact(c, "k", lambda: reads.append(c) or (1, 2)) == (1, 2)
        assert reads == [conn, plain, plain]
    finally:
        conn.close()
        plain.close()


def test_absent_facts_are_read_again():
    conn = schema.connect(":memory:")
    try:
        calls = []
        for _ in range(2):
            assert facts.fact(conn, "none", lambda: calls.append(1)) is None
            assert facts.fact(conn, "empty", lambda: calls.append(2) or ()) == ()
        assert calls == [1, 2, 1, 2] and conn.facts == {}
    finally:
        conn.close()


def test_the_second_hold_on_a_run_and_class_reads_no_catalogue_rows(world):
    first = _catalogue_reads(world.conn, lambda: world.hold(ALICE))
    assert any("run_coaches" in s for s in first) and any("run_classes" in s for s in first)
    assert sum("train_stops" in s for s in first) >= 2  # the boarding and the alighting stop
    second = _catalogue_reads(world.conn, lambda: world.hold(BOB))
    assert second == []
    other_class = _catalogue_reads(world.conn, lambda: world.hold(BOB, cls="SLEEPER"))
    assert any("run_coaches" in s for s in other_class)  # another class: its own coaches


def test_a_rolled_back_batch_forgets_what_it_read(world):
    """The run a rolled-back batch scheduled (and a hold read) is gone; the next run of that number is another
    train's, and a hold on it sees that train's coaches, not the remembered ones."""
    w = world
    w.apply(w.cmd(AddTrain, token_sha256=ADMIN, number=300, name="Other Mail", train_type="MAIL", depart_time="09:00",
                  stops=ROUTE, coaches=(CoachSpec(label="Z1", travel_class="AC2", seats=4),)))
    run = 3  # the next run id: setup scheduled runs 1 and 2
    doomed = w.entries([w.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=100, first_date="2026-06-06",
                              last_date="2026-06-06")])
    doomed += w.entries([w.cmd(HoldSeats, token_sha256=ALICE, pnr=w.new_pnr(), run_id=run, travel_class="AC2",
                               from_code="PPP", to_code="SSS", passengers=(PassengerSpec(name="Asha", age=30),),
                               accept_waitlist=False, hold_seconds=600)])
    with pytest.raises(ApplyOrderError):
        apply_batch(w.conn, doomed + [(w.index + 5, KIND_NORMAL, b"{}")])  # a gap: the whole batch rolls back
    assert w.conn.facts == {}
    w.index -= len(doomed)  # the entries were never applied: their indexes are used again below
    res = w.apply(w.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=300, first_date=DAY, last_date=DAY))
    assert res[0].ok and res[0].data["run_ids"] == [run]
    held = w.hold(ALICE, run=run, cls="AC2")
    assert held.ok and held.data["seats"] == ["Z1-1"]


def test_a_repeated_search_reads_no_station_or_class_rows_and_finds_the_same(world):
    def search():
        return bq.search(world.conn, "PPP", "SSS", DAY)

    found = []
    first = _catalogue_reads(world.conn, lambda: found.append(search()))
    assert any("FROM stations" in s for s in first) and any("FROM run_classes" in s for s in first)
    second = _catalogue_reads(world.conn, lambda: found.append(search()))
    assert not any("FROM stations" in s or "FROM run_classes" in s for s in second)
    assert found[0] == found[1] and found[0]  # the trains between two stations are read every time


def test_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(facts, "FACTS_MAX", 3)
    conn = schema.connect(":memory:")
    try:
        for i in range(10):
            assert facts.fact(conn, i, lambda i=i: (i,)) == (i,)
            assert len(conn.facts) <= 3
        assert facts.fact(conn, 9, lambda: ("read again",)) == (9,)  # the newest is still there
    finally:
        conn.close()


def test_remembered_coaches_share_their_berth_patterns(world):
    from store.booking import run_coaches

    by_class, whole_run = run_coaches(world.conn, 1, "AC2"), run_coaches(world.conn, 1)
    assert by_class[0] == whole_run[0]
    assert by_class[0].berths is whole_run[0].berths  # one tuple per pattern, not one per coach remembered
