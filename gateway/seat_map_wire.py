"""The SeatMap reply, encoded by hand: the bytes betterproto would produce, without building its messages.

A coach's seat map is the heaviest reply of the read mix: 72 SeatInfo and about 20 Coach sub-messages.  Built
as betterproto objects and encoded by the Rust codec it cost about 0.3 ms of a node's CPU (with its queries,
SeatMap was half of the nodes' CPU in the benchmark's reads); from the cache below, 20-30 us.  Here each
sub-message's bytes come from a small cache keyed by its values (a seat is (number, berth, free): a few
hundred distinct ones on a whole network), so a reply is a join of cached pieces.

`seat_map_reply(...)` returns an `EncodedSeatMap`: a SeatMapResponse whose wire form is fixed at construction.
Only the server sends it (grpclib's codec and the Batch call both encode replies with `bytes()`); its fields
are not filled in, so nothing should read them.  tests/test_seat_map_wire.py checks that the bytes equal
betterproto's for any values, and that they decode to the same message.
"""

from __future__ import annotations

from collections.abc import Iterable

from proto.gen.railraft.v1 import Coach, SeatClass, SeatInfo, SeatMapResponse

from .wire_fields import embedded as _embedded
from .wire_fields import string as _string
from .wire_fields import uint as _uint

__all__ = ["EncodedSeatMap", "encode_seat_map", "seat_map_reply"]

# betterproto resolves a message class's type hints (strings in the generated code) in the namespace of the module
# that defines the class -- for EncodedSeatMap, this one: these names must be here.
_FIELD_TYPES = (Coach, SeatClass, SeatInfo)

CACHE_MAX = 50_000  # encoded sub-messages kept (each a few dozen bytes); emptied when full

# (number, berth, free) -> field 4 of SeatMapResponse: one SeatInfo with its tag and length.
_SEATS: dict[tuple[int, str, bool], bytes] = {}
# (label, seat class value, seats, free seats) -> field 5: one Coach with its tag and length.
_COACHES: dict[tuple[str, int, int, int], bytes] = {}


def _seat(number: int, berth: str, free: bool) -> bytes:
    key = (number, berth, free)
    wire = _SEATS.get(key)
    if wire is None:
        body = _uint(b"\x08", number) + _string(b"\x12", berth) + (b"\x18\x01" if free else b"")
        wire = _embedded(b"\x22", body)
        if len(_SEATS) >= CACHE_MAX:
            _SEATS.clear()
        _SEATS[key] = wire
    return wire


def _coach(label: str, seat_class: int, seats: int, free_seats: int) -> bytes:
    key = (label, seat_class, seats, free_seats)
    wire = _COACHES.get(key)
    if wire is None:
        body = _string(b"\x0a", label) + _uint(b"\x10", seat_class) + _uint(b"\x18", seats) + _uint(b"\x20", free_seats)
        wire = _embedded(b"\x2a", body)
        if len(_COACHES) >= CACHE_MAX:
            _COACHES.clear()
        _COACHES[key] = wire
    return wire


def encode_seat_map(run_id: int, coach: str, seat_class: int, seats: Iterable[tuple[int, str, bool]],
                    coaches: Iterable[tuple[str, int, int, int]]) -> bytes:
    """SeatMapResponse bytes: `seats` as (number, berth, free), `coaches` as (label, seat class value, seats,
    free seats), in the order given (field order and proto3's omitted defaults as betterproto writes them)."""
    parts = [_uint(b"\x08", run_id), _string(b"\x12", coach), _uint(b"\x18", seat_class)]
    parts += [_seat(n, b, f) for n, b, f in seats]
    parts += [_coach(label, c, s, f) for label, c, s, f in coaches]
    return b"".join(parts)


class EncodedSeatMap(SeatMapResponse):
    """A SeatMapResponse to send, already encoded (see the module docstring): `bytes()` gives its wire form."""

    def __bytes__(self) -> bytes:
        return self.__dict__["_wire"]


def seat_map_reply(run_id: int, coach: str, seat_class: int, seats: Iterable[tuple[int, str, bool]],
                   coaches: Iterable[tuple[str, int, int, int]]) -> EncodedSeatMap:
    """The reply for these values (as `encode_seat_map`), ready for grpclib or a Batch call to send."""
    reply = EncodedSeatMap()
    reply.__dict__["_wire"] = encode_seat_map(run_id, coach, seat_class, seats, coaches)
    return reply
