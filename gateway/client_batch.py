"""The client library's call batching: calls to one node made together travel in one `Booking/Batch`.

A unary grpclib call costs about 0.5 ms of CPU on each side, as much as the booking it carries.  A client
object that many tasks share (the load generator's, the web app's) therefore queues each Booking call for its
node and sends what is queued in one Batch: every call still runs on the node exactly as if made alone
(gateway/batch_calls.py) and gets back its own reply or its own error -- with the leader hint a single call
would carry -- so retries, failover and exactly-once work per call as before.

A call to an idle node goes out on the next turn of the event loop, alone if it is alone (then as a plain
unary call, which any server understands), together with whatever was queued with it otherwise.  While a send
to a node is on its way (`max_inflight`), new calls to it wait and gather; they leave together as soon as
the first reply of that send arrives -- the node is keeping up -- or after `release_after` seconds, so a slow
call never holds the others up for long.  Under load this is what makes batches: the busier the node, the
more calls each round trip carries.  A server without Batch (UNIMPLEMENTED) gets unary calls from then on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import StreamTerminatedError

from proto.gen.railraft.v1 import BatchCall, BatchReply, BatchRequest

from .leader_hint import leader_hint_of, parse_leader_hint

BATCH_PATH = "/railraft.v1.Booking/Batch"
BATCH_CALLS_MAX = 256  # calls per Batch (the server takes up to 512)
MAX_INFLIGHT = 1  # sends on their way to one node before new calls wait (and so gather into the next batch)
# A send gives its place back when its first reply arrives, or after this long: a slow call (a read waiting
# out an election) holds up the calls made after it by at most this much.
RELEASE_AFTER_S = 0.2

# Sends one unary call: (address, path, request, reply type, timeout) -> reply; raises what the call raised
# (GRPCError with `.leader_hint`).
Unary = Callable[[str, str, Any, type, float], Awaitable[Any]]


@dataclass(eq=False)
class _Pending:
    path: str
    name: str
    reply: type
    request: Any
    timeout: float
    future: asyncio.Future


@dataclass(eq=False)
class _NodeQueue:
    items: list[_Pending] = field(default_factory=list)
    inflight: int = 0
    scheduled: bool = False
    unary_only: bool = False  # the server answered UNIMPLEMENTED to a Batch


class CallBatcher:
    """Per node address, the calls waiting to go and the batches on their way (see the module docstring)."""

    def __init__(self, unary: Unary, channel: Callable[[str], Channel], *, max_inflight: int = MAX_INFLIGHT,
                 max_calls: int = BATCH_CALLS_MAX, release_after: float = RELEASE_AFTER_S) -> None:
        self._unary = unary
        self._channel = channel
        self.max_inflight = max(1, max_inflight)
        self.max_calls = max(1, max_calls)
        self.release_after = release_after
        self._queues: dict[str, _NodeQueue] = {}
        self._tasks: set[asyncio.Task] = set()

    async def call(self, addr: str, path: str, reply: type, request: Any, timeout: float) -> Any:
        """The reply of `request` on node `addr`, sent with whatever else is queued for it; raises what the
        call raised alone (GRPCError with `.leader_hint`, connection errors, TimeoutError)."""
        loop = asyncio.get_running_loop()
        q = self._queues.setdefault(addr, _NodeQueue())
        fut = loop.create_future()
        fut.add_done_callback(_retrieve)
        q.items.append(_Pending(path, path.rsplit("/", 1)[-1], reply, request, timeout, fut))
        self._schedule(loop, addr, q)
        return await asyncio.wait_for(asyncio.shield(fut), timeout + 0.25)

    def close(self) -> None:
        """Stop every batch on its way; their calls fail as if the connection had dropped."""
        for task in list(self._tasks):
            try:
                task.cancel()
            except RuntimeError:  # a task of a loop that is closed already (the client moved to a new loop)
                pass
        self._tasks.clear()
        for q in self._queues.values():
            _fail(q.items, StreamTerminatedError("the client was closed"))
            q.items.clear()
        self._queues.clear()

    def _schedule(self, loop: asyncio.AbstractEventLoop, addr: str, q: _NodeQueue) -> None:
        if not q.scheduled and q.items and q.inflight < self.max_inflight:
            q.scheduled = True
            loop.call_soon(self._flush, loop, addr, q)  # the next turn: calls made in this one go together

    def _flush(self, loop: asyncio.AbstractEventLoop, addr: str, q: _NodeQueue) -> None:
        q.scheduled = False
        while q.items and q.inflight < self.max_inflight:
            taken, q.items = q.items[:self.max_calls], q.items[self.max_calls:]
            taken = [p for p in taken if not p.future.done()]  # callers that gave up already
            if not taken:
                continue
            q.inflight += 1
            task = loop.create_task(self._send(addr, q, taken))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, addr: str, q: _NodeQueue, items: list[_Pending]) -> None:
        released = False

        def release() -> None:  # gives this send's slot back, once; the queue's next calls may go
            nonlocal released
            if not released:
                released = True
                q.inflight -= 1
                if self._queues.get(addr) is q:
                    self._schedule(asyncio.get_running_loop(), addr, q)

        timer = asyncio.get_running_loop().call_later(self.release_after, release)
        try:
            if len(items) == 1 or q.unary_only:
                await asyncio.gather(*(self._send_one(addr, p) for p in items))
            else:
                await self._send_batch(addr, q, items, release)
        except asyncio.CancelledError:
            _fail(items, StreamTerminatedError("the client was closed"))
            raise
        finally:
            timer.cancel()
            release()

    async def _send_one(self, addr: str, p: _Pending) -> None:
        try:
            reply = await self._unary(addr, p.path, p.request, p.reply, p.timeout)
        except Exception as e:  # noqa: BLE001 - handed to the caller as if it had called alone
            _settle(p.future, error=e)
        else:
            _settle(p.future, reply)

    async def _send_batch(self, addr: str, q: _NodeQueue, items: list[_Pending], release: Callable[[], None]
                          ) -> None:
        request = BatchRequest(calls=[BatchCall(method=p.name, request=bytes(p.request)) for p in items])
        timeout = max(p.timeout for p in items)
        try:
            async with self._channel(addr).request(BATCH_PATH, Cardinality.UNARY_STREAM, BatchRequest, BatchReply,
                                                   timeout=timeout) as stream:
                try:
                    await stream.send_message(request, end=True)
                    while (reply := await asyncio.wait_for(stream.recv_message(), timeout + 0.25)) is not None:
                        for r in reply.results:
                            if r.index < len(items):
                                _settle_result(items[r.index], r)
                        release()  # the node is answering: the next calls need not wait for this batch's slowest
                except GRPCError as e:
                    e.leader_hint = leader_hint_of(e, stream.trailing_metadata)  # type: ignore[attr-defined]
                    raise
        except GRPCError as e:
            if e.status == Status.UNIMPLEMENTED and not any(p.future.done() for p in items):
                q.unary_only = True  # an older server: one call at a time from now on
                await asyncio.gather(*(self._send_one(addr, p) for p in items))
                return
            _fail(items, e)
        except Exception as e:  # noqa: BLE001 - the connection's failure is every unanswered call's
            _fail(items, e)
        # A stream that ended without every result: those calls must be tried again.
        _fail(items, GRPCError(Status.UNAVAILABLE, "the node did not answer this call"))


def _settle_result(p: _Pending, r: Any) -> None:
    if r.status == 0:
        try:
            _settle(p.future, p.reply.FromString(r.reply))
        except Exception as e:  # noqa: BLE001 - an undecodable reply fails that call only
            _settle(p.future, error=e)
        return
    err = GRPCError(_status(r.status), r.message)
    err.leader_hint = r.leader_addr or parse_leader_hint(r.message)[1]  # type: ignore[attr-defined]
    _settle(p.future, error=err)


def _status(code: int) -> Status:
    try:
        return Status(code)
    except ValueError:
        return Status.UNKNOWN


def _settle(fut: asyncio.Future, value: Any = None, *, error: BaseException | None = None) -> None:
    if fut.done():
        return
    try:
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)
    except RuntimeError:  # its loop is closed: nobody is waiting any more
        pass


def _fail(items: list[_Pending], error: BaseException) -> None:
    for p in items:
        _settle(p.future, error=error)


def _retrieve(fut: asyncio.Future) -> None:
    # Retrieved even when the caller gave up waiting: no "exception was never retrieved" noise.
    if not fut.cancelled():
        fut.exception()
