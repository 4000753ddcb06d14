"""The leader hint a node puts in its UNAVAILABLE answers, and how clients read it back.

`leader=ID@HOST:PORT` in the message text, for clients that only see the message (the node also sends
`leader-id`/`leader-addr` trailing metadata, see gateway.rpc).  Kept apart from gateway.rpc so the client
library does not import trio-asyncio or the node: trio_asyncio's import replaces asyncio's event-loop policy.
"""

from __future__ import annotations

import re

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
