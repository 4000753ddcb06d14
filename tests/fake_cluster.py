"""An in-process fake railraft cluster for client tests: real grpclib servers on 127.0.0.1, fake behaviour.

Each `FakeNode` serves `railraft.v1.Booking` and `railraft.node.v1.Node` on its own port.  The nodes share one
`FakeCluster` state: who leads, the "state machine" (request id -> first result, so retries are answered
exactly once, as the real one does), and a journal of every call each node received.  Tests script faults
per node:

* a follower answers writes UNAVAILABLE with the leader hint (through gateway.rpc.LeaderHintMixin, exactly as
  a real node does); `hint=False` makes it answer without one (no leader known);
* `drop_after_apply = N`: the node applies the next N writes and then drops the connection instead of
  replying (a leader killed after commit);
* `hang = True`: the node accepts calls and never answers (a SIGSTOPped process);
* `fail = (Status, message)`: domain errors;
* `stop()`: the node's server goes away (connection refused from then on);
* `delays = {"MyBookings": 1.0}`: calls of that method take that long;
* `batch = False`: the node answers Batch UNIMPLEMENTED, like a server older than it.

Batch runs each call through the same handlers with gateway.batch_calls, as a real node does; a call that
drops the connection drops the whole Batch's connection.

    async with FakeCluster(3, leader=2) as fc:
        async with RailraftClient(fc.addresses) as rr: ...
        fc.calls            # [Call(node, method, request_id, token, consistency), ...]
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from dataclasses import dataclass, field
from typing import Any

from grpclib import GRPCError
from grpclib.const import Handler, Status
from grpclib.protocol import H2Protocol
from grpclib.server import Server

from actors.node import NotLeaderError
from gateway.batch_calls import batch_handlers, run_batch
from gateway.rpc import LeaderHintMixin, current_stream
from proto.gen.railraft.node.v1 import (
    AddNodeRequest,
    AdminResponse,
    NodeBase,
    NodeStatus,
    ProposeRequest,
    ProposeResponse,
    RemoveNodeRequest,
    StatusRequest,
    TransferLeaderRequest,
)
from proto.gen.railraft.v1 import (
    Ack,
    AddStationRequest,
    AddTrainRequest,
    BatchRequest,
    BookingBase,
    BookingInfo,
    BookingList,
    BookingState,
    CancelRequest,
    CancelRunRequest,
    GetBookingRequest,
    HoldRequest,
    ListRunsRequest,
    ListStationsRequest,
    ListTrainsRequest,
    LoginRequest,
    LogoutRequest,
    MyBookingsRequest,
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
    SeatMapRequest,
    SeatMapResponse,
    Session,
    StationInfo,
    StationList,
    TrainInfo,
    TrainList,
    UserInfo,
    WhoAmIRequest,
)

HOST = "127.0.0.1"


class _Drop(Exception):
    """Raised by a fake handler: abort the TCP connection instead of answering."""


@dataclass
class Call:
    """One request a fake node received."""

    node: int
    method: str
    request_id: str = ""
    token: str = ""
    consistency: int | None = None
    request: Any = None


@dataclass
class FakeCluster:
    """Shared state of the fake nodes (see the module docstring)."""

    n: int = 3
    leader: int = 1
    term: int = 1
    status_knows_leader: bool = True  # Node.Status tells who leads (else only hints do)
    nodes: dict[int, FakeNode] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)  # request id -> first result
    applied: list[tuple[str, str]] = field(default_factory=list)  # (method, request id) per real apply
    # the fake catalogue (what the demo loader sees)
    stations: dict[str, StationInfo] = field(default_factory=dict)
    trains: dict[int, TrainInfo] = field(default_factory=dict)
    runs: dict[tuple[int, str], RunInfo] = field(default_factory=dict)
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # username -> (password, role)
    sessions: dict[str, str] = field(default_factory=dict)  # token -> username

    async def __aenter__(self) -> FakeCluster:
        socks = []
        for i in range(1, self.n + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, 0))
            socks.append(s)
        for i, s in enumerate(socks, start=1):
            self.nodes[i] = FakeNode(self, i, s.getsockname()[1])
        for node, s in zip(self.nodes.values(), socks):
            await node.start(s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node in self.nodes.values():
            await node.stop()

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes.values()]

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def apply(self, method: str, request_id: str, fn: Any) -> Any:
        """The state machine: the first result of a request id is remembered and returned to retries."""
        if request_id and request_id in self.results:
            return self.results[request_id]
        result = fn()
        self.applied.append((method, request_id))
        if request_id:
            self.results[request_id] = result
        return result

    def user_of(self, token: str) -> str:
        user = self.sessions.get(token)
        if user is None:
            raise GRPCError(Status.UNAUTHENTICATED, "please log in (no or expired session)")
        return user

    def admin(self, token: str) -> None:
        if self.users[self.user_of(token)][1] != "ADMIN":
            raise GRPCError(Status.PERMISSION_DENIED, "only an administrator may do that")


class _FaultMixin:
    """Wraps every handler: `_Drop` aborts the connection (the caller sees it lost, with no answer)."""

    def __mapping__(self) -> dict[str, Handler]:
        mapping = super().__mapping__()  # type: ignore[misc]
        return {path: Handler(_droppable(h.func), h.cardinality, h.request_type, h.reply_type)
                for path, h in mapping.items()}


def _droppable(func: Any) -> Any:
    async def handler(stream: Any) -> None:
        try:
            await func(stream)
        except _Drop:
            stream._stream._transport.abort()  # RST: like a process killed after commit

    return handler


class FakeBooking(_FaultMixin, LeaderHintMixin, BookingBase):
    """railraft.v1.Booking with scripted faults; writes need the leader, reads are served anywhere."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.fc = node.fc

    # ---- plumbing
    async def _enter(self, method: str, req: Any, write: bool) -> None:
        node, fc = self.node, self.fc
        fc.calls.append(Call(node.id, method, getattr(req, "request_id", ""), getattr(req, "token", ""),
                             getattr(req, "consistency", None), req))
        if node.hang:
            await asyncio.sleep(3600)
        if method in node.delays:
            await asyncio.sleep(node.delays[method])
        if node.unavailable:
            raise NotLeaderError(0, "", "this node is cut off")
        if write and fc.leader != node.id:
            if node.hint and fc.leader in fc.nodes:
                raise NotLeaderError(fc.leader, fc.nodes[fc.leader].address)
            raise NotLeaderError(0, "", "no leader is known right now")
        if node.fail is not None:
            raise GRPCError(*node.fail)

    def _after_apply(self) -> None:
        if self.node.drop_after_apply > 0:
            self.node.drop_after_apply -= 1
            if self.node.on_drop is not None:
                self.node.on_drop()
            raise _Drop()

    async def _write(self, method: str, req: Any, fn: Any) -> Any:
        await self._enter(method, req, True)
        result = self.fc.apply(method, req.request_id, fn)
        self._after_apply()
        return result

    # ---- batching
    async def batch(self, req: BatchRequest) -> Any:
        self.fc.calls.append(Call(self.node.id, "Batch", request=req))
        if not self.node.batch:
            raise GRPCError(Status.UNIMPLEMENTED, "Method not implemented")

        def guarded(h: Handler) -> Handler:
            async def func(stream: Any) -> None:
                try:
                    await h.func(stream)
                except _Drop:
                    stream._outer._stream._transport.abort()  # the Batch's connection, as a killed node's
                    await asyncio.Event().wait()  # cancelled with the Batch when grpclib sees the loss
            return Handler(func, h.cardinality, h.request_type, h.reply_type)

        handlers = {name: guarded(h) for name, h in batch_handlers(LeaderHintMixin.__mapping__(self)).items()}
        async for reply in run_batch(handlers, req, current_stream()):
            yield reply

    # ---- accounts
    async def register(self, req: RegisterRequest) -> Session:
        def do() -> Session:
            if req.username in self.fc.users:
                raise GRPCError(Status.ALREADY_EXISTS, f"the username {req.username!r} is already taken")
            self.fc.users[req.username] = (req.password, "CUSTOMER")
            return Session()

        return await self._write("Register", req, do)

    async def login(self, req: LoginRequest) -> Session:
        await self._enter("Login", req, True)
        pw, role = self.fc.users.get(req.username, (None, ""))
        if pw is None or pw != req.password:
            raise GRPCError(Status.UNAUTHENTICATED, "wrong username or password")
        token = f"tok-{req.username}-{len(self.fc.sessions)}"
        self.fc.sessions[token] = req.username
        self._after_apply()
        return Session(token=token, user=UserInfo(id=len(self.fc.users), username=req.username, role=role))

    async def logout(self, req: LogoutRequest) -> Ack:
        return await self._write("Logout", req, lambda: Ack(ok=self.fc.sessions.pop(req.token, None) is not None,
                                                             message="Logged out"))

    async def who_am_i(self, req: WhoAmIRequest) -> UserInfo:
        await self._enter("WhoAmI", req, False)
        user = self.fc.user_of(req.token)
        return UserInfo(username=user, role=self.fc.users[user][1])

    # ---- reads
    async def list_stations(self, req: ListStationsRequest) -> StationList:
        await self._enter("ListStations", req, False)
        return StationList(stations=sorted(self.fc.stations.values(), key=lambda s: s.code))

    async def list_trains(self, req: ListTrainsRequest) -> TrainList:
        await self._enter("ListTrains", req, False)
        return TrainList(trains=[self.fc.trains[k] for k in sorted(self.fc.trains)])

    async def search(self, req: SearchRequest) -> SearchResponse:
        await self._enter("Search", req, False)
        return SearchResponse(results=[SearchResult(run_id=7, train_number=12951, from_station=req.from_station,
                                                    to_station=req.to_station, date=req.date)])

    async def seat_map(self, req: SeatMapRequest) -> SeatMapResponse:
        await self._enter("SeatMap", req, False)
        return SeatMapResponse(run_id=req.run_id, coach=req.coach)

    async def refund_quote(self, req: CancelRequest) -> RefundQuoteResponse:
        await self._enter("RefundQuote", req, False)
        return RefundQuoteResponse(refund_paise=900, percent=90, rule="90% more than 48 h before departure")

    async def get_booking(self, req: GetBookingRequest) -> BookingInfo:
        await self._enter("GetBooking", req, False)
        self.fc.user_of(req.token)
        return BookingInfo(pnr=req.pnr)

    async def my_bookings(self, req: MyBookingsRequest) -> BookingList:
        await self._enter("MyBookings", req, False)
        self.fc.user_of(req.token)
        return BookingList(bookings=[BookingInfo(pnr="ABCDEFGHJK")])

    async def pnr_status(self, req: PnrStatusRequest) -> BookingInfo:
        await self._enter("PnrStatus", req, False)
        return BookingInfo(pnr=req.pnr)

    async def list_runs(self, req: ListRunsRequest) -> RunList:
        await self._enter("ListRuns", req, False)
        self.fc.admin(req.token)
        runs = [r for (num, date), r in sorted(self.fc.runs.items())
                if (not req.train_number or num == req.train_number)
                and (not req.first_date or date >= req.first_date) and (not req.last_date or date <= req.last_date)]
        return RunList(runs=runs)

    async def run_report(self, req: RunReportRequest) -> RunReportResponse:
        await self._enter("RunReport", req, False)
        return RunReportResponse(run=RunInfo(id=req.run_id))

    # ---- writes
    async def hold(self, req: HoldRequest) -> BookingInfo:
        def do() -> BookingInfo:
            n = sum(1 for m, _ in self.fc.applied if m == "Hold") + 1
            return BookingInfo(id=n, pnr=f"PNR{n:07d}", state=BookingState.HELD, run_id=req.run_id,
                               seat_class=req.seat_class, amount_paise=100_00 * len(req.passengers))

        return await self._write("Hold", req, do)

    async def pay(self, req: PayRequest) -> BookingInfo:
        return await self._write("Pay", req, lambda: BookingInfo(pnr=req.pnr, state=BookingState.CONFIRMED))

    async def cancel(self, req: CancelRequest) -> BookingInfo:
        return await self._write("Cancel", req, lambda: BookingInfo(pnr=req.pnr, state=BookingState.CANCELLED))

    async def add_station(self, req: AddStationRequest) -> StationInfo:
        def do() -> StationInfo:
            self.fc.admin(req.token)
            if req.code in self.fc.stations:
                raise GRPCError(Status.ALREADY_EXISTS, f"station {req.code} exists")
            st = self.fc.stations[req.code] = StationInfo(id=len(self.fc.stations) + 1, code=req.code, name=req.name)
            return st

        return await self._write("AddStation", req, do)

    async def add_train(self, req: AddTrainRequest) -> TrainInfo:
        def do() -> TrainInfo:
            self.fc.admin(req.token)
            if req.number in self.fc.trains:
                raise GRPCError(Status.ALREADY_EXISTS, f"train {req.number} exists")
            for s in req.stops:
                if s.station_code not in self.fc.stations:
                    raise GRPCError(Status.NOT_FOUND, f"no station {s.station_code}")
            t = self.fc.trains[req.number] = TrainInfo(id=len(self.fc.trains) + 1, number=req.number, name=req.name,
                                                       type=req.type, departure_time=req.departure_time)
            return t

        return await self._write("AddTrain", req, do)

    async def schedule_runs(self, req: ScheduleRunsRequest) -> RunList:
        def do() -> RunList:
            import datetime as dt

            self.fc.admin(req.token)
            if req.train_number not in self.fc.trains:
                raise GRPCError(Status.NOT_FOUND, f"no train {req.train_number}")
            day, last = dt.date.fromisoformat(req.first_date), dt.date.fromisoformat(req.last_date)
            made = []
            while day <= last:
                key = (req.train_number, day.isoformat())
                if key not in self.fc.runs:
                    self.fc.runs[key] = RunInfo(id=len(self.fc.runs) + 1, train_number=req.train_number,
                                                date=day.isoformat(), status="SCHEDULED")
                    made.append(self.fc.runs[key])
                day += dt.timedelta(days=1)
            return RunList(runs=made)

        return await self._write("ScheduleRuns", req, do)

    async def cancel_run(self, req: CancelRunRequest) -> Ack:
        return await self._write("CancelRun", req, lambda: Ack(ok=True, message="run cancelled"))


class FakeNodeService(LeaderHintMixin, NodeBase):
    """railraft.node.v1.Node: Status from the shared state; admin calls answered by the leader."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.fc = node.fc

    async def status(self, req: StatusRequest) -> NodeStatus:
        self.fc.calls.append(Call(self.node.id, "Status"))
        if self.node.hang:
            await asyncio.sleep(3600)
        fc, me = self.fc, self.node.id
        known = fc.status_knows_leader and fc.leader in fc.nodes
        return NodeStatus(
            id=me, address=self.node.address, role="leader" if (known and fc.leader == me) else "follower",
            term=fc.term, leader_id=fc.leader if known else 0,
            leader_address=fc.nodes[fc.leader].address if known else "",
        )

    async def propose(self, req: ProposeRequest) -> ProposeResponse:
        raise GRPCError(Status.UNIMPLEMENTED, "not in the fake")

    def _lead(self) -> None:
        if self.fc.leader != self.node.id:
            raise NotLeaderError(self.fc.leader, self.fc.nodes[self.fc.leader].address)

    async def transfer_leader(self, req: TransferLeaderRequest) -> AdminResponse:
        self.fc.calls.append(Call(self.node.id, "TransferLeader"))
        self._lead()
        target = req.target_id or (self.node.id % self.fc.n) + 1
        self.fc.leader, self.fc.term = target, self.fc.term + 1
        return AdminResponse(ok=True, message=f"node {target} is now the leader", leader_id=target)

    async def add_node(self, req: AddNodeRequest) -> AdminResponse:
        self.fc.calls.append(Call(self.node.id, "AddNode"))
        self._lead()
        return AdminResponse(ok=False, message=f"node {req.id} did not catch up", leader_id=self.fc.leader)

    async def remove_node(self, req: RemoveNodeRequest) -> AdminResponse:
        self.fc.calls.append(Call(self.node.id, "RemoveNode"))
        self._lead()
        return AdminResponse(ok=True, message=f"node {req.id} removed", leader_id=self.fc.leader)


class _Server(Server):
    """Remembers its connections so that `stop()` can cut them (grpclib's close() leaves them open)."""

    def __init__(self, handlers: Any) -> None:
        super().__init__(handlers)
        self.protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        p = super()._protocol_factory()
        self.protocols.add(p)
        return p


class FakeNode:
    """One fake node: a grpclib server on its own port, with scriptable faults."""

    def __init__(self, fc: FakeCluster, node_id: int, port: int) -> None:
        self.fc = fc
        self.id = node_id
        self.port = port
        self.hint = True
        self.hang = False
        self.unavailable = False
        self.fail: tuple[Status, str] | None = None
        self.drop_after_apply = 0
        self.on_drop: Any = None
        self.delays: dict[str, float] = {}
        self.batch = True
        self.server: _Server | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, self.port))
        self.server = _Server([FakeBooking(self), FakeNodeService(self)])
        await self.server.start(sock=sock)

    async def stop(self) -> None:
        """Stop serving and cut every connection: from now on, connection refused."""
        if self.server is None:
            return
        self.hang = False
        self.server.close()
        for p in list(self.server.protocols):
            transport = getattr(getattr(p, "connection", None), "_transport", None)
            if transport is not None:
                transport.abort()
        await self.server.wait_closed()
        self.server = None
