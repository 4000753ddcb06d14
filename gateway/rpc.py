"""Shared plumbing for railraft's grpclib services: errors with leader hints, and calling Trio from handlers.

grpclib runs handlers on asyncio (inside trio-asyncio); the node is Trio code, reached with `trio_call`.
A node that cannot serve a request answers UNAVAILABLE with the leader hint in trailing metadata
(`leader-id`, `leader-addr`) and, for clients that only see the message, `leader=ID@HOST:PORT` in its text.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import trio_asyncio
from grpclib import GRPCError
from grpclib.const import Handler, Status

from actors.node import NodeStopping, NotLeaderError

LEADER_HINT = re.compile(r"leader=(\d+)@([\w.\-\[\]:]*)")


def trio_call(fn: Callable[..., Awaitable[Any]], *args: Any) -> Awaitable[Any]:
    """From an asyncio handler, await a Trio async function."""
    return trio_asyncio.trio_as_aio(fn)(*args)


def not_leader_message(leader_id: int, leader_addr: str, what: str = "this node is not the leader") -> str:
    """Human text that also carries the hint machine-readably."""
    if leader_id:
        return f"{what}; try the leader (leader={leader_id}@{leader_addr})"
    return f"{what}; no leader is known right now, try again shortly (leader=0@)"


def parse_leader_hint(message: str | None) -> tuple[int, str]:
    """(leader id, host:port) from an UNAVAILABLE message, or (0, "")."""
    m = LEADER_HINT.search(message or "")
    if not m:
        return 0, ""
    return int(m.group(1)), m.group(2)


class LeaderHintMixin:
    """Mix into a generated *Base service: NotLeaderError, NodeStopping and TimeoutError raised by a handler
    become UNAVAILABLE (with leader-id/leader-addr trailing metadata) instead of UNKNOWN."""

    def __mapping__(self) -> dict[str, Handler]:
        mapping = super().__mapping__()  # type: ignore[misc]
        return {path: Handler(_wrap(h.func), h.cardinality, h.request_type, h.reply_type) for path, h in mapping.items()}


def _wrap(func: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    async def handler(stream: Any) -> None:
        try:
            await func(stream)
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
        except TimeoutError as e:
            raise GRPCError(Status.UNAVAILABLE, f"the cluster did not answer in time ({e}); try again") from None

    return handler
