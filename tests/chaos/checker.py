"""What the chaos run checks once the faults are healed: histories and the nodes' databases.

* **Linearizability per run.**  Each run of the workload's train is an independent object (P-compositionality):
  SEATS seats x LEGS legs, each cell free or held by one booking, plus the set of paid bookings.  The model
  is nondeterministic (a hold may be given any free seat; an unknown hold may have taken any free seat, or
  not happened), built with tests.linearizability.nondeterministic_model and checked with our WGL checker.
  A booking is named by the id of the hold call that created it, so unknown holds need no PNR.
* **No acknowledged booking lost** (on every node's database): each acknowledged hold exists with its PNR, its
  run, its seat and its segment, in a state its later acknowledged calls allow (CANCELLED after an
  acknowledged cancel; HELD/CONFIRMED when never cancelled; CONFIRMED once an acknowledged pay went through).
* **No seat sold twice on a segment**: no two seat allocations of a run overlap, and no two active
  passengers of live bookings sit on the same seat on overlapping segments.
* **Identical replicas**: the canonical dumps (gateway.cli.dump_database) of all nodes are byte-identical.
"""

from __future__ import annotations

import difflib
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.linearizability import UNKNOWN, CheckResult, Operation, check, nondeterministic_model

from .workload import LEGS, SEATS, SEGMENTS, Call

FREE = 0
LIVE = ("HELD", "CONFIRMED")

# --------------------------------------------------------------------------------------- the model
# state: (cells, paid) -- cells[seat - 1][leg] = holder (hold call id) or FREE; paid: frozenset of holders.

Cells = tuple[tuple[int, ...], ...]


def _init() -> list[tuple[Cells, frozenset]]:
    return [(tuple((FREE,) * LEGS for _ in range(SEATS)), frozenset())]


def _free(cells: Cells, legs: tuple[int, ...]) -> list[int]:
    return [i + 1 for i, row in enumerate(cells) if all(row[leg] == FREE for leg in legs)]


def _take(cells: Cells, seat: int, legs: tuple[int, ...], holder: int) -> Cells:
    row = list(cells[seat - 1])
    for leg in legs:
        row[leg] = holder
    return cells[: seat - 1] + (tuple(row),) + cells[seat:]


def _release(cells: Cells, holder: int) -> Cells:
    return tuple(tuple(FREE if h == holder else h for h in row) for row in cells)


def _holds(cells: Cells, holder: int) -> bool:
    return any(holder in row for row in cells)


def _step(state: tuple[Cells, frozenset], input: tuple, output: Any) -> Iterable[tuple[Cells, frozenset]]:
    cells, paid = state
    kind = input[0]
    if kind == "hold":
        legs, holder = input[2], input[3]
        free = _free(cells, legs)
        if output is UNKNOWN:
            return [(_take(cells, s, legs, holder), paid) for s in free] or [state]
        if output[0] == "ok":
            return [(_take(cells, output[1], legs, holder), paid)] if output[1] in free else []
        if output[0] == "soldout":
            return [state] if not free else []
        return []  # any other refusal of a hold is wrong
    if kind == "cancel":
        holder = input[2]
        present = _holds(cells, holder)
        after = (_release(cells, holder), paid)
        if output is UNKNOWN:
            return [after] if present else [state]
        if output[0] == "ok":
            return [after] if present else []
        return [] if present else [state]
    if kind == "pay":
        holder = input[2]
        can = _holds(cells, holder) and holder not in paid
        after = (cells, paid | {holder})
        if output is UNKNOWN:
            return [after] if can else [state]
        if output[0] == "ok":
            return [after] if can else []
        return [] if can else [state]
    if kind == "seats":
        return [state] if output is UNKNOWN or output[1] == frozenset(_free(cells, input[2])) else []
    if kind == "status":
        holder = input[2]
        if _holds(cells, holder):
            want = "CONFIRMED" if holder in paid else "HELD"
        else:
            want = "CANCELLED"
        return [state] if output is UNKNOWN or output[1] == want else []
    raise ValueError(f"unknown operation {input!r}")


def _describe(input: tuple, output: Any) -> str:
    kind = input[0]
    if kind in ("hold", "seats"):
        seg = next(f"{a}-{b}" for (a, b), legs in SEGMENTS.items() if legs == input[2])
        what = f"{kind}(run {input[1]}, {seg}" + (f", booking #{input[3]})" if kind == "hold" else ")")
    else:
        what = f"{kind}(run {input[1]}, booking #{input[2]})"
    return f"{what} -> {output!r}"


SEAT_MODEL = nondeterministic_model(
    _init,
    _step,
    partition=lambda ops: list(_by_run(ops).values()),
    describe=_describe,
    read_only=lambda input: input[0] in ("seats", "status"),
    label=lambda ops: f"run {ops[0].input[1]}",
)


def _by_run(ops: list[Operation]) -> dict[int, list[Operation]]:
    out: dict[int, list[Operation]] = {}
    for op in ops:
        out.setdefault(op.input[1], []).append(op)
    return out


def to_operations(history: list[Call]) -> list[Operation]:
    """The workload's calls as checker operations (input carries the run, so the model partitions by run)."""
    ops = []
    for c in history:
        if c.kind in ("hold", "seats"):
            inp = (c.kind, c.run, c.args[0]) + ((c.id,) if c.kind == "hold" else ())
        else:
            inp = (c.kind, c.run, c.args[0])
        ops.append(Operation(c.worker, inp, c.output if c.ret is not None else None, c.call, c.ret))
    return ops


def check_linearizable(history: list[Call], max_steps: int = 2_000_000) -> CheckResult:
    return check(to_operations(history), SEAT_MODEL, max_steps=max_steps)


# ------------------------------------------------------------------------------------- the databases

def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def lost_bookings(db: Path, history: list[Call], now_ms: int | None = None) -> list[str]:
    """Acknowledged holds/cancels/pays that this database does not reflect (see the module docstring)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    holds = {c.id: c for c in history if c.kind == "hold" and c.ret is not None and c.output[0] == "ok"}
    cancels: dict[int, str] = {}  # hold id -> "ok" | "unknown"
    pays: dict[int, str] = {}
    for c in history:
        if c.kind in ("cancel", "pay"):
            outcome = "unknown" if c.ret is None else ("ok" if c.output[0] == "ok" else "err")
            (cancels if c.kind == "cancel" else pays)[c.args[0]] = outcome
    problems = []
    conn = _connect(db)
    try:
        for hid, c in sorted(holds.items()):
            row = conn.execute(
                "SELECT b.run_id, b.from_seq, b.to_seq, b.status, p.seat_no, p.status FROM bookings AS b"
                " JOIN passengers AS p ON p.booking_id = b.id AND p.pax_no = 1 WHERE b.pnr = ?", (c.pnr,)).fetchone()
            name = f"booking #{hid} (PNR {c.pnr}, run {c.run}, seat {c.output[1]})"
            if row is None:
                problems.append(f"{name}: acknowledged but not in the database")
                continue
            run_id, f, t, status, seat, _ = row
            legs = tuple(range(f, t))
            if run_id != c.run or seat != c.output[1] or legs != c.args[0]:
                problems.append(f"{name}: stored as run {run_id}, seat {seat}, legs {legs}")
            cancel = cancels.get(hid)
            if cancel == "ok":
                allowed = {"CANCELLED"}
            elif cancel == "unknown":
                allowed = {"CANCELLED", *LIVE}
            elif pays.get(hid) == "ok":
                allowed = {"CONFIRMED"}
            else:
                allowed = set(LIVE)
            if c.expires_ms and c.expires_ms <= now_ms and pays.get(hid) != "ok":
                allowed.add("EXPIRED")  # a hold that was never paid may lapse (long runs)
            if status not in allowed:
                problems.append(f"{name}: status {status}, expected {' or '.join(sorted(allowed))}")
    finally:
        conn.close()
    return problems


def double_sales(db: Path) -> list[str]:
    """Seats sold twice on overlapping segments of a run (allocations, and the passengers of live bookings)."""
    conn = _connect(db)
    try:
        rows = conn.execute(
            "SELECT a.run_id, a.coach_no, a.seat_no, a.from_seq, a.to_seq, a.booking_id,"
            "       b.from_seq, b.to_seq, b.booking_id"
            " FROM allocations AS a JOIN allocations AS b ON a.run_id = b.run_id AND a.coach_no = b.coach_no"
            "  AND a.seat_no = b.seat_no AND a.booking_id < b.booking_id"
            "  AND a.from_seq < b.to_seq AND b.from_seq < a.to_seq").fetchall()
        out = [f"run {r[0]} coach {r[1]} seat {r[2]}: allocation {r[3]}-{r[4]} of booking {r[5]} overlaps"
               f" {r[6]}-{r[7]} of booking {r[8]}" for r in rows]
        rows = conn.execute(
            "SELECT b.run_id, p.coach_no, p.seat_no, b.pnr, c.pnr FROM passengers AS p"
            " JOIN bookings AS b ON b.id = p.booking_id"
            " JOIN passengers AS q ON q.coach_no = p.coach_no AND q.seat_no = p.seat_no"
            " JOIN bookings AS c ON c.id = q.booking_id"
            " WHERE b.run_id = c.run_id AND b.id < c.id AND p.status = 'ACTIVE' AND q.status = 'ACTIVE'"
            "  AND b.status IN ('HELD', 'CONFIRMED') AND c.status IN ('HELD', 'CONFIRMED')"
            "  AND b.from_seq < c.to_seq AND c.from_seq < b.to_seq").fetchall()
        out += [f"run {r[0]} coach {r[1]} seat {r[2]}: live bookings {r[3]} and {r[4]} share it" for r in rows]
        # Every live passenger's seat is allocated to its booking, and every allocation belongs to one.
        rows = conn.execute(
            "SELECT b.pnr, p.coach_no, p.seat_no FROM passengers AS p JOIN bookings AS b ON b.id = p.booking_id"
            " WHERE p.status = 'ACTIVE' AND b.status IN ('HELD', 'CONFIRMED') AND NOT EXISTS ("
            "  SELECT 1 FROM allocations AS a WHERE a.booking_id = b.id AND a.coach_no = p.coach_no"
            "  AND a.seat_no = p.seat_no)").fetchall()
        out += [f"booking {r[0]}: seat {r[1]}/{r[2]} has no allocation" for r in rows]
        return out
    finally:
        conn.close()


def diff_dumps(dumps: dict[int, str]) -> list[str]:
    """Differences between the nodes' canonical dumps (empty if all identical)."""
    ids = sorted(dumps)
    first = dumps[ids[0]]
    out = []
    for nid in ids[1:]:
        if dumps[nid] != first:
            diff = "\n".join(difflib.unified_diff(first.splitlines(), dumps[nid].splitlines(), f"node{ids[0]}",
                                                  f"node{nid}", lineterm="", n=1))
            out.append(f"node {nid}'s database differs from node {ids[0]}'s:\n{diff[:3000]}")
    return out
