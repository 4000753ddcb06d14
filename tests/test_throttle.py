"""gateway.throttle.LoginThrottle under a fake clock, and BookingCore.authenticate using it (both APIs' Login).

No sleeping anywhere: the throttle's clock is a plain function the tests move forward.
"""

from __future__ import annotations

import itertools
import time

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from gateway.booking_core import BookingCore
from gateway.services import TicketingService
from gateway.throttle import ACCOUNT_LIMIT, ADDRESS_LIMIT, LOCKOUT_S, WINDOW_S, LoginThrottle, Throttled
from proto.gen.train_booking import LoginRequest
from store import auth
from store.commands import RegisterUser, encode_command

from .test_booking_core import FakeNode, FakeSubmitter, run_aio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttle(clock: FakeClock) -> LoginThrottle:
    return LoginThrottle(clock=clock)


def fail(t: LoginThrottle, n: int, user: str = "bob", addr: str = "10.0.0.1", exists: bool = True) -> None:
    for _ in range(n):
        assert t.check(user, addr) is None
        t.failed(user, addr, account_exists=exists)


# ============================================================================================ the throttle


def test_an_account_is_locked_after_five_failures_for_fifteen_minutes(throttle, clock):
    fail(throttle, ACCOUNT_LIMIT - 1)
    assert throttle.check("bob", "10.0.0.1") is None
    fail(throttle, 1)
    got = throttle.check("bob", "10.0.0.9")  # from any address
    assert got == Throttled("account", LOCKOUT_S)
    assert got.message == "Too many failed login attempts; try again in 15 minutes"
    clock.advance(LOCKOUT_S - 59.5)
    assert throttle.check("bob").message == "Too many failed login attempts; try again in 1 minute"
    clock.advance(59)
    assert throttle.check("bob") is not None
    clock.advance(1)
    assert throttle.check("bob") is None  # the lockout is over, with a clean slate
    fail(throttle, ACCOUNT_LIMIT - 1)
    assert throttle.check("bob") is None


def test_only_failures_within_the_window_count(throttle, clock):
    fail(throttle, ACCOUNT_LIMIT - 1)
    clock.advance(WINDOW_S)  # those four are now out of the window
    fail(throttle, ACCOUNT_LIMIT - 1)
    assert throttle.check("bob") is None
    clock.advance(WINDOW_S / 2)
    fail(throttle, 1)  # 4 (half a window ago) + 1
    assert throttle.check("bob") is not None


def test_accounts_are_case_insensitive_and_independent(throttle):
    for name in ("Bob", " bob", "BOB ", "bob", "bOb"):
        fail(throttle, 1, user=name)
    assert throttle.check("bob") is not None
    assert throttle.check("alice") is None


def test_a_success_clears_the_account_but_not_the_address(throttle):
    fail(throttle, ACCOUNT_LIMIT - 1)
    throttle.succeeded("bob", "10.0.0.1")
    fail(throttle, ACCOUNT_LIMIT - 1)
    assert throttle.check("bob", "10.0.0.1") is None
    # The address kept counting: 8 failures so far.
    for i in range(ADDRESS_LIMIT - 2 * (ACCOUNT_LIMIT - 1)):
        throttle.failed(f"user{i}", "10.0.0.1", account_exists=False)
    got = throttle.check("carol", "10.0.0.1")
    assert got is not None and got.scope == "address"
    assert throttle.check("carol", "10.0.0.2") is None


def test_unknown_names_count_against_the_address_only(throttle):
    fail(throttle, ACCOUNT_LIMIT * 3, user="nobody", exists=False)
    assert throttle.check("nobody", "10.0.0.2") is None  # no account lock for a name that does not exist
    fail(throttle, ADDRESS_LIMIT - ACCOUNT_LIMIT * 3 - 1, user="nobody", exists=False)
    assert throttle.check("anyone", "10.0.0.1") is None
    throttle.failed("nobody", "10.0.0.1", account_exists=False)
    got = throttle.check("anyone", "10.0.0.1")
    assert got is not None and got.scope == "address" and got.retry_after_s == LOCKOUT_S


def test_no_address_means_no_address_limit(throttle):
    for i in range(ADDRESS_LIMIT * 2):
        throttle.failed(f"u{i}", "", account_exists=False)
    assert throttle.check("u0", "") is None


def test_memory_is_bounded(clock):
    t = LoginThrottle(clock=clock, max_keys=10, account_limit=2)
    for i in range(100):
        t.failed(f"user{i}", f"10.0.{i}.1")
    assert len(t._accounts.counters) == 10 and len(t._addresses.counters) == 10
    t.failed("user99", "10.0.99.1")
    assert t.check("user99") is not None  # the most recent keys are the ones kept


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        LoginThrottle(account_limit=0)
    with pytest.raises(ValueError):
        LoginThrottle(window_s=0)


# ============================================================================ through BookingCore.authenticate


@pytest.fixture
def accounts(clock):
    """A BookingCore over the real state machine (no Raft) with two real accounts and a fake-clock throttle."""
    node = FakeNode()
    sub = FakeSubmitter(node)
    ts = int(time.time() * 1000)
    for i, name in enumerate(("alice", "dave")):
        res = sub.apply(encode_command(RegisterUser(
            request_id=f"r{i}", client_id=f"register:{name}", ts_ms=ts, username=name,
            password_hash=auth.hash_password("correct-password"), role="CUSTOMER")))
        assert res.ok, res
    core = BookingCore(node, sub, throttle=LoginThrottle(clock=clock))  # type: ignore[arg-type]
    return core, TicketingService(node, sub, core=core)  # type: ignore[arg-type]


def test_authenticate_locks_an_account_and_both_apis_say_so(accounts, clock):
    core, ticketing = accounts

    async def go() -> None:
        for _ in range(ACCOUNT_LIMIT):
            assert await core.authenticate("alice", "wrong", "10.1.1.1") is None
        # Locked: even the right password is refused, without being checked.
        with pytest.raises(GRPCError) as err:
            await core.authenticate("Alice", "correct-password", "10.1.1.2")
        assert err.value.status == Status.RESOURCE_EXHAUSTED
        assert err.value.message == "Too many failed login attempts; try again in 15 minutes"
        # The old API answers success=false with the same sentence (its peer address is unknown here).
        old = await ticketing.login(LoginRequest(username="alice", password="correct-password"))
        assert not old.success and old.message.startswith("Too many failed login attempts")
        # Another account is not affected, and logging in there opens a session.
        ok = await ticketing.login(LoginRequest(username="dave", password="correct-password"))
        assert ok.success and ok.token
        clock.advance(LOCKOUT_S)
        user = await core.authenticate("alice", "correct-password", "10.1.1.1")
        assert user is not None and user.username == "alice"

    run_aio(go)


def test_authenticate_locks_an_address_spraying_names(accounts, clock):
    core, _ = accounts
    counter = itertools.count()

    async def go() -> None:
        # Long names are refused before any lookup (and count too).
        for _ in range(ADDRESS_LIMIT // 2):
            assert await core.authenticate("x" * 500, "pw", "10.2.2.2") is None
        for _ in range(ADDRESS_LIMIT - ADDRESS_LIMIT // 2):
            assert await core.authenticate(f"ghost{next(counter)}", "pw", "10.2.2.2") is None
        with pytest.raises(GRPCError) as err:
            await core.authenticate("dave", "correct-password", "10.2.2.2")
        assert err.value.status == Status.RESOURCE_EXHAUSTED
        assert await core.authenticate("dave", "correct-password", "10.2.2.3") is not None
        clock.advance(LOCKOUT_S + 1)
        assert await core.authenticate("dave", "correct-password", "10.2.2.2") is not None

    run_aio(go)
