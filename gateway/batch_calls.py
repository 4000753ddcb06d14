"""`railraft.v1.Booking/Batch` on the server: many unary calls of the Booking service in one round trip.

A unary grpclib call costs about as much CPU in HTTP/2 framing, headers and task set-up as the booking it
carries.  A client with many calls in flight to one node (the load generator, the web app serving many
users) sends them together, and this node runs each one through the very handler a single call goes
through -- the LeaderHintMixin-wrapped one, so checks, errors and leader hints come out the same -- with a
stand-in stream that hands the handler its request and keeps its reply or its status.  The calls of one
batch run at once, like separate calls would, and each result streams back as soon as its call is done (so
a slow call -- a write waiting for an election -- holds up no other).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from grpclib import GRPCError
from grpclib.const import Handler, Status

from proto.gen.railraft.v1 import BatchCall, BatchReply, BatchRequest, BatchResult

log = logging.getLogger("railraft.batch")

SERVICE_PREFIX = "/railraft.v1.Booking/"
BATCH_METHOD = "Batch"
BATCH_CALLS_MAX = 512  # calls one Batch may carry


class _CallStream:
    """What a generated `__rpc_*` handler and gateway.rpc's wrapper use of a grpclib server stream, for one
    call of a batch: the decoded request in, the reply or the final status out.  Peer address and metadata
    are the batch's own (rate limits and authentication see the real caller)."""

    __slots__ = ("_outer", "_raw", "_recv_type", "reply", "status", "message", "trailing")

    def __init__(self, outer: Any, raw: bytes, recv_type: type) -> None:
        self._outer = outer
        self._raw = raw
        self._recv_type = recv_type  # gateway.rpc names it in its "malformed request" message
        self.reply: Any = None
        self.status = Status.OK
        self.message = ""
        self.trailing: dict[str, str] = {}

    @property
    def peer(self) -> Any:
        return getattr(self._outer, "peer", None)

    @property
    def metadata(self) -> Any:
        return getattr(self._outer, "metadata", None)

    @property
    def deadline(self) -> Any:
        return getattr(self._outer, "deadline", None)

    async def recv_message(self) -> Any:
        return self._recv_type.FromString(self._raw)

    async def send_message(self, message: Any, **_: Any) -> None:
        self.reply = message

    async def send_trailing_metadata(self, *, status: Status = Status.OK, status_message: str | None = None,
                                     metadata: Any = None, **_: Any) -> None:
        self.status = status
        self.message = status_message or ""
        self.trailing = dict(metadata or {})


def batch_handlers(mapping: dict[str, Handler]) -> dict[str, Handler]:
    """The unary handlers a batch may call, by method name (everything of the service but Batch itself)."""
    handlers: dict[str, Handler] = {}
    for path, h in mapping.items():
        name = path[len(SERVICE_PREFIX):] if path.startswith(SERVICE_PREFIX) else ""
        if name and name != BATCH_METHOD and h.cardinality.name == "UNARY_UNARY":
            handlers[name] = h
    return handlers


async def run_batch(handlers: dict[str, Handler], request: BatchRequest, outer: Any
                    ) -> AsyncIterator[BatchReply]:
    """Run every call of `request` at once through `handlers`, yielding their results as they finish: one
    reply per wake-up, with every result that finished meanwhile (each tagged with its call's index)."""
    if len(request.calls) > BATCH_CALLS_MAX:
        raise GRPCError(Status.INVALID_ARGUMENT,
                        f"a batch carries at most {BATCH_CALLS_MAX} calls (got {len(request.calls)})")
    finished: list[BatchResult] = []
    wake = asyncio.Event()

    async def run(index: int, call: BatchCall) -> None:
        result = await _one(handlers, call, outer)
        result.index = index
        finished.append(result)
        wake.set()

    tasks = [asyncio.ensure_future(run(i, c)) for i, c in enumerate(request.calls)]
    try:
        left = len(tasks)
        while left:
            await wake.wait()
            wake.clear()
            ready = finished[:]
            finished.clear()
            left -= len(ready)
            yield BatchReply(results=ready)
    finally:
        for t in tasks:  # the caller went away: its calls stop, as a unary call's handler would
            t.cancel()


async def _one(handlers: dict[str, Handler], call: BatchCall, outer: Any) -> BatchResult:
    handler = handlers.get(call.method)
    if handler is None:
        what = "a Batch cannot carry another Batch" if call.method == BATCH_METHOD else (
            f"no unary method {call.method!r} in railraft.v1.Booking")
        return BatchResult(status=Status.UNIMPLEMENTED.value, message=what)
    stream = _CallStream(outer, call.request, handler.request_type)
    try:
        await handler.func(stream)
    except GRPCError as e:
        return BatchResult(status=e.status.value, message=e.message or "")
    except Exception:  # noqa: BLE001 - one call's bug must not fail its neighbours; grpclib would say UNKNOWN
        log.exception("batched %s failed", call.method)
        return BatchResult(status=Status.UNKNOWN.value, message="Internal Server Error")
    if stream.status != Status.OK:
        return BatchResult(status=stream.status.value, message=stream.message,
                           leader_id=str(stream.trailing.get("leader-id", "")),
                           leader_addr=str(stream.trailing.get("leader-addr", "")))
    if stream.reply is None:  # pragma: no cover - every generated handler sends its reply
        return BatchResult(status=Status.UNKNOWN.value, message="the call ended without a reply")
    return BatchResult(reply=bytes(stream.reply))
