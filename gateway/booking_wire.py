"""The BookingInfo reply, encoded by hand: the bytes betterproto would produce, without building its messages.

Every Hold, Pay and Cancel answers with the booking as it now is, and so do booking status and PNR status.
Built as betterproto messages (8 us) and encoded by the Rust codec (33 us, most of it a Python-level
attribute read per field), that reply cost a leader about 40 us of CPU per booking, a sixteenth of all it
did for one; written here straight from the store's BookingView, about 11 us.

`booking_info_reply(view, message)` returns an `EncodedBookingInfo`: a BookingInfo whose wire form is fixed at
construction, for a handler to return (grpclib's codec and the Batch call both encode replies with
`bytes()`).  Its fields are not filled in, so nothing should read them: code that needs the fields builds
`booking_service.booking_info(view, message)`, the reference this encoder follows field for field.
tests/test_booking_wire.py checks that the bytes equal betterproto's for any booking.
"""

from __future__ import annotations

from proto.gen.railraft.v1 import BookingEvent, BookingInfo, BookingState, Passenger, Refund, SeatClass
from store import booking_queries as bq
from store import rules

from .wire_fields import LEN, VARINT, embedded, signed, string, tag, uint

__all__ = ["EncodedBookingInfo", "booking_info_reply", "encode_booking_info", "passenger_seat", "passenger_status",
           "reply_message", "unpaid_pending"]

# betterproto resolves a message class's type hints (strings in the generated code) in the namespace of the module
# that defines the class -- for EncodedBookingInfo, this one: these names must be here.
_FIELD_TYPES = (BookingEvent, BookingState, Passenger, Refund, SeatClass)

_STATE = {s.name: s.value for s in BookingState}
_CLASS = {c.name: c.value for c in SeatClass}
_T_WAITLIST, _T_REFUND, _T_HISTORY = tag(17, VARINT), tag(18, LEN), tag(19, LEN)
_T_EXPIRES, _T_MESSAGE, _T_REFUNDED = tag(16, VARINT), tag(20, LEN), tag(21, VARINT)


def unpaid_pending(v: bq.BookingView) -> bool:
    """Whether the booking still waits for its payment (then its reply carries hold_expires_ms)."""
    return v.status == "HELD" or (v.status == "WAITLISTED" and not v.paid_paise)


def reply_message(v: bq.BookingView, message: str) -> str:
    """The reply's `message`: the one given, else the latest history note."""
    return message or (v.history[-1].detail if v.history else "")


def passenger_seat(p: bq.PassengerView) -> tuple[str, int]:
    """The passenger's (coach, seat number), ("", 0) while it has no seat."""
    return rules.parse_seat_ref(p.seat) if p.seat else ("", 0)


def passenger_status(v: bq.BookingView, p: bq.PassengerView) -> str:
    """A passenger row is ACTIVE or CANCELLED; an active one is in whatever state its booking is."""
    return v.status if p.status == "ACTIVE" else p.status


def _passenger(v: bq.BookingView, p: bq.PassengerView) -> bytes:
    coach, seat = passenger_seat(p)
    status = passenger_status(v, p)
    return embedded(b"\x6a", uint(b"\x08", p.pax_no) + string(b"\x12", p.name) + uint(b"\x18", p.age)
                    + string(b"\x22", coach) + uint(b"\x28", seat) + string(b"\x32", p.berth)
                    + string(b"\x3a", status))


def _refund(r: bq.RefundView) -> bytes:
    return embedded(_T_REFUND, signed(b"\x08", r.amount_paise) + signed(b"\x10", r.ts_ms) + string(b"\x1a", r.reason)
                    + uint(b"\x20", r.percent) + signed(b"\x28", r.settled_ms or 0))


def _event(e: bq.BookingEvent) -> bytes:
    return embedded(_T_HISTORY, signed(b"\x08", e.ts_ms) + uint(b"\x10", _STATE[e.status]) + string(b"\x1a", e.detail))


def encode_booking_info(v: bq.BookingView, message: str = "") -> bytes:
    """BookingInfo bytes for `v` (as booking_service.booking_info builds it), in field order, defaults omitted."""
    parts = [
        uint(b"\x08", v.booking_id), string(b"\x12", v.pnr), uint(b"\x18", _STATE[v.status]),
        uint(b"\x20", v.run_id), signed(b"\x28", v.train_number), string(b"\x32", v.train_name),
        string(b"\x3a", v.departure[:10]), string(b"\x42", v.from_code), string(b"\x4a", v.to_code),
        signed(b"\x50", v.depart_ms), signed(b"\x58", v.arrive_ms), uint(b"\x60", _CLASS[v.travel_class]),
    ]
    parts += [_passenger(v, p) for p in v.passengers]
    parts += [signed(b"\x70", v.amount_paise), signed(b"\x78", v.paid_paise),
              signed(_T_EXPIRES, v.hold_expires_ms if unpaid_pending(v) else 0),
              uint(_T_WAITLIST, v.waitlist_position)]
    parts += [_refund(r) for r in v.refunds]
    parts += [_event(e) for e in v.history]
    parts += [string(_T_MESSAGE, reply_message(v, message)), signed(_T_REFUNDED, v.refunded_paise)]
    return b"".join(parts)


class EncodedBookingInfo(BookingInfo):
    """A BookingInfo to send, already encoded (see the module docstring): `bytes()` gives its wire form."""

    def __bytes__(self) -> bytes:
        return self.__dict__["_wire"]


def booking_info_reply(v: bq.BookingView, message: str = "") -> EncodedBookingInfo:
    """The reply for booking `v` (as `encode_booking_info`), ready for grpclib or a Batch call to send."""
    reply = EncodedBookingInfo()
    reply.__dict__["_wire"] = encode_booking_info(v, message)
    return reply
