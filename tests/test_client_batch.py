"""The client library's batching (gateway/client_batch.py) and Booking/Batch (gateway/batch_calls.py).

Against tests/fake_cluster.py, whose Batch runs each call through the same handlers with gateway.batch_calls,
as a real node does.  What a user of the library must not notice: every call gets its own reply or its own
error, writes still reach the leader and are applied once, a slow call holds up no other, and a server
without Batch still serves every call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status

from gateway.client import NotFound, RailraftClient, Unauthenticated, Unavailable

from .fake_cluster import FakeCluster


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def _passengers(n: int) -> list[tuple[str, int]]:
    return [(f"P{i}", 30 + i) for i in range(n)]


def _batched(fc: FakeCluster) -> list[int]:
    """How many calls each Batch the cluster received carried."""
    return [len(c.request.calls) for c in fc.calls_of("Batch")]


def test_calls_made_together_travel_in_one_batch_and_each_gets_its_own_reply() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=2) as fc, RailraftClient(fc.addresses) as rr:
            await rr.status()  # learn the leader
            # Different passenger counts, so each reply is told apart by its amount.
            sizes = [1 + i % 4 for i in range(12)]
            bookings = await asyncio.gather(*(
                rr.hold(7, "AC3", "NDLS", "BCT", _passengers(n), request_id=f"r{i}") for i, n in enumerate(sizes)))
            assert [b.amount_paise for b in bookings] == [100_00 * n for n in sizes]
            assert len({b.pnr for b in bookings}) == 12
            assert sorted(r for _, r in fc.applied) == sorted(f"r{i}" for i in range(12))  # each applied once
            assert sum(_batched(fc)) == 12 and max(_batched(fc)) > 1, _batched(fc)
            assert {c.node for c in fc.calls_of("Hold")} == {2}  # to the leader, as single calls go

    run(main())


def test_a_call_made_alone_goes_as_a_plain_call() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            for i in range(3):
                await rr.hold(7, "AC3", "NDLS", "BCT", _passengers(1), request_id=f"alone{i}")
            assert len(fc.calls_of("Hold")) == 3 and not fc.calls_of("Batch")

    run(main())


def test_batching_off_sends_every_call_on_its_own() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses, batch=False) as rr:
            await asyncio.gather(*(rr.search("NDLS", "BCT", "2030-01-01") for _ in range(6)))
            assert len(fc.calls_of("Search")) == 6 and not fc.calls_of("Batch")

    run(main())


def test_each_call_of_a_batch_gets_its_own_error() -> None:
    async def main() -> None:
        async with FakeCluster(1, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            fc.users["asha"] = ("pw-asha-123", "CUSTOMER")
            s = await rr.login("asha", "pw-asha-123", remember=False)
            results = await asyncio.gather(
                rr.whoami(token="not-a-session"),
                rr.whoami(token=s.token),
                rr.stations(),
                rr.my_bookings(token="nope"),
                return_exceptions=True,
            )
            assert isinstance(results[0], Unauthenticated) and "log in" in results[0].message
            assert results[1].username == "asha"
            assert results[2] == []
            assert isinstance(results[3], Unauthenticated)
            assert _batched(fc) == [4]

    run(main())


def test_followers_answers_inside_a_batch_send_each_write_on_to_the_leader() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=3) as fc, RailraftClient(fc.addresses, spread_writes=True) as rr:
            bookings = await asyncio.gather(*(
                rr.hold(7, "AC3", "NDLS", "BCT", _passengers(1), request_id=f"s{i}") for i in range(9)))
            assert len({b.pnr for b in bookings}) == 9
            assert sorted(r for _, r in fc.applied) == sorted(f"s{i}" for i in range(9))
            tried = {c.node for c in fc.calls_of("Hold")}
            assert tried == {1, 2, 3}  # spread over every node; the followers' hints led to node 3
            assert rr.leader == fc.nodes[3].address
            assert max(_batched(fc)) > 1

    run(main())


def test_a_slow_call_does_not_hold_up_the_rest_of_its_batch() -> None:
    async def main() -> None:
        async with FakeCluster(1, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            fc.users["asha"] = ("pw-asha-123", "CUSTOMER")
            await rr.login("asha", "pw-asha-123")
            fc.nodes[1].delays["MyBookings"] = 2.0
            t0 = time.monotonic()
            done: dict[str, float] = {}

            async def timed(name: str, coro: Any) -> None:
                await coro
                done[name] = time.monotonic() - t0

            await asyncio.gather(timed("slow", rr.my_bookings()), timed("quick", rr.pnr_status("ABCDEFGHJK", "P")))
            assert _batched(fc)[-1] == 2
            assert done["quick"] < 1.0 < 2.0 <= done["slow"], done

    run(main())


def test_a_server_without_batch_gets_plain_calls() -> None:
    async def main() -> None:
        async with FakeCluster(1, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            fc.nodes[1].batch = False
            first = await asyncio.gather(*(rr.hold(7, "AC3", "NDLS", "BCT", _passengers(2)) for _ in range(5)))
            again = await asyncio.gather(*(rr.stations() for _ in range(5)))
            assert all(b.amount_paise == 200_00 for b in first) and again == [[]] * 5
            assert len(fc.calls_of("Batch")) == 1  # tried once: UNIMPLEMENTED, then never again
            assert len(fc.calls_of("Hold")) == 5 and len(fc.applied) == 5

    run(main())


def test_a_connection_lost_during_a_batch_retries_every_write_exactly_once() -> None:
    """The leader applies one write of a batch and dies; another node takes over.  Every write of the batch
    is retried with its own request id: each is applied once, the first one's result is kept."""

    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses, timeout=8) as rr:
            await rr.status()

            def die() -> None:
                fc.leader, fc.term = 2, 2
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(fc.nodes[1].stop()))

            fc.nodes[1].drop_after_apply = 1
            fc.nodes[1].on_drop = die
            bookings = await asyncio.gather(*(
                rr.hold(7, "AC3", "NDLS", "BCT", _passengers(1), request_id=f"k{i}") for i in range(6)))
            assert len({b.pnr for b in bookings}) == 6
            ids = [r for _, r in fc.applied]
            assert sorted(ids) == sorted(f"k{i}" for i in range(6))  # none applied twice
            assert fc.calls_of("Batch")[0].node == 1 and {c.node for c in fc.calls_of("Hold")} >= {1, 2}

    run(main())


def test_every_node_gone_fails_each_batched_call_with_unavailable() -> None:
    async def main() -> None:
        async with FakeCluster(2, leader=1) as fc:
            async with RailraftClient(fc.addresses, timeout=1.0, attempt_timeout=0.3) as rr:
                await rr.status()
                for node in fc.nodes.values():
                    await node.stop()
                results = await asyncio.gather(*(rr.stations() for _ in range(4)), return_exceptions=True)
                assert all(isinstance(r, Unavailable) for r in results), results

    run(main())


def test_domain_errors_from_a_batch_are_not_retried() -> None:
    async def main() -> None:
        async with FakeCluster(3, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            for node in fc.nodes.values():
                node.fail = (Status.NOT_FOUND, "no such booking")
            results = await asyncio.gather(*(rr.booking("ABCDEFGHJK", token="t") for _ in range(4)),
                                           return_exceptions=True)
            assert all(isinstance(r, NotFound) and r.message == "no such booking" for r in results), results
            assert len(fc.calls_of("GetBooking")) == 4  # one try each

    run(main())


@pytest.mark.parametrize("calls", [0, 1])
def test_an_empty_or_single_batch_sent_by_hand(calls: int) -> None:
    """The raw RPC: an empty Batch answers nothing; an unknown method or a Batch inside a Batch is refused
    per call, UNIMPLEMENTED, without failing its neighbours."""
    from proto.gen.railraft.v1 import BatchCall, BatchRequest, BookingStub, ListStationsRequest

    async def main() -> None:
        async with FakeCluster(1, leader=1) as fc:
            host, port = fc.addresses[0].split(":")
            ch = Channel(host, int(port))
            try:
                stub = BookingStub(ch)
                good = [BatchCall(method="ListStations", request=bytes(ListStationsRequest()))] * calls
                req = BatchRequest(calls=[*good, BatchCall(method="Nope"), BatchCall(method="Batch")]
                                   if calls else [])
                results = [r async for reply in stub.batch(req) for r in reply.results]
                if not calls:
                    assert results == []
                    return
                by_index = {r.index: r for r in results}
                assert sorted(by_index) == [0, 1, 2]
                assert by_index[0].status == 0
                assert by_index[1].status == Status.UNIMPLEMENTED.value and "Nope" in by_index[1].message
                assert by_index[2].status == Status.UNIMPLEMENTED.value and "Batch" in by_index[2].message
            finally:
                ch.close()

    run(main())


def test_a_slow_call_alone_holds_up_the_next_calls_only_briefly() -> None:
    """A call on its own way (a read waiting out an election, say) makes the calls after it wait to gather
    into one batch -- but not for longer than the batcher's release delay."""

    async def main() -> None:
        async with FakeCluster(1, leader=1) as fc, RailraftClient(fc.addresses) as rr:
            fc.users["asha"] = ("pw-asha-123", "CUSTOMER")
            await rr.login("asha", "pw-asha-123")
            fc.nodes[1].delays["MyBookings"] = 2.0
            slow = asyncio.ensure_future(rr.my_bookings())
            await asyncio.sleep(0.05)  # the slow call is on its way, alone
            t0 = time.monotonic()
            quick = await asyncio.gather(*(rr.pnr_status("ABCDEFGHJK", "P") for _ in range(3)))
            waited = time.monotonic() - t0
            assert [b.pnr for b in quick] == ["ABCDEFGHJK"] * 3
            assert waited < 1.0, waited
            assert not slow.done()
            await slow
            assert _batched(fc) == [3]  # the three waited together and went as one batch

    run(main())
