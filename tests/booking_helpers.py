"""Test-side helpers for the booking APIs against a real ProcessCluster: a tiny failover client and fixtures.

`Api` talks raw grpclib stubs (railraft.v1.Booking and train_booking.Ticketing) so the tests exercise the
server exactly as any client would, independently of the Python client library.  A call goes to the node
it names first (`via`), and on UNAVAILABLE or a broken connection it moves on to the next node with the SAME
request (and so the same request id) until its deadline -- the retry discipline exactly-once relies on.
Everything else (INVALID_ARGUMENT, FAILED_PRECONDITION, ...) is raised to the test as a GRPCError.

Use one `Api` per event loop:  ``run(main())`` with ``async with Api(cluster.addrs()) as api: ...``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from proto.gen.railraft.v1 import BookingStub
from proto.gen.train_booking import TicketingStub
from store import civil

from .cluster_harness import ProcessCluster, wait_until

ADMIN_USER = "admin"
ADMIN_PASSWORD = "s3cret-admin-pw"
PASSWORD = "password123"
TEST_CARD = "4111111111111111"

# Node environment for the booking tests: the first admin from the environment, a quick housekeeping loop,
# and holds expiring 57 s early so a 60-second hold (the shortest the rules allow) lapses in ~3 s.
NODE_ENV = {
    "RAILRAFT_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "RAILRAFT_HOUSEKEEPING_INTERVAL_MS": "200",
    "RAILRAFT_TEST_EXPIRY_LOOKAHEAD_MS": "57000",
}

RETRYABLE = {Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED}
CONNECT_ERRORS = (OSError, asyncio.TimeoutError, StreamTerminatedError, ProtocolError, ConnectionError,
                  AttributeError)


async def off_loop(fn: Any, *args: Any) -> Any:
    """Run a blocking ProcessCluster method (they run their own event loops) from inside a test's loop."""
    return await asyncio.to_thread(fn, *args)


def rid() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def day(offset: int) -> str:
    """The IST date `offset` days from today."""
    return civil.format_date(civil.local_day(int(time.time() * 1000)) + offset)


class Api:
    """Failover stubs over a cluster's addresses (see the module docstring)."""

    def __init__(self, addrs: list[str], timeout: float = 20.0) -> None:
        self.addrs = list(addrs)
        self.timeout = timeout
        self.channels: dict[str, Channel] = {}

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.channels.clear()

    def channel(self, addr: str) -> Channel:
        ch = self.channels.get(addr)
        if ch is None:
            host, _, port = addr.rpartition(":")
            ch = self.channels[addr] = Channel(host, int(port))
        return ch

    def booking(self, addr: str) -> BookingStub:
        return BookingStub(self.channel(addr))

    def ticketing(self, addr: str) -> TicketingStub:
        return TicketingStub(self.channel(addr))

    async def _call(self, stub_of: Any, method: str, req: Any, via: int | str | None, timeout: float | None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        if isinstance(via, str):
            start = self.addrs.index(via)
        else:
            start = (via or 0) % len(self.addrs)
        order = self.addrs[start:] + self.addrs[:start]
        last: Exception | None = None
        while True:
            for addr in order:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{method} failed on every node until the deadline: {last!r}")
                try:
                    return await getattr(stub_of(addr), method)(req, timeout=min(remaining, 10.0))
                except GRPCError as e:
                    if e.status not in RETRYABLE:
                        raise
                    last = e
                except CONNECT_ERRORS as e:
                    ch = self.channels.pop(addr, None)
                    if ch is not None:
                        ch.close()
                    last = e
            await asyncio.sleep(0.1)

    async def b(self, method: str, req: Any, via: int | str | None = None, timeout: float | None = None) -> Any:
        """Call railraft.v1.Booking.`method` (snake_case), starting at node index/address `via`."""
        return await self._call(self.booking, method, req, via, timeout)

    async def t(self, method: str, req: Any, via: int | str | None = None, timeout: float | None = None) -> Any:
        """Call train_booking.Ticketing.`method` (snake_case), starting at `via`."""
        return await self._call(self.ticketing, method, req, via, timeout)


async def expect_error(status: Status, coro: Any, contains: str = "") -> GRPCError:
    """Await `coro`; it must fail with `status` (and a message containing `contains`)."""
    try:
        reply = await coro
    except GRPCError as e:
        assert e.status == status, f"expected {status.name}, got {e.status.name}: {e.message}"
        assert contains.lower() in (e.message or "").lower(), f"{e.message!r} lacks {contains!r}"
        assert e.message, "an error needs a human message"
        return e
    raise AssertionError(f"expected {status.name}, got a reply: {reply}")


def start_cluster(root: Any, env: dict[str, str] | None = None) -> ProcessCluster:
    """A 3-node cluster with the booking environment, serving and with a leader."""
    c = ProcessCluster(root, env={**NODE_ENV, **(env or {})})
    c.start_all()
    c.wait_serving()
    c.wait_leader()
    return c


def quiesce(c: ProcessCluster, timeout: float = 20.0) -> int:
    """Until every live node has applied the same index twice in a row (the leader's chores are done)."""
    def settled() -> int | None:
        a = c.wait_caught_up(timeout=timeout)
        time.sleep(0.5)  # longer than the housekeeping interval: anything it had to do is proposed now
        b = c.wait_caught_up(timeout=timeout)
        return a if a == b else None

    return wait_until(settled, timeout, "the cluster to go quiet", poll=0.1)


def assert_same_databases(c: ProcessCluster, ids: list[int] | None = None) -> None:
    """Stop the nodes (after they converged) and compare their databases' canonical dumps."""
    ids = ids or sorted(c.nodes)
    quiesce(c)
    for nid in ids:
        assert c.stop(nid) == 0, f"node {nid} did not exit 0 on SIGTERM\n{c.log_tail(nid)}"
    dumps = {nid: c.dump(nid) for nid in ids}
    first = dumps[ids[0]]
    assert "bookings" in first
    for nid in ids[1:]:
        if dumps[nid] != first:
            import difflib

            diff = "\n".join(difflib.unified_diff(first.splitlines(), dumps[nid].splitlines(),
                                                  f"node{ids[0]}", f"node{nid}", lineterm="", n=1))
            raise AssertionError(f"node {nid}'s database differs from node {ids[0]}'s:\n{diff[:4000]}")
