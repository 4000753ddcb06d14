"""The Search reply, encoded by hand: the bytes betterproto would produce, without building its messages.

Search is 40% of the benchmark's read mix.  Building its reply as betterproto messages and encoding it
through the Rust codec (a Python-level attribute read per field) took about 50 us for the usual two trains
with four classes each, half as much as the query; written here straight from the store's SearchResults,
about 20 us.

`search_reply(found)` returns an `EncodedSearchResponse`: a SearchResponse whose wire form is fixed at
construction, for the handler to return (grpclib's codec and the Batch call both encode replies with
`bytes()`).  Its fields are not filled in, so nothing should read them; `booking_service.search_response`
builds the message itself, the reference this encoder follows.  tests/test_search_wire.py checks that the
bytes are the same for any results.
"""

from __future__ import annotations

from collections.abc import Sequence

from proto.gen.railraft.v1 import ClassAvailability, SearchResponse, SearchResult, SeatClass
from store import booking_queries as bq

from .wire_fields import embedded, signed, string, uint

__all__ = ["EncodedSearchResponse", "encode_search", "search_reply"]

# betterproto resolves a message class's type hints (strings in the generated code) in the namespace of the module
# that defines the class -- for EncodedSearchResponse, this one: these names must be here.
_FIELD_TYPES = (ClassAvailability, SearchResult)

_CLASS = {c.name: c.value for c in SeatClass}


def _class(c: bq.ClassAvailability) -> bytes:
    return embedded(b"\x5a", uint(b"\x08", _CLASS[c.travel_class]) + uint(b"\x10", c.free)
                    + signed(b"\x18", c.fare_paise) + string(b"\x22", c.service_id))


def _result(r: bq.SearchResult) -> bytes:
    parts = [
        uint(b"\x08", r.run_id), signed(b"\x10", r.train_number), string(b"\x1a", r.train_name),
        string(b"\x22", r.train_type), string(b"\x2a", r.departure[:10]), string(b"\x32", r.from_code),
        string(b"\x3a", r.to_code), signed(b"\x40", r.depart_ms), signed(b"\x48", r.arrive_ms),
        signed(b"\x50", r.distance_km),
    ]
    parts += [_class(c) for c in r.classes]
    parts.append(string(b"\x62", r.status))
    return embedded(b"\x0a", b"".join(parts))


def encode_search(found: Sequence[bq.SearchResult]) -> bytes:
    """SearchResponse bytes for `found` (as booking_service.search_response builds it)."""
    return b"".join([_result(r) for r in found])


class EncodedSearchResponse(SearchResponse):
    """A SearchResponse to send, already encoded (see the module docstring): `bytes()` gives its wire form."""

    def __bytes__(self) -> bytes:
        return self.__dict__["_wire"]


def search_reply(found: Sequence[bq.SearchResult]) -> EncodedSearchResponse:
    """The reply for `found` (as `encode_search`), ready for grpclib or a Batch call to send."""
    reply = EncodedSearchResponse()
    reply.__dict__["_wire"] = encode_search(found)
    return reply
