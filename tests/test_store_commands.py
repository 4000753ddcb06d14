"""store.commands: the byte encodings of commands and results are exact, strict and deterministic."""

from __future__ import annotations

import json

import pytest

from store.commands import (
    ALREADY_EXISTS,
    COMMAND_TYPES,
    OK,
    CommandDecodeError,
    CreateSession,
    RegisterUser,
    RemoveMember,
    Result,
    RevokeSession,
    SetMember,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
)

BASE = {"request_id": "r1", "client_id": "c1", "ts_ms": 1_700_000_000_000}
SAMPLES = [
    RegisterUser(**BASE, username="bob", password_hash="scrypt$x", role="CUSTOMER"),
    CreateSession(**BASE, user_id=3, token_sha256="ab" * 32, expires_at_ms=1_700_000_360_000),
    RevokeSession(**BASE, token_sha256="cd" * 32),
    SetMember(**BASE, node_id=4, host="10.0.0.4", port=7004),
    RemoveMember(**BASE, node_id=4),
]


@pytest.mark.parametrize("cmd", SAMPLES, ids=lambda c: type(c).__name__)
def test_round_trip(cmd) -> None:
    data = encode_command(cmd)
    assert decode_command(data) == cmd
    assert encode_command(decode_command(data)) == data  # stable bytes


def test_encoding_is_compact_sorted_json_with_type_tag() -> None:
    data = encode_command(SAMPLES[0])
    assert data == (
        b'{"client_id":"c1","password_hash":"scrypt$x","request_id":"r1","role":"CUSTOMER",'
        b'"t":"register_user","ts_ms":1700000000000,"username":"bob"}'
    )
    assert set(COMMAND_TYPES) == {
        "register_user", "create_session", "revoke_session", "set_member", "remove_member", "bootstrap_admin",
        "set_user_role", "create_station", "add_train", "schedule_runs", "add_train_service", "cancel_run",
        "hold_seats", "confirm_payment", "cancel_booking", "expire_holds", "settle_refunds",
    }


def test_commands_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SAMPLES[0].username = "eve"  # type: ignore[misc]


def _mutate(change: dict) -> bytes:
    obj = json.loads(encode_command(SAMPLES[0]))
    obj.update(change)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"username": "bob"}', 'no type field "t"'),
        (_mutate({"t": "launch_missiles"}), "unknown command type 'launch_missiles'"),
        (_mutate({"role": ...}), "missing field(s): role"),
        (_mutate({"admin": True}), "unknown field(s): admin"),
        (_mutate({"ts_ms": "now"}), "RegisterUser.ts_ms must be an integer"),
        (_mutate({"ts_ms": True}), "RegisterUser.ts_ms must be an integer"),
        (_mutate({"ts_ms": 1.5}), "RegisterUser.ts_ms must be an integer"),
        (_mutate({"ts_ms": 2**63}), "out of the 64-bit integer range"),
        (_mutate({"username": 7}), "RegisterUser.username must be a string"),
        (_mutate({"username": "bo\x00b"}), "must not contain NUL"),
    ],
)
def test_decode_rejects_bad_input_clearly(data: bytes, needle: str) -> None:
    with pytest.raises(CommandDecodeError) as info:
        decode_command(data)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_encode_refuses_wrongly_typed_fields() -> None:
    with pytest.raises(CommandDecodeError, match="must be an integer"):
        encode_command(RemoveMember(**BASE, node_id="4"))  # type: ignore[arg-type]


def test_result_round_trip_and_validation() -> None:
    r = Result.error(ALREADY_EXISTS, "username 'bob' is already taken")
    assert decode_result(encode_result(r)) == r
    ok = Result.success({"user_id": 7})
    assert ok.ok and ok.code == OK and decode_result(encode_result(ok)) == ok
    assert encode_result(ok) == b'{"code":"OK","data":{"user_id":7},"message":"","ok":true}'
    with pytest.raises(ValueError):
        Result(True, ALREADY_EXISTS, "")
    with pytest.raises(ValueError):
        Result(False, "TEAPOT", "")
    for bad in (b"{}", b"nope", b'{"ok":1,"code":"OK","message":"","data":{}}'):
        with pytest.raises(ValueError):
            decode_result(bad)
