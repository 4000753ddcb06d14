"""The gateway's payment flow (gateway.booking_core.BookingCore.pay) against the real state machine, with the
simulated provider's ledger in view: a retried Pay charges once, a charge the state machine refuses is
voided, a decline charges nothing.  No Raft here (a fake node applies each command at once), so the provider
side of "charged once" -- invisible from outside a node process -- can be checked exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
import trio
import trio_asyncio
from grpclib import GRPCError
from grpclib.const import Status

from gateway.booking_core import BookingCore, Caller
from store import auth
from store.commands import (
    AddTrain,
    BootstrapAdmin,
    CancelBooking,
    CoachSpec,
    CreateSession,
    CreateStation,
    HoldSeats,
    PassengerSpec,
    RegisterUser,
    RevokeSession,
    ScheduleRuns,
    StopSpec,
    decode_command,
    encode_command,
)
from store.memdb import MemoryDatabase
from store.payments import DECLINED_CARD, TEST_CARD, SimulatedProvider, new_pnr
from store.state_machine import apply_batch

from .booking_helpers import day


class FakeNode:
    """What BookingCore uses of a Node: an id, a database, and a read barrier (a no-op: one replica)."""

    id = 1

    def __init__(self) -> None:
        self.db = MemoryDatabase()

    async def read_barrier(self, lease: bool = False, timeout: float | None = None) -> int:
        await trio.lowlevel.checkpoint()
        return 0


class FakeSubmitter:
    """Applies each command at once at the next log index; `before_confirm` runs just before a ConfirmPayment
    (to stage a race: something else happens between the quote and the payment's apply)."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.index = itertools.count(1)
        self.before_confirm: list[bytes] = []

    def apply(self, data: bytes) -> Any:
        return apply_batch(self.node.db.conn, [(next(self.index), 0, data)])[0]

    async def submit(self, data: bytes, timeout: float = 10.0) -> Any:
        await asyncio.sleep(0)
        if decode_command(data).TYPE == "confirm_payment":
            while self.before_confirm:
                self.apply(self.before_confirm.pop(0))
        return self.apply(data)


def run_aio(fn: Any) -> Any:
    async def main() -> Any:
        async with trio_asyncio.open_loop():
            return await trio_asyncio.aio_as_trio(fn)()
    return trio.run(main)


@pytest.fixture
def world():
    node = FakeNode()
    sub = FakeSubmitter(node)
    provider = SimulatedProvider()
    core = BookingCore(node, sub, provider)  # type: ignore[arg-type]
    ts = int(time.time() * 1000)
    c = dict(client_id="setup", ts_ms=ts)
    admin_tok, admin_sha = auth.new_session_token()
    cust_tok, cust_sha = auth.new_session_token()
    cmds = [
        BootstrapAdmin(request_id="a", username="admin", password_hash="scrypt$x", **c),
        CreateSession(request_id="s1", user_id=1, token_sha256=admin_sha, expires_at_ms=ts + 3_600_000, **c),
        CreateStation(request_id="st1", token_sha256=admin_sha, code="PQA", name="P Alpha", **c),
        CreateStation(request_id="st2", token_sha256=admin_sha, code="PQB", name="P Bravo", **c),
        AddTrain(request_id="t", token_sha256=admin_sha, number=15001, name="Pay Test", train_type="EXPRESS",
                 depart_time="08:00", stops=(StopSpec(station_code="PQA", arrive_min=0, depart_min=0, km=0),
                                             StopSpec(station_code="PQB", arrive_min=60, depart_min=60, km=80)),
                 coaches=(CoachSpec(label="A1", travel_class="AC2", seats=10),), **c),
        ScheduleRuns(request_id="r", token_sha256=admin_sha, train_number=15001, first_date=day(5), last_date=day(5), **c),
        RegisterUser(request_id="u", username="payer", password_hash="scrypt$x", role="CUSTOMER", **c),
        CreateSession(request_id="s2", user_id=2, token_sha256=cust_sha, expires_at_ms=ts + 3_600_000, **c),
    ]
    for cmd in cmds:
        res = sub.apply(encode_command(cmd))
        assert res.ok, res
    caller = Caller(2, "payer", "CUSTOMER", cust_sha, ts + 3_600_000)

    def hold(pnr: str) -> tuple[str, int]:
        res = sub.apply(encode_command(HoldSeats(
            request_id=f"h-{pnr}", client_id=caller.client_id, ts_ms=ts, token_sha256=cust_sha, pnr=pnr, run_id=1,
            travel_class="AC2", from_code="PQA", to_code="PQB", passengers=(PassengerSpec(name="P", age=40),))))
        assert res.ok, res
        return res.data["pnr"], res.data["amount_paise"]

    return core, sub, provider, caller, hold


def test_a_retried_pay_charges_once(world):
    core, sub, provider, caller, hold = world
    pnr, amount = hold("PAYAAAAAAA")

    async def go():
        first = await core.pay(caller, "pay-1", pnr, TEST_CARD)
        assert first.ok and first.data["status"] == "CONFIRMED"
        again = await core.pay(caller, "pay-1", pnr, TEST_CARD)  # a retry after a lost reply
        assert again == first
        with pytest.raises(GRPCError) as e:  # a NEW payment request for a paid booking
            await core.pay(caller, "pay-2", pnr, TEST_CARD)
        assert e.value.status == Status.FAILED_PRECONDITION and "already paid" in e.value.message

    run_aio(go)
    assert len(provider.charges) == 1 and provider.charged_paise == amount


def test_a_charge_the_state_machine_refuses_is_voided(world):
    core, sub, provider, caller, hold = world
    pnr, amount = hold("PAYBBBBBBB")
    # Between the quote and the ConfirmPayment, the booking is cancelled (another device of the same user).
    sub.before_confirm.append(encode_command(CancelBooking(
        request_id="c", client_id=caller.client_id, ts_ms=caller.expires_at_ms - 3_600_000,
        token_sha256=caller.token_sha256, pnr=pnr)))

    async def go():
        res = await core.pay(caller, "pay-1", pnr, TEST_CARD)
        assert not res.ok and res.code == "FAILED_PRECONDITION" and res.data["void_charge"] is True

    run_aio(go)
    assert len(provider.charges) == 1 and len(provider.refunds) == 1
    assert provider.charged_paise == 0, "the refused charge was not given back"


def test_a_declined_card_charges_nothing_and_the_hold_stays(world):
    core, sub, provider, caller, hold = world
    pnr, amount = hold("PAYCCCCCCC")

    async def go():
        res = await core.pay(caller, "pay-1", pnr, DECLINED_CARD)
        assert not res.ok and "declined" in res.message
        ok = await core.pay(caller, "pay-2", pnr, TEST_CARD)
        assert ok.ok

    run_aio(go)
    assert provider.charged_paise == amount


def _segment(conn: Any, run_id: int, a: str, b: str) -> Any:
    from store import booking_queries as bq

    return bq.segment(conn, run_id, a, b)


def test_a_booking_client_skips_the_precheck_read_but_the_apply_still_checks_the_session(world):
    core, sub, _, caller, _ = world
    token, digest = auth.new_session_token()
    ts = int(time.time() * 1000)
    assert sub.apply(encode_command(CreateSession(request_id="s3", client_id="setup", ts_ms=ts, user_id=2,
                                                  token_sha256=digest, expires_at_ms=ts + 3_600_000))).ok
    reads = 0
    real_read = core.node.db.aio_read

    async def counting_read(fn: Any, *args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real_read(fn, *args)

    core.node.db.aio_read = counting_read

    async def scenario() -> None:
        first, seg = await core.session_and(token, _segment, 1, "PQA", "PQB")
        assert (first.user_id, (await seg()).from_seq) == (2, 0)
        assert reads == 1
        again, seg = await core.session_and(token, _segment, 1, "PQA", "PQB")
        assert (again.user_id, (await seg()).to_seq) == (2, 1)
        assert reads == 1  # the same client booking again: no database read before proposing
        # Logged out through another node: this node still remembers the session for a moment, but the hold
        # it proposes is refused by the apply, which reads the session table itself.
        assert sub.apply(encode_command(RevokeSession(request_id="bye", client_id="x", ts_ms=ts + 1,
                                                      token_sha256=digest))).ok
        stale, _ = await core.session_and(token, _segment, 1, "PQA", "PQB")
        res = await core.submit(HoldSeats(
            request_id="late", client_id=stale.client_id, ts_ms=ts + 2, token_sha256=digest, pnr=new_pnr(),
            run_id=1, travel_class="AC2", from_code="PQA", to_code="PQB",
            passengers=(PassengerSpec(name="P", age=40),)))
        assert res.code == "UNAUTHENTICATED"
        # A logout on this node forgets the session at once.
        token2, digest2 = auth.new_session_token()
        assert sub.apply(encode_command(CreateSession(request_id="s4", client_id="setup", ts_ms=ts, user_id=2,
                                                      token_sha256=digest2, expires_at_ms=ts + 3_600_000))).ok
        await core.session_and(token2, _segment, 1, "PQA", "PQB")
        assert (await core.revoke_session(token2, "bye2")).ok
        with pytest.raises(GRPCError) as e:
            await core.session_and(token2, _segment, 1, "PQA", "PQB")
        assert e.value.status == Status.UNAUTHENTICATED

    run_aio(scenario)


class CountingNode(FakeNode):
    """A node whose read barrier takes a while and counts its rounds; the index is the round's number."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds: list[bool] = []

    async def read_barrier(self, lease: bool = False, timeout: float | None = None) -> int:
        self.rounds.append(lease)
        n = len(self.rounds)
        await trio.sleep(0.05)
        return n


def test_linearizable_reads_made_together_share_one_barrier_and_later_ones_wait_for_the_next():
    """Reads of one turn of the event loop share one call into the node; a read that starts while that call
    is in flight is not answered by it (it started before the read) but by the next."""
    node = CountingNode()
    core = BookingCore(node, FakeSubmitter(node))  # type: ignore[arg-type]

    async def main() -> None:
        first = [asyncio.ensure_future(core.barrier()) for _ in range(5)]
        stale = asyncio.ensure_future(core.barrier(2))  # STALE: no barrier at all
        await asyncio.sleep(0.01)  # the round is in flight now
        late = asyncio.ensure_future(core.barrier())
        lease = asyncio.ensure_future(core.barrier(1))
        await asyncio.gather(*first, stale, late, lease)
        # One round for the five; the late read and the lease read asked while it ran: rounds of their own.
        assert sorted(node.rounds) == [False, False, True]
        assert node.rounds[0] is False

    run_aio(main)
