"""Calendar and wall-clock arithmetic for the deterministic apply, in plain integers.

The apply may not import `datetime` (tests/test_store_purity.py): its behaviour depends on the host's time zone
database and it invites `now()`.  Everything here is a pure function of its arguments.

Conventions used throughout railraft:

* An instant is an integer of milliseconds since the Unix epoch (UTC), like every `ts_ms`.
* A calendar date is a "YYYY-MM-DD" string, or an integer count of days since 1970-01-01 ("day number").
* Timetables are in Indian Standard Time, a fixed UTC+05:30 (India has no daylight saving time), so a local
  date and minute of the day convert to an instant without a time-zone database.

Day numbers use Howard Hinnant's `days_from_civil` / `civil_from_days` (proleptic Gregorian calendar).
"""

from __future__ import annotations

import re
from functools import lru_cache

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
DAY_MINUTES = 24 * 60
IST_OFFSET_MS = 5 * HOUR_MS + 30 * MINUTE_MS  # Indian Standard Time = UTC + 05:30, all year

# Dates outside this range are refused: they are typos, and they keep every instant comfortably in 64 bits.
YEAR_MIN = 2000
YEAR_MAX = 2199

_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_HHMM_RE = re.compile(r"(\d{2}):(\d{2})")
_DATETIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2})(?::(\d{2}))?")


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of the proleptic Gregorian date (year, month, day)."""
    y = year - (month <= 2)
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of `days_from_civil`: (year, month, day) of a day number."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_date(text: object) -> int:
    """The day number of a "YYYY-MM-DD" date string (a real calendar date in 2000..2199); else ValueError."""
    if not isinstance(text, str):
        raise ValueError("a date must be a string YYYY-MM-DD")
    m = _DATE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"date must look like YYYY-MM-DD (got {text[:40]!r})")
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    if not YEAR_MIN <= year <= YEAR_MAX or not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        raise ValueError(f"{text!r} is not a calendar date between {YEAR_MIN} and {YEAR_MAX}")
    return days_from_civil(year, month, day)


@lru_cache(maxsize=4096)  # a handful of dates at a time, formatted for every hold, booking view and search result
def format_date(days: int) -> str:
    """The "YYYY-MM-DD" string of a day number."""
    y, m, d = civil_from_days(days)
    return f"{y:04d}-{m:02d}-{d:02d}"


def parse_hhmm(text: object) -> int:
    """Minutes after midnight of an "HH:MM" time (00:00 .. 23:59); else ValueError."""
    if not isinstance(text, str):
        raise ValueError("a time must be a string HH:MM")
    m = _HHMM_RE.fullmatch(text)
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"time must look like HH:MM, 00:00 to 23:59 (got {text[:40]!r})")
    return int(m[1]) * 60 + int(m[2])


def format_hhmm(minutes: int) -> str:
    """"HH:MM" of a minute of the day (taken modulo a day)."""
    minutes %= DAY_MINUTES
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def local_ms(days: int, minute_of_day: int) -> int:
    """The instant (epoch ms) of IST wall-clock `minute_of_day` on local date `days`."""
    return days * DAY_MS + minute_of_day * MINUTE_MS - IST_OFFSET_MS


def local_day(ms: int) -> int:
    """The IST calendar date (day number) of an instant."""
    return (ms + IST_OFFSET_MS) // DAY_MS


def parse_datetime(text: object) -> int:
    """The instant of an IST "YYYY-MM-DD HH:MM" or "YYYY-MM-DD HH:MM:SS" string, floored to the minute.

    Seconds are accepted (the original API sends them) but timetables have minute resolution, so they are
    dropped rather than rounded.
    """
    if not isinstance(text, str):
        raise ValueError("a date and time must be a string YYYY-MM-DD HH:MM[:SS]")
    m = _DATETIME_RE.fullmatch(text)
    if not m:
        raise ValueError(f"date and time must look like YYYY-MM-DD HH:MM:SS (got {text[:40]!r})")
    if m[3] is not None and int(m[3]) > 59:
        raise ValueError(f"{text!r} has more than 59 seconds")
    return local_ms(parse_date(m[1]), parse_hhmm(m[2]))


def format_local(ms: int) -> str:
    """"YYYY-MM-DD HH:MM" in IST of an instant."""
    local = ms + IST_OFFSET_MS
    return f"{format_date(local // DAY_MS)} {format_hhmm((local % DAY_MS) // MINUTE_MS)}"


def format_local_seconds(ms: int) -> str:
    """"YYYY-MM-DD HH:MM:SS" in IST of an instant (the original API's format)."""
    local = ms + IST_OFFSET_MS
    secs = (local % MINUTE_MS) // 1000
    return f"{format_local(ms)}:{secs:02d}"
