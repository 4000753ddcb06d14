"""Leader-only background work of a node: expiring holds, paying out refunds, creating the first admin.

The state machine never acts on its own (it reads no clock), so time-driven changes are commands the
LEADER proposes, and every replica applies them at the same log index:

* ExpireHolds(now_ms) once the earliest unpaid hold (or waitlisted departure) is due
  (store.booking_queries.next_hold_expiry), again while the result says `more`;
* refunds owed by cancellations are paid out through the payment provider (idempotency key
  "refund:<refund id>", so a new leader repeating an unrecorded payout pays once) and recorded with
  SettleRefunds;
* the first administrator: when the node was started with RAILRAFT_ADMIN_PASSWORD (user name
  RAILRAFT_ADMIN_USER, default "admin") and no ADMIN exists yet, BootstrapAdmin with a fixed request id, so
  two leaders in quick succession cannot create two (the apply refuses once any admin exists anyway).

`Housekeeper.run` lives in the node's nursery on every node for the node's whole life and does nothing
while the node is not the leader; each round starts by checking, so a node that loses or gains leadership
simply stops or starts acting at its next round.  Every error of a round (leadership lost mid-way, a timeout,
the node stopping) is logged and the round is retried later: the loop itself never ends the node.

Knobs (environment, read by `HousekeepingSettings.from_env`):

    RAILRAFT_ADMIN_PASSWORD / RAILRAFT_ADMIN_USER   the first admin (nothing happens without a password)
    RAILRAFT_HOUSEKEEPING_INTERVAL_MS                how often the leader looks (default 1000)
    RAILRAFT_TEST_EXPIRY_LOOKAHEAD_MS                TESTS ONLY: expire holds this much early (default 0),
                                                     so a test can watch a 60-second hold lapse in seconds
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from actors.node import Node, NodeStopping, NotLeaderError, ProposalLost
from store import auth, queries, rules
from store import booking_queries as bq
from store.commands import BootstrapAdmin, ExpireHolds, RefundSettlement, SettleRefunds, encode_command
from store.payments import PaymentProvider

from .booking_core import now_ms, password_work

log = logging.getLogger("railraft.housekeeping")

PROPOSE_TIMEOUT_S = 5.0
BARRIER_TIMEOUT_S = 2.0
REFUND_BATCH = 100
# ExpireHolds rounds per housekeeping round at most (each handles up to store.booking.EXPIRE_BATCH).
EXPIRE_ROUNDS_MAX = 20
BOOTSTRAP_REQUEST_ID = "bootstrap-admin"
BOOTSTRAP_CLIENT_ID = "railraft-bootstrap"


@dataclass(frozen=True, slots=True)
class HousekeepingSettings:
    """What the leader's background loop does and how often (see the module docstring)."""

    interval_s: float = 1.0
    expiry_lookahead_ms: int = 0
    admin_user: str = "admin"
    admin_password: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HousekeepingSettings:
        """Settings from RAILRAFT_* environment variables (bad numbers fall back to the defaults)."""
        env = os.environ if env is None else env

        def number(name: str, default: int) -> int:
            try:
                return max(0, int(env.get(name, "") or default))
            except ValueError:
                log.warning("ignoring %s=%r: not a number", name, env.get(name))
                return default

        return cls(
            interval_s=max(number("RAILRAFT_HOUSEKEEPING_INTERVAL_MS", 1000), 10) / 1000,
            expiry_lookahead_ms=number("RAILRAFT_TEST_EXPIRY_LOOKAHEAD_MS", 0),
            admin_user=env.get("RAILRAFT_ADMIN_USER", "") or "admin",
            admin_password=env.get("RAILRAFT_ADMIN_PASSWORD", ""),
        )


class Housekeeper:
    """The leader-only loop of one node.  `await nursery.start(housekeeper.run)`."""

    def __init__(self, node: Node, provider: PaymentProvider, settings: HousekeepingSettings) -> None:
        self.node = node
        self.provider = provider
        self.s = settings
        self.client_id = f"housekeeping@node{node.id}"
        # Once an admin is known to exist there is nothing left to bootstrap (admins are never deleted, and
        # the last one cannot be demoted).
        self._admin_done = not settings.admin_password
        self.rounds = 0
        if settings.admin_password:
            try:
                rules.validate_username(settings.admin_user)
                rules.validate_password(settings.admin_password)
            except ValueError as e:
                log.error("node %d: not creating the first admin from the environment: %s", node.id, e)
                self._admin_done = True

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Every interval: if this node leads, do one round.  Runs until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self.s.interval_s)
            if self.node.stopping or not self.node.is_leader():
                continue
            try:
                await self.round()
            except (NotLeaderError, ProposalLost, NodeStopping, TimeoutError) as e:
                # Leadership moved or the cluster is slow: the next leader (maybe us again) carries on.
                log.info("node %d: housekeeping round interrupted: %s", self.node.id, e)
            except Exception:  # noqa: BLE001 - a bug here must not take the node down; it is logged loudly
                log.exception("node %d: housekeeping round failed", self.node.id)
                await trio.sleep(self.s.interval_s * 5)

    async def round(self) -> None:
        """One round of the leader's chores."""
        self.rounds += 1
        # Our database must hold everything committed before we decide from it (a new leader may still be
        # applying its predecessor's entries).
        await self.node.read_barrier(False, BARRIER_TIMEOUT_S)
        if not self._admin_done:
            await self._bootstrap_admin()
        await self._expire_holds()
        await self._settle_refunds()

    async def _propose(self, cmd: Any) -> Any:
        result, _index = await self.node.propose(encode_command(cmd), PROPOSE_TIMEOUT_S)
        return result

    async def _bootstrap_admin(self) -> None:
        if await self.node.db.read(queries.admin_exists):
            self._admin_done = True
            return
        pw_hash = await password_work(auth.hash_password, self.s.admin_password)
        cmd = BootstrapAdmin(request_id=BOOTSTRAP_REQUEST_ID, client_id=BOOTSTRAP_CLIENT_ID, ts_ms=now_ms(),
                             username=self.s.admin_user, password_hash=pw_hash)
        res = await self._propose(cmd)
        if res.ok:
            log.info("node %d: created the first administrator %r", self.node.id, self.s.admin_user)
        else:
            log.warning("node %d: first administrator not created: %s", self.node.id, res.message)
        self._admin_done = True

    async def _expire_holds(self) -> None:
        for _ in range(EXPIRE_ROUNDS_MAX):
            now = now_ms() + self.s.expiry_lookahead_ms
            due = await self.node.db.read(bq.next_hold_expiry)
            if due is None or due > now:
                return
            # No request id: expiring is idempotent, and a retry must not get an old answer back.
            cmd = ExpireHolds(request_id="", client_id=self.client_id, ts_ms=now, now_ms=now)
            res = await self._propose(cmd)
            if not res.ok:
                log.error("node %d: ExpireHolds failed: %s", self.node.id, res.message)
                return
            if res.data.get("expired") or res.data.get("waitlist_refunded"):
                log.info("node %d: %s", self.node.id, res.message)
            if not res.data.get("more"):
                return

    async def _settle_refunds(self) -> None:
        pending = await self.node.db.read(bq.pending_refunds, REFUND_BATCH)
        settlements = []
        for r in pending:
            out = await trio.to_thread.run_sync(functools.partial(
                self.provider.refund, idempotency_key=f"refund:{r.refund_id}", provider_ref=r.payment_ref,
                amount_paise=r.amount_paise,
            ))
            if out.ok:
                settlements.append(RefundSettlement(refund_id=r.refund_id, provider_ref=out.provider_ref))
            else:
                log.warning("node %d: refund %d of PNR %s not paid out: %s", self.node.id, r.refund_id, r.pnr,
                            out.message)
        if settlements:
            res = await self._propose(SettleRefunds(request_id="", client_id=self.client_id, ts_ms=now_ms(),
                                                    settlements=tuple(settlements)))
            log.info("node %d: %s", self.node.id, res.message)
