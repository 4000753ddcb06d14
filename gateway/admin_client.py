"""Small asyncio clients for operators and tests: cluster status, membership admin, and the account RPCs.

Everything here is plain grpclib on asyncio (no Trio needed): the CLI runs it with `asyncio.run`, the cluster
supervisor through trio-asyncio, tests from either.

    st = asyncio.run(cluster_status(["127.0.0.1:50051", "127.0.0.1:50052"]))
    st["leader"]                         # id of the node the reachable nodes agree leads, or None
    st["nodes"][0]["role"]               # "leader", "follower", ..., or "down"

Admin calls (`add_node`, `remove_node`, `transfer_leader`) and the Ticketing calls run on
gateway.client.RailraftClient's engine: they go to the leader (any node would forward them), follow leader
hints, skip a node that answers UNAVAILABLE (no leader known yet, shutting down) or cannot be reached, and
retry with backoff until their deadline.  For the railraft.v1.Booking API use RailraftClient itself.

On a cluster with a secret (gateway/peer_auth.py) the admin calls need it: pass `secret=` (bytes or hex), else
RAILRAFT_CLUSTER_SECRET is used; the CLI reads the file that --config's `secret_file` names.  Each attempt is
then signed as the operator (node id 0) with a fresh nonce; the cluster id that goes into the MAC is asked
of the nodes (Status) unless given.  An administrator's session `token=` works instead of the secret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from grpclib import GRPCError
from grpclib.client import Channel

from actors.config import cluster_secret, parse_secret
from proto.gen.railraft.node.v1 import AdminResponse, NodeStatus, NodeStub, StatusRequest
from proto.gen.train_booking import LoginRequest, LoginResponse, LogoutRequest, RegisterRequest, StatusResponse

from .client import CONNECT_ERRORS, RETRYABLE_STATUSES, RailraftClient, Unavailable, Route, parse_addresses
from .peer_auth import ClusterAuth
from .leader_hint import parse_leader_hint

T = TypeVar("T")

STATUS_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 15.0
ADMIN_TIMEOUT_S = 90.0  # add-node waits for the new node to catch up before promoting it

# Errors that mean "this node could not serve the call right now" (see gateway.client).
_RETRYABLE = RETRYABLE_STATUSES
_CONNECT_ERRORS = CONNECT_ERRORS

STATUS_FIELDS = (
    "id", "address", "pid", "role", "term", "leader_id", "commit_index", "applied_index",
    "last_log_index", "snapshot_index", "log_bytes",
)


# No node could serve the call before its deadline; the message lists what each node said.  One class for
# this module and gateway.client, so callers catch one thing.
ClusterUnavailable = Unavailable

__all__ = [
    "ClusterUnavailable", "parse_addresses", "status_to_dict", "down_entry", "node_status", "leader_of",
    "cluster_status", "discover_status", "wait_for_leader", "call_any", "admin_to_dict", "add_node",
    "remove_node", "transfer_leader", "register", "login", "logout", "format_status_table", "operator_auth",
]


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class _Attempt:
    addr: str
    error: str


async def _with_channel(addr: str, fn: Callable[[Channel], Awaitable[T]]) -> T:
    host, port = _split(addr)
    ch = Channel(host, port)
    try:
        return await fn(ch)
    finally:
        ch.close()


# ------------------------------------------------------------------------------------------- status


def status_to_dict(st: NodeStatus) -> dict[str, Any]:
    """The operator-facing fields of one NodeStatus (plus members and uptime)."""
    d: dict[str, Any] = {f: getattr(st, f) for f in STATUS_FIELDS}
    d["up"] = True
    d["cluster_id"] = st.cluster_id
    d["leader_address"] = st.leader_address
    d["uptime_s"] = round(st.uptime_s, 3)
    d["members"] = [{"id": m.id, "address": f"{m.host}:{m.port}", "kind": m.kind} for m in st.members]
    if st.progress:
        d["progress"] = [{"id": p.id, "match": p.match, "next": p.next, "state": p.state} for p in st.progress]
    return d


def down_entry(addr: str, error: str) -> dict[str, Any]:
    """What `cluster_status` reports for a node that did not answer."""
    d: dict[str, Any] = {f: None for f in STATUS_FIELDS}
    d.update(address=addr, role="down", up=False, error=error)
    return d


async def node_status(addr: str, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
    """Status of one node as a dict; a node that does not answer gives role "down" and an `error`."""
    try:
        st = await asyncio.wait_for(
            _with_channel(addr, lambda ch: NodeStub(ch).status(StatusRequest(), timeout=timeout)), timeout + 0.5
        )
    except GRPCError as e:
        return down_entry(addr, f"{e.status.name}: {e.message}")
    except _CONNECT_ERRORS as e:
        return down_entry(addr, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    d = status_to_dict(st)
    d["address"] = d["address"] or addr
    d["queried"] = addr
    return d


def leader_of(nodes: Sequence[dict[str, Any]]) -> int | None:
    """The leader: a reachable node that says it leads (the highest term wins if two do), else None."""
    leaders = [n for n in nodes if n.get("up") and n.get("role") == "leader"]
    if not leaders:
        return None
    return max(leaders, key=lambda n: n["term"])["id"]


async def cluster_status(addrs: Sequence[str], timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
    """{"nodes": [status dict per address, in order], "leader": id or None} -- every node asked at once."""
    nodes = list(await asyncio.gather(*(node_status(a, timeout) for a in addrs)))
    return {"nodes": nodes, "leader": leader_of(nodes)}


async def discover_status(addrs: Sequence[str], timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
    """`cluster_status` of `addrs` plus the members that reachable nodes know of but were not listed
    (e.g. nodes added with add-node after the configuration was written)."""
    st = await cluster_status(addrs, timeout)
    seen = set(addrs) | {n["address"] for n in st["nodes"]}
    extra = sorted({m["address"] for n in st["nodes"] if n.get("up") for m in n["members"]} - seen)
    if extra:
        st["nodes"] += list(await asyncio.gather(*(node_status(a, timeout) for a in extra)))
        st["leader"] = leader_of(st["nodes"])
    return st


async def wait_for_leader(addrs: Sequence[str], timeout: float = 10.0, poll_s: float = 0.05) -> dict[str, Any]:
    """Poll until some node leads; returns the cluster status (ClusterUnavailable on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        st = await cluster_status(addrs, timeout=min(STATUS_TIMEOUT_S, max(0.2, deadline - time.monotonic())))
        if st["leader"] is not None:
            return st
        if time.monotonic() >= deadline:
            raise ClusterUnavailable(f"no leader among {', '.join(addrs)} within {timeout:g}s")
        await asyncio.sleep(poll_s)


# ------------------------------------------------------------------------ calls that any node forwards


async def call_any(
    addrs: Sequence[str],
    fn: Callable[[Channel, float], Awaitable[T]],
    timeout: float = CALL_TIMEOUT_S,
    retry_delay: float = 0.1,
) -> T:
    """Run `fn(channel, remaining_seconds)` on the first node that serves it (for calls RailraftClient has
    no method for).

    A node that is unreachable or answers UNAVAILABLE/DEADLINE_EXCEEDED is skipped (a leader hint in its
    answer is tried next); the list is walked again until `timeout`.  Other gRPC errors are raised.
    """
    deadline = time.monotonic() + timeout
    order = list(addrs)
    attempts: list[_Attempt] = []
    while True:
        for addr in list(order):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return await asyncio.wait_for(_with_channel(addr, lambda ch: fn(ch, remaining)), remaining + 0.5)
            except GRPCError as e:
                if e.status not in _RETRYABLE:
                    raise
                attempts.append(_Attempt(addr, f"{e.status.name}: {e.message}"))
                _, hint = parse_leader_hint(e.message)
                if hint and hint not in order:
                    order.insert(0, hint)
            except _CONNECT_ERRORS as e:
                attempts.append(_Attempt(addr, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__))
        if time.monotonic() + retry_delay >= deadline:
            last = {a.addr: a.error for a in attempts}
            detail = "; ".join(f"{k}: {v}" for k, v in last.items()) or "no attempt"
            raise ClusterUnavailable(f"no node could serve the call within {timeout:g}s ({detail})")
        await asyncio.sleep(retry_delay)


def admin_to_dict(resp: AdminResponse) -> dict[str, Any]:
    """An AdminResponse as {"ok", "message", "leader_id" (None if unknown)}."""
    return {"ok": resp.ok, "message": resp.message, "leader_id": resp.leader_id or None}


def _client(addrs: Sequence[str], timeout: float) -> RailraftClient:
    # One attempt may use the whole deadline, as these helpers always allowed: an operator's call to a
    # frozen node waits for it rather than giving up on it after a few seconds.
    return RailraftClient(list(addrs), timeout=timeout, attempt_timeout=timeout)


async def operator_auth(addrs: Sequence[str], secret: bytes | str | None = None, *, cluster_id: str | None = None,
                        timeout: float = STATUS_TIMEOUT_S) -> ClusterAuth | None:
    """The operator's ClusterAuth for admin calls to the cluster at `addrs`: `secret` (bytes, or its hex text),
    else RAILRAFT_CLUSTER_SECRET; None if neither is given.  Without `cluster_id` the nodes are asked for it
    (ClusterUnavailable if none answers within `timeout`; ValueError if they name different clusters)."""
    if isinstance(secret, str):
        secret = parse_secret(secret, "the cluster secret")
    if secret is None:
        secret = cluster_secret(None)
    if secret is None:
        return None
    deadline = time.monotonic() + timeout
    while cluster_id is None:
        st = await cluster_status(addrs, timeout=max(0.2, min(STATUS_TIMEOUT_S, deadline - time.monotonic())))
        ids = {n["cluster_id"] for n in st["nodes"] if n.get("up")}
        if len(ids) > 1:
            raise ValueError(f"the nodes {', '.join(addrs)} belong to different clusters: {sorted(ids)}")
        if ids:
            cluster_id = ids.pop()
        elif time.monotonic() >= deadline:
            raise ClusterUnavailable(f"no node of {', '.join(addrs)} answered (to learn the cluster id)")
        else:
            await asyncio.sleep(0.1)
    return ClusterAuth(secret, cluster_id)


async def add_node(addrs: Sequence[str], node_id: int, host: str, port: int, timeout: float = ADMIN_TIMEOUT_S,
                   *, secret: bytes | str | None = None, token: str | None = None) -> dict[str, Any]:
    """Ask the cluster to add node_id at host:port (learner, catch up, voter).  `secret` / `token`: see the
    module docstring."""
    auth = await operator_auth(addrs, secret, timeout=min(timeout, CALL_TIMEOUT_S)) if not token else None
    async with _client(addrs, timeout) as rr:
        return admin_to_dict(await rr.add_node(node_id, host, port, timeout=timeout, token=token, auth=auth))


async def remove_node(addrs: Sequence[str], node_id: int, timeout: float = CALL_TIMEOUT_S, *,
                      secret: bytes | str | None = None, token: str | None = None) -> dict[str, Any]:
    """Ask the cluster to remove node_id."""
    auth = await operator_auth(addrs, secret, timeout=timeout) if not token else None
    async with _client(addrs, timeout) as rr:
        return admin_to_dict(await rr.remove_node(node_id, timeout=timeout, token=token, auth=auth))


async def create_admin(addrs: Sequence[str], username: str, password: str,
                       timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """Create the first administrator account (refused once one exists)."""
    async with _client(addrs, timeout) as rr:
        return admin_to_dict(await rr.create_admin(username, password, timeout=timeout))


async def transfer_leader(addrs: Sequence[str], to: int = 0, timeout: float = CALL_TIMEOUT_S, *,
                          secret: bytes | str | None = None, token: str | None = None) -> dict[str, Any]:
    """Move leadership to node `to` (0: the most up-to-date other voter)."""
    auth = await operator_auth(addrs, secret, timeout=timeout) if not token else None
    async with _client(addrs, timeout) as rr:
        return admin_to_dict(await rr.transfer_leader(to, timeout=timeout, token=token, auth=auth))


# The original API (train_booking.Ticketing), through the same engine as RailraftClient: writes go to the
# leader, hints are followed, failover and backoff until the deadline.  These requests carry no request id
# (the original wire contract; the process tests rely on that), so a retried Register can find its own name.
_TICKETING = "/train_booking.Ticketing/"


async def register(addrs: Sequence[str], username: str, password: str,
                   timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """Ticketing.Register -> {"success", "message"}."""
    async with _client(addrs, timeout) as rr:
        resp = await rr.call(Route(_TICKETING + "Register", StatusResponse, True),
                             RegisterRequest(username=username, password=password))
    return {"success": resp.success, "message": resp.message}


async def login(addrs: Sequence[str], username: str, password: str,
                timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """Ticketing.Login -> {"success", "message", "token", "role"}."""
    async with _client(addrs, timeout) as rr:
        resp = await rr.call(Route(_TICKETING + "Login", LoginResponse, True),
                             LoginRequest(username=username, password=password))
    return {"success": resp.success, "message": resp.message, "token": resp.token, "role": resp.role}


async def logout(addrs: Sequence[str], token: str, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """Ticketing.Logout -> {"success", "message"}."""
    async with _client(addrs, timeout) as rr:
        resp = await rr.call(Route(_TICKETING + "Logout", StatusResponse, True), LogoutRequest(token=token))
    return {"success": resp.success, "message": resp.message}


# --------------------------------------------------------------------------------------- rendering


def human_bytes(n: int | None, unknown: str = "-") -> str:
    """1536 -> '1.5 KiB' (B, KiB, MiB, GiB); `unknown` for None."""
    if n is None:
        return unknown
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def format_status_table(st: dict[str, Any]) -> str:
    """A human table of `cluster_status` output."""
    cols = [("ID", "id"), ("ADDRESS", "address"), ("PID", "pid"), ("ROLE", "role"), ("TERM", "term"),
            ("LEADER", "leader_id"), ("COMMIT", "commit_index"), ("APPLIED", "applied_index"),
            ("LAST", "last_log_index"), ("SNAPSHOT", "snapshot_index"), ("LOG", "log_bytes")]
    rows = []
    for n in st["nodes"]:
        row = []
        for _, key in cols:
            v = n.get(key)
            if key == "log_bytes":
                row.append(human_bytes(v))
            elif key == "leader_id":
                row.append("-" if not v else str(v))
            else:
                row.append("-" if v is None else str(v))
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, (h, _) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(cols, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    leader = st.get("leader")
    if leader is None:
        lines.append("leader: none (no reachable node leads right now)")
    else:
        lead = next((n for n in st["nodes"] if n.get("id") == leader and n.get("up")), None)
        where = f" at {lead['address']}" if lead else ""
        lines.append(f"leader: node {leader}{where}")
    for n in st["nodes"]:
        if not n.get("up"):
            lines.append(f"{n['address']} is down: {n.get('error', 'no answer')}")
    return "\n".join(lines)
