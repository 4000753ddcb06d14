"""Fares and refunds: railraft's money rules, in integer paise (1 rupee = 100 paise), never floats.

Fares
-----
One passenger, one way, by class and by the distance between the boarding and the alighting station
(the difference of the route's cumulative kilometres)::

    fare = base + per_km * max(distance_km, 50)        then rounded UP to a whole rupee

    class      base (paise)   per km (paise)   e.g. 500 km      e.g. 1,384 km (NDLS-BCT)
    AC1            5,000            450        ₹2,300           ₹6,278
    AC2            4,000            270        ₹1,390           ₹3,777
    AC3            3,000            190        ₹980             ₹2,660
    SLEEPER        2,000             70        ₹370             ₹989
    GENERAL        1,000             30        ₹160             ₹426

Every passenger pays the full fare (no concessions).  A run may instead carry a fixed price per seat for a
class (ScheduleRuns' `prices`, or the original API's AddTrainService `price`); that price is charged per
passenger whatever the segment.

Refunds
-------
Cancelling a paid, confirmed booking (or some of its passengers) refunds a share of the fare of the cancelled
passengers, by the time left until the train's scheduled departure from the passenger's BOARDING station,
measured at the moment the cancellation is applied (the command's `ts_ms`)::

    more than 48 hours before departure ........ 90 %
    from 48 hours down to 4 hours (inclusive) .. 50 %
    less than 4 hours before, or after ......... nothing

The refund is `fare * percent // 100` paise (rounded down).  Exceptions, all 100 %:

* a WAITLISTED booking that is cancelled (it never held a seat);
* a paid WAITLISTED booking still unconfirmed when its train leaves the boarding station (status REFUNDED);
* every booking of a run the railway cancels (status REFUNDED).

An unpaid hold that is cancelled or expires costs and refunds nothing.
"""

from __future__ import annotations

from .civil import HOUR_MS

# class -> (base paise, paise per km).  Integers only: money is never a float anywhere in railraft.
FARE_TABLE: dict[str, tuple[int, int]] = {
    "AC1": (5_000, 450),
    "AC2": (4_000, 270),
    "AC3": (3_000, 190),
    "SLEEPER": (2_000, 70),
    "GENERAL": (1_000, 30),
}
MIN_CHARGEABLE_KM = 50

REFUND_EARLY_PERCENT = 90  # more than 48 h before departure
REFUND_LATE_PERCENT = 50  # 48 h .. 4 h before departure
REFUND_EARLY_BEFORE_MS = 48 * HOUR_MS
# The rule in one sentence, for API responses (RefundQuote) and the web app.
REFUND_RULE = (
    "90% of the fare if cancelled more than 48 hours before departure from the boarding station, 50% from"
    " 48 down to 4 hours before, nothing later; waitlisted bookings and runs cancelled by the railway: 100%"
)
REFUND_LATE_BEFORE_MS = 4 * HOUR_MS


def fare_paise(travel_class: str, distance_km: int) -> int:
    """The tariff fare of one passenger in `travel_class` over `distance_km`, in paise (a whole rupee)."""
    base, per_km = FARE_TABLE[travel_class]
    raw = base + per_km * max(distance_km, MIN_CHARGEABLE_KM)
    return -(-raw // 100) * 100  # round up to a whole rupee


def refund_percent(departure_ms: int, now_ms: int) -> int:
    """The refund percentage for cancelling at `now_ms` a seat whose train departs at `departure_ms`."""
    before = departure_ms - now_ms
    if before > REFUND_EARLY_BEFORE_MS:
        return REFUND_EARLY_PERCENT
    if before >= REFUND_LATE_BEFORE_MS:
        return REFUND_LATE_PERCENT
    return 0


def refund_paise(fare: int, percent: int) -> int:
    """`percent` of `fare` paise, rounded down to a whole paisa."""
    return fare * percent // 100


def rupees(paise: int) -> str:
    """Human text for an amount: 123456 -> '₹1,234.56' (whole rupees drop the paise)."""
    sign = "-" if paise < 0 else ""
    whole, frac = divmod(abs(paise), 100)
    return f"{sign}₹{whole:,}" + (f".{frac:02d}" if frac else "")
