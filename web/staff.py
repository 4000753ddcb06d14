"""Staff pages (the ADMIN role): stations, trains with their routes and coaches, scheduling and cancelling runs,
and the occupancy/revenue report of a run.

    /staff                          overview: counts, every train, shortcuts
    /staff/stations                 list + add a station
    /staff/trains                   list; /staff/trains/new adds one; /staff/trains/<number> shows route and coaches
    /staff/schedule                 schedule runs of a train for a date range
    /staff/runs?train=&from=&to=    runs of a train, with report and cancel links
    /staff/runs/<id>                occupancy and revenue per class
    /staff/runs/<id>/cancel         confirmation (what will be refunded), then the cancellation

Every page needs a login (else: to the login page) and the ADMIN role in the session (else: a 403 sentence).  The
server checks the role again on every admin call, so a stale session role only changes which page is shown.

Forms work without JavaScript: a train's route is a textarea with one stop per line ("CODE ARR DEP KM") and
its coaches one per line ("LABEL CLASS SEATS"); problems name the line.  Input is checked here first (no call is
made with a form that has problems) and the server checks it again; the server's answer to a bad form
(invalid, already exists, not found) is shown on the same form.

Writes carry a request id bound to the form: a nonce minted when the form is rendered, hashed together with
the fields sent.  A double submit of the same form therefore applies once, while a nonce reused with
different fields (a page from the browser history, a form corrected after the server refused it) is a new
request -- the cluster remembers the first answer to each request id, failures included.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date as date_cls, datetime, timedelta
from typing import Any

from quart import flash, redirect, render_template, request, url_for

from gateway.client import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from proto.gen.railraft.v1 import SeatClass

from web.app import IST, WebContext, humanize_error, session_is_admin

REFUSED_SENTENCE = "This page is for railway staff. Please log in with a staff account."

# The limits of the booking rules (store/rules.py, which web/ may not import); the server checks them again.
STATION_CODE_RE = re.compile(r"[A-Z][A-Z0-9]{1,5}")
COACH_LABEL_RE = re.compile(r"[A-Z][A-Z0-9]{0,4}")
NAME_MAX = 64
TRAIN_NUMBER_MAX = 99_999
ROUTE_STOPS_MAX = 60
ROUTE_MINUTES_MAX = 7 * 24 * 60
ROUTE_KM_MAX = 10_000
COACHES_MAX = 100
COACH_SEATS_MAX = 120
SCHEDULE_DAYS_MAX = 366
REASON_MAX = 200
RUNS_DEFAULT_DAYS = 30
# Suggestions only (a datalist): the server decides which types exist.
TRAIN_TYPES = ("RAJDHANI", "SHATABDI", "DURONTO", "VANDE_BHARAT", "SUPERFAST", "EXPRESS", "MAIL", "PASSENGER",
               "LOCAL")
CLASS_ALIASES = {
    "AC1": "AC1", "1A": "AC1", "FIRST": "AC1",
    "AC2": "AC2", "2A": "AC2",
    "AC3": "AC3", "3A": "AC3",
    "SLEEPER": "SLEEPER", "SL": "SLEEPER",
    "GENERAL": "GENERAL", "GN": "GENERAL", "GEN": "GENERAL", "2S": "GENERAL",
}
CLASS_ORDER = ("AC1", "AC2", "AC3", "SLEEPER", "GENERAL")
SHORT_CLASS = {"AC1": "1A", "AC2": "2A", "AC3": "3A", "SLEEPER": "SL", "GENERAL": "GN"}
# Form problems the server may find that the form cannot (a taken code, an unknown station): shown on the form.
FORM_ERRORS = (InvalidArgument, AlreadyExists, NotFound, FailedPrecondition)

ROUTE_EXAMPLE = "NDLS  -     0     0\nKOTA  4:20  4:30  465\nBRC   10:40 10:50 992\nBCT   15:55 -     1384"
COACHES_EXAMPLE = "H1  1A  24\nA1  2A  48\nB1  3A  64\nB2  3A  64\nS1  SL  72"


# ============================================================================================ parsing


def _today() -> date_cls:
    return datetime.now(IST).date()


def _printable_name(value: str, what: str) -> str | None:
    """The problem with a name field, or None."""
    if not value:
        return f"Enter the {what}."
    if len(value) > NAME_MAX:
        return f"The {what} must be at most {NAME_MAX} characters long."
    if not value.isprintable():
        return f"The {what} must not contain control characters."
    return None


def parse_minutes(text: str) -> int | None:
    """Minutes after the origin departure: "260" or "4:20" (hours:minutes, hours may exceed 24); None if neither."""
    if re.fullmatch(r"\d{1,5}", text):
        return int(text)
    m = re.fullmatch(r"(\d{1,3}):([0-5]\d)", text)
    if m:
        return int(m[1]) * 60 + int(m[2])
    return None


def format_offset(minutes: int) -> str:
    """265 -> "4:25" (hours:minutes after the origin departure)."""
    return f"{minutes // 60}:{minutes % 60:02d}"


def parse_route(text: str) -> tuple[list[tuple[str, int, int, int]], list[str]]:
    """Stops (code, arrival_min, departure_min, km) from one stop per line, and the problems (naming the line).

    A line is "CODE ARRIVAL DEPARTURE KM"; times are minutes ("260") or hours:minutes ("4:20") after the train
    leaves its origin; "-" means the same as the other time (the origin's arrival, the terminus's departure).
    Blank lines and lines starting with "#" are skipped.
    """
    stops: list[tuple[str, int, int, int]] = []
    lines: list[int] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        where = f"Route line {n} ({line[:40]})"
        if len(parts) != 4:
            problems.append(f"{where}: write the station code, arrival, departure and distance in km, "
                            f"e.g. \"KOTA 4:20 4:30 465\".")
            continue
        code, arr_s, dep_s, km_s = parts[0].upper(), parts[1], parts[2], parts[3]
        bad = []
        if not STATION_CODE_RE.fullmatch(code):
            bad.append(f"{parts[0]!r} is not a station code (2 to 6 capital letters or digits, e.g. NDLS)")
        elif code in seen:
            bad.append(f"{code} is already on line {seen[code]}; a train stops at a station once")
        arr = None if arr_s == "-" else parse_minutes(arr_s)
        dep = None if dep_s == "-" else parse_minutes(dep_s)
        if arr_s != "-" and arr is None:
            bad.append(f"arrival {arr_s!r} is not a time after departure from the origin (minutes, or h:mm)")
        if dep_s != "-" and dep is None:
            bad.append(f"departure {dep_s!r} is not a time after departure from the origin (minutes, or h:mm)")
        if arr_s == "-" and dep_s == "-":
            bad.append("give the arrival or the departure time (only one of them may be \"-\")")
        km = int(km_s) if re.fullmatch(r"\d{1,6}", km_s) else None
        if km is None:
            bad.append(f"distance {km_s!r} is not a whole number of kilometres")
        if bad:
            problems.append(f"{where}: " + "; ".join(bad) + ".")
            continue
        if arr is None:
            arr = dep
        if dep is None:
            dep = arr
        assert arr is not None and dep is not None and km is not None
        seen[code] = n
        stops.append((code, arr, dep, km))
        lines.append(n)

    if not problems:
        if not 2 <= len(stops) <= ROUTE_STOPS_MAX:
            problems.append(f"A route has 2 to {ROUTE_STOPS_MAX} stops, one per line (it has {len(stops)}).")
        for i, ((code, arr, dep, km), n) in enumerate(zip(stops, lines)):
            where = f"Route line {n} ({code})"
            if arr > ROUTE_MINUTES_MAX or dep > ROUTE_MINUTES_MAX:
                problems.append(f"{where}: no journey is longer than a week ({format_offset(ROUTE_MINUTES_MAX)}).")
            if km > ROUTE_KM_MAX:
                problems.append(f"{where}: the distance must be at most {ROUTE_KM_MAX:,} km.")
            if i == 0:
                if arr or dep or km:
                    problems.append(f"{where}: the first stop is where the train starts: departure 0 and 0 km "
                                    f"(e.g. \"{code} - 0 0\").")
                continue
            p_code, _, p_dep, p_km = stops[i - 1]
            if arr <= p_dep:
                problems.append(f"{where}: the train must arrive after it leaves {p_code} "
                                f"(at {format_offset(p_dep)}).")
            if dep < arr:
                problems.append(f"{where}: the departure is before the arrival.")
            if km <= p_km:
                problems.append(f"{where}: the distance must be more than at {p_code} ({p_km} km).")
        if len(stops) >= 2 and stops[-1][1] != stops[-1][2]:
            problems.append(f"Route line {lines[-1]} ({stops[-1][0]}): the last stop is where the train ends: "
                            f"leave its departure as \"-\".")
    return stops, problems


def parse_coaches(text: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """Coaches (label, class, seats) from one coach per line ("B1 3A 64"), and the problems (naming the line).

    Classes: AC1/1A, AC2/2A, AC3/3A, SLEEPER/SL, GENERAL/GN.  Blank lines and lines starting with "#" are skipped.
    """
    coaches: list[tuple[str, str, int]] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        where = f"Coach line {n} ({line[:40]})"
        if len(parts) != 3:
            problems.append(f"{where}: write the coach label, class and number of seats, e.g. \"B1 3A 64\".")
            continue
        label, cls_s, seats_s = parts[0].upper(), parts[1].upper(), parts[2]
        bad = []
        if not COACH_LABEL_RE.fullmatch(label):
            bad.append(f"{parts[0]!r} is not a coach label (1 to 5 capital letters or digits, e.g. B1)")
        elif label in seen:
            bad.append(f"coach {label} is already on line {seen[label]}")
        cls = CLASS_ALIASES.get(cls_s)
        if cls is None:
            bad.append(f"{parts[1]!r} is not a class (1A, 2A, 3A, SL or GN)")
        seats = int(seats_s) if re.fullmatch(r"\d{1,4}", seats_s) else 0
        if not 1 <= seats <= COACH_SEATS_MAX:
            bad.append(f"seats must be a number from 1 to {COACH_SEATS_MAX}")
        if bad:
            problems.append(f"{where}: " + "; ".join(bad) + ".")
            continue
        assert cls is not None
        seen[label] = n
        coaches.append((label, cls, seats))
    if not problems and not 1 <= len(coaches) <= COACHES_MAX:
        problems.append(f"A train has 1 to {COACHES_MAX} coaches, one per line (it has {len(coaches)}).")
    return coaches, problems


def parse_date_range(first: str, last: str, *, not_past: bool) -> list[str]:
    """Problems with a date range (ISO dates, last >= first, at most 366 days, optionally not before today)."""
    problems = []
    try:
        a = date_cls.fromisoformat(first)
    except ValueError:
        a = None
        problems.append("Choose the first date.")
    try:
        b = date_cls.fromisoformat(last)
    except ValueError:
        b = None
        problems.append("Choose the last date.")
    if a and b:
        if b < a:
            problems.append("The last date is before the first date.")
        elif (b - a).days + 1 > SCHEDULE_DAYS_MAX:
            problems.append(f"Choose at most {SCHEDULE_DAYS_MAX} days at a time.")
        if not_past and a < _today():
            problems.append(f"The first date is in the past (today is {_today().isoformat()}).")
    return problems


def form_request_id(form: Any, *fields: Any) -> str | None:
    """The request id of a write: the form's nonce (minted when it was rendered) hashed with the fields sent,
    or None (the client mints one) when the form has no valid nonce."""
    nonce = str(form.get("request_id", "")).strip().lower()
    if len(nonce) != 32 or any(c not in "0123456789abcdef" for c in nonce):
        return None
    blob = json.dumps([nonce, *fields], default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _class_key(value: Any) -> str:
    try:
        return SeatClass(value).name
    except ValueError:
        return str(value)


# ============================================================================================ views of data


@dataclass
class StopRow:
    code: str
    name: str
    arrival: str  # "—" at the origin
    departure: str  # "—" at the terminus
    arrival_offset: str
    departure_offset: str
    day: int
    km: int


def route_rows(train: Any) -> list[StopRow]:
    """The timetable of a train: clock times from its departure time and each stop's offsets, with the day."""
    try:
        hh, mm = (int(x) for x in train.departure_time.split(":"))
        start = hh * 60 + mm
    except (ValueError, AttributeError):
        start = 0
    def clock(m: int) -> str:
        return f"{(m // 60) % 24:02d}:{m % 60:02d}"

    rows = []
    last = len(train.stops) - 1
    for i, s in enumerate(train.stops):
        arr_abs, dep_abs = start + s.arrival_offset_min, start + s.departure_offset_min
        rows.append(StopRow(
            code=s.station_code, name=s.station_name,
            arrival="—" if i == 0 else clock(arr_abs), departure="—" if i == last else clock(dep_abs),
            arrival_offset=format_offset(s.arrival_offset_min), departure_offset=format_offset(s.departure_offset_min),
            day=(arr_abs if i else dep_abs) // (24 * 60) + 1, km=s.distance_km))
    return rows


def coach_summary(train: Any) -> str:
    """ "1×1A, 2×3A, 1×SL" """
    counts: dict[str, int] = {}
    for c in train.coaches:
        k = _class_key(c.seat_class)
        counts[k] = counts.get(k, 0) + 1
    order = {k: i for i, k in enumerate(CLASS_ORDER)}
    ordered = sorted(counts.items(), key=lambda kv: order.get(kv[0], 99))
    return ", ".join(f"{n}×{SHORT_CLASS.get(k, k)}" for k, n in ordered)


def total_seats(train: Any) -> int:
    return sum(c.seats for c in train.coaches)


def route_text(train: Any) -> str:
    """A train's route in the textarea format (for copying into a new train)."""
    rows = []
    for i, s in enumerate(train.stops):
        arr = "-" if i == 0 else format_offset(s.arrival_offset_min)
        dep = "-" if i == len(train.stops) - 1 else format_offset(s.departure_offset_min)
        rows.append(f"{s.station_code:<6} {arr:<6} {dep:<6} {s.distance_km}")
    return "\n".join(rows)


def coaches_text(train: Any) -> str:
    return "\n".join(f"{c.label:<5} {SHORT_CLASS.get(_class_key(c.seat_class), _class_key(c.seat_class)):<3} {c.seats}"
                     for c in train.coaches)


# ============================================================================================ pages


def register(app: Any, web: WebContext) -> None:
    """Add the staff pages to `app`."""

    app.jinja_env.globals.update(staff_coach_summary=coach_summary, staff_total_seats=total_seats)

    def staff_only(view: Callable) -> Callable:
        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not session_is_admin():
                return await web.error_page(REFUSED_SENTENCE, 403)
            return await view(*args, **kwargs)

        return web.login_required(wrapper)

    async def all_trains() -> list[Any]:
        trains = await web.call("trains", token=web.token())
        return sorted(trains, key=lambda t: t.number)

    async def find_train(number: int) -> Any:
        for t in await all_trains():
            if t.number == number:
                return t
        return None

    def today() -> str:
        return _today().isoformat()

    def plus_days(day: str, n: int) -> str:
        try:
            return (date_cls.fromisoformat(day) + timedelta(days=n)).isoformat()
        except ValueError:
            return (_today() + timedelta(days=n)).isoformat()

    # -------------------------------------------------------------------------------- overview
    @app.get("/staff")
    @staff_only
    async def staff_home() -> Any:
        trains = await all_trains()
        stations = await web.call("stations")
        return await render_template("staff/home.html", trains=trains, stations=stations,
                                     seats=sum(total_seats(t) for t in trains), section="home")

    # -------------------------------------------------------------------------------- stations
    async def stations_page(form: dict[str, str], problems: list[str], status: int, nonce: str | None = None) -> Any:
        stations = sorted(await web.call("stations"), key=lambda s: s.code)
        return await render_template("staff/stations.html", stations=stations, form=form, problems=problems,
                                     request_id=nonce or secrets.token_hex(16), section="stations"), status

    @app.get("/staff/stations")
    @staff_only
    async def staff_stations() -> Any:
        return await stations_page({"code": "", "name": ""}, [], 200)

    @app.post("/staff/stations")
    @staff_only
    async def staff_add_station() -> Any:
        form = await request.form
        code = form.get("code", "").strip().upper()
        name = " ".join(form.get("name", "").split())
        fields = {"code": code, "name": form.get("name", "").strip()}
        problems = []
        if not STATION_CODE_RE.fullmatch(code):
            problems.append("The station code must be 2 to 6 capital letters or digits, starting with a letter "
                            "(e.g. NDLS).")
        problem = _printable_name(name, "station name")
        if problem:
            problems.append(problem)
        if problems:
            return await stations_page(fields, problems, 400, form.get("request_id"))
        try:
            station = await web.call("add_station", code, name, token=web.token(),
                                     request_id=form_request_id(form, "add_station", code, name))
        except FORM_ERRORS as exc:
            return await stations_page(fields, [humanize_error(exc)], 409 if isinstance(exc, AlreadyExists) else 400)
        await flash(f"Station {station.code} ({station.name}) added.", "success")
        return redirect(url_for("staff_stations"))

    # -------------------------------------------------------------------------------- trains
    @app.get("/staff/trains")
    @staff_only
    async def staff_trains() -> Any:
        return await render_template("staff/trains.html", trains=await all_trains(), section="trains")

    @app.get("/staff/trains/<int:number>")
    @staff_only
    async def staff_train(number: int) -> Any:
        train = await find_train(number)
        if train is None:
            return await web.error_page(f"There is no train {number}.", 404)
        return await render_template("staff/train.html", t=train, rows=route_rows(train), section="trains",
                                     form={"train": str(number), "first": today(),
                                           "last": plus_days(today(), RUNS_DEFAULT_DAYS - 1)},
                                     today=today(), request_id=secrets.token_hex(16))

    def blank_train_form() -> dict[str, str]:
        return {"number": "", "name": "", "type": "EXPRESS", "departure_time": "", "route": "", "coaches": ""}

    async def train_form_page(form: dict[str, str], problems: list[str], status: int, nonce: str | None = None) -> Any:
        return await render_template("staff/train_new.html", form=form, problems=problems, types=TRAIN_TYPES,
                                     route_example=ROUTE_EXAMPLE, coaches_example=COACHES_EXAMPLE,
                                     request_id=nonce or secrets.token_hex(16), section="new_train"), status

    @app.get("/staff/trains/new")
    @staff_only
    async def staff_new_train() -> Any:
        form = blank_train_form()
        copy = request.args.get("copy", "").strip()
        if copy.isdigit():  # start from an existing train's route and coaches
            train = await find_train(int(copy))
            if train is not None:
                form.update(type=train.type or "EXPRESS", departure_time=train.departure_time,
                            route=route_text(train), coaches=coaches_text(train))
        return await train_form_page(form, [], 200)

    @app.post("/staff/trains/new")
    @staff_only
    async def staff_add_train() -> Any:
        data = await request.form
        form = {k: data.get(k, "").strip() for k in blank_train_form()}
        problems = []
        number = int(form["number"]) if re.fullmatch(r"\d{1,6}", form["number"]) else 0
        if not 1 <= number <= TRAIN_NUMBER_MAX:
            problems.append(f"The train number must be a whole number from 1 to {TRAIN_NUMBER_MAX}.")
        name = " ".join(form["name"].split())
        problem = _printable_name(name, "train name")
        if problem:
            problems.append(problem)
        ttype = "_".join(form["type"].upper().replace("-", " ").split())
        if not ttype:
            problems.append("Choose the type of train (e.g. EXPRESS).")
        elif not re.fullmatch(r"[A-Z0-9_]{1,32}", ttype):
            problems.append("The type of train is a word such as EXPRESS or SUPERFAST.")
        dep = form["departure_time"]
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", dep)
        if not m or int(m[1]) > 23 or int(m[2]) > 59:
            problems.append("Enter the departure time from the origin as HH:MM (24-hour clock, India time).")
        else:
            dep = f"{int(m[1]):02d}:{m[2]}"
        stops, route_problems = parse_route(data.get("route", ""))
        coaches, coach_problems = parse_coaches(data.get("coaches", ""))
        problems += route_problems + coach_problems
        form["route"], form["coaches"] = data.get("route", ""), data.get("coaches", "")
        if problems:
            return await train_form_page(form, problems, 400, data.get("request_id"))
        try:
            train = await web.call("add_train", number, name, ttype, dep, stops, coaches, token=web.token(),
                                   request_id=form_request_id(data, "add_train", number, name, ttype, dep, stops,
                                                              coaches))
        except FORM_ERRORS as exc:
            return await train_form_page(form, [humanize_error(exc)], 409 if isinstance(exc, AlreadyExists) else 400)
        await flash(f"Train {train.number} {train.name} added. Schedule its runs below.", "success")
        return redirect(url_for("staff_train", number=train.number))

    # -------------------------------------------------------------------------------- runs
    async def schedule_page(form: dict[str, str], problems: list[str], status: int, nonce: str | None = None) -> Any:
        return await render_template("staff/schedule.html", trains=await all_trains(), form=form, problems=problems,
                                     today=today(), request_id=nonce or secrets.token_hex(16),
                                     section="schedule"), status

    @app.get("/staff/schedule")
    @staff_only
    async def staff_schedule() -> Any:
        first = today()
        form = {"train": request.args.get("train", "").strip(), "first": first,
                "last": plus_days(first, RUNS_DEFAULT_DAYS - 1)}
        return await schedule_page(form, [], 200)

    @app.post("/staff/schedule")
    @staff_only
    async def staff_schedule_post() -> Any:
        data = await request.form
        form = {k: data.get(k, "").strip() for k in ("train", "first", "last")}
        problems = []
        number = int(form["train"]) if re.fullmatch(r"\d{1,6}", form["train"]) else 0
        if not 1 <= number <= TRAIN_NUMBER_MAX:
            problems.append("Choose a train.")
        problems += parse_date_range(form["first"], form["last"], not_past=True)
        if problems:
            return await schedule_page(form, problems, 400, data.get("request_id"))
        try:
            runs = await web.call("schedule_runs", number, form["first"], form["last"], token=web.token(),
                                  request_id=form_request_id(data, "schedule_runs", number, form["first"],
                                                             form["last"]))
        except FORM_ERRORS as exc:
            return await schedule_page(form, [humanize_error(exc)], 404 if isinstance(exc, NotFound) else 400)
        span = form["first"] if form["first"] == form["last"] else f"{form['first']} to {form['last']}"
        if runs:
            label = f"{runs[0].train_number} {runs[0].train_name}".strip()
            await flash(f"Scheduled {len(runs)} run{'s' if len(runs) != 1 else ''} of train {label}, {span}.",
                        "success")
        else:
            await flash(f"No new runs: train {number} already runs on every date, {span}.", "info")
        return redirect(url_for("staff_runs", train=number, **{"from": form["first"], "to": form["last"]}))

    @app.get("/staff/runs")
    @staff_only
    async def staff_runs() -> Any:
        trains = await all_trains()
        first = request.args.get("from", "").strip() or today()
        last = request.args.get("to", "").strip() or plus_days(first, RUNS_DEFAULT_DAYS - 1)
        train_s = request.args.get("train", "").strip()
        form = {"train": train_s, "from": first, "to": last}
        runs, problems, train = None, [], None
        if train_s:
            number = int(train_s) if re.fullmatch(r"\d{1,6}", train_s) else 0
            train = next((t for t in trains if t.number == number), None)
            if train is None:
                problems.append(f"There is no train {train_s}.")
            problems += parse_date_range(first, last, not_past=False)
            if not problems:
                runs = await web.call("list_runs", number, first, last, token=web.token())
                runs.sort(key=lambda r: (r.date, r.id))
        return await render_template("staff/runs.html", trains=trains, form=form, runs=runs, train=train,
                                     problems=problems, section="runs"), (400 if problems else 200)

    @app.get("/staff/runs/<int:run_id>")
    @staff_only
    async def staff_run_report(run_id: int) -> Any:
        report = await web.call("run_report", run_id, token=web.token())
        order = {k: i for i, k in enumerate(CLASS_ORDER)}
        classes = sorted(report.classes, key=lambda c: order.get(_class_key(c.seat_class), 99))
        seats = sum(c.seats for c in classes)
        sold = sum(c.seats_sold for c in classes)
        occupancy = (sum(c.occupancy_percent * c.seats for c in classes) / seats) if seats else 0.0
        return await render_template("staff/report.html", r=report, run=report.run, classes=classes, seats=seats,
                                     sold=sold, occupancy=occupancy, section="runs")

    async def cancel_page(run_id: int, reason: str, problems: list[str], status: int,
                          nonce: str | None = None) -> Any:
        report = await web.call("run_report", run_id, token=web.token())
        return await render_template("staff/cancel_run.html", r=report, run=report.run, reason=reason,
                                     problems=problems, request_id=nonce or secrets.token_hex(16),
                                     reason_max=REASON_MAX, section="runs"), status

    @app.get("/staff/runs/<int:run_id>/cancel")
    @staff_only
    async def staff_cancel_run(run_id: int) -> Any:
        return await cancel_page(run_id, "", [], 200)

    @app.post("/staff/runs/<int:run_id>/cancel")
    @staff_only
    async def staff_cancel_run_post(run_id: int) -> Any:
        data = await request.form
        reason = " ".join(data.get("reason", "").split())
        problems = []
        if not reason:
            problems.append("Give the reason for cancelling; passengers are told it with their refund.")
        elif len(reason) > REASON_MAX:
            problems.append(f"Keep the reason to {REASON_MAX} characters (it has {len(reason)}).")
        elif not reason.isprintable():
            problems.append("The reason must not contain control characters.")
        if problems:
            return await cancel_page(run_id, reason, problems, 400, data.get("request_id"))
        ack = await web.call("cancel_run", run_id, reason, token=web.token(),
                             request_id=form_request_id(data, "cancel_run", run_id, reason))
        message = (getattr(ack, "message", "") or "").strip() or f"run {run_id} cancelled"
        await flash(message[0].upper() + message[1:] + ".", "success")
        return redirect(url_for("staff_run_report", run_id=run_id))
