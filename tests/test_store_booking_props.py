"""Property: random interleavings of hold / pay / cancel / expire (and the odd run cancellation) never sell a
seat twice on overlapping segments, keep the seat counts, the allocations and the money consistent, and
replay to a byte-identical database in any batching (on a connection that remembers no catalogue facts)."""

from __future__ import annotations

import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import booking_queries as bq
from store import queries, schema
from store.commands import AddTrain, CancelRun, CoachSpec, ScheduleRuns
from store.state_machine import apply_batch
from tests.test_store_booking import ADMIN, ALICE, BOB, CAROL, DAY, MIN, ROUTE, T0, World

USERS = (ALICE, BOB, CAROL)
STOPS = ("PPP", "QQQ", "RRR", "SSS")
RUN = 3  # train 300: five AC3 seats in two coaches
SEATS = {1: 3, 2: 2}


def _world() -> World:
    w = World(schema.connect(":memory:")).setup()
    res = w.apply(
        w.cmd(AddTrain, token_sha256=ADMIN, number=300, name="Tight Express", train_type="EXPRESS",
              depart_time="08:00", stops=ROUTE,
              coaches=(CoachSpec(label="X1", travel_class="AC3", seats=3),
                       CoachSpec(label="X2", travel_class="AC3", seats=2))),
        w.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=300, first_date=DAY, last_date=DAY),
    )
    assert all(r.ok for r in res) and res[1].data["run_ids"] == [RUN]
    return w


_hold = st.tuples(
    st.just("hold"), st.sampled_from(USERS), st.integers(0, 2), st.integers(1, 3), st.integers(1, 3),
    st.booleans(), st.lists(st.sampled_from(["", "LOWER", "MIDDLE", "UPPER"]), min_size=3, max_size=3),
    st.sampled_from(["", "", "X1-1", "X1-3", "X2-2"]), st.booleans(),  # ... pay at once (as most clients do)
)
# (pay, who: 0 = a stranger else the owner, which booking counting back from the newest, approved: 0 = declined)
_pay = st.tuples(st.just("pay"), st.integers(0, 5), st.integers(0, 4), st.integers(0, 5))
_cancel = st.tuples(st.just("cancel"), st.integers(0, 5), st.integers(0, 6), st.sets(st.integers(1, 3), max_size=2))
# Weighted by repetition: mostly holds and payments, so the five seats sell out and waitlists form.
_op = st.one_of(
    _hold, _hold, _hold, _pay, _pay, _pay, _cancel, _cancel,
    st.tuples(st.just("expire"), st.sampled_from([0, MIN, 11 * MIN])),
    st.tuples(st.just("wait"), st.sampled_from([1_000, 5 * MIN, 20 * 60 * MIN])),
    st.tuples(st.just("cancel_run"), st.integers(0, 60)),
)


def _check(w: World) -> None:
    c = w.conn
    # 1. No seat is allocated twice on overlapping stops.
    clashes = c.execute(
        "SELECT COUNT(*) FROM allocations AS a JOIN allocations AS b ON a.run_id = b.run_id"
        " AND a.coach_no = b.coach_no AND a.seat_no = b.seat_no AND a.from_seq < b.from_seq"
        " AND b.from_seq < a.to_seq"
    ).fetchone()[0]
    assert clashes == 0
    # 2. Allocations are exactly the seats of the active passengers of HELD/CONFIRMED bookings.
    allocated = set(c.execute("SELECT run_id, coach_no, seat_no, from_seq, to_seq, booking_id FROM allocations"))
    expected = set(c.execute(
        "SELECT b.run_id, p.coach_no, p.seat_no, b.from_seq, b.to_seq, b.id FROM bookings AS b JOIN passengers AS p"
        " ON p.booking_id = b.id WHERE b.status IN ('HELD', 'CONFIRMED') AND p.status = 'ACTIVE'"
    ))
    assert allocated == expected and all(row[2] is not None for row in expected)
    assert c.execute(
        "SELECT COUNT(*) FROM bookings AS b JOIN passengers AS p ON p.booking_id = b.id"
        " WHERE b.status = 'WAITLISTED' AND p.seat_no IS NOT NULL"
    ).fetchone()[0] == 0
    # 3. Free seat counts (what search shows) equal a brute-force count, for every segment.
    rows = list(c.execute("SELECT coach_no, seat_no, from_seq, to_seq FROM allocations WHERE run_id = ?", (RUN,)))
    cancelled = c.execute("SELECT status FROM runs WHERE id = ?", (RUN,)).fetchone()[0] == "CANCELLED"
    for f in range(4):
        for t in range(f + 1, 4):
            taken = {(cn, s) for cn, s, a, b in rows if a < t and f < b}
            [avail] = bq.availability(c, RUN, f, t, 0, STOPS[f], STOPS[t], cancelled)
            assert avail.free == (0 if cancelled else sum(SEATS.values()) - len(taken)) >= 0
    # 3b. SeatMap's coaches and seat maps (one look at the run) agree with a brute-force count, for every
    #     segment: a seat taken on two pieces of the segment counts once.
    for f in range(4):
        for t in range(f + 1, 4):
            taken = {(cn, s) for cn, s, a, b in rows if a < t and f < b}
            summaries, none = bq.coaches_and_seat_map(c, RUN, "", STOPS[f], STOPS[t])
            assert none is None
            assert [(x.coach_label, x.seats, x.free) for x in summaries] == [
                (f"X{no}", n, n - sum(1 for cn, _ in taken if cn == no)) for no, n in SEATS.items()]
            assert bq.coaches(c, RUN, STOPS[f], STOPS[t]) == summaries
            for no, n in SEATS.items():
                again, cmap = bq.coaches_and_seat_map(c, RUN, f"X{no}", STOPS[f], STOPS[t])
                assert again == summaries and cmap is not None and cmap.coach_label == f"X{no}"
                assert [(x.seat_no, x.free) for x in cmap.seats] == [
                    (s, (no, s) not in taken) for s in range(1, n + 1)]
                assert bq.seat_map(c, RUN, f"X{no}", STOPS[f], STOPS[t]) == cmap
    # 4. Money and holds.
    for status, amount, paid, refunded, pending in c.execute(
        "SELECT status, amount_paise, paid_paise, refunded_paise, pending_until_ms FROM bookings"
    ):
        assert 0 <= refunded <= paid
        assert amount >= 0
        if status == "CONFIRMED":
            assert paid > 0 and pending is None
        if status == "HELD":
            assert paid == 0 and pending is not None
        if status in ("CANCELLED", "EXPIRED", "REFUNDED"):
            assert pending is None
        if status == "WAITLISTED":
            assert (pending is None) == (paid > 0)
    assert c.execute("SELECT COALESCE(SUM(amount_paise), 0) FROM payments").fetchone()[0] == \
        c.execute("SELECT COALESCE(SUM(paid_paise), 0) FROM bookings").fetchone()[0]
    # Every refunded paisa has a refund record, booking by booking.
    assert c.execute(
        "SELECT COUNT(*) FROM bookings AS b WHERE b.refunded_paise !="
        " (SELECT COALESCE(SUM(amount_paise), 0) FROM refunds WHERE booking_id = b.id)"
    ).fetchone()[0] == 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=20, max_size=60), batch=st.integers(1, 7))
def test_random_interleavings_keep_the_inventory_consistent(ops, batch) -> None:
    w = _world()
    now = T0
    pnrs: list[tuple[str, str]] = []  # (owner token, pnr) of every booking made
    for op in ops:
        kind = op[0]
        if kind == "hold":
            _, user, f, span, n, waitlist, prefs, seat, pay_now = op
            t = min(3, f + span)
            r = w.hold(user, RUN, "AC3", STOPS[f], STOPS[t], names=tuple(f"P{i}" for i in range(n)),
                       prefs=prefs[:n], seats=[seat] + [""] * (n - 1), waitlist=waitlist, ts=now)
            if r.ok:
                pnrs.append((user, r.data["pnr"]))
                if pay_now:
                    w.pay(user, r.data["pnr"], ts=now + 1, ref=f"ref-{len(w.log)}")
        elif kind == "pay" and pnrs:
            _, who, i, approved = op
            owner, pnr = pnrs[-1 - i % len(pnrs)]
            payer = owner if who else next(u for u in USERS if u != owner)
            w.pay(payer, pnr, ts=now, approved=bool(approved), amount=w.amount(pnr), ref=f"ref-{len(w.log)}")
        elif kind == "cancel" and pnrs:
            _, who, i, pax = op
            owner, pnr = pnrs[-1 - i % len(pnrs)]
            w.cancel(owner if who else next(u for u in USERS if u != owner), pnr, sorted(pax), ts=now)
        elif kind == "expire":
            now += op[1]
            w.expire(now)
        elif kind == "wait":
            now += op[1]
        elif kind == "cancel_run" and op[1] == 0:
            w.one(w.cmd(CancelRun, ts=now, token_sha256=ADMIN, run_id=RUN))
        _check(w)

    # Replayed on a plain sqlite3 connection, which remembers no catalogue facts (store/facts.py): it reads
    # every run's coaches and every stop again, and must still agree byte for byte.
    other = sqlite3.connect(":memory:", isolation_level=None)
    schema.configure(other)
    schema.migrate(other)
    try:
        results = []
        for i in range(0, len(w.log), batch):
            results += apply_batch(other, w.log[i:i + batch])
        assert results == w.results
        assert queries.canonical_dump(other) == queries.canonical_dump(w.conn)
    finally:
        other.close()
        w.conn.close()


def test_checker_sees_a_double_sale() -> None:
    """The invariant check is not vacuous: a forged overlapping allocation is caught."""
    w = _world()
    pnr = w.hold(ALICE, RUN, "AC3", "PPP", "RRR").data["pnr"]
    b_id = w.conn.execute("SELECT id FROM bookings WHERE pnr = ?", (pnr,)).fetchone()[0]
    w.conn.execute("INSERT INTO allocations VALUES (?, 1, 1, 1, 3, 'AC3', ?)", (RUN, b_id))
    try:
        _check(w)
    except AssertionError:
        return
    finally:
        w.conn.close()
    raise AssertionError("the forged double sale went unnoticed")


def test_seat_map_queries_fail_on_the_segment_first_then_on_the_coach() -> None:
    import pytest

    c = _world().conn
    cases = (((99, "X1", "PPP", "RRR"), bq.NotFound, "no run 99"),
             ((RUN, "X1", "PPP", "ZZZ"), bq.NotFound, "does not stop at ZZZ"),
             ((RUN, "Z9", "RRR", "PPP"), ValueError, "reaches PPP before RRR"),  # the segment, before the coach
             ((RUN, "Z9", "PPP", "RRR"), bq.NotFound, "has no coach Z9"))
    for (run, label, a, b), kind, message in cases:
        with pytest.raises(kind, match=message):
            bq.coaches_and_seat_map(c, run, label, a, b)
        with pytest.raises(kind, match=message):
            bq.seat_map(c, run, label, a, b)
        if label == "X1":
            with pytest.raises(kind, match=message):
                bq.coaches(c, run, a, b)
    with pytest.raises(bq.NotFound, match="has no coach"):
        bq.seat_map(c, RUN, "", "PPP", "RRR")
