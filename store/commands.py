"""Typed commands of the replicated state machine, their results, and their byte encodings.

A command is what a node proposes to Raft; its bytes are the payload of a NORMAL log entry, and every replica
decodes and applies the same bytes.  So a command carries everything its effect depends on: the proposing
node stamps `ts_ms` (its clock), and new random values (session tokens) travel only as their hashes.  The
apply (store.state_machine) never reads a clock, a random source, or anything else outside the command and the
database.

Encoding: compact JSON with sorted keys, the type under `"t"` and the dataclass fields by name, e.g.::

    {"client_id":"c1","password_hash":"scrypt$...","request_id":"r1","role":"CUSTOMER","t":"register_user",
     "ts_ms":1700000000000,"username":"bob"}

Field types are int, str, bool, a `Record` (a nested frozen dataclass such as `PassengerSpec`, encoded as a
JSON object by field name) or a tuple of one of those (a JSON list).  Booking commands carry the caller's
session as `token_sha256`; the apply resolves it (store.booking).

`decode_command` is strict (unknown type, missing or extra field -- also inside nested records --, wrong JSON
type -> `CommandDecodeError`), because the log is forever: a lenient decoder would make the meaning of old
entries depend on decoder details.

A `Result` is what the apply returns to the proposer (and what is stored for exactly-once retries); its `code`
is a gRPC status name so the gateway can map it directly.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Union

# --------------------------------------------------------------------------------------------- result codes

OK = "OK"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
ALREADY_EXISTS = "ALREADY_EXISTS"
NOT_FOUND = "NOT_FOUND"
UNAUTHENTICATED = "UNAUTHENTICATED"
PERMISSION_DENIED = "PERMISSION_DENIED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
# An unexpected exception inside a command handler (a bug).  Deterministic across replicas because every
# replica runs the same code on the same data; the command's changes are rolled back.
INTERNAL = "INTERNAL"

CODES = frozenset(
    {OK, INVALID_ARGUMENT, ALREADY_EXISTS, NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, FAILED_PRECONDITION,
     INTERNAL}
)

# SQLite stores 64-bit signed integers; a bigger JSON int would fail only at insert time, so refuse it early.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)


def _dumps(obj: Any) -> bytes:
    """Compact, key-sorted JSON: the same value always gives the same bytes."""
    return _ENCODER.encode(obj).encode()


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of applying one command.

    `ok` is True exactly when `code` is "OK".  `message` is a human sentence (shown to users on errors);
    `data` holds command-specific values (e.g. {"user_id": 7}) and must be JSON-serialisable.
    """

    ok: bool
    code: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown result code {self.code!r}")
        if self.ok != (self.code == OK):
            raise ValueError(f"result ok={self.ok} does not match code {self.code}")

    @classmethod
    def success(cls, data: dict[str, Any] | None = None, message: str = "") -> Result:
        """An OK result."""
        return cls(True, OK, message, dict(data or {}))

    @classmethod
    def error(cls, code: str, message: str, data: dict[str, Any] | None = None) -> Result:
        """A failed result with a non-OK `code`."""
        return cls(False, code, message, dict(data or {}))


def encode_result(result: Result) -> bytes:
    """Deterministic bytes for `result` (stored in client_requests, so replicas must agree byte for byte)."""
    return _dumps({"ok": result.ok, "code": result.code, "message": result.message, "data": result.data})


def decode_result(data: bytes) -> Result:
    """Inverse of `encode_result`; ValueError on malformed input."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed result: {e}") from None
    if not isinstance(obj, dict) or set(obj) != {"ok", "code", "message", "data"}:
        raise ValueError("malformed result: expected an object with ok, code, message, data")
    if not isinstance(obj["ok"], bool) or not isinstance(obj["code"], str) or not isinstance(obj["message"], str) \
            or not isinstance(obj["data"], dict):
        raise ValueError("malformed result: wrong field types")
    return Result(obj["ok"], obj["code"], obj["message"], obj["data"])


# -------------------------------------------------------------------------------------------------- commands


class CommandDecodeError(ValueError):
    """The bytes are not a valid command (unknown type, missing/extra field, wrong type, bad JSON)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandBase:
    """Fields every command carries.

    request_id: chosen by the client, unique per client_id; a retry reuses it (exactly-once).
    client_id:  identifies the client (or node, for internal commands) that issued the request.
    ts_ms:      wall-clock milliseconds stamped by the proposing node; the only time the apply ever sees.
    """

    TYPE: ClassVar[str] = ""

    request_id: str
    client_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterUser(CommandBase):
    """Create a user.  The proposer hashes the password and decides the role (public Register: CUSTOMER)."""

    TYPE: ClassVar[str] = "register_user"

    username: str
    password_hash: str
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSession(CommandBase):
    """A login: the proposer verified the password and made a random token; only its SHA-256 is replicated.

    `proof` is store.auth.session_proof (an HMAC keyed with the user's stored password hash) over the other
    fields: the leader refuses a CreateSession forwarded over NodeService.Propose without a valid one, so
    only a holder of the replicated database (a node) can make one.  The apply itself ignores it.
    """

    TYPE: ClassVar[str] = "create_session"

    user_id: int
    token_sha256: str
    expires_at_ms: int
    proof: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeSession(CommandBase):
    """A logout.  Revoking an unknown or already revoked token is NOT_FOUND and changes nothing."""

    TYPE: ClassVar[str] = "revoke_session"

    token_sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetMember(CommandBase):
    """Add or update a node in the replicated address book (so a node added at runtime is reachable)."""

    TYPE: ClassVar[str] = "set_member"

    node_id: int
    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveMember(CommandBase):
    """Remove a node from the replicated address book (NOT_FOUND if it is not there)."""

    TYPE: ClassVar[str] = "remove_member"

    node_id: int


# --------------------------------------------------------------------------------------- nested records


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """A value nested inside a command (a stop, a coach, a passenger): encoded as a JSON object, strictly."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StopSpec(Record):
    """One stop of a route: minutes after the origin's departure, and cumulative kilometres from the origin."""

    station_code: str
    arrive_min: int
    depart_min: int
    km: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CoachSpec(Record):
    """One coach of a train.  `berths` is the berth pattern seat n follows cyclically; () = the class default."""

    label: str
    travel_class: str
    seats: int
    berths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassPrice(Record):
    """A fixed price per seat for a class on the runs being scheduled (instead of the distance tariff)."""

    travel_class: str
    price_paise: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassSeats(Record):
    """AddTrainService: this many seats of the class, at this price per seat (0 = the distance tariff)."""

    travel_class: str
    seats: int
    price_paise: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PassengerSpec(Record):
    """A passenger of a booking.  `berth_pref` "" = no preference; `seat` "" = any, else e.g. "B1-23"."""

    name: str
    age: int
    berth_pref: str = ""
    seat: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundSettlement(Record):
    """A refund the payment provider has paid out, with the provider's reference for it."""

    refund_id: int
    provider_ref: str


# ---------------------------------------------------------------------------------- booking commands
#
# `token_sha256` is the caller's session (the SHA-256 of their bearer token).  Apply resolves it to the user
# and role at the command's ts_ms: unknown, revoked or expired -> UNAUTHENTICATED; admin-only commands from a
# customer -> PERMISSION_DENIED.  The gateway checks the same first, so this is the backstop.


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapAdmin(CommandBase):
    """Create the first administrator.  Refused (FAILED_PRECONDITION) once any ADMIN exists."""

    TYPE: ClassVar[str] = "bootstrap_admin"

    username: str
    password_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetUserRole(CommandBase):
    """Admin: make a user ADMIN or CUSTOMER (the last admin cannot be demoted)."""

    TYPE: ClassVar[str] = "set_user_role"

    token_sha256: str
    username: str
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateStation(CommandBase):
    """Admin: a new station; `code` is unique (e.g. NDLS)."""

    TYPE: ClassVar[str] = "create_station"

    token_sha256: str
    code: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddTrain(CommandBase):
    """Admin: a train with its route and default coach composition.  `depart_time` "HH:MM" IST at the origin."""

    TYPE: ClassVar[str] = "add_train"

    token_sha256: str
    number: int
    name: str
    train_type: str
    depart_time: str
    stops: tuple[StopSpec, ...]
    coaches: tuple[CoachSpec, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRuns(CommandBase):
    """Admin: a run of the train on every date first_date..last_date (dates that already have one are skipped).

    Each run gets a copy of the train's coaches; `prices` optionally fixes a price per seat for some classes.
    """

    TYPE: ClassVar[str] = "schedule_runs"

    token_sha256: str
    train_number: int
    first_date: str
    last_date: str
    prices: tuple[ClassPrice, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AddTrainService(CommandBase):
    """Admin (the original API's AddTrainService): one run with explicit times and N seats per class.

    `departure`/`arrival` are IST "YYYY-MM-DD HH:MM[:SS]" at the route's first and last stop (`arrival` ""
    = as the timetable says).  Coaches are generated to hold exactly the seats asked for.
    """

    TYPE: ClassVar[str] = "add_train_service"

    token_sha256: str
    train_number: int
    departure: str
    arrival: str
    seats: tuple[ClassSeats, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRun(CommandBase):
    """Admin: cancel a run; every live booking on it becomes REFUNDED with its payment refunded in full."""

    TYPE: ClassVar[str] = "cancel_run"

    token_sha256: str
    run_id: int
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldSeats(CommandBase):
    """Customer: hold seats (or, with accept_waitlist, join the waitlist) for 1-6 passengers.

    `pnr` is a fresh random candidate from the proposer (store.payments.new_pnr); if it is taken, apply
    deterministically moves on to the next free one, so the command never fails for that reason.
    """

    TYPE: ClassVar[str] = "hold_seats"

    token_sha256: str
    pnr: str
    run_id: int
    travel_class: str
    from_code: str
    to_code: str
    passengers: tuple[PassengerSpec, ...]
    accept_waitlist: bool = False
    hold_seconds: int = 600


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmPayment(CommandBase):
    """Customer: the outcome of charging the booking's amount due (the proposer talked to the provider first)."""

    TYPE: ClassVar[str] = "confirm_payment"

    token_sha256: str
    pnr: str
    amount_paise: int
    provider_ref: str
    approved: bool
    decline_reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelBooking(CommandBase):
    """Owner or admin: cancel a booking, or only the passengers numbered in `passenger_nos` (1-based)."""

    TYPE: ClassVar[str] = "cancel_booking"

    token_sha256: str
    pnr: str
    passenger_nos: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireHolds(CommandBase):
    """Leader, periodically: unpaid holds with hold_expires_ms <= now_ms expire and release their seats; paid
    waitlisted bookings whose train has left the boarding station are refunded.  `now_ms` <= `ts_ms`."""

    TYPE: ClassVar[str] = "expire_holds"

    now_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleRefunds(CommandBase):
    """Leader: the provider has paid these refunds out (see store.booking_queries.pending_refunds)."""

    TYPE: ClassVar[str] = "settle_refunds"

    settlements: tuple[RefundSettlement, ...]


Command = Union[
    RegisterUser, CreateSession, RevokeSession, SetMember, RemoveMember, BootstrapAdmin, SetUserRole,
    CreateStation, AddTrain, ScheduleRuns, AddTrainService, CancelRun, HoldSeats, ConfirmPayment, CancelBooking,
    ExpireHolds, SettleRefunds,
]

# type tag -> class.  New commands are added here; a tag, once used in a log, must never change meaning.
COMMAND_TYPES: dict[str, type[CommandBase]] = {
    cls.TYPE: cls
    for cls in (
        RegisterUser, CreateSession, RevokeSession, SetMember, RemoveMember, BootstrapAdmin, SetUserRole,
        CreateStation, AddTrain, ScheduleRuns, AddTrainService, CancelRun, HoldSeats, ConfirmPayment,
        CancelBooking, ExpireHolds, SettleRefunds,
    )
}
RECORD_TYPES: tuple[type[Record], ...] = (StopSpec, CoachSpec, ClassPrice, ClassSeats, PassengerSpec, RefundSettlement)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


# class -> {field name: type}; a field type is int, str, bool, a Record, or tuple[<one of those>, ...].
_FIELD_TYPES: dict[type, dict[str, Any]] = {
    cls: _field_types(cls) for cls in (*COMMAND_TYPES.values(), *RECORD_TYPES)
}

# A list inside a command longer than this is garbage (no rule allows more than a few hundred items).
MAX_LIST_ITEMS = 1000


def _convert(where: str, value: Any, typ: Any, decoding: bool) -> Any:
    """Check `value` against `typ`; when decoding, turn JSON lists into tuples and objects into Records.

    Encoding (decoding=False) requires the Python forms (tuples, Record instances), so a command built with a
    list is caught at the proposer instead of being hashed or compared surprisingly later.
    """
    if typ is bool:
        if not isinstance(value, bool):
            raise CommandDecodeError(f"{where} must be true or false, got {type(value).__name__}")
        return value
    if typ is int:
        # bool is an int subclass in Python but not in JSON; refuse it so true != 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise CommandDecodeError(f"{where} must be an integer, got {type(value).__name__}")
        if not _INT_MIN <= value <= _INT_MAX:
            raise CommandDecodeError(f"{where} is out of the 64-bit integer range")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise CommandDecodeError(f"{where} must be a string, got {type(value).__name__}")
        if "\x00" in value:
            # SQLite's text functions stop at NUL; such strings would compare and dump surprisingly.
            raise CommandDecodeError(f"{where} must not contain NUL characters")
        return value
    if typing.get_origin(typ) is tuple:
        item_type = typing.get_args(typ)[0]
        if not isinstance(value, list if decoding else tuple):
            want = "a list" if decoding else "a tuple"
            raise CommandDecodeError(f"{where} must be {want}, got {type(value).__name__}")
        if len(value) > MAX_LIST_ITEMS:
            raise CommandDecodeError(f"{where} has more than {MAX_LIST_ITEMS} items")
        return tuple(_convert(f"{where}[{i}]", v, item_type, decoding) for i, v in enumerate(value))
    if isinstance(typ, type) and issubclass(typ, Record):
        types = _FIELD_TYPES[typ]
        if decoding:
            if not isinstance(value, dict):
                raise CommandDecodeError(f"{where} must be an object, got {type(value).__name__}")
            _check_keys(where, set(value), types)
            return typ(**{name: _convert(f"{where}.{name}", value[name], t, True) for name, t in types.items()})
        if type(value) is not typ:
            raise CommandDecodeError(f"{where} must be a {typ.__name__}, got {type(value).__name__}")
        for name, t in types.items():
            _convert(f"{where}.{name}", getattr(value, name), t, False)
        return value
    raise TypeError(f"unsupported field type {typ!r} at {where}")  # pragma: no cover - a new command's bug


def _check_keys(where: str, keys: set[str], types: dict[str, Any]) -> None:
    missing = sorted(set(types) - keys)
    extra = sorted(keys - set(types))
    if missing:
        raise CommandDecodeError(f"{where} is missing field(s): {', '.join(missing)}")
    if extra:
        raise CommandDecodeError(f"{where} has unknown field(s): {', '.join(extra)}")


def _check_command(cmd: CommandBase) -> bool:
    """Raise CommandDecodeError if `cmd` cannot be encoded; True if the strict fast path vouched for it."""
    if type(cmd) not in _COMMAND_CLASSES:
        raise CommandDecodeError(f"not a command: {type(cmd).__name__}")
    try:
        _FAST_CHECK[type(cmd)](cmd)
        return True
    except _Slow:
        pass  # the general path below words the error (or accepts what the fast path would not vouch for)
    for name, typ in _FIELD_TYPES[type(cmd)].items():
        _convert(f"{type(cmd).__name__}.{name}", getattr(cmd, name), typ, False)
    return False


_COMMAND_CLASSES = frozenset(COMMAND_TYPES.values())


# ------------------------------------------------------------------------------------- compiled fast paths
#
# Every replica decodes every entry, and the leader encodes every command, so the general `_convert` (which
# builds a "where" string per field for its error messages) is too slow for the hot path.  Per class, the
# functions below check and convert in one pass; they raise `_Slow` for anything they do not vouch for, and
# then the general path decides and words the error -- the fast path is stricter, never more lenient, so both
# paths accept and produce exactly the same commands (tests/test_store_commands.py compares them).


class _Slow(Exception):
    """A value the fast path does not vouch for: the general path decides."""


def _fast(typ: Any, decoding: bool) -> Any:
    """A function checking (and, when decoding, converting) one value of `typ`; raises _Slow on doubt."""
    if typ is bool:
        def check_bool(v: Any) -> Any:
            if v is True or v is False:
                return v
            raise _Slow
        return check_bool
    if typ is int:
        def check_int(v: Any) -> Any:
            if type(v) is int and _INT_MIN <= v <= _INT_MAX:
                return v
            raise _Slow
        return check_int
    if typ is str:
        def check_str(v: Any) -> Any:
            if type(v) is str and "\x00" not in v:
                return v
            raise _Slow
        return check_str
    if typing.get_origin(typ) is tuple:
        item = _fast(typing.get_args(typ)[0], decoding)
        want = list if decoding else tuple

        def check_tuple(v: Any) -> Any:
            if type(v) is not want or len(v) > MAX_LIST_ITEMS:
                raise _Slow
            items = [item(x) for x in v]
            return tuple(items) if decoding else v
        return check_tuple
    if isinstance(typ, type) and issubclass(typ, Record):
        subs = [(name, _fast(t, decoding)) for name, t in _FIELD_TYPES[typ].items()]
        names = frozenset(n for n, _ in subs)
        if decoding:
            def decode_record(v: Any) -> Any:
                if type(v) is not dict or v.keys() != names:
                    raise _Slow
                return typ(**{n: f(v[n]) for n, f in subs})
            return decode_record

        def check_record(v: Any) -> Any:
            if type(v) is not typ:
                raise _Slow
            for n, f in subs:
                f(getattr(v, n))
            return v
        return check_record
    raise TypeError(f"unsupported field type {typ!r}")  # pragma: no cover - a new command's bug


def _json_form(typ: Any) -> Any:
    """A function giving the JSON form of a (checked) value of `typ`, or None where that is the value itself."""
    if typing.get_origin(typ) is tuple:
        item = _json_form(typing.get_args(typ)[0])
        return list if item is None else (lambda v: [item(x) for x in v])
    if isinstance(typ, type) and issubclass(typ, Record):
        subs = [(name, _json_form(t)) for name, t in _FIELD_TYPES[typ].items()]
        return lambda v: {n: getattr(v, n) if f is None else f(getattr(v, n)) for n, f in subs}
    return None


def _fast_command(cls: type, decoding: bool) -> Any:
    subs = [(name, _fast(t, decoding)) for name, t in _FIELD_TYPES[cls].items()]
    if decoding:
        names = frozenset(n for n, _ in subs)

        def decode(obj: dict[str, Any]) -> Any:
            if obj.keys() != names:
                raise _Slow
            return cls(**{n: f(obj[n]) for n, f in subs})
        return decode

    def check(cmd: Any) -> None:
        for n, f in subs:
            f(getattr(cmd, n))
    return check


_FAST_DECODE = {cls: _fast_command(cls, True) for cls in _COMMAND_CLASSES}
_FAST_CHECK = {cls: _fast_command(cls, False) for cls in _COMMAND_CLASSES}
_JSON_FIELDS = {cls: [(name, _json_form(t)) for name, t in _FIELD_TYPES[cls].items()] for cls in _COMMAND_CLASSES}


# Commands this process encoded lately, by their bytes.  The node that proposes a command applies it too, and
# decoding it there again (a JSON parse and a check of every field) was a few percent of a busy leader's CPU.
# Only commands the strict fast check vouched for go in: every field of exactly its declared type (int, str
# without NUL, bool, tuple, record), whose JSON decodes to an equal command -- so a hit gives what decoding
# would.  A hit is removed; the rest (commands proposed but never applied here) go when the map is full.
_ENCODED: dict[bytes, Any] = {}
_ENCODED_MAX = 4096


def encode_command(cmd: CommandBase) -> bytes:
    """The log-entry payload for `cmd`: compact, key-sorted JSON with its type tag under "t".

    Raises CommandDecodeError if a field has the wrong type, so a malformed command is caught at the
    proposer rather than stored in the log.
    """
    exact = _check_command(cmd)
    obj: dict[str, Any] = {n: getattr(cmd, n) if f is None else f(getattr(cmd, n)) for n, f in _JSON_FIELDS[type(cmd)]}
    obj["t"] = cmd.TYPE
    data = _dumps(obj)
    if exact:
        if len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.clear()
        _ENCODED[data] = cmd
    return data


def forget_encoded() -> None:
    """Empty the map of recently encoded commands (tests compare decoding with and without it)."""
    _ENCODED.clear()


def decode_command(data: bytes) -> Command:
    """Inverse of `encode_command`; CommandDecodeError (a ValueError) with a clear message on bad input."""
    if type(data) is bytes:
        cmd = _ENCODED.pop(data, None)
        if cmd is not None:
            return cmd  # type: ignore[no-any-return]
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CommandDecodeError(f"command is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CommandDecodeError("command must be a JSON object")
    tag = obj.pop("t", None)
    if not isinstance(tag, str):
        raise CommandDecodeError('command has no type field "t"')
    cls = COMMAND_TYPES.get(tag)
    if cls is None:
        raise CommandDecodeError(f"unknown command type {tag!r}")
    try:
        return _FAST_DECODE[cls](obj)  # type: ignore[no-any-return]
    except _Slow:
        pass
    return _decode_general(cls, obj)


def _decode_general(cls: type, obj: dict[str, Any]) -> Command:
    """The decoding of `obj` (a command's JSON without its tag) as `cls` by the general, commented rules."""
    types = _FIELD_TYPES[cls]
    _check_keys(cls.__name__, set(obj), types)
    values = {name: _convert(f"{cls.__name__}.{name}", obj[name], typ, True) for name, typ in types.items()}
    return cls(**values)  # type: ignore[return-value]
