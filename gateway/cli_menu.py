"""`railraft cli`: the interactive menu, like the original system's (numbered items, plain prompts).

    logged out:     log in, register, list stations, search trains, PNR status
    passenger:      search and book, my bookings (pay a held one), cancel a booking, PNR status, list
                    stations, log out
    administrator:  add station, add train, schedule runs, list runs, run report, cancel run, list stations,
                    search trains, log out

Keys: Enter accepts the [default]; Ctrl-C abandons the current action and goes back to the menu; Ctrl-D (or
`q` at the menu) quits.  Bad input re-prompts with a sentence saying what is expected; a refusal of the
cluster (sold out, wrong password, no leader right now) is shown as a sentence and the menu continues --
never a traceback.  While a call is in flight a spinner says "waiting for the cluster...".

The session is shared with the subcommands: the menu starts logged in if `railraft login` saved a session
(or --token / $RAILRAFT_TOKEN is given), and logging in or out here updates the saved session.

One asyncio event loop (asyncio.Runner) lives as long as the menu, so the client keeps its connections and
its idea of the leader between actions; input() runs between calls, when nothing else is scheduled.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from store import civil, rules

from . import cli_booking as cb
from . import cli_format as fmt

T = TypeVar("T")

ACTIVE_STATES = ("HELD", "CONFIRMED", "WAITLISTED")


class Quit(Exception):
    """Ctrl-D, or q at the menu: leave the menu."""


class Back(Exception):
    """Ctrl-C inside an action: abandon it, back to the menu."""


def say(text: str = "") -> None:
    fmt.out(text)


def warn(text: str) -> None:
    fmt.out(f"  ! {text}")


class Menu:
    """The menu's state (client, who is logged in) and its actions."""

    def __init__(self, addrs: list[str], *, timeout: float, token: str = "",
                 read: Callable[[str], str] = input, read_secret: Callable[[str], str] = getpass.getpass) -> None:
        from .client import RailraftClient

        self.addrs = addrs
        self.rr = RailraftClient(addrs, timeout=timeout, attempt_timeout=min(5.0, timeout), token=token)
        self.user: Any = None  # UserInfo once logged in
        # A plain selector loop, not trio_asyncio's (see cli_booking.run_async): Ctrl-C must interrupt a call.
        self.runner = asyncio.Runner(loop_factory=asyncio.SelectorEventLoop)
        self._read = read
        self._read_secret = read_secret

    # ----------------------------------------------------------------------------------- plumbing
    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one client call on the menu's loop, with the spinner; Ctrl-C while waiting -> Back."""
        try:
            return self.runner.run(fmt.with_progress(coro, sys.stdout))
        except KeyboardInterrupt:
            say()
            raise Back from None

    def close(self) -> None:
        async def aclose() -> None:
            self.rr.close()

        try:
            self.runner.run(aclose())
        finally:
            self.runner.close()

    def read(self, prompt: str, secret: bool = False) -> str:
        try:
            return (self._read_secret if secret else self._read)(prompt)
        except EOFError:
            say()
            raise Quit from None
        except KeyboardInterrupt:
            say()
            raise Back from None

    def ask(self, prompt: str, parse: Callable[[str], T] | None = None, *, default: str | None = None,
            optional: bool = False, secret: bool = False) -> T | str:
        """Prompt until the answer parses.  Empty: `default` if given, "" if `optional`, else re-prompt."""
        shown = f"  {prompt}" + (f" [{default}]" if default not in (None, "") else "") + ": "
        while True:
            text = self.read(shown, secret).strip()
            if not text:
                if default not in (None, ""):
                    text = default
                elif optional:
                    return ""
                else:
                    warn("Please enter a value (Ctrl-C goes back to the menu).")
                    continue
            if parse is None:
                return text
            try:
                return parse(text)
            except ValueError as e:
                warn(f"{fmt.sentence(str(e))} Please try again.")

    def ask_int(self, prompt: str, lo: int, hi: int, *, default: int | None = None,
                optional: bool = False) -> int | None:
        def parse(text: str) -> int:
            t = text.strip()
            if not (t.isdigit() and lo <= int(t) <= hi):
                raise ValueError(f"enter a whole number from {lo} to {hi}")
            return int(t)

        got = self.ask(prompt, parse, default=None if default is None else str(default), optional=optional)
        return None if got == "" else got  # type: ignore[return-value]

    def ask_yes(self, prompt: str, default: bool = False) -> bool:
        while True:
            text = self.read(f"  {prompt} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
            if not text:
                return default
            if text in ("y", "yes"):
                return True
            if text in ("n", "no"):
                return False
            warn("Please answer y or n.")

    def pick(self, prompt: str, count: int) -> int | None:
        """A choice 1..count (returned 0-based), or None for Enter (go back)."""
        n = self.ask_int(f"{prompt} (1-{count}, Enter to go back)", 1, count, optional=True)
        return None if n is None else n - 1

    def ask_station(self, prompt: str) -> str:
        """A station by code or by the start of its name; several matches are offered as a list."""
        while True:
            text = self.ask(f"{prompt} (code or name)")
            found = self.call(self.rr.stations(text, 20))
            exact = [s for s in found if s.code == text.upper()]
            if exact:
                return exact[0].code
            if len(found) == 1:
                say(f"    -> {found[0].code} {found[0].name}")
                return found[0].code
            if not found:
                warn(f"No station matches {text!r}. Please try again (a code like NDLS, or the start of a name).")
                continue
            say(fmt.table(("#", "Code", "Station"), [(i, s.code, s.name) for i, s in enumerate(found, 1)],
                          right=(0,)))
            i = self.pick("Which station", len(found))
            if i is not None:
                return found[i].code

    def ask_date(self, prompt: str, default: str | None = None) -> str:
        today = civil.local_day(_now_ms())

        def parse(text: str) -> str:
            t = text.strip().lower()
            if t == "today":
                return civil.format_date(today)
            if t == "tomorrow":
                return civil.format_date(today + 1)
            if t.startswith("+") and t[1:].isdigit():
                return civil.format_date(today + int(t[1:]))
            return cb.parse_date(text)

        return self.ask(f"{prompt} (YYYY-MM-DD, today, tomorrow or +N days)", parse,
                        default=default or civil.format_date(today))

    # ------------------------------------------------------------------------------------- the loop
    def items(self) -> list[tuple[str, Callable[[], None]]]:
        if self.user is None:
            return [("Log in", self.login), ("Register", self.register), ("List stations", self.list_stations),
                    ("Search trains", self.search), ("PNR status", self.pnr_status)]
        if self.user.role == "ADMIN":
            return [("Add station", self.add_station), ("Add train", self.add_train),
                    ("Schedule runs (add run)", self.add_runs), ("List runs", self.list_runs),
                    ("Run report", self.report), ("Cancel a run", self.cancel_run),
                    ("List stations", self.list_stations), ("Search trains", self.search), ("Log out", self.logout)]
        return [("Search and book", self.search_and_book), ("My bookings", self.my_bookings),
                ("Cancel a booking", self.cancel), ("PNR status", self.pnr_status),
                ("List stations", self.list_stations), ("Log out", self.logout)]

    def title(self) -> str:
        if self.user is None:
            return "Main menu (not logged in)"
        who = "administrator" if self.user.role == "ADMIN" else "passenger"
        return f"Logged in as {self.user.username} ({who})"

    def choose(self, items: Sequence[tuple[str, Any]]) -> int | None:
        """The chosen item's index, None for quit; bad input re-prompts."""
        prompt = f"Choose an option [0-{len(items)}]: "
        while True:
            try:
                text = self._read(prompt).strip().lower()
            except EOFError:
                say()
                return None
            except KeyboardInterrupt:
                say()
                return None
            if text in ("0", "q", "quit", "exit"):
                return None
            if text.isdigit() and 1 <= int(text) <= len(items):
                return int(text) - 1
            if not text:
                continue
            warn(f"{text[:20]!r} is not an option: enter a number from 0 to {len(items)} (0 or q quits).")

    def run(self) -> int:
        say(f"railraft - train tickets on a Raft cluster ({', '.join(self.addrs)})")
        say("Enter a number to choose; Ctrl-C goes back to the menu, Ctrl-D or q quits.")
        self.resume_session()
        while True:
            items = self.items()
            say()
            say(self.title())
            for i, (label, _) in enumerate(items, 1):
                say(f"  {i}) {label}")
            say("  0) Quit")
            i = self.choose(items)
            if i is None:
                break
            label, action = items[i]
            say(f"-- {label} --")
            try:
                action()
            except Back:
                say("  (back to the menu)")
            except Quit:
                break
            except Exception as e:  # noqa: BLE001 - every failure becomes a sentence
                self.explain(e)
        say("Goodbye.")
        return 0

    def explain(self, exc: BaseException) -> None:
        problem = fmt.describe_error(exc)
        if problem.code == "UNAUTHENTICATED" and self.user is not None:
            warn("Your session has ended (expired or logged out elsewhere); please log in again.")
            cb.clear_session(self.rr.token)
            self.rr.token, self.user = "", None
            return
        warn(problem.sentence)

    def resume_session(self) -> None:
        if not self.rr.token:
            return
        try:
            self.user = self.call(self.rr.whoami())
            say(f"Resuming the saved session of {fmt.user_text(self.user)}.")
        except Back:
            self.rr.token = ""
        except Exception as e:  # noqa: BLE001
            problem = fmt.describe_error(e)
            if problem.code == "UNAUTHENTICATED":
                warn("The saved session is no longer valid; please log in.")
                cb.clear_session(self.rr.token)
            else:
                warn(problem.sentence)
            self.rr.token, self.user = "", None

    # ------------------------------------------------------------------------------------- accounts
    def _logged_in(self, session: Any, username: str) -> None:
        self.user = session.user
        try:
            cb.save_session(session.token, username, session.user.role, self.addrs)
        except OSError as e:
            warn(f"Could not save the session for the other railraft commands ({e}).")
        say(f"Welcome, {session.user.username}.")

    def login(self) -> None:
        username = self.ask("Username")
        password = self.ask("Password", secret=True)
        from .client import Unauthenticated

        try:
            session = self.call(self.rr.login(username, password))
        except Unauthenticated:
            warn("Wrong username or password.")
            return
        self._logged_in(session, username)

    def register(self) -> None:
        username = self.ask("Choose a username")
        while True:
            password = self.ask("Choose a password", secret=True)
            if self.ask("Repeat the password", secret=True) == password:
                break
            warn("The passwords differ; please enter them again.")
        session = self.call(self.rr.register(username, password))
        say(f"Account {username} created.")
        if not session.token:  # a server that does not open a session on Register: log in
            session = self.call(self.rr.login(username, password))
        self._logged_in(session, username)

    def logout(self) -> None:
        token = self.rr.token
        try:
            self.call(self.rr.logout())
        finally:
            cb.clear_session(token)
            self.rr.token, self.user = "", None
        say("Logged out.")

    # ------------------------------------------------------------------------------------ catalogue
    def list_stations(self) -> None:
        prefix = self.ask("Code or start of the name (Enter for all)", optional=True)
        say(fmt.stations_table(self.call(self.rr.stations(prefix))))

    def _search(self) -> tuple[list[Any], str, str]:
        a = self.ask_station("From")
        b = self.ask_station("To")
        date = self.ask_date("Date")
        results = self.call(self.rr.search(a, b, date))
        say()
        if results:
            say(f"{a} -> {b} on {date}:")
        say(fmt.search_table(results, numbered=True))
        return results, a, b

    def search(self) -> None:
        self._search()
        if self.user is None:
            say("(Log in to book.)")

    def pnr_status(self) -> None:
        pnr = self.ask("PNR", cb.parse_pnr)
        name = self.ask("Name of a passenger on the booking")
        say(fmt.booking_text(self.call(self.rr.pnr_status(pnr, name))))

    # ------------------------------------------------------------------------------------- booking
    def search_and_book(self) -> None:
        results, a, b = self._search()
        bookable = [r for r in results if r.status != "CANCELLED"]
        if not bookable:
            return
        i = self.pick("Book which train (#)", len(results))
        if i is None:
            return
        r = results[i]
        if r.status == "CANCELLED":
            warn("That run is cancelled.")
            return
        if not r.classes:
            warn("That train has no seats to sell.")
            return
        say(fmt.classes_table(r))
        ci = 0 if len(r.classes) == 1 else self.pick("Class", len(r.classes))
        if ci is None:
            return
        cls = r.classes[ci]
        cls_name = fmt.enum_name(cls.seat_class)
        n = self.ask_int("How many passengers", 1, rules.PASSENGERS_MAX, default=1)
        pax = []
        for k in range(1, n + 1):
            name = self.ask(f"Passenger {k} name", _parse_name)
            age = self.ask_int(f"Passenger {k} age", 0, rules.AGE_MAX)
            berth = self.ask(f"Passenger {k} berth preference (L, M, U, SL, SU, W, A; Enter for none)",
                             cb.parse_berth, optional=True)
            pax.append((name, age, berth))
        waitlist = False
        seats: list[tuple[str, int]] = []
        if cls.free_seats < n:
            if not self.ask_yes(f"Only {cls.free_seats} {cls_name} seat(s) free. Join the waitlist?"):
                return
            waitlist = True
        elif self.ask_yes("Choose the seats yourself from the seat map?"):
            seats = self.pick_seats(r, cls_name, a, b, n)
        booking = self.call(self.rr.hold(r.run_id, cls_name, a, b, pax, chosen_seats=seats,
                                         accept_waitlist=waitlist))
        say()
        say(fmt.booking_text(booking))
        if fmt.enum_name(booking.state) == "HELD" or (fmt.enum_name(booking.state) == "WAITLISTED"
                                                      and not booking.paid_paise):
            self.offer_payment(booking)

    def pick_seats(self, r: Any, cls_name: str, a: str, b: str, n: int) -> list[tuple[str, int]]:
        resp = self.call(self.rr.seat_map(r.run_id, "", a, b))
        coaches = [c for c in resp.coaches if fmt.enum_name(c.seat_class) == cls_name]
        if not coaches:
            warn("No coach of that class; the system will choose.")
            return []
        say(fmt.coaches_table(coaches, numbered=True))
        ci = self.pick("Coach", len(coaches))
        if ci is None:
            return []
        coach = coaches[ci].label
        cmap = self.call(self.rr.seat_map(r.run_id, coach, a, b))
        say(fmt.seat_map_text(cmap))
        free = {s.number for s in cmap.seats if s.free}

        def parse(text: str) -> list[int]:
            nums = [cb.parse_int(t, "a seat number", 1, 999) for t in text.replace(",", " ").split()]
            if len(nums) > n:
                raise ValueError(f"that is more than {n} seat(s)")
            if len(set(nums)) != len(nums):
                raise ValueError("a seat is chosen twice")
            taken = [x for x in nums if x not in free]
            if taken:
                raise ValueError(f"seat(s) {', '.join(map(str, taken))} of {coach} are not free")
            return nums

        nums = self.ask(f"Seat numbers in {coach} for {n} passenger(s), separated by spaces (Enter: any)", parse,
                        optional=True)
        return [(coach, x) for x in (nums or [])]

    def offer_payment(self, booking: Any) -> Any:
        """Ask for a card until the payment goes through or the user defers it; returns the booking."""
        while True:
            card = self.ask(f"Pay {fmt.rupees(booking.amount_paise)} now: card number (16 digits; Enter to pay later)",
                            cb.parse_card, optional=True)
            if not card:
                if booking.hold_expires_ms:
                    say(f"  The booking stays held until {fmt.ist(booking.hold_expires_ms)} IST; pay it from "
                        "'My bookings'.")
                return booking
            try:
                paid = self.call(self.rr.pay(booking.pnr, card))
            except Back:
                raise
            except Exception as e:  # noqa: BLE001
                problem = fmt.describe_error(e)
                warn(problem.sentence)
                if problem.code not in ("FAILED_PRECONDITION", "INVALID_ARGUMENT", "UNAVAILABLE"):
                    raise
                continue
            say("Payment accepted.")
            say()
            say(fmt.booking_text(paid))
            return paid

    def my_bookings(self) -> None:
        found = self.call(self.rr.my_bookings())
        say(fmt.bookings_table(found, numbered=True))
        if not found:
            return
        i = self.pick("Show which booking (#)", len(found))
        if i is None:
            return
        b = self.call(self.rr.booking(found[i].pnr))
        say()
        say(fmt.booking_text(b))
        if fmt.enum_name(b.state) == "HELD":
            self.offer_payment(b)

    def cancel(self) -> None:
        found = [b for b in self.call(self.rr.my_bookings()) if fmt.enum_name(b.state) in ACTIVE_STATES]
        if not found:
            say("You have no booking that can be cancelled.")
            return
        say(fmt.bookings_table(found, numbered=True))
        i = self.pick("Cancel which booking (#)", len(found))
        if i is None:
            return
        b = found[i]
        active = [p for p in b.passengers if p.status != "CANCELLED"]
        pax: list[int] = []
        if len(active) > 1:
            say(fmt.passengers_table(active))
            valid = {p.index for p in active}

            def parse(text: str) -> list[int]:
                nums = [cb.parse_int(t, "a passenger number", 1, rules.PASSENGERS_MAX)
                        for t in text.replace(",", " ").split()]
                bad = [x for x in nums if x not in valid]
                if bad:
                    raise ValueError(f"no active passenger {bad[0]} on this booking")
                return sorted(set(nums))

            pax = self.ask("Passengers to cancel, by # (Enter for the whole booking)", parse, optional=True) or []
        q = self.call(self.rr.refund_quote(b.pnr, pax))
        say(f"  {fmt.refund_quote_text(q)}.")
        what = f"passenger(s) {', '.join(map(str, pax))} of {b.pnr}" if pax else f"booking {b.pnr}"
        if not self.ask_yes(f"Cancel {what}?"):
            say("  Not cancelled.")
            return
        done = self.call(self.rr.cancel(b.pnr, pax))
        say("Cancelled.")
        say()
        say(fmt.booking_text(done))

    # -------------------------------------------------------------------------------- administration
    def add_station(self) -> None:
        code = self.ask("Station code (2-6 letters or digits)", lambda t: cb.parse_station(t, "code"))
        name = self.ask("Station name", _parse_station_name)
        s = self.call(self.rr.add_station(code, name))
        say(f"Added station {s.code} {s.name}.")

    def add_train(self) -> None:
        number = self.ask_int("Train number", 1, rules.TRAIN_NUMBER_MAX)
        name = self.ask("Train name", _parse_train_name)
        types = sorted(rules.TRAIN_TYPES)
        ttype = self.ask(f"Type ({', '.join(types)})", _parse_train_type, default="EXPRESS")
        departs = self.ask("Departure time from the origin (HH:MM, IST)", cb.parse_time)
        count = self.ask_int("How many stops, origin and destination included", 2, rules.ROUTE_STOPS_MAX)
        stops: list[tuple[str, int, int, int]] = []
        for k in range(1, count + 1):
            last = k == count
            label = "origin" if k == 1 else ("destination" if last else f"stop {k}")
            while True:
                code = self.ask_station(f"Stop {k} ({label}) station")
                if code in {s[0] for s in stops}:
                    warn(f"{code} is already on the route.")
                    continue
                break
            if k == 1:
                stops.append((code, 0, 0, 0))
                continue
            prev = stops[-1]
            arr = self.ask_int(f"  arrives at {code}, minutes after leaving the origin (more than {prev[2]})",
                               prev[2] + 1, rules.ROUTE_MINUTES_MAX)
            halt = 0 if last else self.ask_int(f"  halt at {code} in minutes", 0, 24 * 60, default=5)
            km = self.ask_int(f"  distance of {code} from the origin in km (more than {prev[3]})", prev[3] + 1,
                              rules.ROUTE_KM_MAX)
            stops.append((code, arr, arr + halt, km))
        coaches: list[tuple[str, str, int]] = []
        say("  Coaches: add them a class at a time; Enter at the class when done.")
        while True:
            cls = self.ask(f"Coach class ({', '.join(rules.TRAVEL_CLASSES)})", cb.parse_class,
                           optional=bool(coaches))
            if not cls:
                break
            count_c = self.ask_int(f"How many {cls} coaches", 1, rules.COACHES_MAX, default=1)
            seats = self.ask_int("Seats per coach", 1, rules.COACH_SEATS_MAX, default=rules.COACH_CAPACITY[cls])
            prefix = self.ask("Label prefix", lambda t: _parse_prefix(t), default=rules.COACH_PREFIX[cls])
            used = {c[0] for c in coaches}
            start = 1
            while f"{prefix}{start}" in used:
                start += 1
            new = [(f"{prefix}{i}", cls, seats) for i in range(start, start + count_c)]
            coaches += new
            say(f"    -> {', '.join(c[0] for c in new)} ({seats} seats each)")
        t = self.call(self.rr.add_train(number, name, ttype, departs, stops, coaches))
        say()
        say("Added " + fmt.train_text(t)[0].lower() + fmt.train_text(t)[1:])
        if self.ask_yes("Schedule runs of it now?", default=True):
            self.add_runs(t.number)

    def add_runs(self, number: int | None = None) -> None:
        if number is None:
            number = self.ask_int("Train number", 1, rules.TRAIN_NUMBER_MAX)
        first = self.ask_date("First date")
        last = self.ask_date("Last date", default=first)
        if civil.parse_date(last) < civil.parse_date(first):
            warn("The last date is before the first.")
            return
        made = self.call(self.rr.schedule_runs(number, first, last))
        say(f"Scheduled {len(made)} run(s) of train {number} from {first} to {last}.")
        if made:
            say(fmt.runs_table(made))

    def list_runs(self) -> None:
        number = self.ask_int("Train number", 1, rules.TRAIN_NUMBER_MAX)
        first = self.ask_date("First date")
        last = self.ask_date("Last date", default=first)
        say(fmt.runs_table(self.call(self.rr.list_runs(number, first, last))))

    def _ask_run(self) -> int | None:
        """A run by id, or by train number and date ("12951 2026-12-05")."""
        while True:
            text = self.ask("Run id, or train number and date (e.g. 12951 2026-12-05)")
            parts = text.split()
            try:
                if len(parts) == 1:
                    return cb.parse_int(parts[0], "a run id")
                if len(parts) == 2:
                    number = cb.parse_int(parts[0], "a train number", 1, rules.TRAIN_NUMBER_MAX)
                    date = cb.parse_date(parts[1])
                    runs = self.call(self.rr.list_runs(number, date))
                    if not runs:
                        warn(f"Train {number} has no run on {date}.")
                        continue
                    return runs[0].id
                raise cb.UsageError("enter a run id, or a train number and a date")
            except cb.UsageError as e:
                warn(f"{fmt.sentence(str(e))} Please try again.")

    def report(self) -> None:
        run_id = self._ask_run()
        say(fmt.report_text(self.call(self.rr.run_report(run_id))))

    def cancel_run(self) -> None:
        run_id = self._ask_run()
        reason = self.ask("Reason, shown to the passengers (optional)", optional=True)
        if not self.ask_yes(f"Cancel run {run_id} and refund every booking on it?"):
            say("  Not cancelled.")
            return
        ack = self.call(self.rr.cancel_run(run_id, reason))
        say(fmt.sentence(ack.message) or f"Run {run_id} cancelled.")


# ======================================================================================== helpers


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _validated(check: Callable[[str], Any]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        check(text.strip())
        return text.strip()

    return parse


_parse_name = _validated(rules.validate_passenger_name)
_parse_station_name = _validated(rules.validate_station_name)
_parse_train_name = _validated(rules.validate_train_name)


def _parse_train_type(text: str) -> str:
    return rules.validate_train_type(rules.normalize_train_type(text))


def _parse_prefix(text: str) -> str:
    p = text.strip().upper()
    rules.validate_coach_label(p + "1")
    return p


def run_menu(args: argparse.Namespace) -> int:
    """`railraft cli`."""
    from actors.config import ConfigError

    try:
        addrs = cb.addresses(args)
    except (ConfigError, ValueError) as e:
        fmt.out(f"railraft cli: {e}", sys.stderr)
        return 2
    menu = Menu(addrs, timeout=getattr(args, "timeout", None) or cb.DEFAULT_TIMEOUT_S, token=cb.resolve_token(args))
    try:
        return menu.run()
    finally:
        menu.close()


__all__ = ["Menu", "run_menu"]
