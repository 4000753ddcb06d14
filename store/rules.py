"""Input rules shared by the proposer (store.auth, the gateway) and the deterministic apply (store.state_machine).

These are pure functions of their arguments: the state machine re-checks every rule when it applies a command,
so a buggy or hostile proposer can never put a malformed row into the replicated database.  The proposer checks
the same rules first, so a user normally gets the error before anything is proposed.
"""

from __future__ import annotations

import re
from typing import Any

from . import civil

USERNAME_MIN = 3
USERNAME_MAX = 32
PASSWORD_MIN = 8
PASSWORD_MAX = 128
# ASCII only: usernames are compared case-insensitively (SQLite's NOCASE folds ASCII only), so a non-ASCII
# letter would make "the same name" ambiguous.
_USERNAME_RE = re.compile(r"[A-Za-z0-9._-]+")

ROLE_CUSTOMER = "CUSTOMER"
ROLE_ADMIN = "ADMIN"
ROLES = frozenset({ROLE_CUSTOMER, ROLE_ADMIN})

# Upper bound for a stored password hash: ours are ~140 characters; anything much longer is garbage.
PASSWORD_HASH_MAX = 512


def validate_username(username: object) -> str:
    """Return `username` if it is 3-32 characters of ASCII letters, digits, '.', '_' or '-'; else ValueError."""
    if not isinstance(username, str):
        raise ValueError("username must be a string")
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise ValueError(f"username must be {USERNAME_MIN} to {USERNAME_MAX} characters long (got {len(username)})")
    if not _USERNAME_RE.fullmatch(username):
        raise ValueError("username may contain only letters, digits, '.', '_' and '-'")
    return username


def validate_password(password: object) -> str:
    """Return `password` if it is 8-128 characters long; else ValueError (the message never echoes it)."""
    if not isinstance(password, str):
        raise ValueError("password must be a string")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValueError(f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    return password


def validate_role(role: object) -> str:
    """Return `role` if it is CUSTOMER or ADMIN; else ValueError."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(ROLES))} (got {role!r})")
    return role  # type: ignore[return-value]


_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")


def validate_token_sha256(token_sha256: object) -> str:
    """Return `token_sha256` if it is 64 lowercase hex digits (a SHA-256 digest); else ValueError."""
    if not isinstance(token_sha256, str) or not _SHA256_HEX_RE.fullmatch(token_sha256):
        raise ValueError("token_sha256 must be 64 lowercase hex digits")
    return token_sha256


def validate_host(host: object) -> str:
    """Return `host` if it is a plausible host name or IP literal (1-253 printable ASCII, no spaces)."""
    if not isinstance(host, str) or not 1 <= len(host) <= 253 or not host.isascii() or not host.isprintable() \
            or " " in host:
        raise ValueError(f"host must be a host name or IP address (got {host!r})")
    return host


def validate_port(port: object) -> int:
    """Return `port` if it is an int in 1..65535; else ValueError."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1 to 65535 (got {port!r})")
    return port


# =============================================================================================== booking
#
# The railway's vocabulary and the input rules of the booking commands.  Apply re-checks all of them; the
# things only the database knows (does station NDLS exist, is seat B1-23 free) are checked in apply alone.

TRAVEL_CLASSES = ("AC1", "AC2", "AC3", "SLEEPER", "GENERAL")  # also the display order
TRAIN_TYPES = frozenset(
    {"EXPRESS", "SUPERFAST", "MAIL", "LOCAL", "PASSENGER", "RAJDHANI", "SHATABDI", "DURONTO", "VANDE_BHARAT"}
)
BERTH_TYPES = frozenset({"LOWER", "MIDDLE", "UPPER", "SIDE_LOWER", "SIDE_UPPER", "WINDOW", "AISLE"})

# The berth of seat n (1-based) of a coach is pattern[(n - 1) % len(pattern)]; a coach may give its own
# pattern, else its class's default (the layout of an Indian Railways bay / chair-car row).
DEFAULT_BERTHS: dict[str, tuple[str, ...]] = {
    "AC1": ("LOWER", "UPPER"),
    "AC2": ("LOWER", "UPPER", "LOWER", "UPPER", "SIDE_LOWER", "SIDE_UPPER"),
    "AC3": ("LOWER", "MIDDLE", "UPPER", "LOWER", "MIDDLE", "UPPER", "SIDE_LOWER", "SIDE_UPPER"),
    "SLEEPER": ("LOWER", "MIDDLE", "UPPER", "LOWER", "MIDDLE", "UPPER", "SIDE_LOWER", "SIDE_UPPER"),
    "GENERAL": ("WINDOW", "MIDDLE", "AISLE", "AISLE", "MIDDLE", "WINDOW"),
}
# Generated coaches (AddTrainService, the original API's "N seats of class C"): label prefix and size.
COACH_PREFIX = {"AC1": "H", "AC2": "A", "AC3": "B", "SLEEPER": "S", "GENERAL": "G"}
COACH_CAPACITY = {"AC1": 24, "AC2": 48, "AC3": 64, "SLEEPER": 72, "GENERAL": 90}

STATION_NAME_MAX = 64
TRAIN_NAME_MAX = 64
TRAIN_NUMBER_MAX = 99_999
ROUTE_STOPS_MAX = 60
ROUTE_MINUTES_MAX = 7 * 24 * 60  # no journey is longer than a week; bounds how far back search looks
ROUTE_KM_MAX = 10_000
COACHES_MAX = 100
COACH_SEATS_MAX = 120
BERTH_PATTERN_MAX = 16
SERVICE_SEATS_MAX = 2_000  # per class, AddTrainService
SCHEDULE_DAYS_MAX = 366  # one ScheduleRuns command covers at most this many dates
PRICE_PAISE_MAX = 10_000_000  # ₹1 lakh per seat
PASSENGERS_MAX = 6
PASSENGER_NAME_MAX = 64
AGE_MAX = 125
HOLD_SECONDS_DEFAULT = 600  # a hold lasts 10 minutes unless the client asks otherwise
HOLD_SECONDS_MIN = 60
HOLD_SECONDS_MAX = 1_800
WAITLIST_MAX = 100  # bookings waiting per run and class
PROVIDER_REF_MAX = 64
REASON_MAX = 200

# PNRs: 10 characters of a 32-letter alphabet without the look-alikes 0/O and 1/I (50 bits).
PNR_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
PNR_LENGTH = 10
_PNR_RE = re.compile(f"[{PNR_ALPHABET}]{{{PNR_LENGTH}}}")

_STATION_CODE_RE = re.compile(r"[A-Z][A-Z0-9]{1,5}")
_COACH_LABEL_RE = re.compile(r"[A-Z][A-Z0-9]{0,4}")
_SEAT_REF_RE = re.compile(r"([A-Z][A-Z0-9]{0,4})-([0-9]{1,3})")


def _text(value: object, what: str, max_len: int) -> str:
    """A stripped-equal, printable, non-empty string of at most `max_len` characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if not value or value != value.strip():
        raise ValueError(f"{what} must not be empty or start/end with spaces")
    if len(value) > max_len:
        raise ValueError(f"{what} must be at most {max_len} characters long (got {len(value)})")
    if not value.isprintable():
        raise ValueError(f"{what} must not contain control characters")
    return value


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer from {lo} to {hi} (got {value!r})")
    return value


def validate_station_code(code: object) -> str:
    """Return `code` if it is 2-6 uppercase letters/digits starting with a letter (e.g. NDLS, BCT); else ValueError."""
    if not isinstance(code, str) or not _STATION_CODE_RE.fullmatch(code):
        raise ValueError(f"station code must be 2 to 6 capital letters or digits, e.g. NDLS (got {str(code)[:20]!r})")
    return code


def validate_station_name(name: object) -> str:
    """Return `name` if it is 1-64 printable characters without surrounding spaces; else ValueError."""
    return _text(name, "station name", STATION_NAME_MAX)


def validate_train_number(number: object) -> int:
    """Return `number` if it is an integer 1..99999; else ValueError."""
    return _int(number, "train number", 1, TRAIN_NUMBER_MAX)


def validate_train_name(name: object) -> str:
    """Return `name` if it is 1-64 printable characters; else ValueError."""
    return _text(name, "train name", TRAIN_NAME_MAX)


def normalize_train_type(value: object) -> str:
    """Upper-case and underscore a train type ('Super fast' -> 'SUPER_FAST'); for proposers, before validating."""
    if not isinstance(value, str):
        raise ValueError("train type must be a string")
    return "_".join(value.upper().replace("-", " ").split())


def validate_train_type(value: object) -> str:
    """Return `value` if it is one of TRAIN_TYPES (upper case); else ValueError."""
    if value not in TRAIN_TYPES:
        raise ValueError(f"train type must be one of {', '.join(sorted(TRAIN_TYPES))} (got {str(value)[:20]!r})")
    return value  # type: ignore[return-value]


def validate_travel_class(value: object) -> str:
    """Return `value` if it is AC1, AC2, AC3, SLEEPER or GENERAL; else ValueError."""
    if value not in TRAVEL_CLASSES:
        raise ValueError(f"class must be one of {', '.join(TRAVEL_CLASSES)} (got {str(value)[:20]!r})")
    return value  # type: ignore[return-value]


def validate_berth(value: object, *, allow_none: bool = False) -> str:
    """Return a berth type; with `allow_none`, "" (no preference) is accepted too."""
    if allow_none and value == "":
        return ""
    if value not in BERTH_TYPES:
        raise ValueError(f"berth must be one of {', '.join(sorted(BERTH_TYPES))} (got {str(value)[:20]!r})")
    return value  # type: ignore[return-value]


def validate_time(value: object) -> int:
    """Minutes after midnight of an "HH:MM" string; ValueError otherwise."""
    return civil.parse_hhmm(value)


def validate_date(value: object) -> int:
    """Day number of a "YYYY-MM-DD" string; ValueError otherwise."""
    return civil.parse_date(value)


def validate_date_not_past(value: object, now_ms: int) -> int:
    """Day number of a date that is today or later in India at `now_ms`; ValueError otherwise."""
    day = civil.parse_date(value)
    today = civil.local_day(now_ms)
    if day < today:
        raise ValueError(f"date {value} is in the past (today is {civil.format_date(today)})")
    return day


def validate_date_range(first: object, last: object, now_ms: int) -> tuple[int, int]:
    """(first, last) day numbers of a date range that starts today or later and spans at most 366 days."""
    a = validate_date_not_past(first, now_ms)
    b = civil.parse_date(last)
    if b < a:
        raise ValueError(f"last date {last} is before first date {first}")
    if b - a + 1 > SCHEDULE_DAYS_MAX:
        raise ValueError(f"a date range may cover at most {SCHEDULE_DAYS_MAX} days")
    return a, b


def validate_route(stops: object) -> None:
    """Check a route: a sequence of objects with station_code, arrive_min, depart_min, km.

    2-60 stops, each station once; the first stop is at 0 minutes and 0 km; arrival at a stop is after the
    departure from the previous one, departure is not before arrival, the last stop's departure equals its
    arrival; kilometres strictly increase; everything within a week and 10,000 km.
    """
    if not isinstance(stops, (tuple, list)) or not 2 <= len(stops) <= ROUTE_STOPS_MAX:
        raise ValueError(f"a route must have 2 to {ROUTE_STOPS_MAX} stops")
    seen: set[str] = set()
    for i, stop in enumerate(stops):
        code = validate_station_code(stop.station_code)
        if code in seen:
            raise ValueError(f"station {code} appears twice in the route")
        seen.add(code)
        arr = _int(stop.arrive_min, f"stop {i + 1} arrival minute", 0, ROUTE_MINUTES_MAX)
        dep = _int(stop.depart_min, f"stop {i + 1} departure minute", 0, ROUTE_MINUTES_MAX)
        km = _int(stop.km, f"stop {i + 1} distance", 0, ROUTE_KM_MAX)
        if i == 0:
            if arr != 0 or dep != 0 or km != 0:
                raise ValueError("the first stop of a route is at minute 0 and km 0")
            continue
        prev = stops[i - 1]
        if arr <= prev.depart_min:
            raise ValueError(f"stop {i + 1} ({code}) must be reached after leaving stop {i}")
        if dep < arr:
            raise ValueError(f"stop {i + 1} ({code}) departs before it arrives")
        if km <= prev.km:
            raise ValueError(f"stop {i + 1} ({code}) must be farther than stop {i}")
    if stops[-1].depart_min != stops[-1].arrive_min:
        raise ValueError("the last stop's departure must equal its arrival")


def validate_coach_label(label: object) -> str:
    """Return a coach label like A1, B12, S3, GS1 (1-5 capital letters/digits starting with a letter)."""
    if not isinstance(label, str) or not _COACH_LABEL_RE.fullmatch(label):
        raise ValueError(f"coach label must be 1 to 5 capital letters or digits, e.g. B1 (got {str(label)[:20]!r})")
    return label


def validate_coaches(coaches: object) -> None:
    """Check a coach list: objects with label, travel_class, seats, berths (a berth pattern, may be empty)."""
    if not isinstance(coaches, (tuple, list)) or not 1 <= len(coaches) <= COACHES_MAX:
        raise ValueError(f"a train must have 1 to {COACHES_MAX} coaches")
    labels: set[str] = set()
    for coach in coaches:
        label = validate_coach_label(coach.label)
        if label in labels:
            raise ValueError(f"coach {label} appears twice")
        labels.add(label)
        validate_travel_class(coach.travel_class)
        _int(coach.seats, f"coach {label} seat count", 1, COACH_SEATS_MAX)
        if len(coach.berths) > BERTH_PATTERN_MAX:
            raise ValueError(f"coach {label}: a berth pattern has at most {BERTH_PATTERN_MAX} entries")
        for berth in coach.berths:
            validate_berth(berth)


def validate_price_paise(value: object, *, allow_zero: bool = False) -> int:
    """A price in paise, 1..10,000,000 (0 allowed with `allow_zero`, meaning "use the tariff")."""
    return _int(value, "price (paise)", 0 if allow_zero else 1, PRICE_PAISE_MAX)


def validate_passenger_name(name: object) -> str:
    """1-64 printable characters, no surrounding spaces."""
    return _text(name, "passenger name", PASSENGER_NAME_MAX)


def validate_age(age: object) -> int:
    """An age 0..125."""
    return _int(age, "passenger age", 0, AGE_MAX)


def parse_seat_ref(ref: object) -> tuple[str, int]:
    """("B1", 23) from "B1-23"; ValueError if malformed or seat 0."""
    if not isinstance(ref, str):
        raise ValueError("a seat must be a string like B1-23")
    m = _SEAT_REF_RE.fullmatch(ref)
    if not m or int(m[2]) < 1:
        raise ValueError(f"seat must look like COACH-NUMBER, e.g. B1-23 (got {ref[:20]!r})")
    return m[1], int(m[2])


def seat_ref(label: str, seat_no: int) -> str:
    """"B1-23" for coach B1, seat 23."""
    return f"{label}-{seat_no}"


def validate_passengers(passengers: object) -> None:
    """Check 1-6 passengers (objects with name, age, berth_pref, seat); chosen seats must be distinct."""
    if not isinstance(passengers, (tuple, list)) or not 1 <= len(passengers) <= PASSENGERS_MAX:
        raise ValueError(f"a booking is for 1 to {PASSENGERS_MAX} passengers")
    seats: set[tuple[str, int]] = set()
    for p in passengers:
        validate_passenger_name(p.name)
        validate_age(p.age)
        validate_berth(p.berth_pref, allow_none=True)
        if p.seat:
            ref = parse_seat_ref(p.seat)
            if ref in seats:
                raise ValueError(f"seat {p.seat} is chosen twice")
            seats.add(ref)


def validate_hold_seconds(value: object) -> int:
    """How long a hold lasts: 60..1800 seconds."""
    return _int(value, "hold duration (seconds)", HOLD_SECONDS_MIN, HOLD_SECONDS_MAX)


def validate_pnr(pnr: object) -> str:
    """Return `pnr` if it is 10 characters of PNR_ALPHABET; else ValueError."""
    if not isinstance(pnr, str) or not _PNR_RE.fullmatch(pnr):
        raise ValueError("a PNR is 10 characters: capital letters and digits, without 0, O, 1 or I")
    return pnr


def normalize_pnr(text: object) -> str:
    """A PNR as a user may type it ('k7m2-9xq4 ab') -> 'K7M29XQ4AB'; for proposers and lookups."""
    if not isinstance(text, str):
        raise ValueError("a PNR must be a string")
    return "".join(ch for ch in text.upper() if ch not in " -")


def validate_provider_ref(ref: object) -> str:
    """A payment provider's charge reference: 1-64 printable ASCII characters."""
    if not isinstance(ref, str) or not 1 <= len(ref) <= PROVIDER_REF_MAX or not ref.isascii() \
            or not ref.isprintable():
        raise ValueError(f"provider reference must be 1 to {PROVIDER_REF_MAX} printable ASCII characters")
    return ref


def validate_reason(reason: object) -> str:
    """A free-text reason (may be empty), at most 200 printable characters."""
    if not isinstance(reason, str) or len(reason) > REASON_MAX or (reason and not reason.isprintable()):
        raise ValueError(f"reason must be at most {REASON_MAX} printable characters")
    return reason


# A service id names (run, class, boarding station, alighting station), e.g. "R123-AC2-NDLS-BCT": what search
# hands out and what the original API's InitiateBooking takes back.
_SERVICE_ID_RE = re.compile(r"R([1-9][0-9]{0,17})-([A-Z0-9]+)-([A-Z][A-Z0-9]{1,5})-([A-Z][A-Z0-9]{1,5})")


def encode_service_id(run_id: int, travel_class: str, from_code: str, to_code: str) -> str:
    """"R123-AC2-NDLS-BCT" for run 123, class AC2, NDLS to BCT."""
    return f"R{run_id}-{travel_class}-{from_code}-{to_code}"


def parse_service_id(service_id: object) -> tuple[int, str, str, str]:
    """(run_id, travel_class, from_code, to_code) of a service id; ValueError if malformed."""
    if not isinstance(service_id, str):
        raise ValueError("service id must be a string")
    m = _SERVICE_ID_RE.fullmatch(service_id.strip().upper())
    if not m:
        raise ValueError(f"malformed service id {service_id[:40]!r} (expected e.g. R123-AC2-NDLS-BCT)")
    validate_travel_class(m[2])
    return int(m[1]), m[2], m[3], m[4]


# ========================================================================================== precheck


def _check_unique_classes(items: Any, what: str) -> list[str]:
    classes = []
    for item in items:
        cls = validate_travel_class(item.travel_class)
        if cls in classes:
            raise ValueError(f"class {cls} is {what} twice")
        classes.append(cls)
    return classes


def _service_coach_count(seats: Any) -> int:
    return sum(-(-s.seats // COACH_CAPACITY[s.travel_class]) for s in seats)


def _precheck_add_train_service(cmd: Any) -> None:
    validate_train_number(cmd.train_number)
    dep = civil.parse_datetime(cmd.departure)
    if dep <= cmd.ts_ms:
        raise ValueError(f"departure {cmd.departure} is in the past")
    if cmd.arrival:
        arr = civil.parse_datetime(cmd.arrival)
        if arr <= dep:
            raise ValueError("arrival must be after departure")
        if arr - dep > ROUTE_MINUTES_MAX * civil.MINUTE_MS:
            raise ValueError("a journey may last at most a week")
    if not 1 <= len(cmd.seats) <= len(TRAVEL_CLASSES):
        raise ValueError("give seats for 1 to 5 classes")
    _check_unique_classes(cmd.seats, "given")
    for s in cmd.seats:
        _int(s.seats, f"{s.travel_class} seats", 1, SERVICE_SEATS_MAX)
        validate_price_paise(s.price_paise, allow_zero=True)
    n = _service_coach_count(cmd.seats)
    if n > COACHES_MAX:
        raise ValueError(f"that needs {n} coaches; a run has at most {COACHES_MAX}")


def precheck(cmd: Any) -> None:
    """Every rule of a booking command that needs no database, as the gateway should check before proposing
    and as the apply re-checks first: ValueError with a human message (-> INVALID_ARGUMENT) if one fails.

    Checks formats, ranges and lengths, "not in the past" against the command's own `ts_ms`, at most 6
    passengers, distinct chosen seats, and so on.  What needs the database (does station NDLS exist, is the
    hold expired, is the seat free) is checked by the apply alone.  Commands without booking rules pass.
    """
    t = getattr(cmd, "TYPE", "")
    c = cmd
    if t == "bootstrap_admin":
        validate_username(c.username)
        if not c.password_hash or len(c.password_hash) > PASSWORD_HASH_MAX:
            raise ValueError("password_hash is missing or too long")
    elif t == "set_user_role":
        validate_username(c.username)
        validate_role(c.role)
    elif t == "create_station":
        validate_station_code(c.code)
        validate_station_name(c.name)
    elif t == "add_train":
        validate_train_number(c.number)
        validate_train_name(c.name)
        validate_train_type(c.train_type)
        validate_time(c.depart_time)
        validate_route(c.stops)
        validate_coaches(c.coaches)
    elif t == "schedule_runs":
        validate_train_number(c.train_number)
        validate_date_range(c.first_date, c.last_date, c.ts_ms)
        _check_unique_classes(c.prices, "priced")
        for p in c.prices:
            validate_price_paise(p.price_paise)
    elif t == "add_train_service":
        _precheck_add_train_service(c)
    elif t == "cancel_run":
        _int(c.run_id, "run id", 1, 2**62)
        validate_reason(c.reason)
    elif t == "hold_seats":
        validate_pnr(c.pnr)
        _int(c.run_id, "run id", 1, 2**62)
        validate_travel_class(c.travel_class)
        validate_station_code(c.from_code)
        validate_station_code(c.to_code)
        if c.from_code == c.to_code:
            raise ValueError("boarding and alighting stations must differ")
        validate_passengers(c.passengers)
        validate_hold_seconds(c.hold_seconds)
    elif t == "confirm_payment":
        validate_pnr(c.pnr)
        _int(c.amount_paise, "amount (paise)", 1, PRICE_PAISE_MAX * PASSENGERS_MAX)
        if c.approved:
            validate_provider_ref(c.provider_ref)
        validate_reason(c.decline_reason)
    elif t == "cancel_booking":
        validate_pnr(c.pnr)
        nos = c.passenger_nos
        for no in nos:
            _int(no, "passenger number", 1, PASSENGERS_MAX)
        if len(set(nos)) != len(nos):
            raise ValueError("a passenger is listed twice")
    elif t == "expire_holds":
        if c.now_ms > c.ts_ms:
            raise ValueError("now_ms may not be later than the command's ts_ms")
    elif t == "settle_refunds":
        for s in c.settlements:
            validate_provider_ref(s.provider_ref)
