"""gateway.submit: a follower forwards the writes it receives together, in one Propose per round trip.

A fake leader (a grpclib server with a slow Propose) records what it is sent; the Submitter runs on a fake
follower node that knows its leader, so every write is forwarded.
"""

from __future__ import annotations

import asyncio

from grpclib import GRPCError
from grpclib.const import Status
from grpclib.server import Server

from gateway.cluster import free_ports
from gateway.submit import PROPOSE_BATCH_MAX, Submitter
from proto.gen.railraft.node.v1 import NodeBase, ProposeRequest, ProposeResponse
from store.commands import Result, encode_result


class FakeLeader(NodeBase):
    """Applies each command as the text of its bytes; `fail_first` Proposes answer UNAVAILABLE."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[ProposeRequest] = []
        self.fail_first = fail_first
        self.index = 0

    async def propose(self, req: ProposeRequest) -> ProposeResponse:
        self.requests.append(req)
        await asyncio.sleep(0.02)  # a round trip: writes arriving meanwhile wait for the next Propose
        if len(self.requests) <= self.fail_first:
            raise GRPCError(Status.UNAVAILABLE, "leadership changed; try again")
        commands = list(req.commands) or [req.command]
        out = []
        for c in commands:
            self.index += 1
            out.append((encode_result(Result(True, "OK", data={"echo": c.decode()})), self.index))
        if req.commands:
            return ProposeResponse(results=[r for r, _ in out], indexes=[i for _, i in out])
        return ProposeResponse(result=out[0][0], index=out[0][1])


class FollowerNode:
    """What Submitter needs of a node that follows the fake leader."""

    id = 2
    leader = 1

    def __init__(self, leader_addr: str) -> None:
        self._addr = leader_addr

    def is_leader(self) -> bool:
        return False

    def leader_address(self) -> str:
        return self._addr


async def _with_leader(fake: FakeLeader, body) -> None:  # noqa: ANN001
    port = free_ports(1)[0]
    server = Server([fake])
    await server.start("127.0.0.1", port)
    sub = Submitter(FollowerNode(f"127.0.0.1:{port}"))  # type: ignore[arg-type]
    try:
        await body(sub)
    finally:
        sub.close()
        server.close()
        await server.wait_closed()


def test_concurrent_writes_share_forwarded_proposes() -> None:
    fake = FakeLeader()

    async def body(sub: Submitter) -> None:
        outs = await asyncio.gather(*(sub.submit_at(f"cmd{i}".encode(), timeout=5) for i in range(60)))
        assert [r.data["echo"] for r, _ in outs] == [f"cmd{i}" for i in range(60)]  # each gets ITS result
        assert sorted(i for _, i in outs) == list(range(1, 61))
        # The first write goes alone; the rest queued while it was in flight and went together.
        assert len(fake.requests) <= 4, [len(r.commands) or 1 for r in fake.requests]
        assert max(len(r.commands) for r in fake.requests) >= 30
        assert all(len(r.commands) <= PROPOSE_BATCH_MAX for r in fake.requests)

    asyncio.run(_with_leader(fake, body))


def test_a_failed_forward_is_retried_with_the_same_commands() -> None:
    fake = FakeLeader(fail_first=2)

    async def body(sub: Submitter) -> None:
        outs = await asyncio.gather(*(sub.submit_at(f"w{i}".encode(), timeout=5) for i in range(10)))
        assert [r.data["echo"] for r, _ in outs] == [f"w{i}" for i in range(10)]
        sent = [bytes(c) for r in fake.requests for c in (list(r.commands) or [r.command])]
        assert sent.count(b"w0") >= 2  # refused, then sent again, unchanged (its request id inside is kept)

    asyncio.run(_with_leader(fake, body))



def test_a_proposal_lost_to_a_leader_change_answers_unavailable_so_the_follower_retries() -> None:
    """A forwarded write whose entry a new leader replaced was not applied: the forwarding node must retry
    it, so the leader's Propose answers UNAVAILABLE (grpclib would make an unhandled error UNKNOWN, which the
    follower passes on to its client as a failure)."""
    from actors.node import ProposalLost
    from gateway.rpc import _wrap

    async def lost(stream: object) -> None:
        raise ProposalLost("entry 838 was replaced after a leader change")

    async def main() -> None:
        try:
            await _wrap(lost)(object())
        except GRPCError as e:
            assert e.status is Status.UNAVAILABLE and "try again" in e.message
        else:  # pragma: no cover
            raise AssertionError("no error")

    asyncio.run(main())


class LeaderNode:
    """What Submitter needs of the leader itself: `propose_each` records each batch and "applies" every
    command as the text of its bytes; a command in `lose` is lost once (its entry replaced), as after a
    leader change."""

    id = 1
    leader = 1

    def __init__(self, lose: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        self.batches: list[list[bytes]] = []
        self.lose = set(lose)
        self.index = 0

    def is_leader(self) -> bool:
        return True

    async def propose_each(self, datas: list[bytes], timeout: float | None = None) -> list:
        import trio

        from actors.node import ProposalLost

        self.batches.append(list(datas))
        await trio.sleep(0.01)  # the log append and the round to the followers
        out: list = []
        for d in datas:
            self.index += 1
            if d in self.lose:
                self.lose.discard(d)
                out.append(ProposalLost(f"entry {self.index} was replaced after a leader change"))
            else:
                out.append((Result(True, "OK", data={"echo": d.decode()}), self.index))
        return out


def test_writes_proposed_together_on_the_leader_share_one_log_append() -> None:
    """Writes that a leader's handlers propose in the same turn of the event loop go into the node together
    (one hop into Trio, one log append); each gets its own result, and one whose entry was lost is retried
    alone without failing the others."""
    import trio
    import trio_asyncio

    node = LeaderNode(lose={b"cmd3"})

    async def writes() -> list:
        sub = Submitter(node)  # type: ignore[arg-type]
        try:
            return await asyncio.gather(*(sub.submit_at(f"cmd{i}".encode(), timeout=5) for i in range(10)))
        finally:
            sub.close()

    async def main() -> list:
        async with trio_asyncio.open_loop():
            return await trio_asyncio.aio_as_trio(writes)()

    outs = trio.run(main)
    assert [r.data["echo"] for r, _ in outs] == [f"cmd{i}" for i in range(10)]
    assert node.batches[0] == [f"cmd{i}".encode() for i in range(10)]  # all ten in one append
    assert node.batches[1:] == [[b"cmd3"]]  # the lost one again, alone
    assert outs[3][1] == 11 and [i for _, i in outs[:3]] == [1, 2, 3]
