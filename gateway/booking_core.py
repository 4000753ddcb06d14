"""What both client APIs (railraft.v1.Booking and the old train_booking.Ticketing) need from a node to serve
the booking domain: sessions, reads at a chosen consistency, proposing commands, the payment flow.

Both services are thin: they turn a request into a store command (stamped here with the time, a fresh PNR
candidate, the caller's session hash), run `store.rules.precheck` so bad input never reaches the log, propose
it through `Submitter` (exactly-once, from any node) and turn the `Result` back into a reply.  This module is
the part they share, so the two APIs cannot drift apart in meaning.

Exactly-once keys.  The state machine deduplicates on (client_id, request_id).  The client id must be the
same on every node -- a retry after a failover lands on another node -- and must separate callers, so one
user cannot collide with (or read) another's results: authenticated writes use ``user:<id>`` (from the
server's session lookup, never from the client), Register uses ``register:<username>``, Logout
``session:<token hash prefix>``.  Leader-internal commands (ExpireHolds, SettleRefunds) use no request id.

Logins.  `authenticate` is the one password check of both APIs: it asks the node's LoginThrottle first
(gateway.throttle: too many failures for the account or from the client's address -> RESOURCE_EXHAUSTED,
without looking at the password), spends the same scrypt work on an unknown name as on a wrong password, and
reports the outcome back to the throttle.  `open_session` stamps the CreateSession with its session proof
(store.auth), which the leader checks when a follower forwards it.

Sessions.  A write looks the session up in this node's database first and only falls back to a linearizable
read when it is missing (a session created a moment ago on another node); the apply re-checks the session at
the command's own timestamp, so a revocation racing with the write still wins.  A read checks the session
in the same view as the data it reads.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from grpclib import GRPCError
from grpclib.const import Status

from actors.node import Node
from store import auth, queries, rules
from store import booking_queries as bq
from store.commands import (
    AddTrain,
    AddTrainService,
    BootstrapAdmin,
    CancelBooking,
    CancelRun,
    CommandBase,
    CommandDecodeError,
    ConfirmPayment,
    CreateSession,
    CreateStation,
    ExpireHolds,
    HoldSeats,
    RegisterUser,
    RemoveMember,
    Result,
    RevokeSession,
    ScheduleRuns,
    SetMember,
    SetUserRole,
    SettleRefunds,
    decode_command,
    decode_result,
    encode_command,
)
from store.payments import PaymentProvider, SimulatedProvider

from .rpc import LoopTurnBatch, peer_host, trio_call
from .submit import Submitter
from .throttle import LoginThrottle

# scrypt (store.auth) allocates SCRYPT_N * SCRYPT_R * 128 bytes (16 MiB) per hash.  Unbounded, a burst of
# registrations or logins would run one per worker thread at once -- 8 at once took a node from 50 to 195 MB,
# and glibc keeps such freed blocks -- so password work takes turns, PASSWORD_WORKERS at a time (per run).
PASSWORD_WORKERS = 2
PRECHECK_CACHE_S = 2.0  # how long session_and keeps a live session and a good answer (see _precheck_hit)
PRECHECK_CACHE_MAX = 20_000
_password_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("password_limiter")


async def password_work(fn: Callable[..., Any], *args: Any) -> Any:
    """Run the scrypt function `fn(*args)` on a worker thread, at most PASSWORD_WORKERS at a time.

    Callable from Trio and, through trio_call, from the asyncio side of the gateway."""
    try:
        limiter = _password_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(PASSWORD_WORKERS)
        _password_limiter.set(limiter)
    return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

# Result codes (store.commands) -> gRPC statuses.  The names match on purpose.
STATUS_OF_CODE: dict[str, Status] = {
    "INVALID_ARGUMENT": Status.INVALID_ARGUMENT,
    "ALREADY_EXISTS": Status.ALREADY_EXISTS,
    "NOT_FOUND": Status.NOT_FOUND,
    "UNAUTHENTICATED": Status.UNAUTHENTICATED,
    "PERMISSION_DENIED": Status.PERMISSION_DENIED,
    "FAILED_PRECONDITION": Status.FAILED_PRECONDITION,
    "INTERNAL": Status.INTERNAL,
}

# Read consistency levels (the numbers of railraft.v1.Consistency).
LINEARIZABLE = 0
LEASE = 1
STALE = 2

READ_TIMEOUT_S = 5.0
REQUEST_ID_MAX = 64
TOKEN_MAX = 512
SESSION_TTL_MS = 24 * 3600 * 1000
CARD_DIGITS = 16


def now_ms() -> int:
    """Wall-clock milliseconds, stamped into commands by the proposing node."""
    return int(time.time() * 1000)


def new_request_id() -> str:
    """A fresh request id for a call whose client sent none (no retry can then be recognised)."""
    return uuid.uuid4().hex


def grpc_error(code: str | Status, message: str) -> GRPCError:
    """A GRPCError for a store result code (or a Status) with a human message."""
    status = code if isinstance(code, Status) else STATUS_OF_CODE.get(code, Status.UNKNOWN)
    return GRPCError(status, message)


def invalid(message: str) -> GRPCError:
    """INVALID_ARGUMENT: bad input, rejected before anything was proposed."""
    return GRPCError(Status.INVALID_ARGUMENT, message)


def raise_for(result: Result) -> Result:
    """Return `result` if it is OK, else raise the matching GRPCError with its message."""
    if not result.ok:
        raise grpc_error(result.code, result.message or result.code.replace("_", " ").lower())
    return result


def check_request_id(request_id: str) -> str:
    """The client's request id (validated), or a fresh one if it sent none."""
    if not request_id:
        return new_request_id()
    if len(request_id) > REQUEST_ID_MAX or not request_id.isprintable():
        raise invalid(f"request_id must be at most {REQUEST_ID_MAX} printable characters")
    return request_id


def check_text(value: str, what: str, max_len: int) -> str:
    """A free-text argument of a read (prefix, passenger name): bounded and printable."""
    if len(value) > max_len or not value.isprintable():
        raise invalid(f"{what} must be at most {max_len} printable characters")
    return value


def station_code(value: str, what: str = "station") -> str:
    """A station code as a user may type it ('ndls ') -> 'NDLS'; INVALID_ARGUMENT if malformed."""
    code = value.strip().upper()
    try:
        return rules.validate_station_code(code)
    except ValueError:
        raise invalid(f"{what} must be a station code like NDLS (got {value[:20]!r})") from None


def pnr_of(value: str) -> str:
    """A PNR as typed ('k7m2-9xq4 ab') -> normalized; INVALID_ARGUMENT if it cannot be one."""
    if len(value) > 40:
        raise invalid("a PNR is 10 characters")
    try:
        return rules.validate_pnr(rules.normalize_pnr(value))
    except ValueError as e:
        raise invalid(str(e)) from None


def precheck(cmd: CommandBase) -> bytes:
    """Run the store's input rules on `cmd` and encode it; INVALID_ARGUMENT (nothing proposed) if they fail."""
    try:
        rules.precheck(cmd)
        return encode_command(cmd)
    except (ValueError, CommandDecodeError) as e:  # CommandDecodeError: e.g. a NUL character in a string
        raise invalid(str(e)) from None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller, as the server's session table says (never as the client claims)."""

    user_id: int
    username: str
    role: str
    token_sha256: str
    expires_at_ms: int

    @staticmethod
    def of(info: Any, token_sha256: str) -> Caller:
        """The caller behind a live session row (queries.session) whose token hashes to `token_sha256`."""
        return Caller(info.user_id, info.username, info.role, token_sha256, info.expires_at_ms)

    @property
    def client_id(self) -> str:
        """The exactly-once key space of this user (the same on every node)."""
        return f"user:{self.user_id}"

    @property
    def is_admin(self) -> bool:
        return self.role == rules.ROLE_ADMIN


class BookingCore:
    """Per-node helpers shared by the Booking and the Ticketing services (all asyncio coroutines)."""

    def __init__(self, node: Node, submitter: Submitter, provider: PaymentProvider | None = None,
                 throttle: LoginThrottle | None = None) -> None:
        self.node = node
        self.submitter = submitter
        self.provider: PaymentProvider = provider if provider is not None else SimulatedProvider()
        self.throttle = throttle if throttle is not None else LoginThrottle()
        # session_and's recent answers: token digest -> (until, session), (fn, args) -> (until, value)
        self._prechecked: dict[Any, tuple[float, Any]] = {}
        # lease? -> the read barrier calls of this turn of the event loop (see barrier)
        self._barriers = {lease: LoopTurnBatch(functools.partial(self._barrier_round, lease))
                          for lease in (False, True)}

    # ---------------------------------------------------------------------------------------- reads
    async def barrier(self, consistency: int = LINEARIZABLE) -> None:
        """Make this node's database at least as fresh as `consistency` asks (STALE: nothing to do).

        Node.read_barrier asks again by itself if its request was dropped for want of a leader."""
        if consistency == STALE:
            return
        # Readers of one turn of the event loop share one call into the node: it starts after every one of
        # them asked (on the next turn), so its read index covers every write acknowledged before each call.
        await self._barriers[consistency == LEASE](None)

    async def _barrier_round(self, lease: bool, readers: list[None]) -> list[int]:
        index = await trio_call(self.node.read_barrier, lease, READ_TIMEOUT_S)
        return [index] * len(readers)

    async def local(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(conn, *args)` on this node's database as it is now."""
        return await self.node.db.aio_read(fn, *args)

    async def read(self, consistency: int, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(conn, *args)` at `consistency`.  A NotFound from a LEASE or STALE read is confirmed with a
        linearizable one before it is believed (a lagging replica must not deny what exists)."""
        await self.barrier(consistency)
        try:
            return await self.local(fn, *args)
        except bq.NotFound:
            if consistency == LINEARIZABLE:
                raise
        await self.barrier(LINEARIZABLE)
        return await self.local(fn, *args)

    # ------------------------------------------------------------------------------------- sessions
    async def session(self, token: str, consistency: int = STALE, *, admin: bool = False) -> Caller:
        """The caller behind `token`, looked up at `consistency` (a miss is confirmed linearizably).

        UNAUTHENTICATED for no, unknown, expired or revoked tokens; PERMISSION_DENIED if `admin` and the
        user is not an administrator.  Pass the consistency of the read that follows, so the session is
        checked in the same view as the data.
        """
        if not token:
            raise GRPCError(Status.UNAUTHENTICATED, "please log in first (no session token given)")
        if len(token) > TOKEN_MAX:
            raise GRPCError(Status.UNAUTHENTICATED, "not logged in (malformed session token)")
        digest = auth.token_hash(token)
        await self.barrier(consistency)
        info = await self.local(queries.session, digest)
        now = now_ms()
        if (info is None or not info.is_live(now)) and consistency != LINEARIZABLE:
            await self.barrier(LINEARIZABLE)
            info = await self.local(queries.session, digest)
        if info is None or not info.is_live(now):
            raise GRPCError(Status.UNAUTHENTICATED,
                            "not logged in (unknown, expired or revoked session); please log in")
        if admin and info.role != rules.ROLE_ADMIN:
            raise GRPCError(Status.PERMISSION_DENIED, "only an administrator may do this")
        return Caller.of(info, digest)

    async def session_and(self, token: str, fn: Callable[..., Any], *args: Any
                          ) -> tuple[Caller, Callable[[], Awaitable[Any]]]:
        """`session(token)`, and `read(STALE, fn, *args)` done in the SAME read of this node's database (one
        thread hop, not two).  Returns the caller and an async function giving what `fn` returned (or raising
        what it raised) -- so the caller can check its input between the two, in the usual order: session,
        then input, then what the database says.  A session or a NotFound this replica does not see yet is
        confirmed linearizably, as `session` and `read` do."""
        if not token or len(token) > TOKEN_MAX:
            await self.session(token)  # raises the usual UNAUTHENTICATED (and never hashes a huge token)
        digest = auth.token_hash(token)
        hit = self._precheck_hit(digest, (fn, args))
        if hit is not None:
            info, value = hit

            async def cached() -> Any:
                return value

            return Caller.of(info, digest), cached

        def both(conn: Any) -> tuple[Any, Any, BaseException | None]:
            info = queries.session(conn, digest)
            try:
                return info, fn(conn, *args), None
            except Exception as e:  # noqa: BLE001 - handed to the caller through `outcome`
                return info, None, e

        info, value, err = await self.local(both)

        async def again() -> Any:
            return await self.read(LINEARIZABLE, fn, *args)

        if info is None or not info.is_live(now_ms()):
            # No live session here: session() confirms it linearizably, or raises UNAUTHENTICATED.
            return await self.session(token), again

        if err is None:
            self._precheck_store(digest, info, (fn, args), value)

        async def outcome() -> Any:
            if isinstance(err, bq.NotFound):
                return await again()
            if err is not None:
                raise err
            return value

        return Caller.of(info, digest), outcome

    # session_and's answers are only the checks a write makes before it is proposed -- the apply checks the
    # session and the input again, and has the last word -- so a live session and a good answer are kept for
    # PRECHECK_CACHE_S and a client booking again skips the database read (one thread hop less per booking).
    # Failures are never kept: they are always read again.  A logout on this node forgets its session at once.
    def _precheck_hit(self, digest: str, key: tuple[Any, ...]) -> tuple[Any, Any] | None:
        now = time.monotonic()
        session = self._prechecked.get(digest)
        answer = self._prechecked.get(key)
        if session is None or answer is None or session[0] < now or answer[0] < now:
            return None
        info = session[1]
        if not info.is_live(now_ms()):
            return None
        return info, answer[1]

    def _precheck_store(self, digest: str, info: Any, key: tuple[Any, ...], value: Any) -> None:
        if len(self._prechecked) >= PRECHECK_CACHE_MAX:
            self._prechecked.clear()
        until = time.monotonic() + PRECHECK_CACHE_S
        self._prechecked[digest] = (until, info)
        self._prechecked[key] = (until, value)

    # ---------------------------------------------------------------------------------------- writes
    async def submit(self, cmd: CommandBase | bytes) -> Result:
        """Precheck and propose `cmd` (from any node, exactly once); its apply result, OK or not.  Bytes are
        what `precheck` returned for a command a handler checked early: not checked and encoded again."""
        return await self.submitter.submit(cmd if isinstance(cmd, bytes) else precheck(cmd))

    async def submit_at(self, cmd: CommandBase | bytes) -> tuple[Result, int]:
        """`submit`, also returning the log index it was applied at (for `read_after`)."""
        return await self.submitter.submit_at(cmd if isinstance(cmd, bytes) else precheck(cmd))

    async def read_after(self, index: int, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(conn, *args)` once this node has applied `index` (a write's own index: the read sees that write
        and everything before it, which is what a linearizable read right after the write would show, without
        a ReadIndex round).  Index 0 (unknown) falls back to a linearizable read."""
        if not index:
            return await self.read(LINEARIZABLE, fn, *args)
        if self.node.applied_index < index:  # usually applied already: then no hop into the node
            await trio_call(self.node.wait_applied, index, READ_TIMEOUT_S)
        return await self.local(fn, *args)

    async def submit_ok(self, cmd: CommandBase) -> Result:
        """`submit`, raising the matching GRPCError unless the apply succeeded."""
        return raise_for(await self.submit(cmd))

    # ------------------------------------------------------------------------------------- accounts
    # Shared by railraft.v1.Booking and train_booking.Ticketing; each maps the outcome to its own replies.
    async def register(self, username: str, password: str, request_id: str) -> Result:
        """Create a customer account (username and password already validated).

        Keyed by the case-folded name, so a retry on any node returns the first answer.  A result that
        someone else's request produced (same name and request id) comes back as ALREADY_EXISTS.
        """
        pw_hash = await trio_call(password_work, auth.hash_password, password)
        cmd = RegisterUser(request_id=request_id, client_id=f"register:{username.casefold()}", ts_ms=now_ms(),
                           username=username, password_hash=pw_hash, role=rules.ROLE_CUSTOMER)
        res = await self.submit(cmd)
        if res.ok and not await self.registered_here(int(res.data["user_id"]), pw_hash, password):
            return Result.error("ALREADY_EXISTS", f"username {username!r} is already taken")
        return res

    async def authenticate(self, username: str, password: str, address: str | None = None) -> queries.User | None:
        """The account if the password is right, else None -- the same answer (and the same scrypt work) for
        an unknown name as for a wrong password.

        RESOURCE_EXHAUSTED ("Too many failed login attempts; try again in N minutes") while the account or
        the client's address is throttled (gateway.throttle); `address` defaults to the calling peer's IP.
        """
        address = peer_host() if address is None else address
        blocked = self.throttle.check(username, address)
        if blocked is not None:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, blocked.message)
        if not username.strip() or len(username) > rules.USERNAME_MAX or len(password) > rules.PASSWORD_MAX \
                or not username.isprintable():
            self.throttle.failed(username, address, account_exists=False)
            return None
        user = await self.read(LINEARIZABLE, queries.user_by_name, username.strip())
        if user is None:
            await trio_call(password_work, auth.dummy_verify, password)
            self.throttle.failed(username, address, account_exists=False)
            return None
        ok = await trio_call(password_work, auth.verify_password, password, user.password_hash)
        if not ok:
            self.throttle.failed(username, address)
            return None
        self.throttle.succeeded(username, address)
        return user

    async def open_session(self, user_id: int, password_hash: str | None = None) -> tuple[str, int, Result]:
        """Mint a session token and replicate only its hash: (token, expires_at_ms, apply result).

        The caller has checked the password.  The command carries its session proof, keyed with the user's
        stored `password_hash` (read here if not given), so the leader accepts it when it is forwarded.
        No request id: the token is minted here, so a retried login just opens another session."""
        if password_hash is None:
            user = await self.read(STALE, queries.user_by_id, user_id)
            if user is None:
                user = await self.read(LINEARIZABLE, queries.user_by_id, user_id)
            password_hash = user.password_hash if user is not None else ""
        token, digest = auth.new_session_token()
        ts = now_ms()
        expires = ts + SESSION_TTL_MS
        cmd = CreateSession(request_id="", client_id=f"user:{user_id}", ts_ms=ts, user_id=user_id,
                            token_sha256=digest, expires_at_ms=expires,
                            proof=auth.session_proof(password_hash, user_id, digest, ts, expires))
        return token, expires, await self.submit(cmd)

    async def revoke_session(self, token: str, request_id: str) -> Result:
        """Log a session out (keyed by the session, so a retry anywhere returns the first answer)."""
        digest = auth.token_hash(token)
        self._prechecked.pop(digest, None)
        cmd = RevokeSession(request_id=request_id, client_id=f"session:{digest[:32]}", ts_ms=now_ms(),
                            token_sha256=digest)
        return await self.submit(cmd)

    async def registered_here(self, user_id: int, pw_hash: str, password: str) -> bool:
        """After a RegisterUser result for `user_id`: was the account created with THIS request's password?

        A Register retried with the same request id gets the first attempt's result back.  Its hash then
        differs from `pw_hash` (fresh salt), so the password is checked against the stored one: someone who
        reuses another person's (username, request id) must not be told the account is theirs -- or, in
        railraft.v1.Register, be handed a session for it.
        """
        user = await self.read(LINEARIZABLE, queries.user_by_id, user_id)
        if user is None:
            return False
        if user.password_hash == pw_hash:
            return True  # our own command created it: no second hash needed
        return await trio_call(password_work, auth.verify_password, password, user.password_hash)

    async def _provider(self, method: str, **kwargs: Any) -> Any:
        # A real provider does network I/O: keep it off the event loop.
        fn = functools.partial(getattr(self.provider, method), **kwargs)
        return await trio_call(trio.to_thread.run_sync, fn)

    async def pay(self, caller: Caller, request_id: str, pnr: str, card_number: str, *,
                  expected_amount_paise: int = 0, description: str = "") -> Result:
        """Charge the amount due on booking `pnr` and confirm it, exactly once per (caller, request_id).

        The flow of store.payments: a retry whose first attempt was applied gets that first result without
        touching the card again; otherwise quote (no card is charged for an expired, cancelled or paid
        booking), charge with the idempotency key "<client_id>:<request_id>" (so a retry that does reach the
        provider again is the same charge), propose ConfirmPayment with the same request id, and void the
        charge if the state machine refused it.  Returns the apply's Result (declines are FAILED_PRECONDITION).
        """
        card = card_number.replace(" ", "").replace("-", "")
        if len(card) != CARD_DIGITS or not card.isdigit():
            raise invalid(f"card number must be {CARD_DIGITS} digits")

        def look(conn: Any, now: int) -> tuple[bytes | None, bq.PaymentQuote | None]:
            # One view for both, so "already paid by THIS request" is told apart from "paid by another".
            return (queries.request_result(conn, caller.client_id, request_id, ConfirmPayment.TYPE),
                    bq.payment_quote(conn, pnr, caller.user_id, now))

        await self.barrier(LINEARIZABLE)
        try:
            prior, quote = await self.local(look, now_ms())
        except queries.RequestIdReused as e:
            raise invalid(str(e)) from None
        if prior is not None:
            return decode_result(prior)
        if quote is None:
            raise GRPCError(Status.NOT_FOUND, f"no booking {pnr} among your bookings")
        if not quote.payable:
            raise GRPCError(Status.FAILED_PRECONDITION, quote.reason)
        if expected_amount_paise and expected_amount_paise != quote.amount_paise:
            raise GRPCError(Status.FAILED_PRECONDITION,
                            f"the amount due on {pnr} is {quote.amount_paise} paise, not {expected_amount_paise};"
                            " nothing was charged")
        outcome = await self._provider(
            "charge", idempotency_key=f"{caller.client_id}:{request_id}", amount_paise=quote.amount_paise,
            card_number=card, description=description or f"PNR {pnr}",
        )
        cmd = ConfirmPayment(
            request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(), token_sha256=caller.token_sha256,
            pnr=pnr, amount_paise=quote.amount_paise, provider_ref=outcome.provider_ref, approved=outcome.approved,
            decline_reason=outcome.decline_reason[:200],
        )
        result = await self.submit(cmd)
        if not result.ok and result.data.get("void_charge") and outcome.approved:
            # The hold expired meanwhile, someone paid first, or the amount changed: give the money back.
            await self._provider("refund", idempotency_key=f"void:{outcome.provider_ref}",
                                 provider_ref=outcome.provider_ref, amount_paise=quote.amount_paise)
        return result


# ===================================================================================== forwarded commands
#
# NodeService.Propose is how a follower's gateway hands a write to the leader: raw command bytes.  Until the
# nodes authenticate each other (gateway.rpc.peer_authenticated, a TODO), anyone who can reach the port can
# call it, so the leader accepts only what a gateway forwards, in the shape a gateway builds it:
#
# * leader-internal kinds are refused: BootstrapAdmin (CreateAdmin runs on the leader), SetMember and
#   RemoveMember (AddNode/RemoveNode run on the leader), ExpireHolds and SettleRefunds (housekeeping);
# * RegisterUser only for role CUSTOMER, keyed "register:<casefolded name>";
# * CreateSession only with a valid session proof (store.auth: an HMAC keyed with the user's stored
#   password hash -- a stranger cannot log in as anyone), keyed "user:<id>", at most SESSION_TTL_MS long;
# * RevokeSession keyed "session:<hash prefix>" of its own token;
# * commands acting for a session (bookings, admin commands) keyed "user:<id of that session>", so nobody
#   can read or pre-empt another user's exactly-once results; the apply re-checks the session and role;
# * ConfirmPayment (whose charge outcome only the gateway that talked to the payment provider can vouch
#   for) only from an authenticated peer -- today every caller, see the TODO;
# * `ts_ms` within FORWARD_PAST_MS / FORWARD_FUTURE_MS of the leader's clock (the apply trusts it: holds,
#   session expiry and refund tiers depend on it), and the store's input rules (rules.precheck).
#
# What remains open until peer authentication: whoever knows a session's token HASH (not the token) can act
# for that session over Propose -- hashes never leave the nodes through any RPC, but they are in the database
# files and backups; and a forged ConfirmPayment could claim a charge that never happened.

FORWARD_PAST_MS = 120_000  # a follower's retries (Submitter: 10 s) and clock skew between nodes
FORWARD_FUTURE_MS = 60_000
FORWARD_MAX_BYTES = 1 << 20

LEADER_ONLY_COMMANDS: tuple[type[CommandBase], ...] = (BootstrapAdmin, SetMember, RemoveMember, ExpireHolds,
                                                       SettleRefunds)
SESSION_COMMANDS: tuple[type[CommandBase], ...] = (SetUserRole, CreateStation, AddTrain, ScheduleRuns,
                                                   AddTrainService, CancelRun, HoldSeats, ConfirmPayment,
                                                   CancelBooking)
PEER_ONLY_COMMANDS: tuple[type[CommandBase], ...] = (ConfirmPayment,)


def _denied(message: str) -> GRPCError:
    return GRPCError(Status.PERMISSION_DENIED, f"forwarded command refused: {message}")


async def check_forwarded(node: Node, data: bytes, *, peer_ok: bool, now: int | None = None) -> CommandBase:
    """The command in `data` if the leader may propose it for a caller of NodeService.Propose; else
    INVALID_ARGUMENT (not a valid command) or PERMISSION_DENIED / UNAUTHENTICATED (see above).

    `peer_ok`: the caller is an authenticated peer (gateway.rpc.peer_authenticated).
    """
    if len(data) > FORWARD_MAX_BYTES:
        raise invalid(f"a command is at most {FORWARD_MAX_BYTES} bytes")
    try:
        cmd = decode_command(bytes(data))
        rules.precheck(cmd)
    except (ValueError, RecursionError) as e:  # CommandDecodeError is a ValueError
        raise invalid(f"not a valid command: {e}") from None
    kind = type(cmd).__name__
    if isinstance(cmd, LEADER_ONLY_COMMANDS):
        raise _denied(f"{kind} is proposed by the leader itself, never forwarded")
    if isinstance(cmd, PEER_ONLY_COMMANDS) and not peer_ok:
        raise _denied(f"{kind} is accepted only from another node")
    now = now_ms() if now is None else now
    if not now - FORWARD_PAST_MS <= cmd.ts_ms <= now + FORWARD_FUTURE_MS:
        raise invalid(f"{kind}.ts_ms is {cmd.ts_ms - now:+d} ms off this node's clock")

    async def lookup(fn: Callable[..., Any], *args: Any) -> Any:
        # This node's view first (straight from asyncio, sharing a hop with the reads made together); a miss
        # is confirmed after a read barrier (a row committed a moment ago).
        got = await node.db.aio_read(fn, *args)
        if got is None:
            await trio_call(node.read_barrier, False, READ_TIMEOUT_S)
            got = await node.db.aio_read(fn, *args)
        return got

    if isinstance(cmd, RegisterUser):
        if cmd.role != rules.ROLE_CUSTOMER:
            raise _denied("a forwarded registration is for a customer account")
        if cmd.client_id != f"register:{cmd.username.casefold()}":
            raise _denied("a registration is keyed by its username")
    elif isinstance(cmd, CreateSession):
        if cmd.client_id != f"user:{cmd.user_id}":
            raise _denied("a session is keyed by its user")
        if cmd.expires_at_ms - cmd.ts_ms > SESSION_TTL_MS:
            raise _denied(f"a session lasts at most {SESSION_TTL_MS // 3_600_000} hours")
        user = await lookup(queries.user_by_id, cmd.user_id)
        if user is None or not auth.check_session_proof(user.password_hash, cmd.proof, cmd.user_id,
                                                        cmd.token_sha256, cmd.ts_ms, cmd.expires_at_ms):
            raise _denied("no valid proof that the password was checked")
    elif isinstance(cmd, RevokeSession):
        if cmd.client_id != f"session:{cmd.token_sha256[:32]}":
            raise _denied("a logout is keyed by its session")
    elif isinstance(cmd, SESSION_COMMANDS):
        info = await lookup(queries.session, cmd.token_sha256)  # type: ignore[attr-defined]
        if info is None:
            raise GRPCError(Status.UNAUTHENTICATED, "not logged in (unknown session)")
        if cmd.client_id != f"user:{info.user_id}":
            raise _denied("a command is keyed by the user of its session")
    else:  # a command kind added later: refuse until someone decides how it is forwarded
        raise _denied(f"{kind} is not forwarded by gateways")
    return cmd
