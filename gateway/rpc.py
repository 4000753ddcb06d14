"""Shared plumbing for railraft's grpclib services: errors with leader hints, and calling Trio from handlers.

grpclib runs handlers on asyncio (inside trio-asyncio); the node is Trio code, reached with `trio_call`
(`LoopTurnBatch` makes the calls of one turn of the loop a single one).
A node that cannot serve a request answers UNAVAILABLE with the leader hint in trailing metadata
(`leader-id`, `leader-addr`) and, for clients that only see the message, `leader=ID@HOST:PORT` in its text.

Every handler wrapped by `LeaderHintMixin` also gets:

* hostile-input safety at the decoding edge: a request whose bytes are not a valid message of its type
  (random bytes, a truncated encoding, invalid UTF-8 in a string field, an overlong varint) is answered
  INVALID_ARGUMENT instead of grpclib's UNKNOWN "Internal Server Error";
* the calling stream in a context variable, so code below the handler can ask who is calling:
  `peer_host()` (the client's IP address, for login throttling) and `peer_authenticated()`.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import trio_asyncio
from grpclib import GRPCError
from grpclib.const import Handler, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from actors.node import NodeStopping, NotLeaderError, ProposalLost

from . import aio_loop
from .leader_hint import not_leader_message

# Every process serving railraft's gRPC runs its asyncio callbacks in bursts (see gateway/aio_loop.py).
aio_loop.install()


def trio_call(fn: Callable[..., Awaitable[Any]], *args: Any) -> Awaitable[Any]:
    """From an asyncio handler, await a Trio async function."""
    return trio_asyncio.trio_as_aio(fn)(*args)


class LoopTurnBatch:
    """Calls made in one turn of the asyncio loop, run together at the start of the next one.

    `await batch(item)` gives `item`'s outcome from `run(items)`, which gets every item of the turn in order
    and returns one outcome per item: a value, or an exception that is that item's alone.  An exception `run`
    raises is every item's.  Each caller waits on its own future, so one giving up leaves the others be.
    """

    def __init__(self, run: Callable[[list[Any]], Awaitable[list[Any]]]) -> None:
        self._run = run
        self._items: list[tuple[Any, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if nobody waits
        if not self._items:
            loop.call_soon(self._start)
        self._items.append((item, fut))
        return await fut

    def _start(self) -> None:
        items, self._items = self._items, []
        task = asyncio.ensure_future(self._settle(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in items])
        except Exception as e:  # noqa: BLE001 - every caller of the turn learns it
            for _, f in items:
                if not f.done():
                    f.set_exception(e)
            return
        except BaseException:
            for _, f in items:
                f.cancel()
            raise
        for (_, f), outcome in zip(items, outcomes):
            if f.done():
                continue
            if isinstance(outcome, BaseException):
                f.set_exception(outcome)
            else:
                f.set_result(outcome)

    def close(self) -> None:
        """Stop the runs under way (their callers see them cancelled)."""
        for task in list(self._tasks):
            task.cancel()


class LeaderHintMixin:
    """Mix into a generated *Base service: NotLeaderError, NodeStopping, ProposalLost and TimeoutError raised by
    a handler become UNAVAILABLE (with leader-id/leader-addr trailing metadata) instead of UNKNOWN."""

    def __mapping__(self) -> dict[str, Handler]:
        mapping = super().__mapping__()  # type: ignore[misc]
        return {path: Handler(_wrap(h.func), h.cardinality, h.request_type, h.reply_type) for path, h in mapping.items()}


# The grpclib server stream of the request being handled (None outside a handler, e.g. in unit tests).
_STREAM: contextvars.ContextVar[Any] = contextvars.ContextVar("railraft_rpc_stream", default=None)


def current_stream() -> Any:
    """The grpclib server stream of the RPC being handled, or None outside a wrapped handler."""
    return _STREAM.get()


def peer_host(stream: Any = None) -> str:
    """The calling client's IP address ("" if unknown: no stream, or a transport without a peer address).

    Only the host: a client opens a new port per connection, so a port would separate nothing.
    """
    stream = stream if stream is not None else _STREAM.get()
    if stream is None:
        return ""
    try:
        addr = stream.peer.addr()
    except Exception:  # noqa: BLE001 - a closed transport; treat as unknown
        return ""
    if not addr:
        return ""
    return str(addr[0]) if isinstance(addr, (tuple, list)) else str(addr)


def peer_authenticated(stream: Any = None) -> bool:
    """Whether the caller is an authenticated railraft peer (another node of this cluster).

    TODO(peer-auth): always True until peer authentication (HMAC over a cluster secret) exists.  The one user
    today is NodeService.Propose, for the command kinds whose facts only a trusted gateway can vouch for (a
    ConfirmPayment's charge outcome, see gateway.services.check_forwarded).  Make this verify the peer's
    credentials on `stream` (default: the current one) and those kinds are closed to outsiders.
    """
    return True


class _SafeStream:
    """A grpclib server stream whose `recv_message` answers undecodable bytes with INVALID_ARGUMENT.

    The codec (betterproto, with the Rust codec when installed) raises RuntimeError/ValueError/... for bytes
    that are not a valid encoding; grpclib would turn that into UNKNOWN.  Everything else is delegated.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def recv_message(self) -> Any:
        try:
            return await self._stream.recv_message()
        except (GRPCError, StreamTerminatedError, ProtocolError):
            raise
        except Exception as e:  # noqa: BLE001 - any decoding failure is the request's fault
            raise GRPCError(Status.INVALID_ARGUMENT,
                            f"malformed request: not a valid {_type_name(self._stream)} message"
                            f" ({type(e).__name__})") from None


def _type_name(stream: Any) -> str:
    t = getattr(stream, "_recv_type", None)
    return getattr(t, "__name__", "request")


def _wrap(func: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    async def handler(stream: Any) -> None:
        token = _STREAM.set(stream)
        try:
            await func(_SafeStream(stream))
        except NotLeaderError as e:
            # grpclib refuses empty metadata values: with no known leader, leader-addr is left out.
            hint = {"leader-id": str(e.leader_id)}
            if e.leader_addr:
                hint["leader-addr"] = e.leader_addr
            await stream.send_trailing_metadata(
                status=Status.UNAVAILABLE,
                status_message=not_leader_message(e.leader_id, e.leader_addr, str(e).split(" (")[0]),
                metadata=hint,
            )
        except NodeStopping:
            raise GRPCError(Status.UNAVAILABLE, "this node is shutting down; try another node") from None
        except ProposalLost:
            # The entry was replaced by a new leader's log: it was not applied; the same request id may be
            # retried (exactly-once makes a retry safe either way).
            raise GRPCError(Status.UNAVAILABLE, "leadership changed during the request; try again") from None
        except TimeoutError as e:
            raise GRPCError(Status.UNAVAILABLE, f"the cluster did not answer in time ({e}); try again") from None
        finally:
            _STREAM.reset(token)

    return handler
