"""The client-facing grpclib services of a node: `train_booking.Ticketing` and `railraft.node.v1.Node`.

Ticketing keeps the original system's wire contract (field numbers, success/message replies): domain
failures come back as `success=false` with a human message; a node that cannot reach a leader in time answers
UNAVAILABLE.  Writes become store commands stamped here (time, ids, password hashes, token hashes) so that
apply stays deterministic; any node accepts any call and forwards writes to the leader.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from grpclib import GRPCError
from grpclib.const import Status

from actors.node import Node, NotLeaderError, ProposalLost
from proto.gen.railraft.node.v1 import (
    AddNodeRequest,
    AdminResponse,
    BackupChunk,
    BackupInfo,
    BackupRequest,
    CreateAdminRequest,
    Member,
    NodeBase,
    NodeStatus,
    NodeStub,
    PeerProgress,
    ProposeRequest,
    ProposeResponse,
    RemoveNodeRequest,
    StatusRequest,
    TransferLeaderRequest,
)
from proto.gen.train_booking import (
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    RegisterRequest,
    StatusResponse,
    TicketingBase,
)
from raft.types import ConfChange, ConfChangeType, RaftError, Role
from store import auth
from store.payments import PaymentProvider
from store.commands import (
    BootstrapAdmin,
    RemoveMember,
    SetMember,
    encode_command,
    encode_result,
)

from .booking_core import READ_TIMEOUT_S, STALE, BookingCore, new_request_id, now_ms
from .booking_core import check_forwarded, password_work
from .peer_auth import ADMIN_METHODS, PROPOSE_METHOD, authorize_admin, peer_host
from .rpc import LeaderHintMixin, current_stream, peer_authenticated, trio_call
from .submit import PROPOSE_BATCH_MAX, Submitter
from .ticketing_compat import TicketingCompatMixin

CATCH_UP_TIMEOUT_S = 60.0
BACKUP_CHUNK_BYTES = 1 << 20  # as InstallSnapshot's chunks
BACKUP_CHUNK_MIN = 64 << 10  # smaller requests are rounded up (a 1-byte chunk size would be a DoS)
BACKUP_CHUNK_MAX = 4 << 20  # grpclib's default message size limit
BACKUP_PREFIX = "backup-"  # temporary copies in the snapshot directory (never matched by snap-*/recv-*)


class TicketingService(TicketingCompatMixin, LeaderHintMixin, TicketingBase):
    """`train_booking.Ticketing`: Register, Login, Logout here; the booking RPCs come from
    gateway.ticketing_compat.TicketingCompatMixin."""

    def __init__(self, node: Node, submitter: Submitter, provider: PaymentProvider | None = None,
                 core: BookingCore | None = None) -> None:
        self.node = node
        self.submit = submitter
        self.core = core if core is not None else BookingCore(node, submitter, provider)

    async def register(self, register_request: RegisterRequest) -> StatusResponse:
        try:
            username = auth.validate_username(register_request.username)
            auth.validate_password(register_request.password)
        except ValueError as e:
            return StatusResponse(success=False, message=str(e))
        res = await self.core.register(username, register_request.password,
                                       register_request.request_id[:64] or new_request_id())
        if res.ok:
            return StatusResponse(success=True, message=f"Welcome, {username}! Your account is ready; please log in.")
        return StatusResponse(success=False, message=res.message)

    async def login(self, login_request: LoginRequest) -> LoginResponse:
        # LoginRequest.request_id is deliberately not used: see BookingCore.open_session.
        try:
            user = await self.core.authenticate(login_request.username, login_request.password)
        except GRPCError as e:
            if e.status != Status.RESOURCE_EXHAUSTED:
                raise
            return LoginResponse(success=False, message=e.message or "too many failed login attempts")
        if user is None:
            return LoginResponse(success=False, message="wrong username or password")
        token, _expires, res = await self.core.open_session(user.id, user.password_hash)
        if not res.ok:
            return LoginResponse(success=False, message=res.message)
        return LoginResponse(success=True, message=f"Logged in as {user.username}", token=token, role=user.role)

    async def logout(self, logout_request: LogoutRequest) -> StatusResponse:
        if not logout_request.token:
            return StatusResponse(success=False, message="no session token given")
        res = await self.core.revoke_session(logout_request.token, logout_request.request_id[:64] or new_request_id())
        if res.ok:
            return StatusResponse(success=True, message="Logged out")
        return StatusResponse(success=False, message=res.message or "not logged in")


class NodeService(LeaderHintMixin, NodeBase):
    """`railraft.node.v1.Node`: status, write forwarding and cluster administration."""

    def __init__(self, node: Node, submitter: Submitter) -> None:
        self.node = node
        self.submitter = submitter
        self._backups: set[Path] = set()  # backup copies being streamed right now
        self._sessions = BookingCore(node, submitter)  # checks the administrator's session of a Backup call

    async def status(self, status_request: StatusRequest) -> NodeStatus:
        st = self.node.status()
        members = []
        for nid, addr in st["members"].items():
            host, _, port = addr.rpartition(":")
            kind = "voter" if nid in st["voters"] else "learner" if nid in st["learners"] else "other"
            if kind != "other":
                members.append(Member(id=nid, host=host, port=int(port), kind=kind))
        progress = [
            PeerProgress(id=nid, match=p["match"], next=p["next"], state=p["state"])
            for nid, p in st.get("progress", {}).items()
        ]
        return NodeStatus(
            id=st["id"], address=st["address"], pid=st["pid"], role=st["role"], term=st["term"],
            leader_id=st["leader"], commit_index=st["commit"], applied_index=st["applied"],
            last_log_index=st["last_index"], snapshot_index=st["snapshot_index"], log_bytes=st["log_bytes"],
            cluster_id=st["cluster_id"], members=members, progress=progress, uptime_s=st["uptime_s"],
            leader_address=st["leader_address"],
        )

    async def propose(self, propose_request: ProposeRequest) -> ProposeResponse:
        # Forwarded writes are proposed here only: if we are not the leader either, the sender retries.
        # With a cluster secret only another node gets past the first check (UNAUTHENTICATED otherwise); without
        # one anyone can call this.  Either way only what a gateway forwards gets through (check_forwarded).
        peer_auth = self.submitter.auth
        if peer_auth is not None:
            stream = current_stream()
            peer_auth.verify_metadata(stream.metadata if stream is not None else None, PROPOSE_METHOD,
                                      [bytes(propose_request)], peer=peer_host(stream))
        if not self.node.is_leader():
            raise NotLeaderError(self.node.leader, self.node.leader_address(), "forwarded writes go to the leader")
        peer_ok = peer_auth is not None or peer_authenticated()
        if propose_request.commands:
            # A follower's batch: one log append for all of them; every command is checked as if alone.
            datas = [bytes(c) for c in propose_request.commands[:PROPOSE_BATCH_MAX]]
            if len(propose_request.commands) > PROPOSE_BATCH_MAX:
                raise GRPCError(Status.INVALID_ARGUMENT, f"at most {PROPOSE_BATCH_MAX} commands in one Propose")
            # Checked together, so their reads run together (one hop onto the reader's thread, or none).
            await asyncio.gather(*(check_forwarded(self.node, data, peer_ok=peer_ok) for data in datas))
            placed = await trio_call(self.node.propose_many, datas, 10.0)
            return ProposeResponse(results=[encode_result(r) for r, _ in placed], indexes=[i for _, i in placed])
        data = bytes(propose_request.command)
        await check_forwarded(self.node, data, peer_ok=peer_ok)
        result, index = await trio_call(self.node.propose, data, 10.0)
        return ProposeResponse(result=encode_result(result), index=index)

    async def _propose_here(self, cmd: Any) -> Any:
        """Propose a leader-internal command on this node (the leader); NotLeaderError -> UNAVAILABLE."""
        try:
            result, _index = await trio_call(self.node.propose, encode_command(cmd), 10.0)
        except ProposalLost:
            raise GRPCError(Status.UNAVAILABLE, "leadership changed during the request; try again") from None
        return result

    async def _forward_admin(self, method: str, request: Any) -> AdminResponse | None:
        """Run an admin call on the leader if that is not us; None means: we lead, do it here."""
        if self.node.is_leader():
            return None
        addr = self.node.leader_address()
        if not addr:
            raise NotLeaderError(0, "", "no leader is known right now")
        host, _, port = addr.rpartition(":")
        from grpclib.client import Channel

        ch = Channel(host, int(port))
        # The caller was authorized here; with a cluster secret the leader takes this node's word for it.
        peer_auth = self.submitter.auth
        metadata = (peer_auth.metadata(ADMIN_METHODS[method], self.node.leader, [bytes(request)])
                    if peer_auth is not None else None)
        try:
            return await getattr(NodeStub(ch), method)(request, timeout=CATCH_UP_TIMEOUT_S + 10, metadata=metadata)
        finally:
            ch.close()

    async def transfer_leader(self, transfer_leader_request: TransferLeaderRequest) -> AdminResponse:
        await authorize_admin(self.submitter.auth, current_stream(), ADMIN_METHODS["transfer_leader"],
                              transfer_leader_request, lambda token: self._sessions.session(token, STALE, admin=True))
        fwd = await self._forward_admin("transfer_leader", transfer_leader_request)
        if fwd is not None:
            return fwd
        st = self.node.status()
        target = transfer_leader_request.target_id
        voters = [v for v in st["voters"] if v != self.node.id]
        if target == 0:
            if not voters:
                return AdminResponse(ok=False, message="there is no other voter to hand leadership to", leader_id=self.node.id)
            prog = st.get("progress", {})
            target = max(voters, key=lambda v: (prog.get(v, {}).get("match", 0), -v))
        if target == self.node.id:
            return AdminResponse(ok=True, message=f"node {target} already leads", leader_id=target)
        if target not in voters:
            return AdminResponse(ok=False, message=f"node {target} is not a voter", leader_id=self.node.id)
        await trio_call(self.node.transfer_leadership, target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while loop.time() < deadline:
            if self.node.leader == target:
                return AdminResponse(ok=True, message=f"node {target} is now the leader", leader_id=target)
            await asyncio.sleep(0.02)
        return AdminResponse(ok=False, message=f"node {target} did not take over within 5 s", leader_id=self.node.leader)

    async def add_node(self, add_node_request: AddNodeRequest) -> AdminResponse:
        await authorize_admin(self.submitter.auth, current_stream(), ADMIN_METHODS["add_node"], add_node_request,
                              lambda token: self._sessions.session(token, STALE, admin=True))
        fwd = await self._forward_admin("add_node", add_node_request)
        if fwd is not None:
            return fwd
        req = add_node_request
        if req.id < 1 or not req.host or not (0 < req.port < 65536):
            return AdminResponse(ok=False, message="add-node needs an id >= 1, a host and a port", leader_id=self.node.id)
        st = self.node.status()
        if req.id in st["voters"]:
            return AdminResponse(ok=True, message=f"node {req.id} is already a voter", leader_id=self.node.id)
        cmd = SetMember(
            request_id=f"add-{req.id}-{req.host}-{req.port}", client_id="admin", ts_ms=now_ms(),
            node_id=req.id, host=req.host, port=req.port,
        )
        res = await self._propose_here(cmd)
        if not res.ok:
            return AdminResponse(ok=False, message=res.message, leader_id=self.node.leader)
        try:
            if req.id not in st["learners"]:
                await trio_call(self.node.change_membership, ConfChange(ConfChangeType.ADD_LEARNER, req.id))
            # A learner is promoted only once it has caught up; the core refuses earlier promotions.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + CATCH_UP_TIMEOUT_S
            while True:
                try:
                    await trio_call(self.node.change_membership, ConfChange(ConfChangeType.PROMOTE, req.id))
                    break
                except RaftError as e:
                    if loop.time() > deadline:
                        return AdminResponse(ok=False, message=f"node {req.id} did not catch up: {e}", leader_id=self.node.leader)
                    await asyncio.sleep(0.1)
        except RaftError as e:
            return AdminResponse(ok=False, message=str(e), leader_id=self.node.leader)
        return AdminResponse(ok=True, message=f"node {req.id} ({req.host}:{req.port}) joined as a voter", leader_id=self.node.leader)

    async def remove_node(self, remove_node_request: RemoveNodeRequest) -> AdminResponse:
        await authorize_admin(self.submitter.auth, current_stream(), ADMIN_METHODS["remove_node"], remove_node_request,
                              lambda token: self._sessions.session(token, STALE, admin=True))
        fwd = await self._forward_admin("remove_node", remove_node_request)
        if fwd is not None:
            return fwd
        nid = remove_node_request.id
        st = self.node.status()
        if nid not in st["voters"] and nid not in st["learners"]:
            return AdminResponse(ok=False, message=f"node {nid} is not a member", leader_id=self.node.id)
        if nid == self.node.id:
            # Removing the leader: hand leadership to another voter first, then let the new leader do it, so
            # the cluster never sits leaderless waiting for an election.
            handed = await self.transfer_leader(TransferLeaderRequest(target_id=0))
            if not handed.ok:
                return AdminResponse(ok=False, message=f"cannot remove the leader: {handed.message}", leader_id=self.node.id)
            fwd = await self._forward_admin("remove_node", remove_node_request)
            assert fwd is not None
            return fwd
        # The address book first: once the node is out of the configuration nothing needs its address.
        cmd = RemoveMember(request_id=f"remove-{nid}-{os.urandom(4).hex()}", client_id="admin", ts_ms=now_ms(), node_id=nid)
        try:
            await self._propose_here(cmd)
        except (TimeoutError, GRPCError):
            pass  # cosmetic: the configuration change below is what matters
        try:
            await trio_call(self.node.change_membership, ConfChange(ConfChangeType.REMOVE, nid))
        except RaftError as e:
            return AdminResponse(ok=False, message=str(e), leader_id=self.node.leader)
        return AdminResponse(ok=True, message=f"node {nid} removed", leader_id=self.node.leader)

    async def create_admin(self, create_admin_request: CreateAdminRequest) -> AdminResponse:
        """`railraft admin create`: the first administrator (the state machine refuses once one exists).

        Runs on the leader (BootstrapAdmin is not accepted over Propose)."""
        fwd = await self._forward_admin("create_admin", create_admin_request)
        if fwd is not None:
            return fwd
        req = create_admin_request
        try:
            username = auth.validate_username(req.username)
            auth.validate_password(req.password)
        except ValueError as e:
            return AdminResponse(ok=False, message=str(e), leader_id=self.node.leader)
        pw_hash = await trio_call(password_work, auth.hash_password, req.password)
        cmd = BootstrapAdmin(
            request_id=new_request_id(), client_id=f"admin-create:{username.casefold()}", ts_ms=now_ms(),
            username=username, password_hash=pw_hash,
        )
        res = await self._propose_here(cmd)
        if res.ok:
            return AdminResponse(ok=True, message=f"administrator {username!r} created", leader_id=self.node.leader)
        return AdminResponse(ok=False, message=res.message, leader_id=self.node.leader)

    async def backup(self, backup_request: BackupRequest) -> AsyncIterator[BackupChunk]:
        """`railraft backup` (gateway.backup): a consistent copy of the database, streamed in chunks.

        Leader only (NotLeaderError -> UNAVAILABLE with the leader hint).  The read barrier comes first, so
        the copy -- taken afterwards, at whatever index is applied then -- holds every write acknowledged
        before the call arrived.  Then the caller must be a live administrator session (the session is
        read after the barrier, so a just-revoked token is refused): a backup holds every password hash and
        booking.  The copy is `Database.snapshot`, the same single-file SQLite copy the node takes for
        InstallSnapshot; it holds the DB writer for the copy's duration (applies wait, as for a snapshot).
        """
        req = backup_request
        chunk_bytes = max(req.chunk_bytes or BACKUP_CHUNK_BYTES, BACKUP_CHUNK_MIN)
        if chunk_bytes > BACKUP_CHUNK_MAX:
            raise GRPCError(Status.INVALID_ARGUMENT, f"chunk_bytes must be at most {BACKUP_CHUNK_MAX}")
        if not self.node.is_leader():
            raise NotLeaderError(self.node.leader, self.node.leader_address(), "backups are taken on the leader")
        read_index = await trio_call(self.node.read_barrier, False, READ_TIMEOUT_S)
        await self._sessions.session(req.token, STALE, admin=True)
        snap_dir = self.node.s.snapshot_dir
        dest = snap_dir / f"{BACKUP_PREFIX}{os.urandom(6).hex()}.db"
        loop = asyncio.get_running_loop()
        self._backups.add(dest)
        try:
            await loop.run_in_executor(None, _remove_stale_backups, snap_dir, set(self._backups))
            index = term = 0
            for _ in range(3):
                index = await trio_call(self.node.db.snapshot, dest)
                # The log position of the copy.  None only if the log was compacted past `index` (a
                # snapshot taken or installed meanwhile): copy again, at the newer index.
                term, conf = await trio_call(self.node.call, functools.partial(_log_position, index=index))
                if term is not None:
                    break
            else:
                raise GRPCError(Status.UNAVAILABLE, "the log moved on under the backup three times; try again")
            size, digest, schema_version = await loop.run_in_executor(None, _describe_copy, dest)
            members = []
            for kind, ids in (("voter", conf.voters), ("learner", conf.learners)):
                for nid in sorted(ids):
                    host, port = self.node.addresses.get(nid, ("", 0))
                    members.append(Member(id=nid, host=host, port=port, kind=kind))
            info = BackupInfo(
                applied_index=index, term=term, cluster_id=self.node.s.cluster_id, members=members, size=size,
                sha256=digest, schema_version=schema_version, node_id=self.node.id, created_ms=now_ms(),
                read_index=read_index,
            )
            with open(dest, "rb") as fh:
                offset = 0
                data = await loop.run_in_executor(None, fh.read, chunk_bytes)
                while True:
                    nxt = await loop.run_in_executor(None, fh.read, chunk_bytes) if data else b""
                    last = not nxt
                    yield BackupChunk(info=info if offset == 0 else None, offset=offset, data=data, last=last)
                    if last:
                        break
                    offset += len(data)
                    data = nxt
        finally:
            # No await here: this also runs when the caller went away and the generator is being closed.
            self._backups.discard(dest)
            _remove_quietly(dest)


def _log_position(core: Any, index: int) -> tuple[int | None, Any]:
    """(term, configuration) at `index` in the Raft log (run inside the consensus actor)."""
    return core.log.term(index), core.log.conf_at(index)


def _describe_copy(path: Path) -> tuple[int, str, int]:
    """Size, SHA-256 and schema version of a backup copy (on a worker thread)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return size, h.hexdigest(), int(version)


def _remove_quietly(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".tmp")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _remove_stale_backups(snap_dir: Path, active: set[Path]) -> None:
    """Copies left behind by a backup that died with its node (no stream in this process owns them)."""
    names = {p.name for p in active}
    for p in snap_dir.glob(f"{BACKUP_PREFIX}*"):
        if p.name.partition(".db")[0] + ".db" not in names:
            try:
                p.unlink()
            except OSError:
                pass


__all__ = ["TicketingService", "NodeService", "Role"]
