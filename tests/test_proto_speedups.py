"""proto.speedups: betterproto messages behave the same with the faster attribute access as without it.

For every generated message class, messages built from random field values encode to the same bytes, decode
to the same values, and read unset fields as the same defaults, with betterproto's own methods and with ours;
a class with a oneof (PeerEnvelope) keeps its group semantics.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Iterator

import betterproto
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proto.gen.railraft.node.v1 as node_v1
import proto.gen.railraft.raft.v1 as raft_v1
import proto.gen.railraft.v1 as booking_v1
import proto.gen.train_booking as ticketing
from proto import speedups

MODULES = (booking_v1, node_v1, raft_v1, ticketing)


def message_classes() -> list[type[betterproto.Message]]:
    return sorted((cls for m in MODULES for _, cls in inspect.getmembers(m, inspect.isclass)
                   if issubclass(cls, betterproto.Message) and cls.__module__ == m.__name__),
                  key=lambda c: f"{c.__module__}.{c.__name__}")


@pytest.fixture()
def both() -> Iterator[None]:
    yield
    speedups.install()  # the state every other test runs in (proto/__init__.py installs it)


def _scalar(meta: betterproto.FieldMetadata, cls: type) -> st.SearchStrategy:
    t = meta.proto_type
    if t == betterproto.TYPE_STRING:
        return st.text(max_size=12)
    if t == betterproto.TYPE_BYTES:
        return st.binary(max_size=12)
    if t == betterproto.TYPE_BOOL:
        return st.booleans()
    if t in (betterproto.TYPE_DOUBLE, betterproto.TYPE_FLOAT):
        return st.floats(allow_nan=False, width=32)
    if t in (betterproto.TYPE_UINT32, betterproto.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (betterproto.TYPE_UINT64, betterproto.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if t in (betterproto.TYPE_INT32, betterproto.TYPE_SINT32, betterproto.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (betterproto.TYPE_INT64, betterproto.TYPE_SINT64, betterproto.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    if t == betterproto.TYPE_ENUM:
        enum_cls = meta_enum(cls, meta)
        return st.sampled_from(list(enum_cls))
    raise AssertionError(f"unexpected proto type {t}")


def meta_enum(cls: type, meta: betterproto.FieldMetadata) -> type[enum.Enum]:
    hints = typing.get_type_hints(cls, vars(inspect.getmodule(cls)))
    for f in dataclasses.fields(cls):
        if f.metadata.get("betterproto") is meta:
            h = hints[f.name]
            args = typing.get_args(h)
            return args[0] if args else h
    raise AssertionError("no enum type")


def kwargs_for(cls: type, depth: int = 0) -> st.SearchStrategy[dict]:
    """Random values for some of `cls`'s fields (one member of each oneof group at most)."""
    meta = cls._betterproto
    parts = {}
    groups_seen: set[str] = set()
    for name, fm in meta.meta_by_field_name.items():
        if fm.group:
            if fm.group in groups_seen:
                continue
            groups_seen.add(fm.group)
        if fm.proto_type == betterproto.TYPE_MESSAGE:
            if depth >= 2:
                continue
            sub = meta.cls_by_field[name]
            one = kwargs_for(sub, depth + 1).map(lambda kw, sub=sub: sub(**kw))
            hints = typing.get_type_hints(cls, vars(inspect.getmodule(cls)))
            is_list = typing.get_origin(hints[name]) in (list, typing.List)
            parts[name] = st.lists(one, max_size=2) if is_list else one
        elif fm.proto_type == betterproto.TYPE_MAP:
            continue
        else:
            hints = typing.get_type_hints(cls, vars(inspect.getmodule(cls)))
            is_list = typing.get_origin(hints[name]) in (list, typing.List)
            s = _scalar(fm, cls)
            parts[name] = st.lists(s, max_size=3) if is_list else s
    return st.fixed_dictionaries({}, optional=parts)


@st.composite
def message_and_kwargs(draw: st.DrawFn) -> tuple[type, dict]:
    cls = draw(st.sampled_from(message_classes()))
    return cls, draw(kwargs_for(cls))


def roundtrip(cls: type, kwargs: dict) -> tuple[bytes, dict, list, tuple]:
    msg = cls(**kwargs)
    # What the constructor's __post_init__ decides: is the message set, which oneof member is selected; and
    # which fields count as set (is_set reads them without their defaults, as the Rust codec does).
    built = (msg.__dict__["_serialized_on_wire"], dict(msg.__dict__["_group_current"]),
             msg.__dict__["_unknown_fields"], [msg.is_set(name) for name in cls._betterproto.meta_by_field_name],
             repr(msg))
    data = bytes(msg)
    back = cls().parse(data)
    defaults = [getattr(cls(), name) for name in cls._betterproto.meta_by_field_name
                if not cls._betterproto.meta_by_field_name[name].group]
    return data, back.to_dict(include_default_values=True), [repr(d) for d in defaults], built


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(message_and_kwargs())
def test_every_message_behaves_the_same_with_and_without_speedups(both: None, case: tuple[type, dict]) -> None:
    cls, kwargs = case
    speedups.uninstall()
    try:
        expected = roundtrip(cls, kwargs)
    finally:
        speedups.install()
    assert roundtrip(cls, kwargs) == expected


def test_oneof_groups_keep_their_semantics(both: None) -> None:
    speedups.install()
    env = raft_v1.PeerEnvelope(vote_request=raft_v1.VoteRequest(term=3))
    assert betterproto.which_one_of(env, "msg")[0] == "vote_request"
    env.heartbeat_request = raft_v1.HeartbeatRequest(term=4)
    assert betterproto.which_one_of(env, "msg")[0] == "heartbeat_request"
    with pytest.raises(AttributeError):
        _ = env.vote_request  # no longer the group's member
    back = raft_v1.PeerEnvelope().parse(bytes(env))
    assert betterproto.which_one_of(back, "msg")[0] == "heartbeat_request" and back.heartbeat_request.term == 4


def test_unset_fields_read_as_defaults_and_setting_marks_the_message_set(both: None) -> None:
    speedups.install()
    info = booking_v1.BookingInfo()
    assert info.pnr == "" and info.passengers == [] and not info._serialized_on_wire
    info.pnr = "ABC123"
    assert info._serialized_on_wire and bytes(info)
    outer = booking_v1.Session(user=booking_v1.UserInfo())
    assert bytes(outer) == bytes(booking_v1.Session(user=booking_v1.UserInfo()))
    assert speedups.installed()
    assert betterproto.Message._Message__raw_get is object.__getattribute__  # one Python frame less per field
    speedups.uninstall()
    assert betterproto.Message._Message__raw_get is not object.__getattribute__
