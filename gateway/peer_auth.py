"""Peer authentication: a node takes Raft traffic, forwarded writes and cluster administration only from
callers that hold the cluster secret.

The secret is 32 random bytes, written as 64 hex digits in the file cluster.toml names with `secret_file`
(relative to the toml; `railraft cluster up` generates DATA/cluster.secret, mode 0600, on its first run), or
given in RAILRAFT_CLUSTER_SECRET when the toml names none (actors.config.cluster_secret).  Every member has
the same secret.  A node started without one works as before, unauthenticated, and says so in a WARNING.

What is authenticated, and how (all with HMAC-SHA256 under the secret; see PeerAuth in proto/raft.proto):

* `Raft.Stream`: the first envelope is a PeerAuth that opens the stream (seq 0, count 0: it covers its own
  header: method, cluster id, from, to, timestamp, nonce).  Each batch then starts with a PeerAuth (seq 1, 2,
  3, ...) whose MAC covers the header and the `count` envelopes that follow, exactly as framed on the wire.
  One HMAC per batch, never per entry or per message.
* `Raft.InstallSnapshot`: the opening PeerAuth travels in the call's metadata (`railraft-auth-bin`); each
  chunk ends with its own MAC over the chunk's other bytes (InstallSnapshotChunk.mac, seq 1, 2, ...).
* unary calls -- the Raft unary RPCs, `Node.Propose` (followers forwarding writes), and the admin calls
  `Node.TransferLeader` / `AddNode` / `RemoveNode` -- carry a PeerAuth (seq 0, count 1) in their metadata,
  whose MAC covers the header and the request message.  The admin calls also accept, instead, an
  administrator's session token in the metadata `railraft-token` (the web dashboard's way in).
  `Node.Status` stays open: clients use it to find the leader.  (`Node.CreateAdmin` is unchanged: it works
  only until the first administrator exists; `Node.Backup` takes an administrator's token in its request.)

Replay: a receiver accepts a timestamp only within MAX_SKEW_MS of its own clock, and each nonce only once.
A nonce is the sender's random process id (8 bytes) and a counter (8 bytes); the receiver keeps, per sender
process, the highest counter and a bitmap of the REPLAY_WINDOW counters below it (as IPsec does), and forgets
a sender process once its last timestamp has left the window.  A stream's batches must count up by one.  So a
captured message or stream is refused by the node it was sent to (nonce already seen), by the other nodes
(the MAC covers the receiver's id), and by every node once it is a minute old.  Two gaps, both bounded by
that minute: an operator's admin call is addressed to "any node" (the CLI does not know which node will
answer), so another node would take a copy once; and a node that restarts forgets what it saw, so a message
sent to its previous incarnation could be played to it once more (Raft tolerates duplicated messages).

Failures answer UNAUTHENTICATED and are logged once per peer (host and claimed sender id), not per message.

PeerAuth is encoded and decoded here by hand (`Auth`, `encode_auth`, `decode_auth`): betterproto needs ~50 us
to build one and ~300 us to parse a PeerEnvelope, the hand codec about 2 us.  The bytes are ordinary protobuf
(proto/raft.proto's PeerAuth, and a PeerEnvelope holding only `auth`).

All members share one key, so a member can speak for another member; the secret keeps out everyone else.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import itertools
import logging
import os
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from actors.config import SECRET_ENV, ConfigError, cluster_secret, parse_secret, read_secret_file

from .peer_wire import uvarint

__all__ = [
    "ADMIN_METHODS", "AUTH_METADATA", "Auth", "ClusterAuth", "auth_envelope", "decode_auth", "encode_auth",
    "envelope_auth", "MAX_SKEW_MS", "PROPOSE_METHOD", "REPLAY_WINDOW", "ReplayGuard",
    "SECRET_ENV", "SECRET_FILE_NAME", "StreamSigner", "StreamVerifier", "TOKEN_METADATA", "authorize_admin",
    "cluster_secret", "ensure_secret_file", "frame", "generate_secret", "parse_secret", "peer_host",
    "read_secret_file", "unauthenticated_warning",
]

log = logging.getLogger("railraft.peer_auth")

AUTH_METADATA = "railraft-auth-bin"  # binary metadata: an encoded PeerAuth
TOKEN_METADATA = "railraft-token"  # an administrator's session token, for the admin calls
SECRET_FILE_NAME = "cluster.secret"
SECRET_BYTES = 32
MAC_BYTES = 32
NONCE_BYTES = 16
MAX_SKEW_MS = 60_000  # as gateway.booking_core trusts a forwarded command's clock (FORWARD_FUTURE_MS)
REPLAY_WINDOW = 4096  # counters below a sender's highest that may still arrive (out of order)
MAX_BATCH = 1 << 16  # envelopes one stream PeerAuth may cover
MAX_SENDERS = 10_000  # sender processes remembered at once (each authenticated: members only)
OPERATOR_ID = 0  # from_id of an operator's tool (the CLI), which is no node
MAX_LOGGED_PEERS = 256  # refused (host, claimed sender) pairs logged; a flood of made-up ids stays quiet after

NODE_SERVICE = "/railraft.node.v1.Node/"
PROPOSE_METHOD = NODE_SERVICE + "Propose"
# NodeService handler name -> method path, for the calls that need the secret or an administrator.
ADMIN_METHODS = {
    "transfer_leader": NODE_SERVICE + "TransferLeader",
    "add_node": NODE_SERVICE + "AddNode",
    "remove_node": NODE_SERVICE + "RemoveNode",
    "create_admin": NODE_SERVICE + "CreateAdmin",  # not checked (open until the first admin); forwarded signed
}

# InstallSnapshotChunk.mac (field 10, length-delimited, 32 bytes) as the last bytes of an encoded chunk.
CHUNK_MAC_TRAILER = bytes([(10 << 3) | 2, MAC_BYTES])

_DOMAIN = b"railraft-peer-auth-v1\0"
_HEAD = struct.Struct(">QQQ")  # from_id, to_id, ts_ms
_TAIL = struct.Struct(">QI")  # seq, count
_PREFIX = struct.Struct(">?I")  # a gRPC message's length prefix (uncompressed)


# ============================================================================================ secrets


def generate_secret() -> str:
    """A new cluster secret, as the hex text kept in the secret file."""
    return secrets.token_hex(SECRET_BYTES)


def ensure_secret_file(path: str | Path) -> tuple[bytes, bool]:
    """The secret in `path`, creating the file (mode 0600, a new random secret) if it does not exist.
    Returns (secret, created).  ConfigError if an existing file does not hold a secret."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret_file(path), False
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_secret() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return read_secret_file(path), True


def unauthenticated_warning(node_id: int, where: str) -> str:
    """What a node without a secret says at start."""
    return (f"node {node_id}: peer traffic is NOT authenticated (no cluster secret): anyone who can reach "
            f"{where} can act as a member of this cluster (vote, replicate, forward writes, administer it). "
            f"Set secret_file in cluster.toml (`railraft cluster up` does) or {SECRET_ENV}.")


# ======================================================================================= the PeerAuth codec


class Auth:
    """A PeerAuth message (proto/raft.proto), as plain attributes."""

    __slots__ = ("from_id", "to_id", "ts_ms", "nonce", "seq", "count", "mac")

    def __init__(self, from_id: int = 0, to_id: int = 0, ts_ms: int = 0, nonce: bytes = b"", seq: int = 0,
                 count: int = 0, mac: bytes = b"") -> None:
        self.from_id, self.to_id, self.ts_ms, self.nonce = from_id, to_id, ts_ms, nonce
        self.seq, self.count, self.mac = seq, count, mac

    def __repr__(self) -> str:
        return (f"Auth(from={self.from_id}, to={self.to_id}, ts={self.ts_ms}, nonce={self.nonce.hex()}, "
                f"seq={self.seq}, count={self.count})")


def encode_auth(a: Auth) -> bytes:
    """PeerAuth wire bytes (fields in number order, defaults omitted, as protobuf encoders do)."""
    parts = []
    for num, value in ((1, a.from_id), (2, a.to_id), (3, a.ts_ms)):
        if value:
            parts += (bytes((num << 3,)), uvarint(value))
    if a.nonce:
        parts += (b"\x22", uvarint(len(a.nonce)), a.nonce)
    for num, value in ((5, a.seq), (6, a.count)):
        if value:
            parts += (bytes((num << 3,)), uvarint(value))
    if a.mac:
        parts += (b"\x3a", uvarint(len(a.mac)), a.mac)
    return b"".join(parts)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


_AUTH_NAMES = {1: "from_id", 2: "to_id", 3: "ts_ms", 4: "nonce", 5: "seq", 6: "count", 7: "mac"}


def decode_auth(buf: bytes) -> Auth:
    """Parse PeerAuth wire bytes (any field order; unknown fields skipped); ValueError if malformed."""
    a = Auth()
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        num, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
            continue
        else:
            raise ValueError(f"wire type {wire_type}")
        name = _AUTH_NAMES.get(num)
        if name is None:
            continue
        if isinstance(value, bytes) != (name in ("nonce", "mac")):
            raise ValueError(f"field {name} has the wrong wire type")
        if isinstance(value, int) and value >> (32 if name == "count" else 64):
            raise ValueError(f"field {name} out of range")
        setattr(a, name, value)
    if pos != end:
        raise ValueError("truncated message")
    return a


_ENVELOPE_AUTH = bytes(((14 << 3) | 2,))  # PeerEnvelope.auth: field 14, length-delimited


def auth_envelope(a: Auth) -> bytes:
    """A PeerEnvelope that holds only `a`."""
    body = encode_auth(a)
    return _ENVELOPE_AUTH + uvarint(len(body)) + body


def envelope_auth(wire: bytes) -> Auth | None:
    """The Auth in a PeerEnvelope that holds only one (as `auth_envelope` writes it), else None (it holds a
    Raft message).  ValueError if it starts like an auth envelope but is malformed."""
    if not wire or wire[0] != _ENVELOPE_AUTH[0]:
        return None
    size, pos = _read_varint(wire, 1)
    if pos + size != len(wire):
        raise ValueError("an auth envelope with trailing bytes")
    return decode_auth(wire[pos:])


# ============================================================================================= helpers


def frame(payload: bytes) -> bytes:
    """A gRPC length-prefixed message: what a MAC covers of each message."""
    return _PREFIX.pack(False, len(payload)) + payload


def _header(method: str, cluster_id: str, from_id: int, to_id: int, ts_ms: int, nonce: bytes, seq: int,
            count: int) -> bytes:
    m, c = method.encode(), cluster_id.encode()
    return b"".join((_DOMAIN, len(m).to_bytes(2, "big"), m, len(c).to_bytes(2, "big"), c,
                     _HEAD.pack(from_id, to_id, ts_ms), nonce, _TAIL.pack(seq, count)))


def peer_host(stream: Any) -> str:
    """The calling host of a grpclib server stream ("?" if unknown)."""
    try:
        addr = stream.peer.addr()
    except Exception:  # noqa: BLE001 - a closed transport, or a stream without a peer
        return "?"
    if not addr:
        return "?"
    return str(addr[0]) if isinstance(addr, (tuple, list)) else str(addr)


_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


class _Window:
    """Anti-replay state of one sender process: the highest counter seen and a bitmap of those below it."""

    __slots__ = ("top", "bits", "last_ts")

    def __init__(self) -> None:
        self.top = 0
        self.bits = 0
        self.last_ts = 0

    def accept(self, counter: int) -> bool:
        if counter > self.top:
            shift = counter - self.top
            self.bits = ((self.bits << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.top = counter
            return True
        back = self.top - counter
        if back >= REPLAY_WINDOW or (self.bits >> back) & 1:
            return False
        self.bits |= 1 << back
        return True


class ReplayGuard:
    """Each (sender, nonce) once, each timestamp within `skew_ms` of now (see the module docstring)."""

    def __init__(self, skew_ms: int = MAX_SKEW_MS) -> None:
        self.skew_ms = skew_ms
        self._senders: dict[tuple[int, bytes], _Window] = {}
        self._next_prune = 0

    def check(self, from_id: int, nonce: bytes, ts_ms: int, now_ms: int) -> str:
        """"" if fresh (and now remembered), else why not."""
        if not now_ms - self.skew_ms <= ts_ms <= now_ms + self.skew_ms:
            return f"timestamp {ts_ms - now_ms:+d} ms off this node's clock (allowed: {self.skew_ms} ms)"
        if now_ms >= self._next_prune:
            self._prune(now_ms)
        key = (from_id, nonce[:8])
        win = self._senders.get(key)
        if win is None:
            if len(self._senders) >= MAX_SENDERS:
                return "too many sender processes at once; try again in a minute"
            win = self._senders[key] = _Window()
        if not win.accept(int.from_bytes(nonce[8:], "big")):
            return "replayed (this nonce was already used)"
        win.last_ts = max(win.last_ts, ts_ms)
        return ""

    def _prune(self, now_ms: int) -> None:
        # A sender process whose newest timestamp is out of the window can only send stale messages now.
        stale = [k for k, w in self._senders.items() if w.last_ts < now_ms - self.skew_ms]
        for k in stale:
            del self._senders[k]
        self._next_prune = now_ms + 1000


# =========================================================================================== ClusterAuth


class ClusterAuth:
    """One node's (or one operator tool's) peer authentication: signs what it sends, checks what it gets.

    One instance per node process, shared by its PeerLinks, its Submitter and its services, so that its
    nonces never repeat and its replay memory covers every RPC.  `node_id` 0 is an operator's tool.
    """

    def __init__(self, secret: bytes, cluster_id: str, node_id: int = OPERATOR_ID, *,
                 clock: Callable[[], float] = time.time, skew_ms: int = MAX_SKEW_MS) -> None:
        if len(secret) < 16:
            raise ConfigError("the cluster secret must be at least 16 bytes")
        self._secret = bytes(secret)
        self.cluster_id = cluster_id
        self.node_id = node_id
        self._clock = clock
        self._process = os.urandom(8)
        self._counter = itertools.count(1)
        self.guard = ReplayGuard(skew_ms)
        self._refused: set[tuple[str, int]] = set()

    def __repr__(self) -> str:  # never the secret
        return f"ClusterAuth(cluster={self.cluster_id!r}, node={self.node_id})"

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def new_nonce(self) -> bytes:
        return self._process + next(self._counter).to_bytes(8, "big")

    def mac(self, method: str, from_id: int, to_id: int, ts_ms: int, nonce: bytes, seq: int, count: int,
            body: bytes) -> bytes:
        """HMAC-SHA256 of the header and `body` (the covered messages, framed)."""
        head = _header(method, self.cluster_id, from_id, to_id, ts_ms, nonce, seq, count)
        return hmac.digest(self._secret, head + body, hashlib.sha256)

    # ------------------------------------------------------------------------------------------ signing
    def sign(self, method: str, to_id: int, payloads: Sequence[bytes] = ()) -> Auth:
        """The PeerAuth of one unary call (seq 0) covering `payloads` (the request's encoded bytes)."""
        ts, nonce = self.now_ms(), self.new_nonce()
        body = b"".join(frame(p) for p in payloads)
        mac = self.mac(method, self.node_id, to_id, ts, nonce, 0, len(payloads), body)
        return Auth(self.node_id, to_id, ts, nonce, 0, len(payloads), mac)

    def metadata(self, method: str, to_id: int, payloads: Sequence[bytes] = ()) -> dict[str, bytes]:
        """gRPC metadata that authenticates one call of `method` to node `to_id` with these request bytes."""
        return {AUTH_METADATA: encode_auth(self.sign(method, to_id, payloads))}

    def stream_signer(self, method: str, to_id: int) -> StreamSigner:
        """A signer for one new stream (or snapshot call) to `to_id`."""
        return StreamSigner(self, method, to_id)

    # ---------------------------------------------------------------------------------------- verifying
    def refuse(self, peer: str, from_id: int, reason: str) -> GRPCError:
        """The UNAUTHENTICATED error for a refused caller; logged once per (host, claimed sender)."""
        key = (peer, from_id)
        if key not in self._refused and len(self._refused) <= MAX_LOGGED_PEERS:
            self._refused.add(key)
            if len(self._refused) > MAX_LOGGED_PEERS:
                log.warning("node %d: refused peer traffic from %d peers; no longer logging new ones",
                            self.node_id, MAX_LOGGED_PEERS)
            else:
                log.warning("node %d: refused peer traffic from %s (claims node %d): %s; further refusals of "
                            "this peer are not logged", self.node_id, peer, from_id, reason)
        return GRPCError(Status.UNAUTHENTICATED, f"peer authentication failed: {reason}")

    def _accepted(self, peer: str, from_id: int) -> None:
        if self._refused and (peer, from_id) in self._refused:
            self._refused.discard((peer, from_id))
            log.info("node %d: peer %s (node %d) authenticated again", self.node_id, peer, from_id)

    def verify(self, pa: Auth, method: str, payloads: Sequence[bytes], *, peer: str = "?") -> Auth:
        """Check a call's PeerAuth (seq 0) against the call and its request bytes; UNAUTHENTICATED if bad."""
        frm = pa.from_id
        if len(pa.mac) != MAC_BYTES or len(pa.nonce) != NONCE_BYTES or pa.seq != 0:
            raise self.refuse(peer, frm, "malformed authentication")
        if pa.count != len(payloads):
            raise self.refuse(peer, frm, f"authentication covers {pa.count} messages, the call has {len(payloads)}")
        if not (pa.to_id == self.node_id or (pa.to_id == 0 and frm == OPERATOR_ID)):
            raise self.refuse(peer, frm, f"authenticated for node {pa.to_id}, this is node {self.node_id}")
        body = b"".join(frame(p) for p in payloads)
        want = self.mac(method, frm, pa.to_id, pa.ts_ms, pa.nonce, 0, pa.count, body)
        if not hmac.compare_digest(want, pa.mac):
            raise self.refuse(peer, frm, "bad MAC (wrong cluster secret?)")
        why = self.guard.check(frm, pa.nonce, pa.ts_ms, self.now_ms())
        if why:
            raise self.refuse(peer, frm, why)
        self._accepted(peer, frm)
        return pa

    def verify_metadata(self, metadata: Mapping[str, Any] | None, method: str, payloads: Sequence[bytes], *,
                        peer: str = "?", claimed: int = -1) -> Auth:
        """`verify` for the PeerAuth in a call's metadata (missing: UNAUTHENTICATED).  `claimed`: the sender
        the request itself names, if known (for the log line of a refusal)."""
        raw = metadata.get(AUTH_METADATA) if metadata else None
        if not raw:
            raise self.refuse(peer, claimed, f"no peer authentication ({AUTH_METADATA} metadata) on {method}")
        return self.verify(self.parse(raw, peer, claimed), method, payloads, peer=peer)

    def parse(self, raw: Any, peer: str = "?", claimed: int = -1) -> Auth:
        """Decode an encoded PeerAuth (UNAUTHENTICATED if malformed)."""
        try:
            return decode_auth(bytes(raw))
        except (ValueError, TypeError):
            raise self.refuse(peer, claimed, "malformed authentication") from None

    def stream_verifier(self, method: str, *, peer: str = "?") -> StreamVerifier:
        return StreamVerifier(self, method, peer)


class StreamSigner:
    """The sending side of one authenticated stream: an opening PeerAuth, then one MAC per batch."""

    __slots__ = ("_auth", "method", "to_id", "ts_ms", "nonce", "seq")

    def __init__(self, auth: ClusterAuth, method: str, to_id: int) -> None:
        self._auth = auth
        self.method = method
        self.to_id = to_id
        self.ts_ms = auth.now_ms()
        self.nonce = auth.new_nonce()
        self.seq = 0

    def opening(self) -> Auth:
        """The PeerAuth that opens the stream (seq 0, count 0)."""
        a = self._auth
        mac = a.mac(self.method, a.node_id, self.to_id, self.ts_ms, self.nonce, 0, 0, b"")
        return Auth(a.node_id, self.to_id, self.ts_ms, self.nonce, 0, 0, mac)

    def opening_envelope(self) -> bytes:
        return auth_envelope(self.opening())

    def next_mac(self, count: int, body: bytes) -> tuple[int, bytes]:
        """(seq, MAC) of the next batch of `count` messages, `body` being them framed."""
        self.seq += 1
        a = self._auth
        return self.seq, a.mac(self.method, a.node_id, self.to_id, self.ts_ms, self.nonce, self.seq, count, body)

    def batch_envelope(self, count: int, body: bytes) -> bytes:
        """The encoded PeerAuth envelope that precedes a batch on a Stream."""
        seq, mac = self.next_mac(count, body)
        return auth_envelope(Auth(seq=seq, count=count, mac=mac))

    def sign_chunk(self, body: bytes) -> bytes:
        """An encoded InstallSnapshotChunk (without `mac`) with its MAC appended as the last field."""
        _seq, mac = self.next_mac(1, frame(body))
        return body + CHUNK_MAC_TRAILER + mac


class StreamVerifier:
    """The receiving side of one authenticated stream (see StreamSigner)."""

    __slots__ = ("_auth", "method", "peer", "opened", "from_id", "to_id", "ts_ms", "nonce", "seq")

    def __init__(self, auth: ClusterAuth, method: str, peer: str) -> None:
        self._auth = auth
        self.method = method
        self.peer = peer
        self.opened = False
        self.from_id = -1
        self.to_id = self.ts_ms = self.seq = 0
        self.nonce = b""

    def open(self, pa: Auth | None, claimed: int = -1) -> None:
        """Check the opening PeerAuth (None: the stream did not start with one; `claimed` is then the sender
        its first message names, if known, for the log)."""
        if pa is None:
            raise self._auth.refuse(self.peer, claimed, f"{self.method} did not start with peer authentication")
        self._auth.verify(pa, self.method, (), peer=self.peer)
        self.opened = True
        self.from_id, self.to_id, self.ts_ms, self.nonce = pa.from_id, pa.to_id, pa.ts_ms, pa.nonce

    def check(self, seq: int, count: int, mac: bytes, body: bytes) -> None:
        """Check the next batch: its number, then its MAC over `body` (the covered messages, framed)."""
        a = self._auth
        if seq != self.seq + 1:
            raise a.refuse(self.peer, self.from_id, f"batch {seq} where batch {self.seq + 1} was due (replay?)")
        want = a.mac(self.method, self.from_id, self.to_id, self.ts_ms, self.nonce, seq, count, body)
        if not hmac.compare_digest(want, mac):
            raise a.refuse(self.peer, self.from_id, "bad MAC on a batch")
        self.seq = seq

    def batch_size(self, pa: Auth | None) -> int:
        """How many envelopes follow the batch PeerAuth `pa` (None: the batch had none)."""
        if pa is None:
            raise self._auth.refuse(self.peer, self.from_id, "a batch without peer authentication")
        if not 0 < pa.count <= MAX_BATCH or len(pa.mac) != MAC_BYTES:
            raise self._auth.refuse(self.peer, self.from_id, f"malformed batch authentication (count {pa.count})")
        return pa.count

    def check_chunk(self, wire: bytes) -> bytes:
        """Check one signed InstallSnapshotChunk's MAC; returns the chunk's bytes without it."""
        if len(wire) < len(CHUNK_MAC_TRAILER) + MAC_BYTES or wire[-MAC_BYTES - 2:-MAC_BYTES] != CHUNK_MAC_TRAILER:
            raise self._auth.refuse(self.peer, self.from_id, "a snapshot chunk without its MAC")
        body = wire[:-MAC_BYTES - 2]
        self.check(self.seq + 1, 1, wire[-MAC_BYTES:], frame(body))
        return body


# ============================================================================================= admin

# The stream whose admin call has been authorized already (RemoveNode calls TransferLeader inside it).
_AUTHORIZED: contextvars.ContextVar[Any] = contextvars.ContextVar("railraft_admin_authorized", default=None)


async def authorize_admin(auth: ClusterAuth | None, stream: Any, method: str, request: Any,
                          check_admin_token: Callable[[str], Awaitable[Any]]) -> None:
    """Let an admin call through only with the cluster secret or an administrator's session.

    `stream` is the call's grpclib server stream (None for an in-process call, which is trusted);
    `check_admin_token(token)` raises UNAUTHENTICATED / PERMISSION_DENIED unless `token` is a live
    administrator's session.  Without a cluster secret (`auth` None) everything passes, as before.
    """
    if auth is None or stream is None or _AUTHORIZED.get() is stream:
        return
    md = getattr(stream, "metadata", None) or {}
    if md.get(AUTH_METADATA):
        auth.verify_metadata(md, method, [bytes(request)], peer=peer_host(stream))
    else:
        token = md.get(TOKEN_METADATA)
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        if not token:
            raise auth.refuse(peer_host(stream), -1, f"{method.rsplit('/', 1)[-1]} needs the cluster secret "
                              "(railraft cluster ... --config, or RAILRAFT_CLUSTER_SECRET) or an administrator's session")
        await check_admin_token(token)
    _AUTHORIZED.set(stream)
