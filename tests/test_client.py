"""gateway.client.RailraftClient: leader routing, failover, same-request-id retries, deadlines, error mapping.

Most tests run against tests/fake_cluster.py (real grpclib servers in this process, scripted faults), so they
are fast and deterministic.  The end-to-end test at the bottom runs a real 3-node cluster
(tests/cluster_harness.py) and SIGKILLs the leader in the middle of a stream of writes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from grpclib.const import Status

from gateway import demo_loader
from gateway.client import (
    LEASE,
    LINEARIZABLE,
    STALE,
    AlreadyExists,
    BookingError,
    FailedPrecondition,
    PermissionDenied,
    RailraftClient,
    Unauthenticated,
    Unavailable,
    parse_addresses,
)
from gateway.demo_loader import DemoCredentials, DemoError, load_demo, load_or_create_credentials
from proto.gen.railraft.v1 import BookingState, Consistency, PassengerInput, SeatClass
from store.demo import STATIONS, train_specs

from .fake_cluster import FakeCluster


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


PASSENGERS = [("Asha", 34, "LOWER"), PassengerInput(name="Ravi", age=36)]


async def _hold(rr: RailraftClient, **kw: Any) -> Any:
    return await rr.hold(7, "AC3", "NDLS", "BCT", PASSENGERS, **kw)


# ============================================================================== finding the leader


def test_writes_go_to_the_leader_found_by_status() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=3) as fc, RailraftClient(fc.addresses) as rr:
            b = await _hold(rr)
            assert b.pnr == "PNR0000001" and b.state == BookingState.HELD
            assert [c.node for c in fc.calls_of("Hold")] == [3]  # no detour through a follower
            assert rr.leader == fc.nodes[3].address
            await rr.pay(b.pnr, "4111111111111111")
            assert [c.node for c in fc.calls_of("Pay")] == [3]
            # the request was built from the tuple/str conveniences
            req = fc.calls_of("Hold")[0].request
            assert req.seat_class == SeatClass.AC3
            assert [(p.name, p.age, p.berth_preference) for p in req.passengers] == [
                ("Asha", 34, "LOWER"), ("Ravi", 36, "")]

    run(main())


def test_spread_writes_go_round_robin_to_every_node() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=3) as fc, RailraftClient(fc.addresses, spread_writes=True) as rr:
            pnrs = [(await _hold(rr, request_id=f"r{i}")).pnr for i in range(3)]
            assert len(set(pnrs)) == 3
            # Each write starts at the next node (a follower of the fake points to the leader with a hint;
            # a real one forwards the write itself); no Status discovery is needed first.
            first_tries = [c.node for c in fc.calls_of("Hold")]
            assert {1, 2, 3} <= set(first_tries), first_tries
            assert not fc.calls_of("Status")

    run(main())


def test_writes_follow_leader_hints_when_status_does_not_know() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=2, status_knows_leader=False) as fc:
            async with RailraftClient(fc.addresses) as rr:
                await _hold(rr)
                nodes = [c.node for c in fc.calls_of("Hold")]
                assert nodes == [1, 2], nodes  # node 1 said "leader=2@...", the client went straight there
                assert rr.leader == fc.nodes[2].address
                await _hold(rr)
                assert [c.node for c in fc.calls_of("Hold")][2:] == [2]  # remembered

    run(main())


def test_hint_to_an_unknown_node_is_learnt() -> None:
    """A leader the client was not told about (added with add-node) is reached through the hint."""

    async def main() -> None:
        async with FakeCluster(3, leader=3, status_knows_leader=False) as fc:
            async with RailraftClient(fc.addresses[:1]) as rr:
                await _hold(rr)
                assert [c.node for c in fc.calls_of("Hold")] == [1, 3]
                assert fc.nodes[3].address in rr.addresses

    run(main())


def test_leader_change_is_followed() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            await _hold(rr)
            fc.leader, fc.term = 3, 2  # an election elsewhere: node 1 now answers with a hint
            await _hold(rr)
            assert [c.node for c in fc.calls_of("Hold")] == [1, 1, 3]

    run(main())


# ============================================================================== failover


def test_failover_when_a_node_refuses_connections() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=2, status_knows_leader=False) as fc:
            await fc.nodes[1].stop()
            async with RailraftClient(fc.addresses, timeout=5) as rr:
                b = await _hold(rr)
                assert b.pnr
                assert [c.node for c in fc.calls_of("Hold")] in ([2], [3, 2])
                # reads skip the dead node too
                for _ in range(4):
                    assert await rr.stations() == []

    run(main())


def test_failover_from_a_hung_node_within_the_attempt_timeout() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=2) as fc:
            fc.nodes[1].hang = True  # accepts, never answers (SIGSTOP)
            async with RailraftClient(fc.addresses, timeout=5, attempt_timeout=0.3) as rr:
                t0 = time.monotonic()
                for _ in range(3):
                    res = await rr.search("NDLS", "BCT", "2030-01-01")
                    assert res[0].run_id == 7
                assert time.monotonic() - t0 < 2.0  # at most one attempt timeout per read
                assert {c.node for c in fc.calls_of("Search")} == {1, 2, 3}

    run(main())


def test_leader_discovery_is_not_held_up_by_a_hung_node() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=3) as fc:
            fc.nodes[1].hang = True
            async with RailraftClient(fc.addresses, timeout=5, attempt_timeout=2) as rr:
                t0 = time.monotonic()
                await _hold(rr)
                assert time.monotonic() - t0 < 0.5
                assert [c.node for c in fc.calls_of("Hold")] == [3]

    run(main())


def test_grpclib_attribute_error_race_counts_as_a_lost_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """grpclib#110: a request that starts on a just-lost connection raises AttributeError; fail over."""

    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            await _hold(rr)
            real = rr._channel
            broken = {"left": 1}

            class Broken:
                def request(self, *a: Any, **k: Any) -> Any:
                    broken["left"] -= 1
                    raise AttributeError("'Connection' object has no attribute '_transport'")

            def channel(addr: str) -> Any:
                if addr == fc.nodes[1].address and broken["left"] > 0:
                    return Broken()
                return real(addr)

            monkeypatch.setattr(rr, "_channel", channel)
            b = await _hold(rr)
            assert b.pnr == "PNR0000002"
            assert broken["left"] == 0

    run(main())


# ============================================================================== exactly-once


def test_write_retried_with_the_same_request_id_after_a_lost_reply() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses, timeout=5) as rr:
            fc.nodes[1].drop_after_apply = 2  # applies, then the connection dies before the reply; twice
            b = await _hold(rr)
            holds = fc.calls_of("Hold")
            # node 1 twice dropped the reply; the followers in between pointed back at it
            assert [c.node for c in holds].count(1) == 3
            assert len({c.request_id for c in holds}) == 1 and holds[0].request_id
            assert fc.applied == [("Hold", holds[0].request_id)]  # applied once
            assert b.pnr == "PNR0000001"
            # a new logical call gets a new request id
            await _hold(rr)
            assert fc.calls_of("Hold")[-1].request_id != holds[0].request_id
            assert len(fc.applied) == 2

    run(main())


def test_lost_reply_then_failover_to_a_new_leader_returns_the_first_result() -> None:
    """The leader applies the hold and dies; another node takes over and answers the retry with the
    remembered result: one booking."""

    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses, timeout=5) as rr:
            await rr.pay("X", "4111111111111111")  # warm up: the client knows node 1 leads

            def die() -> None:
                fc.leader, fc.term = 2, 2
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(fc.nodes[1].stop()))

            fc.nodes[1].drop_after_apply = 1
            fc.nodes[1].on_drop = die
            b = await _hold(rr, request_id="my-own-id")
            holds = fc.calls_of("Hold")
            assert [c.request_id for c in holds] == ["my-own-id"] * len(holds)
            assert holds[0].node == 1 and holds[-1].node == 2
            assert [m for m, _ in fc.applied].count("Hold") == 1
            assert b.pnr == "PNR0000001"

    run(main())


# ============================================================================== deadlines and errors


def test_unavailable_after_the_deadline_lists_every_node() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=0, status_knows_leader=False) as fc:  # nobody leads
            async with RailraftClient(fc.addresses, timeout=0.6) as rr:
                t0 = time.monotonic()
                with pytest.raises(Unavailable) as ei:
                    await _hold(rr)
                elapsed = time.monotonic() - t0
                assert 0.55 <= elapsed < 1.5, elapsed
                msg = str(ei.value)
                assert "Hold" in msg and "0.6s" in msg
                for addr in fc.addresses:
                    assert addr in msg
                assert "no leader is known right now" in msg  # the server's words, kept
                assert len(fc.calls_of("Hold")) >= 3  # went round and backed off, more than once
                assert ei.value.attempts

    run(main())


def test_unavailable_when_nothing_listens() -> None:
    async def main() -> None:
        async with FakeCluster(2) as fc:
            for n in fc.nodes.values():
                await n.stop()
            async with RailraftClient(fc.addresses, timeout=0.5) as rr:
                with pytest.raises(Unavailable, match="ConnectionRefused"):
                    await rr.stations()

    run(main())


def test_per_attempt_timeout_is_capped_by_the_deadline() -> None:
    async def main() -> None:
        async with FakeCluster(1) as fc:
            fc.nodes[1].hang = True
            async with RailraftClient(fc.addresses, timeout=0.4, attempt_timeout=30) as rr:
                t0 = time.monotonic()
                with pytest.raises(Unavailable, match="no answer in time"):
                    await rr.stations()
                assert time.monotonic() - t0 < 1.5

    run(main())


def test_domain_errors_carry_status_and_message_and_are_not_retried() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            fc.nodes[1].fail = (Status.FAILED_PRECONDITION, "sold out: no AC3 seats left from NDLS to BCT")
            with pytest.raises(FailedPrecondition) as ei:
                await _hold(rr)
            assert ei.value.status == Status.FAILED_PRECONDITION
            assert ei.value.message == "sold out: no AC3 seats left from NDLS to BCT"
            assert isinstance(ei.value, BookingError)
            assert len(fc.calls_of("Hold")) == 1
            fc.nodes[1].fail = (Status.INTERNAL, "boom")
            with pytest.raises(BookingError) as ei2:
                await _hold(rr)
            assert type(ei2.value) is BookingError and ei2.value.status == Status.INTERNAL
            fc.nodes[1].fail = None
            with pytest.raises(Unauthenticated, match="please log in"):
                await rr.my_bookings()

    run(main())


# ============================================================================== sessions, reads, admin


def test_login_keeps_the_token_and_logout_forgets_it() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=2) as fc, RailraftClient(fc.addresses) as rr:
            fc.users["asha"] = ("pw-asha-123", "CUSTOMER")
            with pytest.raises(Unauthenticated, match="wrong username or password"):
                await rr.login("asha", "nope")
            s = await rr.login("asha", "pw-asha-123")
            assert rr.token == s.token and rr.token.startswith("tok-asha")
            assert rr.user.username == "asha" and rr.user.role == "CUSTOMER"
            assert (await rr.whoami()).username == "asha"
            assert [b.pnr for b in await rr.my_bookings()] == ["ABCDEFGHJK"]
            assert fc.calls_of("MyBookings")[0].token == s.token
            # another user's token, per call, without touching the client's own session
            fc.users["ravi"] = ("pw-ravi-123", "ADMIN")
            other = await rr.login("ravi", "pw-ravi-123", remember=False)
            assert rr.token == s.token
            await rr.add_station("NDLS", "New Delhi", token=other.token)
            with pytest.raises(PermissionDenied):
                await rr.add_station("BCT", "Mumbai Central")
            with pytest.raises(AlreadyExists):
                await rr.add_station("NDLS", "New Delhi", token=other.token)
            ack = await rr.logout()
            assert ack.ok and rr.token == "" and rr.user is None
            assert fc.calls_of("Logout")[0].token == s.token

    run(main())


def test_reads_round_robin_and_consistency() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc:
            async with RailraftClient(fc.addresses) as rr:
                for _ in range(6):
                    await rr.stations()
                assert sorted(c.node for c in fc.calls_of("ListStations")) == [1, 1, 2, 2, 3, 3]
                assert {c.consistency for c in fc.calls_of("ListStations")} == {Consistency.LINEARIZABLE}
                await rr.search("NDLS", "BCT", "2030-01-01", consistency=STALE)
                assert fc.calls_of("Search")[-1].consistency == Consistency.STALE
            async with RailraftClient(fc.addresses, consistency=LEASE) as rr:
                await rr.pnr_status("ABCDEFGHJK", "Asha")
                await rr.seat_map(7, "B1", "NDLS", "BCT", consistency=LINEARIZABLE)
                assert fc.calls_of("PnrStatus")[-1].consistency == Consistency.LEASE
                assert fc.calls_of("SeatMap")[-1].consistency == Consistency.LINEARIZABLE

    run(main())


def test_every_booking_rpc_has_a_method() -> None:
    async def main() -> None:
        async with FakeCluster(1) as fc, RailraftClient(fc.addresses) as rr:
            fc.users["root"] = ("pw-root-123", "ADMIN")
            await rr.register("asha", "pw-asha-123")
            await rr.login("root", "pw-root-123")
            assert [s.code for s in await rr.stations()] == []
            await rr.add_station("NDLS", "New Delhi")
            await rr.add_station("BCT", "Mumbai Central")
            t = await rr.add_train(12951, "Mumbai Rajdhani", "RAJDHANI", "17:00",
                                   [("BCT", 0, 0, 0), ("NDLS", 960, 960, 1386)], [("B1", "AC3", 64)])
            assert t.number == 12951 and [t.number for t in await rr.trains()] == [12951]
            runs = await rr.schedule_runs(12951, "2030-01-01", "2030-01-03")
            assert [r.date for r in runs] == ["2030-01-01", "2030-01-02", "2030-01-03"]
            assert len(await rr.list_runs(12951, "2030-01-01", "2030-01-03")) == 3
            assert (await rr.run_report(1)).run.id == 1
            assert (await rr.cancel_run(1, "flood")).ok
            b = await _hold(rr, chosen_seats=["B1-23", ("B1", 24)])
            assert [(s.coach, s.seat) for s in fc.calls_of("Hold")[0].request.chosen_seats] == [("B1", 23), ("B1", 24)]
            assert (await rr.refund_quote(b.pnr)).percent == 90
            assert (await rr.cancel(b.pnr, [1])).state == BookingState.CANCELLED
            assert (await rr.booking(b.pnr)).pnr == b.pnr
            assert (await rr.pnr_status(b.pnr, "Asha")).pnr == b.pnr

    run(main())


def test_status_and_admin_passthroughs() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=2) as fc:
            await fc.nodes[3].stop()
            async with RailraftClient(fc.addresses) as rr:
                st = await rr.status()
                assert st["leader"] == 2
                assert [n["role"] for n in st["nodes"]] == ["follower", "leader", "down"]
                assert "ConnectionRefused" in st["nodes"][2]["error"]
                res = await rr.transfer_leader(1)
                assert res.ok and res.leader_id == 1 and fc.leader == 1
                res = await rr.add_node(4, "127.0.0.1", 1)
                assert not res.ok and "did not catch up" in res.message  # a refusal is data, not an exception
                assert (await rr.remove_node(3)).ok

    run(main())


def test_close_and_reuse_across_event_loops() -> None:
    async def use(rr: RailraftClient) -> None:
        await rr.stations()

    async def main() -> None:
        async with FakeCluster(2) as fc:
            rr = RailraftClient(fc.addresses)
            async with rr:
                await rr.stations()
                await rr.stations()
                assert len(rr._channels) == 2
            assert rr._channels == {}
            # a second loop in this thread: the client starts over with channels bound to it
            done = asyncio.get_running_loop().run_in_executor(None, lambda: asyncio.run(use(rr)))
            await done
            rr.close()

    run(main())


def test_parse_addresses() -> None:
    assert parse_addresses("50051, 10.0.0.2:7000") == ["127.0.0.1:50051", "10.0.0.2:7000"]
    with pytest.raises(ValueError):
        parse_addresses("host:notaport")
    with pytest.raises(ValueError):
        parse_addresses(" , ")
    assert RailraftClient("1,2").addresses == ["127.0.0.1:1", "127.0.0.1:2"]
    with pytest.raises(ValueError, match="unknown seat class"):
        asyncio.run(RailraftClient("1").hold(1, "FIRST", "A", "B", [("x", 1)]))


def test_usable_from_trio_through_trio_asyncio() -> None:
    """The web app's way: Trio code calling the asyncio client through trio-asyncio."""
    import trio
    import trio_asyncio

    async def main() -> None:
        async with trio_asyncio.open_loop():
            fc = FakeCluster(3, leader=2)
            await trio_asyncio.aio_as_trio(fc.__aenter__)()
            try:
                rr = RailraftClient(fc.addresses)
                try:
                    res = await trio_asyncio.aio_as_trio(rr.search)("NDLS", "BCT", "2030-01-01")
                    assert res[0].run_id == 7
                    b = await trio_asyncio.aio_as_trio(rr.hold)(7, "AC3", "NDLS", "BCT", [("Asha", 34)])
                    assert b.pnr == "PNR0000001" and fc.calls_of("Hold")[-1].node == 2
                finally:
                    rr.close()  # synchronous: fine from Trio code
            finally:
                await trio_asyncio.aio_as_trio(fc.__aexit__)(None, None, None)

    trio.run(main)


# ============================================================================== demo loader (against the fake)

CREDS = DemoCredentials("admin", "adm-pw-123456", "demo", "cust-pw-123456")


def _demo_state(fc: FakeCluster) -> tuple:
    return (len(fc.stations), len(fc.trains), len(fc.runs), sorted(fc.users))


def test_demo_loader_loads_once_and_is_idempotent() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=2) as fc:
            fc.users["admin"] = (CREDS.admin_password, "ADMIN")  # what the servers bootstrap from the env
            said: list[str] = []
            rep = await load_demo(fc.addresses, CREDS, days=30, start_date="2030-01-01", say=said.append)
            assert (rep.stations_added, rep.trains_added, rep.runs_added) == (len(STATIONS), 12, 12 * 30)
            assert rep.customer_created and rep.changed and rep.last_date == "2030-01-30"
            assert _demo_state(fc) == (len(STATIONS), 12, 360, ["admin", "demo"])
            assert fc.users["demo"] == (CREDS.customer_password, "CUSTOMER")
            assert {c.node for c in fc.calls_of("AddStation")} == {2}  # writes went to the leader
            assert not fc.sessions  # the admin logged out
            writes_before = len(fc.applied)

            rep2 = await load_demo(fc.addresses, CREDS, days=30, start_date="2030-01-01")
            assert not rep2.changed and "already loaded" in rep2.summary()
            assert _demo_state(fc) == (len(STATIONS), 12, 360, ["admin", "demo"])
            # nothing but the login/logout bookkeeping was written the second time
            assert {m for m, _ in fc.applied[writes_before:]} <= {"Logout"}

            # the next day: the window moves on by one day per train, nothing else
            rep3 = await load_demo(fc.addresses, CREDS, days=30, start_date="2030-01-02")
            assert (rep3.stations_added, rep3.trains_added, rep3.runs_added) == (0, 0, 12)

            # what the loader sent for a train is store.demo's train, stop for stop and coach for coach
            number, name, ttype, dep, stops, coaches = train_specs()[0]
            req = next(c.request for c in fc.calls_of("AddTrain") if c.request.number == number)
            assert (req.name, req.type, req.departure_time) == (name, ttype, dep)
            assert [(s.station_code, s.arrival_offset_min, s.departure_offset_min, s.distance_km)
                    for s in req.stops] == [(s.station_code, s.arrive_min, s.depart_min, s.km) for s in stops]
            assert [(c.label, c.seat_class.name, c.seats) for c in req.coaches] == [
                (c.label, c.travel_class, c.seats) for c in coaches]
            assert req.request_id == f"demo-train-{number}"

    run(main())


def test_demo_loader_survives_a_leader_failover_midway() -> None:
    """The leader applies the first station and dies before answering; the loader carries on with the new
    leader, and the retried station (same request id) is not added twice."""

    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc:
            fc.users["admin"] = (CREDS.admin_password, "ADMIN")
            crashed = []
            apply = fc.apply

            def die() -> None:
                fc.leader, fc.term = 3, 2
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(fc.nodes[1].stop()))

            def apply_then_crash(method: str, request_id: str, fn: Any) -> Any:
                if method == "AddStation" and not crashed:
                    crashed.append(request_id)
                    fc.nodes[1].drop_after_apply, fc.nodes[1].on_drop = 1, die
                return apply(method, request_id, fn)

            fc.apply = apply_then_crash  # type: ignore[method-assign]
            rep = await load_demo(fc.addresses, CREDS, days=3, start_date="2030-01-01")
            assert crashed
            assert _demo_state(fc) == (len(STATIONS), 12, 36, ["admin", "demo"])
            retried = [c for c in fc.calls_of("AddStation") if c.request_id == crashed[0]]
            assert len(retried) >= 2 and retried[-1].node == 3
            assert [r for m, r in fc.applied if m == "AddStation"].count(crashed[0]) == 1
            # the loader counted the station its retry got back as the first result
            assert rep.stations_added == len(STATIONS)

    run(main())


def test_demo_loader_waits_for_the_admin_bootstrap_and_explains_a_wrong_password() -> None:
    async def main() -> None:
        async with FakeCluster(1) as fc:
            async def bootstrap_later() -> None:
                await asyncio.sleep(0.6)
                fc.users["admin"] = (CREDS.admin_password, "ADMIN")

            task = asyncio.ensure_future(bootstrap_later())
            rep = await load_demo(fc.addresses, CREDS, days=1, start_date="2030-01-01", bootstrap_wait=10)
            await task
            assert rep.runs_added == 12 and len(fc.calls_of("Login")) >= 2

            wrong = DemoCredentials("admin", "not-it-123456", "demo", "x")
            with pytest.raises(DemoError, match="wrong username or password.*RAILRAFT_ADMIN_PASSWORD"):
                await load_demo(fc.addresses, wrong, days=1, start_date="2030-01-01", bootstrap_wait=0.3)
            fc.users["cust"] = ("pw-cust-1234", "CUSTOMER")
            with pytest.raises(DemoError, match="not an administrator"):
                await load_demo(fc.addresses, DemoCredentials("cust", "pw-cust-1234", "demo", "x"), days=1,
                                bootstrap_wait=0.3)

    run(main())


def test_demo_customer_with_another_password_is_reported() -> None:
    async def main() -> None:
        async with FakeCluster(1) as fc:
            fc.users["admin"] = (CREDS.admin_password, "ADMIN")
            fc.users["demo"] = ("someone-elses-pw", "CUSTOMER")
            rep = await load_demo(fc.addresses, CREDS, days=1, start_date="2030-01-01")
            assert not rep.customer_created and not rep.customer_login_ok
            assert "another password" in rep.notes[0]

    run(main())


def test_credentials_file_is_private_and_stable(tmp_path: Any) -> None:
    creds, created = load_or_create_credentials(tmp_path)
    path = tmp_path / demo_loader.CREDENTIALS_FILE
    assert created and (path.stat().st_mode & 0o777) == 0o600
    assert creds.admin_user == "admin" and len(creds.admin_password) >= 16
    assert creds.admin_password != creds.customer_password
    again, created2 = load_or_create_credentials(tmp_path, admin_password="ignored-now")
    assert again == creds and not created2
    other, _ = load_or_create_credentials(tmp_path / "x", admin_password="from-the-env-123")
    assert other.admin_password == "from-the-env-123"
    banner = demo_loader.format_banner(creds, ["127.0.0.1:50051"], web_url="http://127.0.0.1:8080")
    assert creds.admin_password in banner and creds.customer_password in banner and "8080" in banner


# ============================================================================== end to end: a real 3-node cluster

E2E_ADMIN_PASSWORD = "e2e-admin-pw-123"


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: Any) -> Any:
    from .cluster_harness import ProcessCluster

    c = ProcessCluster(tmp_path_factory.mktemp("client-e2e"),
                       env={"RAILRAFT_ADMIN_PASSWORD": E2E_ADMIN_PASSWORD, "RAILRAFT_HOUSEKEEPING_INTERVAL_MS": "200"})
    try:
        c.start_all()
        c.wait_serving()
        c.wait_leader()
        yield c
        try:
            print(c.describe())  # shown only when a test failed
        except Exception as e:  # noqa: BLE001
            print(f"(describe failed: {e!r})")
    finally:
        c.close()


def _tomorrow() -> str:
    from store import civil

    return civil.format_date(civil.parse_date(demo_loader.today_ist()) + 1)


def test_e2e_demo_load_then_writes_survive_a_leader_kill(real_cluster: Any, tmp_path: Any) -> None:
    """The demo loader fills a real cluster (once: the second load adds nothing); then a customer streams
    holds through RailraftClient while the leader is SIGKILLed: every hold completes, exactly once."""
    c = real_cluster
    creds = DemoCredentials("admin", E2E_ADMIN_PASSWORD, "demo", "demo-cust-pw-123")
    total, kill_after, workers = 40, 8, 4

    async def main() -> dict:
        rep = await load_demo(c.addrs(), creds, days=2, bootstrap_wait=30)
        assert (rep.stations_added, rep.trains_added, rep.runs_added) == (len(STATIONS), 12, 24), rep
        assert rep.customer_created
        rep2 = await load_demo(c.addrs(), creds, days=2, bootstrap_wait=30)
        assert not rep2.changed, rep2

        async with RailraftClient(c.addrs(), timeout=30) as rr:
            await rr.login("demo", creds.customer_password)
            results = await rr.search("NDLS", "AGC", _tomorrow())
            run = next(r for r in results if any(k.seat_class == SeatClass.GENERAL for k in r.classes))
            old_leader = (await rr.status())["leader"]
            assert old_leader
            done: list[Any] = []
            killed = asyncio.Event()
            counter = iter(range(total))
            loop = asyncio.get_running_loop()
            # Record every Hold attempt that failed, to show the kill hit requests in flight.
            failed: list[tuple[str, str, str]] = []
            attempt = rr._attempt

            answered: dict[str, str] = {}  # request id -> PNR

            async def recording_attempt(addr: str, route: Any, request: Any, timeout: float) -> Any:
                try:
                    reply = await attempt(addr, route, request, timeout)
                except Exception as e:
                    if route.path.endswith("/Hold"):
                        failed.append((addr, request.request_id, repr(e)[:80]))
                    raise
                if route.path.endswith("/Hold"):
                    assert request.request_id not in answered  # one answer per logical call
                    answered[request.request_id] = reply.pnr
                return reply

            rr._attempt = recording_attempt  # type: ignore[method-assign]

            async def worker() -> None:
                for i in counter:
                    b = await rr.hold(run.run_id, "GENERAL", "NDLS", "AGC", [(f"Passenger {i}", 30)])
                    done.append(b)
                    if len(done) >= kill_after and not killed.is_set():
                        killed.set()
                        # SIGKILL while the other workers' holds are in flight
                        await loop.run_in_executor(None, c.kill, old_leader)

            await asyncio.gather(*(worker() for _ in range(workers)))
            assert killed.is_set()
            mine = await rr.my_bookings()
            new_leader = (await rr.status())["leader"]
            return {"done": done, "mine": mine, "old": old_leader, "new": new_leader, "failed": failed,
                    "answered": answered}

    out = run(main())
    pnrs = [b.pnr for b in out["done"]]
    assert len(pnrs) == total and len(set(pnrs)) == total, "a hold answered twice with different bookings"
    assert all(b.state == BookingState.HELD for b in out["done"])
    # the server has exactly the acknowledged bookings: no retry was applied a second time
    assert sorted(b.pnr for b in out["mine"]) == sorted(pnrs)
    assert out["new"] not in (None, out["old"])
    print("hold attempts that failed and were retried:", *out["failed"], sep="\n  ")
    # the kill caught holds in flight (workers are never idle), and their retries kept their request ids
    assert out["failed"], "no hold was in flight when the leader died"
    assert len(out["answered"]) == total and sorted(out["answered"].values()) == sorted(pnrs)
    assert {rid for _, rid, _ in out["failed"]} <= set(out["answered"])  # retried with the same id, answered
    c.restart(out["old"])
    c.wait_serving([out["old"]])
    c.wait_caught_up(timeout=30)


def test_cluster_up_demo_loads_once_and_prints_the_same_credentials(tmp_path: Any) -> None:
    """`make run` = `cluster up --demo`: generated credentials (0600), demo data loaded once the leader is
    elected, banner printed; a second run on the same data dir prints the same credentials, adds nothing."""
    import os
    import signal
    import subprocess
    import sys

    from .cluster_harness import ROOT, free_port_range, wait_until

    base = free_port_range(3)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != demo_loader.ADMIN_PASSWORD_ENV}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    def up(n: int) -> str:
        out_path = tmp_path / f"up{n}.out"
        with open(out_path, "wb") as out:
            sup = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "cluster", "up", "--nodes", "3", "--port", str(base),
                 "--data-dir", str(data), "--demo", "--web-url", "http://127.0.0.1:8080"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path), start_new_session=True)
        def banner_printed() -> bool:
            head, sep, tail = out_path.read_text().partition("railraft demo is ready")
            return bool(sep) and "=" * 72 in tail  # the banner's closing rule: all of it is there

        try:
            wait_until(banner_printed, 40.0, "the demo banner")
            return out_path.read_text()
        finally:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait(timeout=10)
                raise AssertionError(f"cluster up did not stop on SIGTERM:\n{out_path.read_text()}") from None

    first = up(1)
    creds_path = data / demo_loader.CREDENTIALS_FILE
    assert (creds_path.stat().st_mode & 0o777) == 0o600
    creds = DemoCredentials.from_text(creds_path.read_text())
    assert f"administrator:  admin / {creds.admin_password}" in first, first
    assert f"demo customer:  demo / {creds.customer_password}" in first
    assert "http://127.0.0.1:8080" in first
    assert f"{len(STATIONS)} station(s), 12 train(s), 360 run(s)" in first, first

    second = up(2)
    assert "demo data already loaded" in second, second
    assert f"administrator:  admin / {creds.admin_password}" in second
    assert DemoCredentials.from_text(creds_path.read_text()) == creds
