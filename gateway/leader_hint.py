"""The leader hint a node puts in its UNAVAILABLE answers, and how clients read it back.

`leader=ID@HOST:PORT` in the message text, for clients that only see the message (the node also sends
`leader-id`/`leader-addr` trailing metadata, see gateway.rpc).  Kept apart from gateway.rpc so the client
library does not import trio-asyncio or the node: trio_asyncio's import replaces asyncio's event-loop policy.
"""

from __future__ import annotations

import re
from typing import Any

LEADER_HINT = re.compile(r"leader=(\d+)@([\w.\-\[\]:]*)")


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


def leader_hint_of(err: Any, trailing: Any) -> str:
    """The leader address an UNAVAILABLE answer (a GRPCError) points at: its trailing metadata's `leader-addr`
    first, then the hint in its message ("" if neither names one)."""
    if trailing:
        md = dict(trailing)
        addr = md.get("leader-addr", "")
        if isinstance(addr, bytes):
            addr = addr.decode(errors="replace")
        if addr:
            return addr
    return parse_leader_hint(err.message)[1]
