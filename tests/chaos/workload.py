"""The chaos workload: concurrent bookings, cancellations, payments and reads through the client library.

A few workers (one customer account each) loop until stopped, each with its own `RailraftClient` over every
node.  Every call is recorded as a `Call` with its invocation and completion times (time.monotonic) and its
outcome: an answer, a definite error (the cluster said no: nothing happened), or *unknown* (the client gave up:
timeout, every node unreachable, an internal error -- it may or may not have happened).

The runs are tiny (SEATS seats in one AC2 coach, a route A -> B -> C, so two legs) and few, so holds really
compete for seats; each booking is one passenger, one seat, on a random segment (A-B, B-C or A-C).
Operations:

* hold     hold a seat on a segment -> ("ok", seat) | ("soldout",) | ("err", status, message) | unknown
* cancel   cancel one of the worker's acknowledged bookings -> ("ok",) | ("err", ...) | unknown
* pay      pay one of them -> ("ok",) | ("err", ...) | unknown
* seats    a linearizable seat map of a segment -> ("ok", frozenset of free seat numbers)
* status   a linearizable read of one of the worker's bookings -> ("ok", "HELD" | "CONFIRMED" | "CANCELLED" ...)

The checker (tests.chaos.checker) turns these into per-run histories for the linearizability checker.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from grpclib.const import Status

from gateway.client import BookingError, RailraftClient, Unavailable

STATIONS = (("CXA", "Chaos Alpha"), ("CXB", "Chaos Bravo"), ("CXC", "Chaos Charlie"))
ROUTE = (("CXA", 0, 0, 0), ("CXB", 60, 65, 80), ("CXC", 130, 130, 160))
# segment -> the legs it covers (leg 0 = A-B, leg 1 = B-C)
SEGMENTS = {("CXA", "CXB"): (0,), ("CXB", "CXC"): (1,), ("CXA", "CXC"): (0, 1)}
LEGS = 2
SEATS = 3
COACH = "A1"
CARD = "4111111111111111"
HOLD_SECONDS = 1800  # the longest hold the rules allow: no hold lapses while its run is in use
PASSWORD = "chaos-password-1"
# Answers that mean "the cluster decided: this did not (or did) happen" -- anything else is not definite.
DEFINITE = {Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.NOT_FOUND, Status.PERMISSION_DENIED,
            Status.UNAUTHENTICATED, Status.ALREADY_EXISTS}


@dataclass
class Call:
    """One client call as the client saw it."""

    id: int
    worker: int
    kind: str  # hold | cancel | pay | seats | status
    run: int
    args: tuple  # hold: (segment legs,); cancel/pay/status: (hold id,); seats: (segment legs,)
    call: float
    ret: float | None = None  # None: unknown outcome
    output: Any = None
    note: str = ""  # what went wrong, for unknown outcomes and errors
    pnr: str = ""  # hold: the PNR answered
    expires_ms: int = 0  # hold: when the hold lapses (server clock)


@dataclass
class Booking:
    """A hold the worker knows was acknowledged."""

    hold_id: int
    run: int
    pnr: str
    paid: bool = False
    cancel_tried: bool = False


@dataclass
class WorkloadStats:
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    server_errors: list[str] = field(default_factory=list)  # non-domain errors (INTERNAL, UNKNOWN, ...)


class Workload:
    """Runs the workers on an asyncio loop in a thread of its own; see the module docstring."""

    def __init__(self, addrs: list[str], runs: list[list[int]], tokens: list[str], seed: int, *,
                 epoch_s: float = 600.0, think_s: tuple[float, float] = (0.01, 0.06), call_timeout: float = 4.0,
                 attempt_timeout: float = 1.5) -> None:
        self.addrs = addrs
        self.epochs = runs  # runs[k]: the runs used in epoch k (a new set every epoch_s, so holds never lapse)
        self.tokens = tokens
        self.rng = random.Random(seed)
        self.epoch_s = epoch_s
        self.think_s = think_s
        self.call_timeout = call_timeout
        self.attempt_timeout = attempt_timeout
        self.history: list[Call] = []
        self.stats = WorkloadStats()
        self._ids = 0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._extra: list[asyncio.Task] = []
        self._clients: list[RailraftClient] = []
        self.bookings: list[dict[str, Booking]] = [{} for _ in tokens]
        self.inflight_writes = 0

    # ----------------------------------------------------------------------------------------- control
    def start(self) -> None:
        started = threading.Event()

        def main() -> None:
            self._loop = asyncio.SelectorEventLoop()  # not the trio-asyncio policy's loop: a plain one
            asyncio.set_event_loop(self._loop)
            started.set()
            try:
                self._loop.run_until_complete(self._main())
            finally:
                self._loop.close()

        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=main, name="chaos-workload", daemon=True)
        self._thread.start()
        started.wait()

    def stop(self) -> None:
        """Stop issuing calls; waits for the calls in flight (each bounded by its timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.call_timeout * 3 + 10)

    def burst(self, n: int) -> None:
        """From any thread: start `n` extra holds at once (a batch for the leader to be killed in the middle of)."""
        loop = self._loop
        if loop is None or self._stop.is_set():
            return

        def go() -> None:
            for _ in range(n):
                w = self.rng.randrange(len(self.tokens))
                self._extra.append(loop.create_task(self._hold(w, self._clients[w])))

        loop.call_soon_threadsafe(go)

    # ----------------------------------------------------------------------------------------- workers
    async def _main(self) -> None:
        self._clients = [RailraftClient(self.addrs, timeout=self.call_timeout, attempt_timeout=self.attempt_timeout,
                                        token=tok, rng=random.Random(self.rng.random())) for tok in self.tokens]
        try:
            await asyncio.gather(*(self._worker(w, self._clients[w]) for w in range(len(self.tokens))))
            if self._extra:
                await asyncio.gather(*self._extra, return_exceptions=True)
        finally:
            for c in self._clients:
                c.close()

    def _runs(self) -> list[int]:
        k = min(int((time.monotonic() - self._t0) / self.epoch_s), len(self.epochs) - 1)
        return self.epochs[k]

    async def _worker(self, w: int, rr: RailraftClient) -> None:
        rng = random.Random(self.rng.random())
        while not self._stop.is_set():
            runs = set(self._runs())
            mine = [b for b in self.bookings[w].values() if b.run in runs]
            live = [b for b in mine if not b.cancel_tried]
            unpaid = [b for b in live if not b.paid]
            x = rng.random()
            if x < 0.40 or (x < 0.65 and not live):
                await self._hold(w, rr, rng)
            elif x < 0.55:
                await self._cancel(w, rr, rng.choice(live))
            elif x < 0.65 and unpaid:
                await self._pay(w, rr, rng.choice(unpaid))
            elif x < 0.85 or not mine:
                await self._seats(w, rr, rng)
            else:
                await self._status(w, rr, rng.choice(mine))
            await asyncio.sleep(rng.uniform(*self.think_s))

    def _new(self, w: int, kind: str, run: int, args: tuple) -> Call:
        self._ids += 1
        c = Call(self._ids, w, kind, run, args, time.monotonic())
        self.history.append(c)
        return c

    async def _do(self, c: Call, coro: Any, write: bool) -> Any:
        """Await the client call; on an answer return it (the caller sets the output), else record the error."""
        if write:
            self.inflight_writes += 1
        try:
            res = await coro
        except BookingError as e:
            if e.status in DEFINITE:
                c.ret = time.monotonic()
                c.output = ("err", e.status.name, e.message)
                c.note = f"{e.status.name}: {e.message}"
                self.stats.failed += 1
            else:
                c.note = f"{e.status.name}: {e.message}"
                self.stats.unknown += 1
                self.stats.server_errors.append(f"{c.kind} #{c.id}: {c.note}")
            return None
        except Unavailable as e:
            c.note = str(e)[:300]
            self.stats.unknown += 1
            return None
        except Exception as e:  # noqa: BLE001 - anything else: outcome unknown, and worth reporting
            c.note = f"client error {e!r}"[:300]
            self.stats.unknown += 1
            self.stats.server_errors.append(f"{c.kind} #{c.id}: {c.note}")
            return None
        finally:
            if write:
                self.inflight_writes -= 1
        c.ret = time.monotonic()
        self.stats.ok += 1
        return res

    async def _hold(self, w: int, rr: RailraftClient, rng: random.Random | None = None) -> None:
        rng = rng or random.Random(self.rng.random())
        run = rng.choice(self._runs())
        seg = rng.choice(list(SEGMENTS))
        c = self._new(w, "hold", run, (SEGMENTS[seg],))
        res = await self._do(c, rr.hold(run, "AC2", seg[0], seg[1], [(f"Chaos W{w}", 30)],
                                        hold_seconds=HOLD_SECONDS), True)
        if res is not None:
            seat = res.passengers[0].seat if res.passengers else 0
            c.output = ("ok", seat)
            c.pnr = res.pnr
            c.expires_ms = res.hold_expires_ms
            self.bookings[w][res.pnr] = Booking(c.id, run, res.pnr)
        elif c.ret is not None and c.output[1] == "FAILED_PRECONDITION" and "sold out" in c.output[2]:
            c.output = ("soldout",)

    async def _cancel(self, w: int, rr: RailraftClient, b: Booking) -> None:
        b.cancel_tried = True
        c = self._new(w, "cancel", b.run, (b.hold_id,))
        if await self._do(c, rr.cancel(b.pnr), True) is not None:
            c.output = ("ok",)

    async def _pay(self, w: int, rr: RailraftClient, b: Booking) -> None:
        c = self._new(w, "pay", b.run, (b.hold_id,))
        b.paid = True  # tried: never twice (a second pay would be refused, which the model also allows)
        if await self._do(c, rr.pay(b.pnr, CARD), True) is not None:
            c.output = ("ok",)

    async def _seats(self, w: int, rr: RailraftClient, rng: random.Random) -> None:
        run = rng.choice(self._runs())
        seg = rng.choice(list(SEGMENTS))
        c = self._new(w, "seats", run, (SEGMENTS[seg],))
        res = await self._do(c, rr.seat_map(run, COACH, seg[0], seg[1]), False)
        if res is not None:
            c.output = ("ok", frozenset(s.number for s in res.seats if s.free))

    async def _status(self, w: int, rr: RailraftClient, b: Booking) -> None:
        c = self._new(w, "status", b.run, (b.hold_id,))
        res = await self._do(c, rr.booking(b.pnr), False)
        if res is not None:
            c.output = ("ok", res.state.name)


# --------------------------------------------------------------------------------------------- setup

async def setup_catalogue(addrs: list[str], admin_user: str, admin_password: str, *, workers: int, runs: int,
                          epochs: int, train_number: int = 19001, first_day: int = 20,
                          timeout: float = 60.0) -> tuple[list[list[int]], list[str]]:
    """Stations, one small train with `runs * epochs` runs, and `workers` customers.

    Returns (runs per epoch, customer tokens).  Everything goes through the client library, retried until
    `timeout` (the cluster has just started; the first admin appears shortly after the first leader).
    """
    from store import civil

    deadline = time.monotonic() + timeout
    async with RailraftClient(addrs, timeout=15.0) as rr:
        while True:
            try:
                await rr.login(admin_user, admin_password)
                break
            except Exception:  # noqa: BLE001 - not there yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        for code, name in STATIONS:
            await rr.add_station(code, name)
        await rr.add_train(train_number, "Chaos Express", "Express", "08:00", list(ROUTE), [(COACH, "AC2", SEATS)])
        today = civil.local_day(int(time.time() * 1000))
        total = runs * epochs
        created = await rr.schedule_runs(train_number, civil.format_date(today + first_day),
                                         civil.format_date(today + first_day + total - 1))
        ids = sorted(r.id for r in created)
        assert len(ids) == total, f"scheduled {len(ids)} runs, wanted {total}"
        tokens = []
        for w in range(workers):
            c = RailraftClient(addrs, timeout=15.0)
            s = await c.register(f"chaos-w{w}", PASSWORD)
            c.close()
            tokens.append(s.token)
    return [ids[k * runs:(k + 1) * runs] for k in range(epochs)], tokens
