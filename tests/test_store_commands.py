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


# ---------------------------------------------------------------- the compiled fast path equals the general one

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from store import commands as C  # noqa: E402

RICH = [
    *SAMPLES,
    C.HoldSeats(**BASE, token_sha256="ab" * 32, pnr="ABCDEFGHJK", run_id=7, travel_class="AC3", from_code="NDLS",
                to_code="BCT", passengers=(C.PassengerSpec(name="Asha", age=34, berth_pref="LOWER", seat="B1-12"),
                                           C.PassengerSpec(name="Ravi", age=36)),
                accept_waitlist=True, hold_seconds=600),
    C.AddTrain(**BASE, token_sha256="ab" * 32, number=12951, name="Rajdhani", train_type="RAJDHANI",
               depart_time="16:55", stops=(C.StopSpec(station_code="NDLS", arrive_min=0, depart_min=0, km=0),
                      C.StopSpec(station_code="BCT", arrive_min=950, depart_min=950, km=1384)),
               coaches=(C.CoachSpec(label="B1", travel_class="AC3", seats=72, berths=("LOWER", "MIDDLE", "UPPER")),)),
    C.CancelBooking(**BASE, token_sha256="ab" * 32, pnr="ABCDEFGHJK", passenger_nos=(1, 2)),
    C.SettleRefunds(**BASE, settlements=(C.RefundSettlement(refund_id=3, provider_ref="ref-3"),)),
]

_EDGES = st.sampled_from([None, True, False, 0, 1, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 1.0, 1.5, "",
                          "a\x00b", "\x00", "LOWER", "AC3", [], {}])
_JSONISH = st.recursive(
    st.one_of(_EDGES, st.integers(min_value=-(2**64), max_value=2**64), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every place inside a command's JSON: keys of objects (also nested), indexes of lists."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, path + (i,))
    return out


def _outcome(fn: object, *args: object) -> object:
    try:
        return ("ok", fn(*args))  # type: ignore[operator]
    except C.CommandDecodeError as e:
        return ("error", str(e))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(which=st.integers(0, len(RICH) - 1), data=st.data())
def test_the_fast_decoder_decides_exactly_as_the_general_rules(which: int, data: st.DataObject) -> None:
    obj = json.loads(encode_command(RICH[which]))
    tag = obj.pop("t")
    path = data.draw(st.sampled_from(_paths(obj)[1:]))
    how = data.draw(st.sampled_from(["replace", "delete", "add"]))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if how == "replace":
        parent[path[-1]] = data.draw(st.one_of(_EDGES, _JSONISH))
    elif how == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=4))] = data.draw(_JSONISH)
    else:
        parent.append(data.draw(_JSONISH))
    cls = C.COMMAND_TYPES[tag]
    raw = json.dumps({**obj, "t": tag}).encode()
    untagged = {k: v for k, v in json.loads(raw).items() if k != "t"}
    assert _outcome(decode_command, raw) == _outcome(C._decode_general, cls, untagged)


def _general_json(value: object) -> object:
    if isinstance(value, tuple):
        return [_general_json(v) for v in value]
    if isinstance(value, C.Record):
        return {f: _general_json(getattr(value, f)) for f in C._FIELD_TYPES[type(value)]}
    return value


@settings(max_examples=300, deadline=None, derandomize=True)
@given(which=st.integers(0, len(RICH) - 1), data=st.data())
def test_the_fast_encoder_checks_and_writes_exactly_as_the_general_rules(which: int, data: st.DataObject) -> None:
    import dataclasses

    cmd = RICH[which]
    name = data.draw(st.sampled_from(sorted(C._FIELD_TYPES[type(cmd)])))
    value = data.draw(st.one_of(_JSONISH, st.tuples(_JSONISH), st.just(getattr(cmd, name)),
                                st.just(tuple(getattr(cmd, name)) if isinstance(getattr(cmd, name), tuple) else 0)))
    bad = dataclasses.replace(cmd, **{name: value})

    def general(c: object) -> bytes:
        for n, t in C._FIELD_TYPES[type(c)].items():
            C._convert(f"{type(c).__name__}.{n}", getattr(c, n), t, False)
        obj = {n: _general_json(getattr(c, n)) for n in C._FIELD_TYPES[type(c)]}
        obj["t"] = c.TYPE  # type: ignore[attr-defined]
        return C._dumps(obj)

    assert _outcome(encode_command, bad) == _outcome(general, bad)


# ------------------------------------------------ a proposer's own commands are not decoded again, same result

def _valid(typ: object) -> st.SearchStrategy:
    """Values the strict fast check vouches for: exactly the declared type, in range, strings without NUL."""
    import typing

    if typ is bool:
        return st.booleans()
    if typ is int:
        return st.integers(min_value=C._INT_MIN, max_value=C._INT_MAX)
    if typ is str:
        return st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6)
    if typing.get_origin(typ) is tuple:
        return st.lists(_valid(typing.get_args(typ)[0]), max_size=3).map(tuple)
    assert isinstance(typ, type) and issubclass(typ, C.Record)
    return st.builds(typ, **{n: _valid(t) for n, t in C._FIELD_TYPES[typ].items()})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(cls=st.sampled_from(sorted(C._COMMAND_CLASSES, key=lambda c: c.__name__)), data=st.data())
def test_decoding_a_command_this_process_encoded_gives_what_decoding_its_bytes_gives(cls, data) -> None:
    cmd = data.draw(st.builds(cls, **{n: _valid(t) for n, t in C._FIELD_TYPES[cls].items()}))
    encoded = encode_command(cmd)
    remembered = decode_command(encoded)  # the proposer's applier: from the map of recently encoded commands
    C.forget_encoded()
    decoded = decode_command(encoded)  # every other replica: from the bytes
    assert remembered is cmd
    assert decoded == cmd and type(decoded) is type(cmd)
    assert encode_command(decoded) == encoded
    C.forget_encoded()


def test_only_commands_the_strict_check_vouches_for_are_remembered() -> None:
    import dataclasses

    C.forget_encoded()
    hold = RICH[5]
    assert isinstance(hold, C.HoldSeats)

    class Code(str):
        """A str subclass: the general rules accept it, the strict check does not vouch for it."""

    odd = dataclasses.replace(hold, from_code=Code(hold.from_code))
    encoded = encode_command(odd)
    assert encoded == encode_command(hold)
    C.forget_encoded()
    encode_command(odd)
    decoded = decode_command(encoded)
    assert decoded == hold and decoded is not odd and type(decoded.from_code) is str
    # A hit is used once: the next decode of the same bytes parses them.
    encode_command(hold)
    assert decode_command(encoded) is hold
    assert decode_command(encoded) is not hold
    C.forget_encoded()
