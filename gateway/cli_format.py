"""What the booking CLI shows: JSON conversion of the API's messages, human tables, error sentences, progress.

One place for both faces of the CLI -- the scriptable subcommands (gateway/cli_booking.py) and the interactive
menu (gateway/cli_menu.py) -- so a booking looks the same in both and `--json` has one stable shape.

JSON (`to_json`): every field of a message under its proto name (defaults included, so the keys never
change), enums as their names ("AC3", "CONFIRMED"), nested messages as objects, repeated fields as arrays.
Two derived keys are added next to the raw ones:

* `X_paise` (integer paise, the truth) gets `X_rupees`, a formatted string ("₹1,234.50", Indian grouping);
* `X_ms` (epoch milliseconds) gets `X_ist`, "YYYY-MM-DD HH:MM" in Indian Standard Time (null when 0).

Text: `table()` plus one renderer per kind of answer (`search_table`, `booking_text`, ...).  Output goes
through `out()`, which falls back to ASCII ("Rs." for the rupee sign) on a terminal that cannot print it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import sys
from collections.abc import Awaitable, Sequence
from typing import Any, TextIO, TypeVar

import betterproto

from store import civil

T = TypeVar("T")

RUPEE = "\u20b9"

CLASS_LABELS = {
    "AC1": "AC First Class (1A)",
    "AC2": "AC 2 Tier (2A)",
    "AC3": "AC 3 Tier (3A)",
    "SLEEPER": "Sleeper (SL)",
    "GENERAL": "General (GN)",
}
STATE_LABELS = {
    "HELD": "held, awaiting payment",
    "CONFIRMED": "confirmed",
    "WAITLISTED": "waitlisted",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired (not paid in time)",
    "REFUNDED": "refunded",
}
BERTH_ABBREV = {"LOWER": "L", "MIDDLE": "M", "UPPER": "U", "SIDE_LOWER": "SL", "SIDE_UPPER": "SU",
                "WINDOW": "W", "AISLE": "A"}

# Exit codes of the booking subcommands (documented in gateway/cli_booking.py).
EXIT_OK = 0
EXIT_REFUSED = 1  # the cluster refused: sold out, hold expired, already exists, ...
EXIT_USAGE = 2  # bad input (found locally or by the server): nothing was written
EXIT_UNAUTHENTICATED = 3  # not logged in, or the session expired
EXIT_PERMISSION = 4  # an administrator's command, or someone else's booking
EXIT_NOT_FOUND = 5  # no such PNR, run, train
EXIT_UNAVAILABLE = 6  # no node could serve the call in time (no leader, nodes down): try again

UNAVAILABLE_SENTENCE = ("The booking system is not answering right now (no leader reachable, or the nodes are "
                        "down); please try again in a moment.")


# ============================================================================================ values


def rupees(paise: int | None) -> str:
    """12345 paise -> '₹123.45', with Indian digit grouping (₹1,23,456.00)."""
    paise = int(paise or 0)
    sign = "-" if paise < 0 else ""
    whole, frac = divmod(abs(paise), 100)
    s = str(whole)
    if len(s) > 3:
        head, tail = s[:-3], s[-3:]
        groups = []
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        s = ",".join(groups + [tail])
    return f"{sign}{RUPEE}{s}.{frac:02d}"


def ist(ms: int | None) -> str | None:
    """'YYYY-MM-DD HH:MM' in IST of an instant, None for 0/None."""
    return civil.format_local(int(ms)) if ms else None


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def short_time(ms: int | None) -> str:
    """'05 Dec 17:00' (IST) of an instant, '-' for 0."""
    if not ms:
        return "-"
    text = civil.format_local(int(ms))  # YYYY-MM-DD HH:MM
    return f"{text[8:10]} {_MONTHS[int(text[5:7]) - 1]} {text[11:]}"


def duration(start_ms: int, end_ms: int) -> str:
    """'15h 35m' between two instants ('' if unknown)."""
    if not start_ms or not end_ms or end_ms < start_ms:
        return ""
    minutes = (end_ms - start_ms) // 60_000
    return f"{minutes // 60}h {minutes % 60:02d}m"


def enum_name(value: Any) -> str:
    """An enum's name ('AC3'), or str(value)."""
    return value.name if isinstance(value, (enum.Enum, betterproto.Enum)) else str(value)


# ============================================================================================== JSON


def to_json(value: Any) -> Any:
    """A betterproto message (or a list of them, or a plain value) as JSON-ready data (module docstring)."""
    if isinstance(value, betterproto.Message):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            out[f.name] = to_json(v)
            if f.name.endswith("_paise"):
                out[f.name[: -len("_paise")] + "_rupees"] = rupees(v)
            elif f.name.endswith("_ms"):
                out[f.name[: -len("_ms")] + "_ist"] = ist(v)
        return out
    if isinstance(value, (enum.Enum, betterproto.Enum)):
        return value.name
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, float):
        return round(value, 2)
    return value


# ============================================================================================= output


def _encodable(text: str, stream: TextIO) -> str:
    enc = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(enc)
        return text
    except (UnicodeEncodeError, LookupError):
        return text.replace(RUPEE, "Rs.").replace("\u2192", "->").encode(enc, "replace").decode(enc)


def out(text: str = "", stream: TextIO | None = None, end: str = "\n") -> None:
    """Print `text` (to stdout by default), downgraded to what the stream's encoding can show."""
    stream = stream or sys.stdout
    stream.write(_encodable(text, stream) + end)
    stream.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A plain text table: a header line, a rule, the rows; columns padded, `right` column indexes right-aligned."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))

    def line(row: Sequence[str]) -> str:
        parts = [(c.rjust(w) if i in right else c.ljust(w)) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(parts).rstrip()

    lines = [line(list(headers)), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in cells]
    return "\n".join(lines)


# ========================================================================================= renderers


def stations_table(stations: Sequence[Any]) -> str:
    if not stations:
        return "No stations match."
    return table(("Code", "Station"), [(s.code, s.name) for s in stations])


def search_table(results: Sequence[Any], numbered: bool = False) -> str:
    """One line per class of each run found; `numbered` puts a choice number (1..) in front of each run."""
    if not results:
        return "No trains run between these stations on that date."
    headers = (["#"] if numbered else []) + ["Run", "Train", "Departs", "Arrives", "Duration", "Class", "Free",
                                             "Fare"]
    rows = []
    for i, r in enumerate(results, 1):
        name = f"{r.train_number} {r.train_name}" + (" (CANCELLED)" if r.status == "CANCELLED" else "")
        first = ([str(i)] if numbered else []) + [r.run_id, name, short_time(r.departure_ms),
                                                  short_time(r.arrival_ms), duration(r.departure_ms, r.arrival_ms)]
        blank = [""] * len(first)
        classes = list(r.classes) or [None]
        for j, c in enumerate(classes):
            lead = first if j == 0 else blank
            if c is None:
                rows.append(lead + ["-", "", ""])
            else:
                rows.append(lead + [enum_name(c.seat_class), c.free_seats, rupees(c.fare_paise)])
    off = 1 if numbered else 0
    return table(headers, rows, right=(off + 6, off + 7) + ((0,) if numbered else ()))


def classes_table(result: Any) -> str:
    """The classes of one search result, numbered for choosing."""
    rows = [(i, enum_name(c.seat_class), CLASS_LABELS.get(enum_name(c.seat_class), ""), c.free_seats,
             rupees(c.fare_paise)) for i, c in enumerate(result.classes, 1)]
    return table(("#", "Class", "", "Free", "Fare per seat"), rows, right=(0, 3, 4))


def coaches_table(coaches: Sequence[Any], numbered: bool = False) -> str:
    rows = [(([i] if numbered else []) + [c.label, enum_name(c.seat_class), c.seats, c.free_seats])
            for i, c in enumerate(coaches, 1)]
    headers = (["#"] if numbered else []) + ["Coach", "Class", "Seats", "Free"]
    off = 1 if numbered else 0
    return table(headers, rows, right=(off + 2, off + 3))


def seat_map_text(resp: Any, per_row: int = 8) -> str:
    """A coach's seats, `per_row` to a line: free seats as number+berth ('23L'), taken ones as '--'."""
    lines: list[str] = []
    if resp.coach and resp.seats:
        free = sum(1 for s in resp.seats if s.free)
        lines.append(f"Coach {resp.coach} ({enum_name(resp.seat_class)}): {free} of {len(resp.seats)} seats free "
                     f"on this segment")
        cells = [f"{s.number}{BERTH_ABBREV.get(s.berth, '')}" if s.free else "--" for s in resp.seats]
        width = max(len(c) for c in cells)
        for i in range(0, len(cells), per_row):
            lines.append("  " + "  ".join(c.rjust(width) for c in cells[i:i + per_row]))
        lines.append("  (-- taken; L lower, M middle, U upper, SL side lower, SU side upper, W window, A aisle)")
    elif resp.coaches:
        lines.append(coaches_table(resp.coaches))
    else:
        lines.append("This run has no coaches.")
    return "\n".join(lines)


def passengers_table(passengers: Sequence[Any]) -> str:
    rows = [(p.index, p.name, p.age, p.coach or "-", p.seat or "-", p.berth or "-", p.status)
            for p in passengers]
    return table(("#", "Name", "Age", "Coach", "Seat", "Berth", "Status"), rows, right=(0, 2, 4))


def booking_text(b: Any) -> str:
    """A booking in full: PNR and state, train and journey, money, passengers, last message."""
    state = enum_name(b.state)
    lines = [f"PNR {b.pnr}   {state} ({STATE_LABELS.get(state, state.lower())})",
             f"Train {b.train_number} {b.train_name}, run {b.run_id}, {b.date}, class {enum_name(b.seat_class)}",
             f"{b.from_station} {short_time(b.departure_ms)} -> {b.to_station} {short_time(b.arrival_ms)}"
             + (f"  ({duration(b.departure_ms, b.arrival_ms)})" if duration(b.departure_ms, b.arrival_ms) else "")]
    money_line = f"Amount {rupees(b.amount_paise)}   paid {rupees(b.paid_paise)}"
    if b.refunded_paise:
        money_line += f"   refunded {rupees(b.refunded_paise)}"
    lines.append(money_line)
    if b.hold_expires_ms:
        lines.append(f"Pay before {ist(b.hold_expires_ms)} IST, or the hold lapses")
    if b.waitlist_position:
        lines.append(f"Waitlist position {b.waitlist_position}")
    if b.passengers:
        lines += ["", passengers_table(b.passengers)]
    if b.message:
        lines += ["", b.message]
    return "\n".join(lines)


def bookings_table(bookings: Sequence[Any], numbered: bool = False) -> str:
    if not bookings:
        return "No bookings yet."
    rows = []
    for i, b in enumerate(bookings, 1):
        active = [p for p in b.passengers if p.status != "CANCELLED"]
        seats = ", ".join(f"{p.coach}-{p.seat}" for p in active if p.seat)
        rows.append(([i] if numbered else []) + [
            b.pnr, enum_name(b.state), f"{b.train_number} {b.train_name}", b.date, f"{b.from_station}-{b.to_station}",
            enum_name(b.seat_class), len(active) or len(b.passengers), seats or "-", rupees(b.amount_paise)])
    headers = (["#"] if numbered else []) + ["PNR", "State", "Train", "Date", "Journey", "Class", "Pax", "Seats",
                                             "Fare"]
    off = 1 if numbered else 0
    return table(headers, rows, right=(off + 6, off + 8) + ((0,) if numbered else ()))


def refund_quote_text(q: Any) -> str:
    return f"Cancelling now refunds {rupees(q.refund_paise)} ({q.percent}%: {q.rule})"


def train_text(t: Any) -> str:
    lines = [f"Train {t.number} {t.name} ({t.type}), leaves its origin at {t.departure_time} IST"]
    stops = [(s.station_code, s.station_name, f"+{s.arrival_offset_min} min", f"+{s.departure_offset_min} min",
              s.distance_km) for s in t.stops]
    lines += ["", table(("Stop", "Station", "Arrives", "Departs", "km"), stops, right=(4,))]
    coaches = [(c.label, enum_name(c.seat_class), c.seats) for c in t.coaches]
    lines += ["", table(("Coach", "Class", "Seats"), coaches, right=(2,))]
    return "\n".join(lines)


def runs_table(runs: Sequence[Any]) -> str:
    if not runs:
        return "No runs."
    rows = [(r.id, f"{r.train_number} {r.train_name}", r.date, short_time(r.departure_ms), r.status) for r in runs]
    return table(("Run", "Train", "Date", "Departs", "Status"), rows, right=(0,))


def report_text(rep: Any) -> str:
    r = rep.run
    lines = [f"Run {r.id}: train {r.train_number} {r.train_name} on {r.date} ({r.status})", ""]
    rows = [(enum_name(c.seat_class), c.seats, c.seats_sold, f"{c.occupancy_percent:.1f}%", rupees(c.revenue_paise),
             rupees(c.refunds_paise)) for c in rep.classes]
    lines.append(table(("Class", "Seats", "Sold", "Occupancy", "Revenue", "Refunds"), rows, right=(1, 2, 3, 4, 5)))
    lines += ["", f"Bookings {rep.bookings}, waitlisted {rep.waitlisted}; revenue {rupees(rep.revenue_paise)}, "
                  f"refunds {rupees(rep.refunds_paise)}"]
    return "\n".join(lines)


def user_text(u: Any) -> str:
    return f"{u.username} ({(u.role or 'unknown').lower()}, user id {u.id})"


# ============================================================================================= errors


@dataclasses.dataclass
class Problem:
    """An error as the CLI reports it: a sentence, a code for JSON ("NOT_FOUND", ...), an exit code."""

    sentence: str
    code: str
    exit_code: int
    detail: str = ""  # extra text for operators (Unavailable: what each node said)


_EXIT_BY_STATUS = {
    "INVALID_ARGUMENT": EXIT_USAGE,
    "UNAUTHENTICATED": EXIT_UNAUTHENTICATED,
    "PERMISSION_DENIED": EXIT_PERMISSION,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "DEADLINE_EXCEEDED": EXIT_UNAVAILABLE,
}


def sentence(text: str) -> str:
    """Capitalised, ending with a full stop."""
    text = (text or "").strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def describe_error(exc: BaseException) -> Problem:
    """The Problem for an exception of the client library (anything else: an internal error, no traceback)."""
    from grpclib import GRPCError

    from .client import BookingError, Unavailable

    if isinstance(exc, Unavailable):
        return Problem(UNAVAILABLE_SENTENCE, "UNAVAILABLE", EXIT_UNAVAILABLE, str(exc))
    if isinstance(exc, (BookingError, GRPCError)):
        code = exc.status.name
        msg = sentence(exc.message or code.replace("_", " ").lower())
        if code == "UNAUTHENTICATED":
            msg += " Log in again (railraft login USER PASSWORD)."
        elif code == "PERMISSION_DENIED" and "admin" not in msg.lower():
            msg += " (This needs an administrator's session.)"
        return Problem(msg, code, _EXIT_BY_STATUS.get(code, EXIT_REFUSED))
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return Problem(UNAVAILABLE_SENTENCE, "UNAVAILABLE", EXIT_UNAVAILABLE, f"{type(exc).__name__}: {exc}")
    return Problem(f"Something went wrong: {type(exc).__name__}: {exc}", "INTERNAL", EXIT_REFUSED)


# =========================================================================================== progress


SPINNER_FRAMES = "|/-\\"
WAITING_TEXT = "waiting for the cluster..."


async def with_progress(aw: Awaitable[T], stream: TextIO | None, *, label: str = WAITING_TEXT,
                        delay: float = 0.15, interval: float = 0.1) -> T:
    """Await `aw`; if it takes longer than `delay`, show a spinner and `label` on `stream` (None: nothing)
    until it is done, then erase that line."""
    if stream is None:
        return await aw
    task = asyncio.ensure_future(aw)
    shown = False
    try:
        done, _ = await asyncio.wait({task}, timeout=delay)
        i = 0
        while not done:
            stream.write(f"\r{SPINNER_FRAMES[i % len(SPINNER_FRAMES)]} {label}")
            stream.flush()
            shown = True
            i += 1
            done, _ = await asyncio.wait({task}, timeout=interval)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the caller's cancellation wins
                pass
        if shown:
            stream.write("\r" + " " * (len(label) + 2) + "\r")
            stream.flush()


__all__ = [
    "rupees", "ist", "short_time", "duration", "enum_name", "to_json", "out", "table",
    "stations_table", "search_table", "classes_table", "coaches_table", "seat_map_text", "passengers_table",
    "booking_text", "bookings_table", "refund_quote_text", "train_text", "runs_table", "report_text", "user_text",
    "Problem", "describe_error", "sentence", "with_progress", "UNAVAILABLE_SENTENCE", "WAITING_TEXT",
    "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "EXIT_UNAUTHENTICATED", "EXIT_PERMISSION", "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
]
