"""Typed commands of the replicated state machine, their results, and their byte encodings.

A command is what a node proposes to Raft; its bytes are the payload of a NORMAL log entry, and every replica
decodes and applies the same bytes.  So a command carries everything its effect depends on: the proposing
node stamps `ts_ms` (its clock), and new random values (session tokens) travel only as their hashes.  The
apply (store.state_machine) never reads a clock, a random source, or anything else outside the command and the
database.

Encoding: compact JSON with sorted keys, the type under `"t"` and the dataclass fields by name, e.g.::

    {"client_id":"c1","password_hash":"scrypt$...","request_id":"r1","role":"CUSTOMER","t":"register_user",
     "ts_ms":1700000000000,"username":"bob"}

`decode_command` is strict (unknown type, missing or extra field, wrong JSON type -> `CommandDecodeError`),
because the log is forever: a lenient decoder would make the meaning of old entries depend on decoder details.

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


def _dumps(obj: Any) -> bytes:
    """Compact, key-sorted JSON: the same value always gives the same bytes."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False).encode()


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
    """A login: the proposer verified the password and made a random token; only its SHA-256 is replicated."""

    TYPE: ClassVar[str] = "create_session"

    user_id: int
    token_sha256: str
    expires_at_ms: int


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


Command = Union[RegisterUser, CreateSession, RevokeSession, SetMember, RemoveMember]

# type tag -> (class, {field name: python type}).  New commands are added here; a tag, once used in a log,
# must never change meaning.
COMMAND_TYPES: dict[str, type[CommandBase]] = {
    cls.TYPE: cls for cls in (RegisterUser, CreateSession, RevokeSession, SetMember, RemoveMember)
}
_FIELD_TYPES: dict[type[CommandBase], dict[str, type]] = {
    cls: {f.name: typing.get_type_hints(cls)[f.name] for f in fields(cls)} for cls in COMMAND_TYPES.values()
}


def _check_value(cls_name: str, name: str, value: Any, typ: type) -> None:
    if typ is int:
        # bool is an int subclass in Python but not in JSON; refuse it so true != 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise CommandDecodeError(f"{cls_name}.{name} must be an integer, got {type(value).__name__}")
        if not _INT_MIN <= value <= _INT_MAX:
            raise CommandDecodeError(f"{cls_name}.{name} is out of the 64-bit integer range")
    elif typ is str:
        if not isinstance(value, str):
            raise CommandDecodeError(f"{cls_name}.{name} must be a string, got {type(value).__name__}")
        if "\x00" in value:
            # SQLite's text functions stop at NUL; such strings would compare and dump surprisingly.
            raise CommandDecodeError(f"{cls_name}.{name} must not contain NUL characters")
    else:  # pragma: no cover - only reachable when a new command uses a type not handled above
        raise TypeError(f"unsupported field type {typ!r} in {cls_name}.{name}")


def _check_command(cmd: CommandBase) -> None:
    types = _FIELD_TYPES.get(type(cmd))
    if types is None:
        raise CommandDecodeError(f"not a command: {type(cmd).__name__}")
    for name, typ in types.items():
        _check_value(type(cmd).__name__, name, getattr(cmd, name), typ)


def encode_command(cmd: CommandBase) -> bytes:
    """The log-entry payload for `cmd`: compact, key-sorted JSON with its type tag under "t".

    Raises CommandDecodeError if a field has the wrong type, so a malformed command is caught at the
    proposer rather than stored in the log.
    """
    _check_command(cmd)
    obj: dict[str, Any] = {f.name: getattr(cmd, f.name) for f in fields(cmd)}
    obj["t"] = cmd.TYPE
    return _dumps(obj)


def decode_command(data: bytes) -> Command:
    """Inverse of `encode_command`; CommandDecodeError (a ValueError) with a clear message on bad input."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandDecodeError(f"command is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CommandDecodeError("command must be a JSON object")
    tag = obj.pop("t", None)
    if not isinstance(tag, str):
        raise CommandDecodeError('command has no type field "t"')
    cls = COMMAND_TYPES.get(tag)
    if cls is None:
        raise CommandDecodeError(f"unknown command type {tag!r}")
    types = _FIELD_TYPES[cls]
    missing = sorted(set(types) - set(obj))
    extra = sorted(set(obj) - set(types))
    if missing:
        raise CommandDecodeError(f"{cls.__name__} is missing field(s): {', '.join(missing)}")
    if extra:
        raise CommandDecodeError(f"{cls.__name__} has unknown field(s): {', '.join(extra)}")
    for name, typ in types.items():
        _check_value(cls.__name__, name, obj[name], typ)
    return cls(**obj)  # type: ignore[return-value]
