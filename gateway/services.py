"""The client-facing grpclib services of a node: `train_booking.Ticketing` and `railraft.node.v1.Node`.

Ticketing keeps the original system's wire contract (field numbers, success/message replies): domain
failures come back as `success=false` with a human message; a node that cannot reach a leader in time answers
UNAVAILABLE.  Writes become store commands stamped here (time, ids, password hashes, token hashes) so that
apply stays deterministic; any node accepts any call and forwards writes to the leader.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import trio

from actors.node import Node, NotLeaderError
from proto.gen.railraft.node.v1 import (
    AddNodeRequest,
    AdminResponse,
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

from .booking_core import BookingCore, new_request_id, now_ms
from .rpc import LeaderHintMixin, trio_call
from .submit import Submitter
from .ticketing_compat import TicketingCompatMixin

CATCH_UP_TIMEOUT_S = 60.0


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
        user = await self.core.authenticate(login_request.username, login_request.password)
        if user is None:
            return LoginResponse(success=False, message="wrong username or password")
        token, _expires, res = await self.core.open_session(user.id)
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
        result, index = await trio_call(self.node.propose, propose_request.command, 10.0)
        return ProposeResponse(result=encode_result(result), index=index)

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
        try:
            return await getattr(NodeStub(ch), method)(request, timeout=CATCH_UP_TIMEOUT_S + 10)
        finally:
            ch.close()

    async def transfer_leader(self, transfer_leader_request: TransferLeaderRequest) -> AdminResponse:
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
        res = await self.submitter.submit(encode_command(cmd))
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
            await self.submitter.submit(encode_command(cmd))
        except TimeoutError:
            pass  # cosmetic: the configuration change below is what matters
        try:
            await trio_call(self.node.change_membership, ConfChange(ConfChangeType.REMOVE, nid))
        except RaftError as e:
            return AdminResponse(ok=False, message=str(e), leader_id=self.node.leader)
        return AdminResponse(ok=True, message=f"node {nid} removed", leader_id=self.node.leader)

    async def create_admin(self, create_admin_request: CreateAdminRequest) -> AdminResponse:
        """`railraft admin create`: the first administrator (the state machine refuses once one exists)."""
        req = create_admin_request
        try:
            username = auth.validate_username(req.username)
            auth.validate_password(req.password)
        except ValueError as e:
            return AdminResponse(ok=False, message=str(e), leader_id=self.node.leader)
        pw_hash = await trio_call(trio.to_thread.run_sync, auth.hash_password, req.password)
        cmd = BootstrapAdmin(
            request_id=new_request_id(), client_id=f"admin-create:{username.casefold()}", ts_ms=now_ms(),
            username=username, password_hash=pw_hash,
        )
        res = await self.submitter.submit(encode_command(cmd))
        if res.ok:
            return AdminResponse(ok=True, message=f"administrator {username!r} created", leader_id=self.node.leader)
        return AdminResponse(ok=False, message=res.message, leader_id=self.node.leader)


__all__ = ["TicketingService", "NodeService", "Role"]
