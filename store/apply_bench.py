"""Measure the state machine alone: apply cost of bookings and search latency on the benchmark dataset.

    .venv/bin/python -m store.apply_bench --db /tmp/bench.db --bookings 100000

Builds (or reuses) a database with store.demo's benchmark dataset (default 50 trains x 30 days x 20 coaches x
72 seats), applies `--bookings` HoldSeats (90 % followed by a ConfirmPayment) in batches like the applier does,
then measures, on top of that state: the apply cost of further holds and payments, and search / seat-map
latency (p50, p99).  No Raft, no RPC: this is the SQLite part of the per-booking cost.

Not a test: numbers depend on the machine.  Uses `random` with a fixed seed (this is a tool, not the apply).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import time
from collections.abc import Iterator

from . import booking_queries as bq
from . import civil, demo, schema
from .booking import int_to_pnr
from .commands import (
    BootstrapAdmin,
    CommandBase,
    ConfirmPayment,
    CreateSession,
    HoldSeats,
    PassengerSpec,
    RegisterUser,
    encode_command,
)
from .state_machine import KIND_NORMAL, apply_batch, read_meta_int

T0 = civil.parse_datetime("2026-06-01 09:00")
START = "2026-06-02"
ADMIN_TOKEN = "a" * 64
CUSTOMERS = 1000
BATCH = 200


def _token(i: int) -> str:
    return f"{i:064x}"


class Bench:
    """A database and a log position."""

    def __init__(self, path: str) -> None:
        self.conn = schema.connect(path)
        self.index = read_meta_int(self.conn, "applied_index")

    def entries(self, cmds: list[CommandBase]) -> list[tuple[int, int, bytes]]:
        """Log entries for `cmds` at the next indexes (encoding is the proposer's cost, so done up front)."""
        out = []
        for c in cmds:
            self.index += 1
            out.append((self.index, KIND_NORMAL, encode_command(c)))
        return out

    def apply(self, cmds: list[CommandBase]) -> list:
        return apply_batch(self.conn, self.entries(cmds))


def build_dataset(b: Bench, trains: int, days: int) -> None:
    """Admin, customers with sessions, and the benchmark catalogue."""
    cmds: list[CommandBase] = [
        BootstrapAdmin(request_id="admin", client_id="bench", ts_ms=T0, username="admin", password_hash="h"),
        CreateSession(request_id="s-admin", client_id="bench", ts_ms=T0, user_id=1, token_sha256=ADMIN_TOKEN,
                      expires_at_ms=T0 + 365 * civil.DAY_MS),
    ]
    for i in range(CUSTOMERS):
        cmds.append(RegisterUser(request_id=f"u{i}", client_id="bench", ts_ms=T0, username=f"cust{i:04d}",
                                 password_hash="h", role="CUSTOMER"))
        cmds.append(CreateSession(request_id=f"s{i}", client_id="bench", ts_ms=T0, user_id=i + 2,
                                  token_sha256=_token(i + 1), expires_at_ms=T0 + 365 * civil.DAY_MS))
    cmds += demo.benchmark_commands(ADMIN_TOKEN, START, T0, trains=trains, days=days)
    for i in range(0, len(cmds), BATCH):
        results = b.apply(cmds[i:i + BATCH])
        bad = [r for r in results if r is not None and not r.ok]
        assert not bad, bad[:3]


def bookings(rng: random.Random, runs: int, stops: int, start: int, count: int, ts: int
             ) -> Iterator[tuple[HoldSeats, bool]]:
    """`count` random holds (and whether to pay each) from booking number `start` on."""
    classes = ("AC2", "AC3", "AC3", "SLEEPER", "SLEEPER", "SLEEPER", "GENERAL")
    for n in range(start, start + count):
        f = rng.randrange(stops - 1)
        t = rng.randrange(f + 1, stops)
        pax = rng.choices((1, 2, 3, 4), weights=(50, 30, 12, 8))[0]
        user = rng.randrange(CUSTOMERS) + 1
        hold = HoldSeats(
            request_id=f"h{n}", client_id=f"bench-{user}", ts_ms=ts, token_sha256=_token(user),
            pnr=int_to_pnr(n * 1_000_000_007 + 12345), run_id=rng.randrange(runs) + 1,
            travel_class=rng.choice(classes), from_code=f"S{f}", to_code=f"S{t}",
            passengers=tuple(PassengerSpec(name=f"Passenger {k}", age=30) for k in range(pax)),
            accept_waitlist=False, hold_seconds=1800,
        )
        yield hold, rng.random() < 0.9


def run_bookings(b: Bench, rng: random.Random, runs: int, days: int, codes: dict[int, list[str]], start: int,
                 count: int, ts: int) -> tuple[float, float, int, int]:
    """Apply holds (batched), then their payments; (seconds for holds, seconds for pays, ok holds, pays).

    Runs were scheduled train by train, `days` each, so run r belongs to train (r - 1) // days, whose station
    codes are codes[train].
    """
    holds, pay_flags = [], []
    for hold, pay in bookings(rng, runs, 10, start, count, ts):
        run_codes = codes[(hold.run_id - 1) // days]
        f, t = int(hold.from_code[1:]), int(hold.to_code[1:])
        holds.append(HoldSeats(**{**_fields(hold), "from_code": run_codes[f], "to_code": run_codes[t]}))
        pay_flags.append(pay)
    batches = [b.entries(holds[i:i + BATCH]) for i in range(0, len(holds), BATCH)]
    t0 = time.perf_counter()
    results = []
    for batch in batches:
        results += apply_batch(b.conn, batch)
    t_hold = time.perf_counter() - t0
    pays = [
        ConfirmPayment(request_id=f"p{h.request_id}", client_id=h.client_id, ts_ms=ts + 1000, token_sha256=h.token_sha256,
                       pnr=r.data["pnr"], amount_paise=r.data["amount_paise"], provider_ref=f"ref-{r.data['pnr']}",
                       approved=True)
        for h, r, flag in zip(holds, results, pay_flags) if flag and r.ok
    ]
    batches = [b.entries(pays[i:i + BATCH]) for i in range(0, len(pays), BATCH)]
    t0 = time.perf_counter()
    for batch in batches:
        apply_batch(b.conn, batch)
    t_pay = time.perf_counter() - t0
    return t_hold, t_pay, sum(r.ok for r in results), len(pays)


def _fields(cmd: CommandBase) -> dict:
    return {f.name: getattr(cmd, f.name) for f in dataclasses.fields(cmd)}


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile (0..100) of xs, nearest-rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def main() -> None:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="/tmp/railraft-bench.db")
    ap.add_argument("--bookings", type=int, default=100_000, help="bookings to store before measuring")
    ap.add_argument("--trains", type=int, default=50)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--measure", type=int, default=5_000, help="bookings to time on top of the stored ones")
    ap.add_argument("--searches", type=int, default=2_000)
    ap.add_argument("--fresh", action="store_true", help="delete the database first")
    args = ap.parse_args()
    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.db + suffix):
                os.remove(args.db + suffix)
    b = Bench(args.db)
    rng = random.Random(42)
    if b.index == 0:
        t0 = time.perf_counter()
        build_dataset(b, args.trains, args.days)
        print(f"dataset: {time.perf_counter() - t0:.1f} s, {b.index} commands")
    codes = {t: [s.station_code for s in demo.bench_route(t)] for t in range(args.trains)}
    runs = args.trains * args.days
    stored = b.conn.execute("SELECT COUNT(*) FROM bookings").fetchone()[0]
    chunk = 20_000
    while stored < args.bookings:
        n = min(chunk, args.bookings - stored)
        th, tp, ok, paid = run_bookings(b, rng, runs, args.days, codes, 10_000_000 + stored, n, T0 + 60_000)
        stored = b.conn.execute("SELECT COUNT(*) FROM bookings").fetchone()[0]
        print(f"stored {stored:>8} bookings: holds {th / n * 1e6:6.0f} us/cmd ({ok}/{n} ok), "
              f"pays {tp / max(paid, 1) * 1e6:6.0f} us/cmd")
    th, tp, ok, paid = run_bookings(b, rng, runs, args.days, codes, 90_000_000, args.measure, T0 + 120_000)
    print(f"MEASURED on {stored} stored bookings: HoldSeats {th / args.measure * 1e6:.0f} us/cmd "
          f"({ok}/{args.measure} ok), ConfirmPayment {tp / max(paid, 1) * 1e6:.0f} us/cmd "
          f"(batches of {BATCH}, one transaction each)")

    reader = schema.connect(args.db, reader=True)
    lat, seat_lat, hits = [], [], 0
    for _ in range(args.searches):
        t = rng.randrange(args.trains)
        f = rng.randrange(9)
        to = rng.randrange(f + 1, 10)
        date = civil.format_date(civil.parse_date(START) + rng.randrange(args.days))
        t0 = time.perf_counter()
        reader.execute("BEGIN")
        res = bq.search(reader, codes[t][f], codes[t][to], date)
        reader.execute("ROLLBACK")
        lat.append(time.perf_counter() - t0)
        hits += len(res)
        if res:
            t0 = time.perf_counter()
            bq.seat_map(reader, res[0].run_id, "S1", res[0].from_code, res[0].to_code)
            seat_lat.append(time.perf_counter() - t0)
    print(f"search: p50 {percentile(lat, 50) * 1e3:.2f} ms, p99 {percentile(lat, 99) * 1e3:.2f} ms, "
          f"max {max(lat) * 1e3:.2f} ms ({hits / len(lat):.2f} runs per result)")
    print(f"seat map: p50 {percentile(seat_lat, 50) * 1e3:.2f} ms, p99 {percentile(seat_lat, 99) * 1e3:.2f} ms")
    print(f"database: {os.path.getsize(args.db) / 2**20:.0f} MiB, "
          f"{b.conn.execute('SELECT COUNT(*) FROM allocations').fetchone()[0]} allocations")
    print(f"mean search {statistics.mean(lat) * 1e3:.2f} ms")
    reader.close()
    b.conn.close()


if __name__ == "__main__":
    main()
