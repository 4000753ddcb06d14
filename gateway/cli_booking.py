"""The booking subcommands of `railraft`: every action of the interactive menu, scriptable.

    railraft login USER PASS                      (saves the session; see "Sessions" below)
    railraft stations [PREFIX]
    railraft search FROM TO DATE
    railraft seats RUN_ID FROM TO [--coach C]                  coaches of a run, or one coach's seat map
    railraft book RUN_ID CLASS FROM TO --passenger "Name,age,gender[,berth]" ... [--seat B1-23 ...]
                  [--waitlist] [--hold-seconds N] [--pay CARD]  hold seats (and pay at once with --pay)
    railraft pay PNR CARD
    railraft bookings [PNR]                                     my bookings, or one of them in full
    railraft refund-quote PNR [--passenger N ...]
    railraft cancel PNR [--passenger N ...] [--yes]
    railraft pnr PNR NAME                                       status by PNR and passenger name, no login
    railraft whoami
    railraft logout [TOKEN]
  administrators:
    railraft add-station CODE NAME
    railraft add-train NUMBER NAME --departs HH:MM [--type EXPRESS] --stop CODE,ARR,DEP,KM ...
                       --coach LABEL,CLASS,SEATS[,COUNT] ...
    railraft add-run TRAIN FIRST_DATE [LAST_DATE]               schedule a run on every date of the range
    railraft runs TRAIN FIRST_DATE [LAST_DATE]
    railraft cancel-run RUN_ID [--reason TEXT]
    railraft report RUN_ID
  railraft cli                                                  the interactive menu (gateway/cli_menu.py)

Every command takes `--nodes host:port,...` / `--config cluster.toml` (default 127.0.0.1:50051-50053),
`--timeout SECONDS`, and `--json`.

Output.  Without --json: tables and sentences.  With --json: exactly one JSON object on stdout, built by
gateway.cli_format.to_json (keys are the proto field names; enums by name; money as X_paise plus a formatted
X_rupees; times as X_ms plus X_ist).  Lists come wrapped: {"stations": [...]}, {"results": [...]},
{"bookings": [...]}, {"runs": [...]}.

Errors.  A one-line message on stderr and a non-zero exit code; with --json also {"error": sentence,
"code": "NOT_FOUND"|...} on stdout.  Exit codes: 0 ok; 1 refused (sold out, hold expired, already exists,
...); 2 bad input or usage (nothing was written); 3 not logged in / session expired; 4 permission denied
(an administrator's command); 5 not found; 6 the cluster could not serve the call in time (try again).

Sessions.  `railraft login` saves the token (mode 0600) in $RAILRAFT_SESSION_FILE, else
$XDG_CONFIG_HOME/railraft/session.json, else ~/.config/railraft/session.json, with the nodes it logged in to;
commands that need a login use `--token`, else $RAILRAFT_TOKEN, else that file.  `railraft logout` (no
argument) ends the saved session and deletes the file.

Passengers are "Name,age,gender[,berth]" (gender M/F/O is accepted as the original system asked for it, but
the booking API does not record it) or "Name,age[,berth]"; berth LOWER, MIDDLE, UPPER, SIDE_LOWER, SIDE_UPPER,
WINDOW, AISLE (or L, M, U, SL, SU, W, A).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from store import civil, rules

from . import cli_format as fmt

T = TypeVar("T")

SESSION_ENV = "RAILRAFT_SESSION_FILE"
TOKEN_ENV = "RAILRAFT_TOKEN"
DEFAULT_TIMEOUT_S = 15.0

GENDERS = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O", "X": "O", "T": "O"}
BERTH_ALIASES = {"L": "LOWER", "M": "MIDDLE", "U": "UPPER", "SL": "SIDE_LOWER", "SU": "SIDE_UPPER",
                 "W": "WINDOW", "A": "AISLE", "": ""}


# ============================================================================================ errors


class UsageError(ValueError):
    """Bad input found before anything was sent: exit 2, nothing written."""


@dataclass(eq=False)
class Failure(Exception):
    """A command's failure as reported: its Problem and extra JSON keys (e.g. the booking a failed payment
    left held)."""

    problem: fmt.Problem
    extra: dict[str, Any] = field(default_factory=dict)
    hint: str = ""


def not_logged_in() -> Failure:
    return Failure(fmt.Problem("You are not logged in: run `railraft login USER PASSWORD` first (or pass --token, "
                               f"or set {TOKEN_ENV}).", "UNAUTHENTICATED", fmt.EXIT_UNAUTHENTICATED))


# ========================================================================================== sessions


def session_path() -> Path:
    """Where `railraft login` keeps the session (see the module docstring)."""
    if os.environ.get(SESSION_ENV):
        return Path(os.environ[SESSION_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "railraft" / "session.json"


def load_session() -> dict[str, Any] | None:
    """The saved session {"token", "username", "role", "nodes"}, or None (none, or unreadable)."""
    try:
        data = json.loads(session_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("token") else None


def save_session(token: str, username: str, role: str, nodes: list[str]) -> Path:
    """Write the session file with mode 0600 (created private, never loosened afterwards)."""
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token, "username": username, "role": role, "nodes": nodes}, f)
    os.replace(tmp, path)
    return path


def clear_session(token: str | None = None) -> bool:
    """Delete the session file (only if it holds `token`, when given); True if it was deleted."""
    saved = load_session()
    if saved is None or (token is not None and saved.get("token") != token):
        return False
    try:
        session_path().unlink()
    except OSError:
        return False
    return True


def resolve_token(args: argparse.Namespace) -> str:
    """--token, else $RAILRAFT_TOKEN, else the saved session's token, else ""."""
    if getattr(args, "token", None):
        return args.token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    saved = load_session()
    return saved["token"] if saved else ""


def addresses(args: argparse.Namespace) -> list[str]:
    """--nodes, else --config's nodes, else the default 3 local nodes (as every railraft command)."""
    from actors.config import default_config, load_config

    from .client import parse_addresses

    if getattr(args, "nodes", None):
        return parse_addresses(args.nodes)
    if getattr(args, "config", None):
        return [n.address for n in load_config(args.config).nodes]
    return [n.address for n in default_config().nodes]


# =========================================================================================== parsing


def parse_station(text: str, what: str = "station") -> str:
    code = (text or "").strip().upper()
    try:
        return rules.validate_station_code(code)
    except ValueError:
        raise UsageError(f"{what}: a station code is 2 to 6 letters or digits, e.g. NDLS (got {text!r})") from None


def parse_date(text: str, what: str = "date") -> str:
    try:
        return civil.format_date(civil.parse_date((text or "").strip()))
    except ValueError:
        raise UsageError(f"{what} must look like YYYY-MM-DD, e.g. 2026-12-05 (got {text!r})") from None


def parse_int(text: Any, what: str, lo: int = 1, hi: int = 2**63 - 1) -> int:
    try:
        n = int(str(text).strip())
    except ValueError:
        raise UsageError(f"{what} must be a whole number (got {text!r})") from None
    if not lo <= n <= hi:
        raise UsageError(f"{what} must be from {lo} to {hi} (got {n})")
    return n


def parse_class(text: str) -> str:
    name = (text or "").strip().upper()
    aliases = {"1A": "AC1", "2A": "AC2", "3A": "AC3", "SL": "SLEEPER", "GN": "GENERAL", "GEN": "GENERAL"}
    name = aliases.get(name, name)
    if name not in rules.TRAVEL_CLASSES:
        raise UsageError(f"class must be one of {', '.join(rules.TRAVEL_CLASSES)} (got {text!r})")
    return name


def parse_berth(text: str) -> str:
    b = (text or "").strip().upper().replace(" ", "_")
    b = BERTH_ALIASES.get(b, b)
    if b and b not in rules.BERTH_TYPES:
        raise UsageError(f"berth preference must be one of {', '.join(sorted(rules.BERTH_TYPES))} (got {text!r})")
    return b


def parse_passenger(text: str) -> tuple[str, int, str]:
    """(name, age, berth preference) from "Name,age,gender[,berth]" or "Name,age[,berth]"."""
    parts = [p.strip() for p in (text or "").split(",")]
    if len(parts) < 2 or len(parts) > 4 or not parts[0]:
        raise UsageError(f'a passenger is "Name,age,gender[,berth]", e.g. "Asha Rao,34,F,LOWER" (got {text!r})')
    name = parts[0]
    try:
        rules.validate_passenger_name(name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    age = parse_int(parts[1], f"age of {name}", 0, rules.AGE_MAX)
    rest = parts[2:]
    if rest and rest[0].upper() in GENDERS:
        rest = rest[1:]
    elif len(rest) == 2:
        raise UsageError(f"gender of {name} must be M, F or O (got {rest[0]!r})")
    berth = parse_berth(rest[0]) if rest else ""
    return name, age, berth


def parse_seat(text: str) -> tuple[str, int]:
    try:
        return rules.parse_seat_ref((text or "").strip().upper())
    except ValueError as e:
        raise UsageError(str(e)) from None


def parse_stop(text: str) -> tuple[str, int, int, int]:
    """(code, arrival offset min, departure offset min, km) from "CODE,ARR,DEP,KM"."""
    parts = [p.strip() for p in (text or "").split(",")]
    if len(parts) != 4:
        raise UsageError(f"a stop is CODE,ARRIVE_MIN,DEPART_MIN,KM (minutes after the train leaves its origin), "
                         f"e.g. BRC,245,250,392 (got {text!r})")
    code = parse_station(parts[0], "stop")
    arr = parse_int(parts[1], f"arrival minutes of {code}", 0, rules.ROUTE_MINUTES_MAX)
    dep = parse_int(parts[2], f"departure minutes of {code}", 0, rules.ROUTE_MINUTES_MAX)
    km = parse_int(parts[3], f"distance of {code}", 0, rules.ROUTE_KM_MAX)
    return code, arr, dep, km


def parse_coaches(text: str) -> list[tuple[str, str, int]]:
    """[(label, class, seats)] from "LABEL,CLASS,SEATS" or "PREFIX,CLASS,SEATS,COUNT" (PREFIX1..PREFIXn)."""
    parts = [p.strip() for p in (text or "").split(",")]
    if len(parts) not in (3, 4):
        raise UsageError(f"a coach is LABEL,CLASS,SEATS (e.g. B1,AC3,64) or PREFIX,CLASS,SEATS,COUNT "
                         f"(e.g. S,SLEEPER,72,8 for S1..S8) (got {text!r})")
    label = parts[0].upper()
    cls = parse_class(parts[1])
    seats = parse_int(parts[2], f"seats of coach {label}", 1, rules.COACH_SEATS_MAX)
    labels = [label] if len(parts) == 3 else [f"{label}{i}" for i in
                                              range(1, parse_int(parts[3], "coach count", 1, rules.COACHES_MAX) + 1)]
    for lab in labels:
        try:
            rules.validate_coach_label(lab)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return [(lab, cls, seats) for lab in labels]


def parse_pnr(text: str) -> str:
    pnr = (text or "").strip().upper()
    try:
        return rules.validate_pnr(pnr)
    except ValueError as e:
        raise UsageError(f"{e} (got {text!r})") from None


def parse_card(text: str) -> str:
    card = "".join((text or "").split()).replace("-", "")
    if not (card.isdigit() and len(card) == 16):
        raise UsageError("a card number is 16 digits")
    return card


def parse_time(text: str) -> str:
    try:
        return civil.format_hhmm(civil.parse_hhmm((text or "").strip()))
    except ValueError:
        raise UsageError(f"departure time must be HH:MM, e.g. 06:25 (got {text!r})") from None


# ======================================================================================== the engine


@dataclass
class Output:
    """What a command prints: `data` for --json, `text` otherwise, and the exit code."""

    data: Any
    text: str
    exit_code: int = 0


class Ctx:
    """What a command handler gets: its arguments, a client, and `call` (an RPC with a spinner)."""

    def __init__(self, args: argparse.Namespace, client: Any, progress: Any) -> None:
        self.args = args
        self.rr = client
        self.progress = progress

    async def call(self, aw: Awaitable[T]) -> T:
        return await fmt.with_progress(aw, self.progress)

    def need_login(self) -> None:
        if not self.rr.token:
            raise not_logged_in()


Handler = Callable[[Ctx, argparse.Namespace], Awaitable[Output]]


def run_async(coro: Awaitable[T]) -> T:
    """asyncio.run on a plain selector loop (gateway.client.run): not trio-asyncio's loop, which would also
    install Trio's Ctrl-C handler, so that Ctrl-C would not interrupt a call."""
    from .client import run

    return run(coro)  # type: ignore[no-any-return]


def print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True, ensure_ascii=True))


def report_failure(args: argparse.Namespace, problem: fmt.Problem, extra: dict[str, Any] | None = None,
                   hint: str = "") -> int:
    """stderr: one line; with --json also {"error", "code", ...} on stdout.  Returns the exit code."""
    line = problem.sentence
    if problem.detail:
        line += f" ({problem.detail})"
    if hint:
        line += f" {hint}"
    fmt.out(f"railraft {args.command}: {' '.join(line.split())}", sys.stderr)
    if getattr(args, "json", False):
        obj = {"error": problem.sentence, "code": problem.code}
        if problem.detail:
            obj["detail"] = problem.detail
        obj.update(extra or {})
        print_json(obj)
    return problem.exit_code


def run_command(handler: Handler, args: argparse.Namespace) -> int:
    """Run one subcommand: build the client, run `handler`, print its Output or the failure."""
    from actors.config import ConfigError

    from .client import RailraftClient

    try:
        addrs = addresses(args)
    except (ConfigError, ValueError) as e:
        return report_failure(args, fmt.Problem(fmt.sentence(str(e)), "INVALID_ARGUMENT", fmt.EXIT_USAGE))
    progress = sys.stderr if (not args.json and sys.stderr.isatty()) else None
    timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S

    async def main() -> Output:
        rr = RailraftClient(addrs, timeout=timeout, attempt_timeout=min(5.0, timeout),
                            token=resolve_token(args))
        try:
            return await handler(Ctx(args, rr, progress), args)
        finally:
            rr.close()

    try:
        res = run_async(main())
    except UsageError as e:
        return report_failure(args, fmt.Problem(fmt.sentence(str(e)), "INVALID_ARGUMENT", fmt.EXIT_USAGE))
    except Failure as f:
        return report_failure(args, f.problem, f.extra, f.hint)
    except KeyboardInterrupt:
        fmt.out(f"railraft {args.command}: interrupted", sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error becomes a sentence, never a traceback
        return report_failure(args, fmt.describe_error(e))
    try:
        if args.json:
            print_json(res.data)
        elif res.text:
            fmt.out(res.text)
    except BrokenPipeError:  # `railraft ... | head`: the reader has gone, that is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return res.exit_code


def _cmd(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def func(args: argparse.Namespace) -> int:
        return run_command(handler, args)

    func.__name__ = handler.__name__
    func.__doc__ = handler.__doc__
    return func


# ========================================================================================== handlers


async def stations_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    found = await ctx.call(ctx.rr.stations((args.prefix or "").strip(), args.limit or 0))
    return Output({"stations": fmt.to_json(found)}, fmt.stations_table(found))


async def search_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    a, b = parse_station(args.from_station, "from"), parse_station(args.to_station, "to")
    date = parse_date(args.date)
    found = await ctx.call(ctx.rr.search(a, b, date))
    head = f"{a} -> {b} on {date}: {len(found)} train(s)\n\n" if found else ""
    return Output({"from_station": a, "to_station": b, "date": date, "results": fmt.to_json(found)},
                  head + fmt.search_table(found))


async def seats_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    run_id = parse_int(args.run_id, "run id")
    a, b = parse_station(args.from_station, "from"), parse_station(args.to_station, "to")
    coach = (args.coach or "").strip().upper()
    if coach:
        try:
            rules.validate_coach_label(coach)
        except ValueError as e:
            raise UsageError(str(e)) from None
    resp = await ctx.call(ctx.rr.seat_map(run_id, coach, a, b))
    data = fmt.to_json(resp)
    data.update(from_station=a, to_station=b)
    head = f"Run {run_id}, {a} -> {b}\n"
    if not coach:
        head += "(railraft seats RUN FROM TO --coach LABEL shows one coach's seats)\n"
    return Output(data, head + fmt.seat_map_text(resp))


def _held_hint(b: Any) -> str:
    if fmt.enum_name(b.state) == "HELD":
        return f"\nPay with: railraft pay {b.pnr} CARD_NUMBER   (before {fmt.ist(b.hold_expires_ms)} IST)"
    return ""


async def book_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    run_id = parse_int(args.run_id, "run id")
    cls = parse_class(args.seat_class)
    a, b = parse_station(args.from_station, "from"), parse_station(args.to_station, "to")
    if not args.passenger:
        raise UsageError('give at least one --passenger "Name,age,gender[,berth]"')
    if len(args.passenger) > rules.PASSENGERS_MAX:
        raise UsageError(f"a booking is for at most {rules.PASSENGERS_MAX} passengers")
    pax = [parse_passenger(p) for p in args.passenger]
    seats = [parse_seat(s) for s in (args.seat or [])]
    if len(seats) > len(pax):
        raise UsageError("more --seat than --passenger")
    if len(set(seats)) != len(seats):
        raise UsageError("the same seat is chosen twice")
    card = parse_card(args.pay) if args.pay else ""
    hold_s = 0
    if args.hold_seconds:
        hold_s = parse_int(args.hold_seconds, "--hold-seconds", rules.HOLD_SECONDS_MIN, rules.HOLD_SECONDS_MAX)
    ctx.need_login()
    booking = await ctx.call(ctx.rr.hold(run_id, cls, a, b, pax, chosen_seats=seats,
                                         accept_waitlist=args.waitlist, hold_seconds=hold_s))
    if card and fmt.enum_name(booking.state) == "HELD":
        try:
            booking = await ctx.call(ctx.rr.pay(booking.pnr, card, booking.amount_paise))
        except Exception as e:  # noqa: BLE001 - the hold stands: say so, with its PNR
            problem = fmt.describe_error(e)
            problem.sentence = f"Seats are held as PNR {booking.pnr}, but the payment failed: {problem.sentence}"
            raise Failure(problem, {"booking": fmt.to_json(booking)},
                          hint=f"Retry with: railraft pay {booking.pnr} CARD_NUMBER") from None
    state = fmt.enum_name(booking.state)
    lead = {"HELD": "Seats held.", "CONFIRMED": "Booked and paid.",
            "WAITLISTED": "Not enough seats: you are on the waitlist."}.get(state, "")
    return Output(fmt.to_json(booking), (lead + "\n\n" if lead else "") + fmt.booking_text(booking)
                  + _held_hint(booking))


async def pay_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    pnr, card = parse_pnr(args.pnr), parse_card(args.card)
    ctx.need_login()
    booking = await ctx.call(ctx.rr.pay(pnr, card))
    return Output(fmt.to_json(booking), "Payment accepted.\n\n" + fmt.booking_text(booking))


async def bookings_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    pnr = parse_pnr(args.pnr) if args.pnr else ""
    ctx.need_login()
    if pnr:
        b = await ctx.call(ctx.rr.booking(pnr))
        return Output(fmt.to_json(b), fmt.booking_text(b) + _held_hint(b))
    found = await ctx.call(ctx.rr.my_bookings())
    return Output({"bookings": fmt.to_json(found)}, fmt.bookings_table(found))


def _passenger_indexes(values: list[str] | None) -> list[int]:
    return [parse_int(v, "--passenger", 1, rules.PASSENGERS_MAX) for v in (values or [])]


async def refund_quote_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    pnr, pax = parse_pnr(args.pnr), _passenger_indexes(args.passenger)
    ctx.need_login()
    q = await ctx.call(ctx.rr.refund_quote(pnr, pax))
    data = {"pnr": pnr, "passengers": pax, **fmt.to_json(q)}
    return Output(data, fmt.refund_quote_text(q))


def _confirm(question: str) -> bool:
    """Ask on the terminal (stderr, so stdout stays clean); False if there is no terminal or EOF."""
    if not sys.stdin.isatty():
        return False
    fmt.out(question + " [y/N] ", sys.stderr, end="")
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


async def cancel_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    pnr, pax = parse_pnr(args.pnr), _passenger_indexes(args.passenger)
    ctx.need_login()
    if not args.yes:
        q = await ctx.call(ctx.rr.refund_quote(pnr, pax))
        what = f"passenger(s) {', '.join(map(str, pax))} of {pnr}" if pax else f"booking {pnr}"
        if not sys.stdin.isatty():
            raise UsageError(f"{fmt.refund_quote_text(q)}; add --yes to cancel {what} without a prompt")
        if not _confirm(f"{fmt.refund_quote_text(q)}. Cancel {what}?"):
            raise Failure(fmt.Problem("Not cancelled.", "ABORTED", fmt.EXIT_REFUSED))
    booking = await ctx.call(ctx.rr.cancel(pnr, pax))
    return Output(fmt.to_json(booking), "Cancelled.\n\n" + fmt.booking_text(booking))


async def pnr_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    pnr = parse_pnr(args.pnr)
    name = (args.name or "").strip()
    if not name:
        raise UsageError("give the name of a passenger on the booking")
    b = await ctx.call(ctx.rr.pnr_status(pnr, name))
    return Output(fmt.to_json(b), fmt.booking_text(b))


async def whoami_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    ctx.need_login()
    u = await ctx.call(ctx.rr.whoami())
    return Output(fmt.to_json(u), f"Logged in as {fmt.user_text(u)}")


async def add_station_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    code = parse_station(args.code, "code")
    name = (args.name or "").strip()
    try:
        rules.validate_station_name(name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    ctx.need_login()
    s = await ctx.call(ctx.rr.add_station(code, name))
    return Output(fmt.to_json(s), f"Added station {s.code} {s.name}.")


async def add_train_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    number = parse_int(args.number, "train number", 1, rules.TRAIN_NUMBER_MAX)
    name = (args.name or "").strip()
    try:
        rules.validate_train_name(name)
        ttype = rules.validate_train_type(rules.normalize_train_type(args.type or "EXPRESS"))
    except ValueError as e:
        raise UsageError(str(e)) from None
    departs = parse_time(args.departs)
    stops = [parse_stop(s) for s in (args.stop or [])]
    if len(stops) < 2:
        raise UsageError("a train needs at least two --stop CODE,ARRIVE_MIN,DEPART_MIN,KM (its origin first)")
    try:
        rules.validate_route([SimpleNamespace(station_code=c, arrive_min=a, depart_min=d, km=k)
                              for c, a, d, k in stops])
    except ValueError as e:
        raise UsageError(str(e)) from None
    coaches = [c for spec in (args.coach or []) for c in parse_coaches(spec)]
    if not coaches:
        raise UsageError("a train needs at least one --coach LABEL,CLASS,SEATS")
    labels = [c[0] for c in coaches]
    if len(set(labels)) != len(labels):
        raise UsageError("two coaches have the same label")
    ctx.need_login()
    t = await ctx.call(ctx.rr.add_train(number, name, ttype, departs, stops, coaches))
    return Output(fmt.to_json(t), "Added " + fmt.train_text(t)[0].lower() + fmt.train_text(t)[1:]
                  + f"\n\nSchedule it with: railraft add-run {t.number} FIRST_DATE [LAST_DATE]")


async def add_run_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    number = parse_int(args.train, "train number", 1, rules.TRAIN_NUMBER_MAX)
    first = parse_date(args.first_date, "first date")
    last = parse_date(args.last_date, "last date") if args.last_date else first
    if civil.parse_date(last) < civil.parse_date(first):
        raise UsageError(f"last date {last} is before first date {first}")
    ctx.need_login()
    made = await ctx.call(ctx.rr.schedule_runs(number, first, last))
    text = (f"Scheduled {len(made)} run(s) of train {number} from {first} to {last}"
            + (" (dates that already had a run were skipped)." if len(made) < civil.parse_date(last)
               - civil.parse_date(first) + 1 else "."))
    if made:
        text += "\n\n" + fmt.runs_table(made)
    return Output({"train_number": number, "first_date": first, "last_date": last, "runs": fmt.to_json(made)}, text)


async def runs_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    number = parse_int(args.train, "train number", 1, rules.TRAIN_NUMBER_MAX)
    first = parse_date(args.first_date, "first date")
    last = parse_date(args.last_date, "last date") if args.last_date else ""
    found = await ctx.call(ctx.rr.list_runs(number, first, last))
    return Output({"train_number": number, "first_date": first, "last_date": last or first,
                   "runs": fmt.to_json(found)}, fmt.runs_table(found))


async def cancel_run_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    run_id = parse_int(args.run_id, "run id")
    reason = (args.reason or "").strip()
    if len(reason) > rules.REASON_MAX:
        raise UsageError(f"the reason is at most {rules.REASON_MAX} characters")
    ctx.need_login()
    ack = await ctx.call(ctx.rr.cancel_run(run_id, reason))
    return Output({"run_id": run_id, **fmt.to_json(ack)},
                  fmt.sentence(ack.message) or f"Run {run_id} cancelled; its bookings are refunded.",
                  0 if ack.ok else fmt.EXIT_REFUSED)


async def report_cmd(ctx: Ctx, args: argparse.Namespace) -> Output:
    run_id = parse_int(args.run_id, "run id")
    ctx.need_login()
    rep = await ctx.call(ctx.rr.run_report(run_id))
    return Output(fmt.to_json(rep), fmt.report_text(rep))


# ================================================================================= login and logout


def login_cmd(args: argparse.Namespace) -> int:
    """`railraft login`: as before (Ticketing.Login; same output), and the session is saved for later commands."""
    from actors.config import ConfigError

    from . import admin_client as ac

    try:
        addrs = addresses(args)
        res = run_async(ac.login(addrs, args.username, args.password))
    except (ConfigError, ValueError) as e:
        print(f"railraft {args.command}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - Unavailable and the like: a sentence, not a traceback
        return report_failure(args, fmt.describe_error(e))
    saved = None
    if res["success"]:
        try:
            saved = save_session(res["token"], args.username, res.get("role", ""), addrs)
        except OSError as e:
            print(f"railraft login: could not save the session ({e}); pass the token with --token", file=sys.stderr)
    if args.json:
        print_json({**res, "session_file": str(saved) if saved else None})
    else:
        print(res["message"])
        if res["success"]:
            print(f"token: {res['token']}")
            if saved:
                print(f"session saved in {saved} (railraft logout ends it)")
    return 0 if res["success"] else 1


def logout_cmd(args: argparse.Namespace) -> int:
    """`railraft logout [TOKEN]`: the given token, else the saved session's (whose file is then deleted)."""
    from actors.config import ConfigError

    from . import admin_client as ac

    token = args.token or resolve_token(args)
    if not token:
        return report_failure(args, not_logged_in().problem)
    try:
        res = run_async(ac.logout(addresses(args), token))
    except (ConfigError, ValueError) as e:
        print(f"railraft {args.command}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001
        return report_failure(args, fmt.describe_error(e))
    # A token the server no longer knows is as good as logged out: forget it either way.
    cleared = clear_session(token)
    if args.json:
        print_json({**res, "session_cleared": cleared})
    else:
        print(res["message"])
    return 0 if res["success"] else 1


def menu_cmd(args: argparse.Namespace) -> int:
    from .cli_menu import run_menu

    return run_menu(args)


# ============================================================================================ parser


def _target(p: argparse.ArgumentParser, *, json_flag: bool = True, token: bool = False) -> None:
    p.add_argument("--nodes", metavar="HOST:PORT,...",
                   help="node addresses (default: from --config, else 127.0.0.1:50051-50053)")
    p.add_argument("--config", metavar="PATH", help="cluster.toml to take node addresses from")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"give up after S seconds without an answer (default {DEFAULT_TIMEOUT_S:g})")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object")
    if token:
        p.add_argument("--token", metavar="TOKEN", help=f"session token (default: ${TOKEN_ENV}, else the saved login)")


def add_booking_commands(sub: Any) -> None:
    """Register the booking subcommands and `cli` (the menu) on the `railraft` subparsers (`login` and
    `logout`, registered in gateway.cli, run `login_cmd` and `logout_cmd` from here)."""

    def add(name: str, handler: Handler | None, help_text: str, token: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _target(p, token=token)
        if handler is not None:
            p.set_defaults(func=_cmd(handler))
        return p

    p = add("stations", stations_cmd, "list stations (whose code or name starts with PREFIX)")
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="at most N stations")

    p = add("search", search_cmd, "trains from one station to another on a date, with free seats and fares")
    p.add_argument("from_station", metavar="FROM")
    p.add_argument("to_station", metavar="TO")
    p.add_argument("date", metavar="DATE", help="YYYY-MM-DD")

    p = add("seats", seats_cmd, "the coaches of a run (free seats on FROM-TO), or one coach's seat map")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("from_station", metavar="FROM")
    p.add_argument("to_station", metavar="TO")
    p.add_argument("--coach", metavar="C", help="show this coach's seats (e.g. B1)")

    p = add("book", book_cmd, "hold seats on a run (and pay at once with --pay)", token=True)
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("seat_class", metavar="CLASS", help="AC1, AC2, AC3, SLEEPER or GENERAL")
    p.add_argument("from_station", metavar="FROM")
    p.add_argument("to_station", metavar="TO")
    p.add_argument("--passenger", action="extend", nargs="+", metavar='"NAME,AGE,GENDER[,BERTH]"',
                   help="a passenger (repeat for each, at most 6); berth LOWER, MIDDLE, UPPER, SIDE_LOWER, ...")
    p.add_argument("--seat", action="extend", nargs="+", metavar="COACH-SEAT",
                   help="a chosen seat, e.g. B1-23 (repeat; in passenger order)")
    p.add_argument("--waitlist", action="store_true", help="join the waitlist if there are not enough seats")
    p.add_argument("--hold-seconds", metavar="N", help="how long the hold lasts unpaid (60-1800; default 600)")
    p.add_argument("--pay", metavar="CARD", help="pay at once with this 16-digit card number")

    p = add("pay", pay_cmd, "pay a held booking", token=True)
    p.add_argument("pnr", metavar="PNR")
    p.add_argument("card", metavar="CARD", help="16-digit card number")

    p = add("bookings", bookings_cmd, "my bookings (or one of them in full)", token=True)
    p.add_argument("pnr", nargs="?", default="", metavar="PNR")

    p = add("refund-quote", refund_quote_cmd, "what cancelling would refund now (changes nothing)", token=True)
    p.add_argument("pnr", metavar="PNR")
    p.add_argument("--passenger", action="extend", nargs="+", metavar="N",
                   help="only passenger N (repeat; default: all)")

    p = add("cancel", cancel_cmd, "cancel a booking, or some of its passengers; refunds by the rule", token=True)
    p.add_argument("pnr", metavar="PNR")
    p.add_argument("--passenger", action="extend", nargs="+", metavar="N",
                   help="only passenger N (repeat; default: all)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = add("pnr", pnr_cmd, "a booking's status by PNR and a passenger's name (no login needed)")
    p.add_argument("pnr", metavar="PNR")
    p.add_argument("name", metavar="NAME", help="the name of a passenger on the booking")

    add("whoami", whoami_cmd, "who the saved (or given) session belongs to", token=True)

    p = add("add-station", add_station_cmd, "administrators: add a station", token=True)
    p.add_argument("code", metavar="CODE", help="2-6 capital letters or digits, e.g. NDLS")
    p.add_argument("name", metavar="NAME")

    p = add("add-train", add_train_cmd, "administrators: add a train with its route and coaches", token=True)
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", default="EXPRESS", help=f"one of {', '.join(sorted(rules.TRAIN_TYPES))} (default EXPRESS)")
    p.add_argument("--departs", required=True, metavar="HH:MM", help="departure time from the origin (IST)")
    p.add_argument("--stop", action="extend", nargs="+", metavar="CODE,ARR,DEP,KM",
                   help="a stop, in order, origin first: minutes after leaving the origin, and km from it")
    p.add_argument("--coach", action="extend", nargs="+", metavar="LABEL,CLASS,SEATS[,COUNT]",
                   help="a coach (e.g. B1,AC3,64); with COUNT, LABEL is a prefix: S,SLEEPER,72,8 = S1..S8")

    p = add("add-run", add_run_cmd, "administrators: schedule a train's runs on every date of a range", token=True)
    p.add_argument("train", metavar="TRAIN")
    p.add_argument("first_date", metavar="FIRST_DATE")
    p.add_argument("last_date", nargs="?", default="", metavar="LAST_DATE")

    p = add("runs", runs_cmd, "a train's runs on a date or a range of dates", token=True)
    p.add_argument("train", metavar="TRAIN")
    p.add_argument("first_date", metavar="FIRST_DATE")
    p.add_argument("last_date", nargs="?", default="", metavar="LAST_DATE")

    p = add("cancel-run", cancel_run_cmd, "administrators: cancel a run (every booking on it is refunded)",
            token=True)
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", default="", help="shown to the passengers")

    p = add("report", report_cmd, "administrators: occupancy and revenue of a run, per class", token=True)
    p.add_argument("run_id", metavar="RUN_ID")

    menu = sub.add_parser("cli", help="the interactive menu (log in, search, book, cancel; administration)",
                          description="The interactive menu.  Ctrl-D or 'q' quits; Ctrl-C goes back to the menu.")
    _target(menu, json_flag=False, token=True)
    menu.set_defaults(func=menu_cmd)


__all__ = [
    "add_booking_commands", "session_path", "load_session", "save_session", "clear_session", "resolve_token",
    "addresses", "parse_passenger", "parse_seat", "parse_stop", "parse_coaches", "parse_class", "parse_station",
    "parse_date", "parse_int", "parse_pnr", "parse_card", "parse_time", "parse_berth", "UsageError", "Failure",
    "Output", "SESSION_ENV", "TOKEN_ENV",
]
