"""Protobuf fields written by hand, as betterproto writes them (proto3: a field at its default is omitted).

For the replies a node sends most (gateway/seat_map_wire.py, booking_wire.py, search_wire.py): building betterproto
messages and encoding them through the Rust codec costs a Python-level attribute read per field, which for
a booking's reply came to about 40 us of a node's CPU.  Tags are given pre-encoded (`tag(field, wire_type)`,
or a literal byte for the fields below 16).
"""

from __future__ import annotations

from .peer_wire import uvarint

__all__ = ["LEN", "VARINT", "embedded", "signed", "string", "tag", "uint", "varint"]

VARINT, LEN = 0, 2  # the wire types these replies use


# The peer stream's varint (gateway/peer_wire.py): one cached byte below 128; a negative or a value above a
# uint64 is refused with CodecError, a ValueError.
varint = uvarint


def tag(field: int, wire_type: int) -> bytes:
    """A field's encoded tag."""
    return varint(field << 3 | wire_type)


def string(tag: bytes, s: str) -> bytes:
    """A string field (omitted when empty, as proto3 does)."""
    if not s:
        return b""
    data = s.encode()
    return tag + varint(len(data)) + data


def uint(tag: bytes, n: int) -> bytes:
    """A varint field of an unsigned or enum type (omitted when zero, as proto3 does)."""
    return tag + varint(n) if n else b""


def signed(tag: bytes, n: int) -> bytes:
    """An int32/int64 field: a negative value is written as its 64-bit two's complement (ten bytes)."""
    if not n:
        return b""
    return tag + varint(n if n > 0 else n + (1 << 64))


def embedded(tag: bytes, body: bytes) -> bytes:
    """A message field (or one element of a repeated one): always written, even when its body is empty."""
    return tag + varint(len(body)) + body
