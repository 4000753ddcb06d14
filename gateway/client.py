"""The Python client library of railraft: one object that talks to a whole cluster.

    async with RailraftClient(["127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"]) as rr:
        await rr.login("asha", "correct horse")            # keeps the session token (rr.token, rr.user)
        results = await rr.search("NDLS", "BCT", "2025-03-01")
        booking = await rr.hold(results[0].run_id, "AC3", "NDLS", "BCT", [("Asha", 34, "LOWER")])
        booking = await rr.pay(booking.pnr, "4111111111111111")

It is plain asyncio (grpclib): the CLI runs it with `asyncio.run`, the Trio web app through trio-asyncio
(`trio_asyncio.aio_as_trio(rr.search)(...)`).  Channels are opened lazily on the loop that first uses them.

What it does for the caller
---------------------------
* **Writes go to the leader.**  The leader is learnt from `Node.Status` (asked of every node at once when no
  leader is known) and from the hints a node attaches to UNAVAILABLE (`leader-id`/`leader-addr` trailing
  metadata, `leader=ID@HOST:PORT` in the message); a hint is followed at once, and an address it names that
  the client did not know is added to its list (nodes added with add-node).  Any node would forward a write,
  but going to the leader saves a hop.
* **Reads go to any node**, round-robin, with the call's `consistency` (LINEARIZABLE by default: the server
  runs a ReadIndex barrier, so a follower's answer reflects every acknowledged write; LEASE; STALE).
* **Failover.**  A node that refuses the connection, drops it mid-call (including grpclib's
  `'Connection' object has no attribute '_transport'` race, which surfaces as AttributeError), does not
  answer within the per-attempt timeout, or answers UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED is skipped
  and the next one tried; once every node has been tried the client backs off (exponentially, with jitter)
  and goes round again, until the call's overall deadline.
* **Exactly-once writes.**  A write's `request_id` is generated once per logical call (uuid4) unless the
  caller passes one, and every retry resends the *same* request: the state machine answers a repeated
  request id with the first result, so a write whose reply was lost (leader killed after commit) is applied
  once however often it is retried.
* **Batching.**  Booking calls that tasks sharing one client make together to one node travel in one
  `Booking/Batch` round trip (gateway/client_batch.py): each still runs on the node as if made alone and
  gets its own reply or error, so everything above holds per call.  A call made alone goes alone, at once.
  `batch=False` sends every call on its own.
* **Deadlines.**  Every call has an overall deadline (`timeout`, per client or per call); each attempt is
  bounded by `attempt_timeout` and by what remains of the deadline.

Errors
------
* `Unavailable` -- no node could serve the call before its deadline; the message says what each node said.
* `BookingError(status, message)` -- the cluster answered with a domain error; `status` is the
  `grpclib.const.Status`, `message` the server's own sentence (never replaced).  Subclasses per status:
  `InvalidArgument`, `Unauthenticated`, `PermissionDenied`, `NotFound`, `AlreadyExists`,
  `FailedPrecondition`.  All of them derive from `RailraftError`.

Return values are the generated betterproto messages of `proto.gen.railraft.v1`; RPCs whose reply is only a
list wrapper (`StationList`, `TrainList`, `SearchResponse`, `BookingList`, `RunList`) return the Python list.
Money is integer paise, times epoch milliseconds, dates "YYYY-MM-DD" (IST), as in proto/booking.proto.

Authenticated calls use the token `login()`/`register()` stored, or the `token=` given to the call (a web
app serving many users shares one client and passes each user's token; `login(..., remember=False)`).

Cluster administration (`transfer_leader`, `add_node`, `remove_node`) on a cluster with a secret needs either
the secret -- `auth=` a gateway.peer_auth.ClusterAuth, which signs every attempt (gateway.admin_client builds
one) -- or an administrator's session token, sent as the `railraft-token` metadata.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import betterproto
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from proto.gen.railraft.node.v1 import (
    AddNodeRequest,
    CreateAdminRequest,
    AdminResponse,
    NodeStatus,
    RemoveNodeRequest,
    StatusRequest,
    TransferLeaderRequest,
)
from proto.gen.railraft.v1 import (
    Ack,
    AddStationRequest,
    AddTrainRequest,
    BookingInfo,
    BookingList,
    CancelRequest,
    CancelRunRequest,
    ChosenSeat,
    CoachInput,
    Consistency,
    GetBookingRequest,
    HoldRequest,
    ListRunsRequest,
    ListStationsRequest,
    ListTrainsRequest,
    LoginRequest,
    LogoutRequest,
    MyBookingsRequest,
    PassengerInput,
    PayRequest,
    PnrStatusRequest,
    RefundQuoteResponse,
    RegisterRequest,
    RunInfo,
    RunList,
    RunReportRequest,
    RunReportResponse,
    ScheduleRunsRequest,
    SearchRequest,
    SearchResponse,
    SearchResult,
    SeatClass,
    SeatMapRequest,
    SeatMapResponse,
    Session,
    StationInfo,
    StationList,
    StopInput,
    TrainInfo,
    TrainList,
    UserInfo,
    WhoAmIRequest,
)

from .client_batch import CallBatcher
from .peer_auth import TOKEN_METADATA
from .leader_hint import leader_hint_of

__all__ = [
    "RailraftClient",
    "run",
    "Route",
    "RailraftError",
    "Unavailable",
    "BookingError",
    "InvalidArgument",
    "Unauthenticated",
    "PermissionDenied",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "Consistency",
    "SeatClass",
    "LINEARIZABLE",
    "LEASE",
    "STALE",
    "parse_addresses",
    "new_request_id",
]

T = TypeVar("T")


def run(coro: Any) -> Any:
    """`asyncio.run(coro)` on the standard library's event loop, for programs that use this client.

    Once trio_asyncio is imported in a process (gateway.rpc imports it, and so does anything that imports
    the node or the web app), its event-loop policy makes `asyncio.run` run on trio-asyncio's own loop,
    which costs several times more CPU per callback: the benchmark's load generator spent about half its
    time there.  The client needs no Trio, so it runs on a plain asyncio loop.
    """
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)

LINEARIZABLE = Consistency.LINEARIZABLE
LEASE = Consistency.LEASE
STALE = Consistency.STALE

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_ATTEMPT_TIMEOUT_S = 5.0  # a hung (SIGSTOPped) node costs at most this much of a call's deadline
DISCOVERY_TIMEOUT_S = 1.0  # Node.Status is cheap; a node slower than this is not the one to write to
DISCOVERY_INTERVAL_S = 0.25  # don't sweep every node on every retry while an election is running
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 1.0
ADMIN_TIMEOUT_S = 90.0  # add-node waits for the new node to catch up before promoting it

BOOKING = "/railraft.v1.Booking/"
NODE = "/railraft.node.v1.Node/"

# Answers meaning "this node cannot serve the call right now, another one (or this one later) may".
RETRYABLE_STATUSES = frozenset({Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED})
# Failures below gRPC: refused or lost connections, per-attempt timeouts.  AttributeError: grpclib raises
# "'Connection' object has no attribute '_transport'" when a request starts on a connection that was just
# lost (vmagamedov/grpclib#110); it means the same as a refused connection.
CONNECT_ERRORS = (OSError, asyncio.TimeoutError, StreamTerminatedError, ProtocolError, ConnectionError,
                  AttributeError)


# ============================================================================================ errors


class RailraftError(Exception):
    """Base of every error this client raises."""


class Unavailable(RailraftError):
    """No node could serve the call before its deadline.

    `attempts` is the list of (address, what happened), in order; the message gives the last answer of
    each node tried.
    """

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.attempts = list(attempts)


class BookingError(RailraftError):
    """The cluster answered the call with an error: `status` (grpclib Status) and the server's `message`."""

    def __init__(self, status: Status, message: str, details: Any = None) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message
        self.details = details

    @staticmethod
    def from_grpc(err: GRPCError) -> BookingError:
        """The BookingError subclass for a GRPCError's status, keeping its message."""
        cls = _BY_STATUS.get(err.status, BookingError)
        return cls(err.status, err.message or err.status.name.replace("_", " ").lower(), err.details)


class InvalidArgument(BookingError):
    """Bad input; nothing changed."""


class Unauthenticated(BookingError):
    """No session, or it expired or was revoked: log in again."""


class PermissionDenied(BookingError):
    """The session's role may not do this (admin only), or the booking is someone else's."""


class NotFound(BookingError):
    """No such station, train, run or booking."""


class AlreadyExists(BookingError):
    """A station, train or username that exists already."""


class FailedPrecondition(BookingError):
    """The state does not allow it now: sold out, hold expired, already paid, run cancelled, ..."""


_BY_STATUS: dict[Status, type[BookingError]] = {
    Status.INVALID_ARGUMENT: InvalidArgument,
    Status.UNAUTHENTICATED: Unauthenticated,
    Status.PERMISSION_DENIED: PermissionDenied,
    Status.NOT_FOUND: NotFound,
    Status.ALREADY_EXISTS: AlreadyExists,
    Status.FAILED_PRECONDITION: FailedPrecondition,
}


# ============================================================================================ helpers


def parse_addresses(text: str | Iterable[str]) -> list[str]:
    """'h:p,h:p' (or a list of them) -> ['h:p', ...]; a bare port means 127.0.0.1:port."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if ":" not in item:
            item = f"127.0.0.1:{item}"
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not a host:port address: {item!r}")
        out.append(item)
    if not out:
        raise ValueError("no node addresses given")
    return out


def new_request_id() -> str:
    """A fresh request id for one logical write (retries of that write reuse it)."""
    return uuid.uuid4().hex


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _seat_class(value: SeatClass | str | int) -> SeatClass:
    """SeatClass from the enum, its name ("AC3", case-insensitive) or its number."""
    if isinstance(value, SeatClass):
        return value
    if isinstance(value, str):
        try:
            return SeatClass[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown seat class {value!r} (AC1, AC2, AC3, SLEEPER, GENERAL)") from None
    return SeatClass(value)


def _passenger(p: PassengerInput | tuple | dict) -> PassengerInput:
    """PassengerInput from itself, (name, age[, berth_preference]) or a dict with those keys."""
    if isinstance(p, PassengerInput):
        return p
    if isinstance(p, dict):
        return PassengerInput(name=p["name"], age=int(p["age"]), berth_preference=p.get("berth_preference", ""))
    name, age, *pref = p
    return PassengerInput(name=name, age=int(age), berth_preference=pref[0] if pref else "")


def _chosen(s: ChosenSeat | tuple | str) -> ChosenSeat:
    """ChosenSeat from itself, (coach, seat) or "B1-23"."""
    if isinstance(s, ChosenSeat):
        return s
    if isinstance(s, str):
        coach, _, seat = s.rpartition("-")
        return ChosenSeat(coach=coach, seat=int(seat))
    coach, seat = s
    return ChosenSeat(coach=coach, seat=int(seat))


def _stop(s: StopInput | tuple | Any) -> StopInput:
    """StopInput from itself, (code, arrival_min, departure_min, km) or anything with store.StopSpec's fields."""
    if isinstance(s, StopInput):
        return s
    if isinstance(s, tuple):
        code, arr, dep, km = s
        return StopInput(station_code=code, arrival_offset_min=arr, departure_offset_min=dep, distance_km=km)
    return StopInput(station_code=s.station_code, arrival_offset_min=s.arrive_min,
                     departure_offset_min=s.depart_min, distance_km=s.km)


def _coach(c: CoachInput | tuple | Any) -> CoachInput:
    """CoachInput from itself, (label, class, seats) or anything with store.CoachSpec's fields."""
    if isinstance(c, CoachInput):
        return c
    if isinstance(c, tuple):
        label, cls, seats = c
        return CoachInput(label=label, seat_class=_seat_class(cls), seats=int(seats))
    return CoachInput(label=c.label, seat_class=_seat_class(c.travel_class), seats=int(c.seats))


@dataclass(frozen=True)
class Route:
    """One RPC for `RailraftClient.call`: its path ("/package.Service/Method"), reply type, and whether it
    changes state (then it goes to the leader).  The typed methods build these; use it directly only for
    RPCs outside railraft.v1.Booking (admin_client does, for the original Ticketing API)."""

    path: str
    reply: type
    write: bool


# ============================================================================================ client


class RailraftClient:
    """A railraft cluster seen as one service (see the module docstring).

    `addresses`: "host:port" of some or all nodes.  `timeout`: the default overall deadline of a call.
    `attempt_timeout`: the most one node may take to answer before the next is tried.  `consistency`: the
    default for reads.  `token`: a session to start with.  `batch`: send Booking calls made together to one
    node in one round trip (see the module docstring).
    """

    def __init__(self, addresses: Sequence[str] | str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 consistency: Consistency = LINEARIZABLE, attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT_S,
                 token: str = "", backoff_initial: float = BACKOFF_INITIAL_S, backoff_max: float = BACKOFF_MAX_S,
                 rng: random.Random | None = None, spread_writes: bool = False, batch: bool = True) -> None:
        self.addresses: list[str] = parse_addresses(addresses)
        # Writes to any node, round-robin like reads (followers forward them to the leader), instead of to
        # the leader first: spreads the cost of serving client calls over the cluster.
        self.spread_writes = spread_writes
        # Booking calls made together to one node travel in one Batch (gateway/client_batch.py).
        self.batch = batch
        self._batcher = CallBatcher(self._unary, self._channel)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.consistency = Consistency(consistency)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.token: str = token
        self.user: UserInfo | None = None
        self.leader: str | None = None  # address of the node believed to lead, if any
        self._rng = rng or random.Random()
        self._channels: dict[str, Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rr = 0  # round-robin position for reads
        self._last_discovery = float("-inf")

    # ------------------------------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> RailraftClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every channel (synchronous, so it can run from `finally` blocks and from Trio code)."""
        self._batcher.close()
        for addr in list(self._channels):
            self._drop_channel(addr)

    async def aclose(self) -> None:
        """`close()` for callers that prefer to await."""
        self.close()

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # grpclib binds a Channel to the loop that created it; a client reused from a new loop (one
            # asyncio.run per CLI command, say) starts over with fresh channels and an empty batcher.
            self.close()
            self._loop = loop

    def _channel(self, addr: str) -> Channel:
        self._bind_loop()
        ch = self._channels.get(addr)
        if ch is None:
            host, port = _split(addr)
            ch = self._channels[addr] = Channel(host, port)
        return ch

    def _drop_channel(self, addr: str) -> None:
        ch = self._channels.pop(addr, None)
        if ch is not None:
            try:
                ch.close()
            except Exception:  # noqa: BLE001 - closing a channel of a closed loop: nothing left to free
                pass

    def _learn(self, addr: str) -> None:
        """Remember `addr` as the leader (and as a node, if it is a new one)."""
        if addr not in self.addresses:
            self.addresses.append(addr)
        self.leader = addr

    # ----------------------------------------------------------------------------------- one attempt
    async def _attempt(self, addr: str, route: Route, request: betterproto.Message, timeout: float,
                       metadata: Any = None) -> Any:
        """One call on one node; GRPCError carries the leader hint (if any) as `.leader_hint`.
        `metadata`: the call's gRPC metadata, or a function of `addr` giving it (None: none).
        Booking calls without metadata go through the batcher (gateway/client_batch.py) when `batch` is on."""
        self._bind_loop()  # here, not in the batcher's own tasks: moving to a new loop resets the batcher
        if self.batch and metadata is None and route.path.startswith(BOOKING):
            return await self._batcher.call(addr, route.path, route.reply, request, timeout)
        md = metadata(addr) if callable(metadata) else metadata
        return await self._unary(addr, route.path, request, route.reply, timeout, md)

    async def _unary(self, addr: str, path: str, request: betterproto.Message, reply_type: type, timeout: float,
                     metadata: Any = None) -> Any:
        """One unary RPC on node `addr`, bounded by `timeout`."""
        ch = self._channel(addr)

        async def call() -> Any:
            async with ch.request(path, Cardinality.UNARY_UNARY, type(request), reply_type,
                                  timeout=timeout, metadata=metadata) as stream:
                try:
                    await stream.send_message(request, end=True)
                    reply = await stream.recv_message()
                except GRPCError as e:
                    e.leader_hint = leader_hint_of(e, stream.trailing_metadata)  # type: ignore[attr-defined]
                    raise
                if reply is None:  # the server ended the stream without a message or an error status
                    raise ProtocolError("empty reply")
                return reply

        # grpclib's own deadline does not cover everything (a connection to a frozen process); this does.
        return await asyncio.wait_for(call(), timeout + 0.25)

    # ------------------------------------------------------------------------------------ the engine
    async def call(self, route: Route, request: betterproto.Message, *, timeout: float | None = None,
                   attempt_timeout: float | None = None, metadata: Any = None) -> Any:
        """Run one RPC with leader routing, failover, backoff and a deadline (see the module docstring).

        `request` is sent unchanged on every attempt (so a write keeps its request id).  `metadata`: gRPC
        metadata for every attempt, or a function of the node's address that makes it per attempt.
        """
        loop = asyncio.get_running_loop()
        total = self.timeout if timeout is None else timeout
        per_attempt = self.attempt_timeout if attempt_timeout is None else attempt_timeout
        deadline = loop.time() + total
        attempts: list[tuple[str, str]] = []
        tried: set[str] = set()  # nodes tried since the last backoff
        delay = self.backoff_initial
        follow: str | None = None  # a leader hint to try next
        start = self._rr
        spread = route.write and self.spread_writes
        if not route.write or spread:
            self._rr += 1
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _unavailable(route, total, attempts)
            if route.write and not spread and self.leader is None and follow is None:
                # Bounded so that discovery never eats the time the call needs for its attempts.
                await self._discover(min(DISCOVERY_TIMEOUT_S, per_attempt, remaining / 3))
                remaining = deadline - loop.time()
            addr = follow or self._next(route.write and not spread, start, tried)
            follow = None
            if addr is None:
                # Every node tried: wait a little (an election takes a few hundred ms), then go round again.
                pause = min(delay * (0.5 + self._rng.random()), max(0.0, remaining))
                await asyncio.sleep(pause)
                delay = min(delay * 2, self.backoff_max)
                tried.clear()
                continue
            tried.add(addr)
            try:
                return await self._attempt(addr, route, request, max(0.001, min(per_attempt, remaining)),
                                           **({"metadata": metadata} if metadata is not None else {}))
            except GRPCError as e:
                if e.status not in RETRYABLE_STATUSES:
                    raise BookingError.from_grpc(e) from None
                attempts.append((addr, f"{e.status.name}: {e.message}"))
                hint = getattr(e, "leader_hint", "")
                if hint and hint != addr:
                    self._learn(hint)
                    if hint not in tried:
                        follow = hint  # at once: no backoff when we were told where to go
                elif self.leader == addr:
                    self.leader = None  # it no longer leads (or knows no leader): rediscover
            except CONNECT_ERRORS as e:
                attempts.append((addr, _describe(e)))
                self._drop_channel(addr)  # a fresh connection next time, not a half-dead one
                if self.leader == addr:
                    self.leader = None

    def _next(self, write: bool, start: int, tried: set[str]) -> str | None:
        """The next node to try: writes the leader first, reads round-robin from this call's start."""
        n = len(self.addresses)
        order = [self.addresses[(start + i) % n] for i in range(n)]
        if write and self.leader is not None:
            order.insert(0, self.leader)
        for addr in order:
            if addr not in tried:
                return addr
        return None

    async def _discover(self, timeout: float) -> None:
        """Ask every node's Status at once and remember the leader (at most every DISCOVERY_INTERVAL_S).

        Returns as soon as one node says it leads or names the leader: a hung node must not hold up a write
        for the whole discovery timeout.
        """
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_discovery < DISCOVERY_INTERVAL_S or timeout <= 0:
            return
        self._last_discovery = loop.time()
        route = Route(NODE + "Status", NodeStatus, False)

        async def one(addr: str) -> tuple[str, NodeStatus | None]:
            try:
                return addr, await self._attempt(addr, route, StatusRequest(), timeout)
            except GRPCError:
                return addr, None
            except CONNECT_ERRORS:
                self._drop_channel(addr)
                return addr, None

        pending = {asyncio.ensure_future(one(a)) for a in self.addresses}
        hinted: NodeStatus | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
                for fut in done:
                    addr, st = fut.result()
                    if st is None:
                        continue
                    if st.role == "leader":
                        # The address the node was reached at, not the one it advertises (they can differ).
                        self._learn(addr)
                        return
                    if st.leader_address and (hinted is None or st.term > hinted.term):
                        hinted = st
                if hinted is not None:
                    break  # a follower named the leader: good enough, the leader itself may be slow or gone
        finally:
            for fut in pending:
                fut.cancel()
        if hinted is not None:
            self._learn(hinted.leader_address)

    async def _statuses(self, addrs: list[str], timeout: float) -> dict[str, NodeStatus | str]:
        """Node.Status of each address, concurrently: the status or a description of the failure."""
        route = Route(NODE + "Status", NodeStatus, False)

        async def one(addr: str) -> NodeStatus | str:
            try:
                return await self._attempt(addr, route, StatusRequest(), timeout)
            except GRPCError as e:
                return f"{e.status.name}: {e.message}"
            except CONNECT_ERRORS as e:
                self._drop_channel(addr)
                return _describe(e)

        results = await asyncio.gather(*(one(a) for a in addrs))
        return dict(zip(addrs, results))

    # ------------------------------------------------------------------------------ small utilities
    def _token(self, token: str | None) -> str:
        return self.token if token is None else token

    def _consistency(self, consistency: Consistency | None) -> Consistency:
        return self.consistency if consistency is None else Consistency(consistency)

    async def _booking(self, name: str, reply: type, write: bool, request: betterproto.Message,
                       timeout: float | None) -> Any:
        return await self.call(Route(BOOKING + name, reply, write), request, timeout=timeout)

    # ====================================================================================== accounts
    async def register(self, username: str, password: str, *, request_id: str | None = None,
                       remember: bool = True, timeout: float | None = None) -> Session:
        """Create a customer account.  The reply is a Session (logged in, if the server opens one), kept when
        `remember` and it carries a token."""
        req = RegisterRequest(username=username, password=password, request_id=request_id or new_request_id())
        session = await self._booking("Register", Session, True, req, timeout)
        if remember and session.token:
            self.token, self.user = session.token, session.user
        return session

    async def login(self, username: str, password: str, *, remember: bool = True,
                    timeout: float | None = None) -> Session:
        """Open a session; with `remember` (default) the client keeps its token (`.token`) and user (`.user`).

        Login has no request id (the server mints the token), so a retried login may open a second session,
        which is harmless: the one returned is the one kept.
        """
        session = await self._booking("Login", Session, True, LoginRequest(username=username, password=password),
                                      timeout)
        if remember:
            self.token, self.user = session.token, session.user
        return session

    async def logout(self, *, token: str | None = None, request_id: str | None = None,
                     timeout: float | None = None) -> Ack:
        """Revoke the session (the client's own unless `token` is given; the client forgets its own)."""
        tok = self._token(token)
        ack = await self._booking("Logout", Ack, True,
                                  LogoutRequest(token=tok, request_id=request_id or new_request_id()), timeout)
        if tok == self.token:
            self.token, self.user = "", None
        return ack

    async def whoami(self, *, token: str | None = None, timeout: float | None = None) -> UserInfo:
        """The user of the session (id, username, role as the server decides it)."""
        return await self._booking("WhoAmI", UserInfo, False, WhoAmIRequest(token=self._token(token)), timeout)

    # ============================================================================ catalogue and search
    async def stations(self, prefix: str = "", limit: int = 0, *, consistency: Consistency | None = None,
                       timeout: float | None = None) -> list[StationInfo]:
        """Stations whose code or name starts with `prefix` (case-insensitive; "" = all), at most `limit` (0 = no limit)."""
        req = ListStationsRequest(prefix=prefix, limit=limit, consistency=self._consistency(consistency))
        res: StationList = await self._booking("ListStations", StationList, False, req, timeout)
        return list(res.stations)

    async def trains(self, *, token: str | None = None, consistency: Consistency | None = None,
                     timeout: float | None = None) -> list[TrainInfo]:
        """Every train with its route and coaches."""
        req = ListTrainsRequest(token=self._token(token), consistency=self._consistency(consistency))
        res: TrainList = await self._booking("ListTrains", TrainList, False, req, timeout)
        return list(res.trains)

    async def search(self, from_station: str, to_station: str, date: str, *,
                     consistency: Consistency | None = None, timeout: float | None = None) -> list[SearchResult]:
        """Runs on `date` that stop at both stations in that order, with per-class free seats and fares."""
        req = SearchRequest(from_station=from_station, to_station=to_station, date=date,
                            consistency=self._consistency(consistency))
        res: SearchResponse = await self._booking("Search", SearchResponse, False, req, timeout)
        return list(res.results)

    async def seat_map(self, run_id: int, coach: str, from_station: str, to_station: str, *,
                       consistency: Consistency | None = None, timeout: float | None = None) -> SeatMapResponse:
        """Seats of one coach of a run, free or taken on the segment from_station -> to_station."""
        req = SeatMapRequest(run_id=run_id, coach=coach, from_station=from_station, to_station=to_station,
                             consistency=self._consistency(consistency))
        return await self._booking("SeatMap", SeatMapResponse, False, req, timeout)

    # ====================================================================================== bookings
    async def hold(self, run_id: int, seat_class: SeatClass | str, from_station: str, to_station: str,
                   passengers: Sequence[PassengerInput | tuple | dict], *,
                   chosen_seats: Sequence[ChosenSeat | tuple | str] = (), accept_waitlist: bool = False,
                   hold_seconds: int = 0, token: str | None = None, request_id: str | None = None,
                   timeout: float | None = None) -> BookingInfo:
        """Hold seats (a HELD booking with a PNR, seats, amount due and expiry), or join the waitlist.

        Passengers: PassengerInput, (name, age[, berth preference]) or dicts; chosen seats: ChosenSeat,
        (coach, seat) or "B1-23".  `hold_seconds`: how long the hold lasts unpaid (0 = the server's default).
        """
        req = HoldRequest(
            token=self._token(token), request_id=request_id or new_request_id(), run_id=run_id,
            seat_class=_seat_class(seat_class), from_station=from_station, to_station=to_station,
            passengers=[_passenger(p) for p in passengers], chosen_seats=[_chosen(s) for s in chosen_seats],
            accept_waitlist=accept_waitlist, hold_seconds=hold_seconds,
        )
        return await self._booking("Hold", BookingInfo, True, req, timeout)

    async def pay(self, pnr: str, card_number: str, amount_paise: int = 0, *, token: str | None = None,
                  request_id: str | None = None, timeout: float | None = None) -> BookingInfo:
        """Pay a hold (CONFIRMED).  `amount_paise` 0 = the amount due.  A retry charges once."""
        req = PayRequest(token=self._token(token), request_id=request_id or new_request_id(), pnr=pnr,
                         card_number=card_number, amount_paise=amount_paise)
        return await self._booking("Pay", BookingInfo, True, req, timeout)

    async def cancel(self, pnr: str, passengers: Sequence[int] = (), *, token: str | None = None,
                     request_id: str | None = None, timeout: float | None = None) -> BookingInfo:
        """Cancel the whole booking, or the passengers with these indexes; refunds by the rule."""
        req = CancelRequest(token=self._token(token), request_id=request_id or new_request_id(), pnr=pnr,
                            passengers=list(passengers))
        return await self._booking("Cancel", BookingInfo, True, req, timeout)

    async def refund_quote(self, pnr: str, passengers: Sequence[int] = (), *, token: str | None = None,
                           timeout: float | None = None) -> RefundQuoteResponse:
        """What `cancel` would refund now (changes nothing)."""
        req = CancelRequest(token=self._token(token), pnr=pnr, passengers=list(passengers))
        return await self._booking("RefundQuote", RefundQuoteResponse, False, req, timeout)

    async def booking(self, pnr: str, *, token: str | None = None, consistency: Consistency | None = None,
                      timeout: float | None = None) -> BookingInfo:
        """One of the session user's bookings, with passengers, refunds and history."""
        req = GetBookingRequest(token=self._token(token), pnr=pnr, consistency=self._consistency(consistency))
        return await self._booking("GetBooking", BookingInfo, False, req, timeout)

    async def my_bookings(self, *, token: str | None = None, consistency: Consistency | None = None,
                          timeout: float | None = None) -> list[BookingInfo]:
        """Every booking of the session user."""
        req = MyBookingsRequest(token=self._token(token), consistency=self._consistency(consistency))
        res: BookingList = await self._booking("MyBookings", BookingList, False, req, timeout)
        return list(res.bookings)

    async def pnr_status(self, pnr: str, passenger_name: str, *, consistency: Consistency | None = None,
                         timeout: float | None = None) -> BookingInfo:
        """A booking's status by PNR and a passenger's name (no login needed)."""
        req = PnrStatusRequest(pnr=pnr, passenger_name=passenger_name, consistency=self._consistency(consistency))
        return await self._booking("PnrStatus", BookingInfo, False, req, timeout)

    # ================================================================================ administration
    async def add_station(self, code: str, name: str, *, token: str | None = None, request_id: str | None = None,
                          timeout: float | None = None) -> StationInfo:
        """Admin: a new station."""
        req = AddStationRequest(token=self._token(token), request_id=request_id or new_request_id(), code=code,
                                name=name)
        return await self._booking("AddStation", StationInfo, True, req, timeout)

    async def add_train(self, number: int, name: str, type: str, departure_time: str,  # noqa: A002 - proto name
                        stops: Sequence[StopInput | tuple | Any], coaches: Sequence[CoachInput | tuple | Any], *,
                        token: str | None = None, request_id: str | None = None,
                        timeout: float | None = None) -> TrainInfo:
        """Admin: a train with its route and coaches.

        Stops: StopInput, (code, arrival_min, departure_min, km) or store.commands.StopSpec; coaches:
        CoachInput, (label, class, seats) or store.commands.CoachSpec.
        """
        req = AddTrainRequest(token=self._token(token), request_id=request_id or new_request_id(), number=number,
                              name=name, type=type, departure_time=departure_time,
                              stops=[_stop(s) for s in stops], coaches=[_coach(c) for c in coaches])
        return await self._booking("AddTrain", TrainInfo, True, req, timeout)

    async def schedule_runs(self, train_number: int, first_date: str, last_date: str, *,
                            token: str | None = None, request_id: str | None = None,
                            timeout: float | None = None) -> list[RunInfo]:
        """Admin: run a train every day from first_date to last_date (dates that have a run are skipped);
        returns the runs created."""
        req = ScheduleRunsRequest(token=self._token(token), request_id=request_id or new_request_id(),
                                  train_number=train_number, first_date=first_date, last_date=last_date)
        res: RunList = await self._booking("ScheduleRuns", RunList, True, req, timeout)
        return list(res.runs)

    async def list_runs(self, train_number: int, first_date: str, last_date: str = "", *,
                        token: str | None = None, consistency: Consistency | None = None,
                        timeout: float | None = None) -> list[RunInfo]:
        """Runs of a train from first_date to last_date ("" = first_date only)."""
        req = ListRunsRequest(token=self._token(token), train_number=train_number, first_date=first_date,
                              last_date=last_date, consistency=self._consistency(consistency))
        res: RunList = await self._booking("ListRuns", RunList, False, req, timeout)
        return list(res.runs)

    async def cancel_run(self, run_id: int, reason: str = "", *, token: str | None = None,
                         request_id: str | None = None, timeout: float | None = None) -> Ack:
        """Admin: cancel a run; every booking on it is refunded."""
        req = CancelRunRequest(token=self._token(token), request_id=request_id or new_request_id(), run_id=run_id,
                               reason=reason)
        return await self._booking("CancelRun", Ack, True, req, timeout)

    async def run_report(self, run_id: int, *, token: str | None = None, consistency: Consistency | None = None,
                         timeout: float | None = None) -> RunReportResponse:
        """Admin: occupancy and revenue of one run, per class."""
        req = RunReportRequest(token=self._token(token), run_id=run_id, consistency=self._consistency(consistency))
        return await self._booking("RunReport", RunReportResponse, False, req, timeout)

    # ======================================================================= cluster (Node service)
    async def status(self, *, timeout: float = 2.0) -> dict[str, Any]:
        """Every known node's status, asked at once: {"nodes": [dict per node], "leader": id or None}.

        The dicts are `gateway.admin_client.status_to_dict` (role "down" and an `error` for a node that did
        not answer).  Also refreshes the client's idea of the leader.
        """
        from .admin_client import down_entry, leader_of, status_to_dict

        statuses = await self._statuses(list(self.addresses), timeout)
        nodes = []
        for addr, st in statuses.items():
            if isinstance(st, NodeStatus):
                d = status_to_dict(st)
                d["address"] = d["address"] or addr
                d["queried"] = addr
                nodes.append(d)
            else:
                nodes.append(down_entry(addr, st))
        leader = leader_of(nodes)
        lead = next((n for n in nodes if n.get("id") == leader and n.get("up")), None)
        if lead is not None:
            self._learn(lead["queried"])
        return {"nodes": nodes, "leader": leader}

    async def _admin(self, name: str, request: betterproto.Message, timeout: float | None, *,
                     token: str | None = None, auth: Any = None) -> AdminResponse:
        total = self.timeout if timeout is None else timeout
        path = NODE + name
        metadata: Any = None
        if auth is not None:
            # A fresh nonce per attempt; to node 0 = whichever node the attempt reaches.
            payload = bytes(request)
            metadata = lambda _addr: auth.metadata(path, 0, [payload])  # noqa: E731
        elif token or self.token:
            metadata = {TOKEN_METADATA: token or self.token}
        # One attempt may legitimately take long (add-node waits for catch-up): don't cut it short.
        return await self.call(Route(path, AdminResponse, True), request, timeout=total,
                               attempt_timeout=total, metadata=metadata)

    async def transfer_leader(self, to: int = 0, *, timeout: float | None = None, token: str | None = None,
                              auth: Any = None) -> AdminResponse:
        """Move leadership to node `to` (0: the most up-to-date other voter).  A refusal is `ok=False`.

        On a cluster with a secret: `auth` (a gateway.peer_auth.ClusterAuth) or an administrator's `token`
        (default: the client's own session) -- see the module docstring; the same goes for add/remove_node.
        """
        res = await self._admin("TransferLeader", TransferLeaderRequest(target_id=to), timeout, token=token,
                                auth=auth)
        self.leader = None  # whatever happened, the old belief is suspect
        return res

    async def add_node(self, node_id: int, host: str, port: int, *, timeout: float | None = ADMIN_TIMEOUT_S,
                       token: str | None = None, auth: Any = None) -> AdminResponse:
        """Add a node (learner, catch up, voter).  A refusal is `ok=False` with the server's message."""
        return await self._admin("AddNode", AddNodeRequest(id=node_id, host=host, port=port), timeout,
                                 token=token, auth=auth)

    async def remove_node(self, node_id: int, *, timeout: float | None = None, token: str | None = None,
                          auth: Any = None) -> AdminResponse:
        """Remove a node from the cluster.  A refusal is `ok=False` with the server's message."""
        res = await self._admin("RemoveNode", RemoveNodeRequest(id=node_id), timeout, token=token, auth=auth)
        self.leader = None  # removing the leader hands leadership over first
        return res

    async def create_admin(self, username: str, password: str, *, timeout: float | None = None) -> AdminResponse:
        """Create the first administrator (refused, `ok=False`, once one exists)."""
        return await self._admin("CreateAdmin", CreateAdminRequest(username=username, password=password), timeout)


def _unavailable(route: Route, total: float, attempts: list[tuple[str, str]]) -> Unavailable:
    last: dict[str, str] = {}
    for addr, what in attempts:
        last[addr] = what
    detail = "; ".join(f"{a}: {w}" for a, w in last.items()) or "no node could be tried"
    name = route.path.rsplit("/", 1)[-1]
    return Unavailable(f"no node could serve {name} within {total:g}s ({detail})", attempts)
