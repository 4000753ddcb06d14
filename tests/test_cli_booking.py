"""The booking subcommands of `railraft` (gateway/cli_booking.py), driven through their JSON.

One real 3-node cluster per module (tests/cluster_harness.ProcessCluster with the booking environment of
tests/booking_helpers), loaded with the demo catalogue for a few days through gateway.demo_loader; every
command runs as a subprocess (`python -m gateway.cli ...`) with its own session file, so tests never touch
the user's ~/.config.  The cluster is stopped and its ports checked free when the module ends.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import cli_booking as cb
from gateway import cli_format as fmt
from gateway.cli import build_parser, main
from gateway.demo_loader import DemoCredentials, load_demo
from proto.gen.railraft.v1 import BookingInfo, BookingState, Passenger, SeatClass

from .booking_helpers import ADMIN_PASSWORD, ADMIN_USER, TEST_CARD, day, start_cluster
from .cluster_harness import ROOT, ProcessCluster, free_ports, run

CUSTOMER = ("demo", "demo-password-1")
CREDS = DemoCredentials(ADMIN_USER, ADMIN_PASSWORD, CUSTOMER[0], CUSTOMER[1])
DEMO_DAYS = 4
DECLINED_CARD = "4000000000000002"


# =============================================================================================== helpers


def start_demo_cluster(root: Path) -> ProcessCluster:
    """A 3-node cluster with the demo catalogue (runs from today for DEMO_DAYS days) and the demo customer."""
    c = start_cluster(root)
    try:
        run(load_demo(c.addrs(), CREDS, days=DEMO_DAYS, bootstrap_wait=30))
    except BaseException:
        c.close()
        raise
    return c


def cli_env(session_file: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(cb.TOKEN_ENV, None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[cb.SESSION_ENV] = str(session_file)
    env.update(extra)
    return env


class Cli:
    """One user of the CLI: `railraft ARGS --nodes <cluster>` with its own session file.

    By default a command runs in this process through `gateway.cli.main` (the console script's entry point)
    with stdout and stderr captured, which costs milliseconds; `proc=True` runs it as a real subprocess
    (`python -m gateway.cli`), which costs an interpreter start -- used where the process itself is the
    point (exit status, what reaches stdout and stderr, no terminal on stdin).
    """

    def __init__(self, cluster: ProcessCluster | None, session_file: Path, nodes: str | None = None) -> None:
        self.nodes = nodes or ",".join(cluster.addrs())
        self.session_file = session_file
        self.env = cli_env(session_file)

    def __call__(self, *args: str, proc: bool = False, timeout: float = 60.0) -> subprocess.CompletedProcess:
        argv = [*args, "--nodes", self.nodes]
        if proc:
            return subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True, text=True,
                                  timeout=timeout, env=self.env, cwd=str(ROOT), stdin=subprocess.DEVNULL)
        out, err = io.StringIO(), io.StringIO()
        saved = {k: os.environ.get(k) for k in (cb.SESSION_ENV, cb.TOKEN_ENV)}
        os.environ[cb.SESSION_ENV] = str(self.session_file)
        os.environ.pop(cb.TOKEN_ENV, None)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse
                    rc = e.code if isinstance(e.code, int) else 2
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())

    def json(self, *args: str, rc: int = 0, proc: bool = False) -> Any:
        """Run with --json; assert the exit code and that stdout is exactly one JSON value; return it."""
        r = self(*args, "--json", proc=proc)
        assert r.returncode == rc, f"{args}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        assert r.stdout.count("\n") == 1, f"{args}: not one JSON line: {r.stdout!r}"
        assert "Traceback" not in r.stderr, r.stderr
        return json.loads(r.stdout)

    def error(self, *args: str, rc: int, code: str, proc: bool = False) -> dict[str, Any]:
        """A failing call: exit `rc`, JSON {"error", "code": code}, and one line on stderr."""
        r = self(*args, "--json", proc=proc)
        assert r.returncode == rc, f"{args}: exit {r.returncode} != {rc}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        obj = json.loads(r.stdout)
        assert obj["code"] == code and obj["error"], obj
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("railraft "), r.stderr
        assert "Traceback" not in r.stderr
        return obj

    def login(self, user: str, password: str, proc: bool = False) -> dict[str, Any]:
        res = self.json("login", user, password, proc=proc)
        assert res["success"] and res["session_file"] == str(self.session_file), res
        return res


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_demo_cluster(tmp_path_factory.mktemp("cli-booking"))
    yield c
    try:
        print(c.describe())  # shown only when a test failed
    except Exception as e:  # noqa: BLE001
        print(f"(describe failed: {e!r})")
    c.close()


@pytest.fixture
def customer(cluster, tmp_path) -> Cli:
    c = Cli(cluster, tmp_path / "customer-session.json")
    c.login(*CUSTOMER)
    return c


@pytest.fixture
def admin(cluster, tmp_path) -> Cli:
    c = Cli(cluster, tmp_path / "admin-session.json")
    c.login(ADMIN_USER, ADMIN_PASSWORD)
    return c


# ========================================================================================= no processes


def test_parser_registers_every_booking_command():
    parser = build_parser()
    text = parser.format_help()
    for name in ("stations", "search", "seats", "book", "pay", "bookings", "refund-quote", "cancel", "pnr",
                 "whoami", "add-station", "add-train", "add-run", "runs", "cancel-run", "report", "cli"):
        assert name in text
    args = parser.parse_args(["book", "17", "AC3", "NDLS", "BCT", "--passenger", "A,3,F", "--passenger", "B,4,M",
                              "--seat", "B1-2", "--waitlist", "--pay", TEST_CARD, "--json"])
    assert (args.run_id, args.seat_class, args.passenger, args.seat, args.waitlist, args.pay, args.json) == (
        "17", "AC3", ["A,3,F", "B,4,M"], ["B1-2"], True, TEST_CARD, True)
    args = parser.parse_args(["cancel", "ABCDEFGH23", "--passenger", "1", "3", "--passenger", "2", "--yes"])
    assert args.passenger == ["1", "3", "2"] and args.yes
    assert parser.parse_args(["logout"]).token == ""  # the saved session
    assert parser.parse_args(["logout", "tok"]).token == "tok"
    args = parser.parse_args(["add-train", "1", "X", "--departs", "08:00", "--stop", "A,0,0,0",
                              "--coach", "B,AC3,64,2"])
    assert args.stop == ["A,0,0,0"] and args.coach == ["B,AC3,64,2"] and args.type == "EXPRESS"


def test_input_parsers():
    assert cb.parse_passenger("Asha Rao, 34, F, lower") == ("Asha Rao", 34, "LOWER")
    assert cb.parse_passenger("Ravi,40,M") == ("Ravi", 40, "")
    assert cb.parse_passenger("Ravi,40,SU") == ("Ravi", 40, "SIDE_UPPER")  # gender may be left out
    for bad in ("Asha", "Asha,abc,F", "Asha,300,F", ",3,F", "Asha,3,Q,LOWER", "Asha,3,F,SOFA"):
        with pytest.raises(cb.UsageError):
            cb.parse_passenger(bad)
    assert cb.parse_seat("b1-23") == ("B1", 23)
    assert cb.parse_coaches("S,sleeper,72,3") == [("S1", "SLEEPER", 72), ("S2", "SLEEPER", 72), ("S3", "SLEEPER", 72)]
    assert cb.parse_coaches("H1,1A,24") == [("H1", "AC1", 24)]
    assert cb.parse_stop("brc,245,250,392") == ("BRC", 245, 250, 392)
    assert cb.parse_card("4111 1111 1111 1111") == TEST_CARD
    for fn, bad in ((cb.parse_seat, "B1"), (cb.parse_coaches, "B1,AC9,64"), (cb.parse_stop, "BRC,1,2"),
                    (cb.parse_card, "1234"), (cb.parse_date, "05-12-2026"), (cb.parse_pnr, "short"),
                    (cb.parse_station, "N"), (cb.parse_time, "25:00"), (cb.parse_class, "FIRST")):
        with pytest.raises(cb.UsageError):
            fn(bad)


def test_json_conversion_and_formatting():
    b = BookingInfo(pnr="ABCDEFGH23", state=BookingState.CONFIRMED, seat_class=SeatClass.AC3, amount_paise=12345678,
                    departure_ms=1796437800000,
                    passengers=[Passenger(index=1, name="Asha", age=34, coach="B1", seat=5)])
    d = fmt.to_json(b)
    assert d["state"] == "CONFIRMED" and d["seat_class"] == "AC3"
    assert d["amount_paise"] == 12345678 and d["amount_rupees"] == "\u20b91,23,456.78"
    assert d["departure_ist"] == "2026-12-05 08:00" and d["arrival_ms"] == 0 and d["arrival_ist"] is None
    assert d["passengers"][0] == {"index": 1, "name": "Asha", "age": 34, "coach": "B1", "seat": 5, "berth": "",
                                  "status": ""}
    assert d["hold_expires_ist"] is None and d["refunds"] == [] and d["waitlist_position"] == 0
    json.dumps(d)  # serialisable as is
    assert fmt.rupees(-5) == "-\u20b90.05" and fmt.rupees(100000) == "\u20b91,000.00"
    t = fmt.table(("A", "Num"), [("x", 1), ("long", 22)], right=(1,))
    assert t.splitlines() == ["A     Num", "----  ---", "x       1", "long   22"]
    assert "PNR ABCDEFGH23" in fmt.booking_text(b) and "B1" in fmt.booking_text(b)


def test_session_file_is_private_and_cleared(tmp_path, monkeypatch):
    monkeypatch.setenv(cb.SESSION_ENV, str(tmp_path / "s" / "session.json"))
    monkeypatch.delenv(cb.TOKEN_ENV, raising=False)
    path = cb.save_session("tok1", "asha", "CUSTOMER", ["127.0.0.1:1"])
    assert path.stat().st_mode & 0o777 == 0o600
    assert cb.load_session()["username"] == "asha"
    args = build_parser().parse_args(["whoami"])
    assert cb.resolve_token(args) == "tok1"
    monkeypatch.setenv(cb.TOKEN_ENV, "tok2")
    assert cb.resolve_token(args) == "tok2"
    assert cb.resolve_token(build_parser().parse_args(["whoami", "--token", "tok3"])) == "tok3"
    assert not cb.clear_session("other") and cb.clear_session("tok1") and not path.exists()


# ====================================================================================== against a cluster


def test_search_book_pay_list_quote_cancel_and_pnr(cluster, customer, tmp_path):
    date = day(1)
    assert customer.json("whoami") == {"id": customer.json("whoami")["id"], "username": "demo", "role": "CUSTOMER"}
    assert any(s["code"] == "NDLS" and s["name"] == "New Delhi" for s in customer.json("stations", "ND")["stations"])

    found = customer.json("search", "ndls", "BCT", date, proc=True)
    assert found["from_station"] == "NDLS" and found["date"] == date and found["results"], found
    res = found["results"][0]
    assert res["train_number"] == 12952 and res["status"] == "SCHEDULED" and res["departure_ist"].startswith(date)
    ac3 = next(c for c in res["classes"] if c["seat_class"] == "AC3")
    assert ac3["free_seats"] > 2 and ac3["fare_paise"] > 0 and ac3["fare_rupees"] == fmt.rupees(ac3["fare_paise"])
    run_id = str(res["run_id"])
    r = customer("search", "NDLS", "BCT", date)
    assert r.returncode == 0 and "12952 New Delhi Rajdhani" in r.stdout and "Fare" in r.stdout

    coaches = customer.json("seats", run_id, "NDLS", "BCT")["coaches"]
    assert {"label": "B1", "seat_class": "AC3", "seats": 64, "free_seats": 64} in coaches
    seat_map = customer.json("seats", run_id, "NDLS", "BCT", "--coach", "b1")
    assert seat_map["coach"] == "B1" and len(seat_map["seats"]) == 64 and seat_map["seats"][4]["free"]

    held = customer.json("book", run_id, "AC3", "NDLS", "BCT", "--passenger", "Asha Rao,34,F,LOWER",
                         "--passenger", "Ravi Rao,40,M", "--seat", "B1-5")
    pnr = held["pnr"]
    assert held["state"] == "HELD" and held["hold_expires_ms"] > 0 and held["amount_paise"] == 2 * ac3["fare_paise"]
    assert [(p["name"], p["coach"]) for p in held["passengers"]] == [("Asha Rao", "B1"), ("Ravi Rao", "B1")]
    assert held["passengers"][0]["seat"] == 5
    seat_map = customer.json("seats", run_id, "NDLS", "BCT", "--coach", "B1")
    assert not seat_map["seats"][4]["free"]

    # a declined card leaves the hold as it was; a good one confirms it
    customer.error("pay", pnr, DECLINED_CARD, rc=fmt.EXIT_REFUSED, code="FAILED_PRECONDITION")
    paid = customer.json("pay", pnr, TEST_CARD)
    assert paid["state"] == "CONFIRMED" and paid["paid_paise"] == held["amount_paise"]

    # hold and pay in one command
    one = customer.json("book", run_id, "AC2", "NDLS", "BCT", "--passenger", "Meera,8,F", "--pay", TEST_CARD, proc=True)
    assert one["state"] == "CONFIRMED" and one["paid_paise"] == one["amount_paise"] > 0

    mine = customer.json("bookings")["bookings"]
    assert {pnr, one["pnr"]} <= {b["pnr"] for b in mine}
    assert customer.json("bookings", pnr)["passengers"][1]["name"] == "Ravi Rao"
    r = customer("bookings")
    assert r.returncode == 0 and pnr in r.stdout and "CONFIRMED" in r.stdout

    quote = customer.json("refund-quote", pnr)
    assert quote["pnr"] == pnr and quote["refund_paise"] > 0 and quote["rule"] and 0 < quote["percent"] <= 100
    assert quote["refund_rupees"] == fmt.rupees(quote["refund_paise"])

    # without --yes and without a terminal: refused, nothing changed
    r = customer("cancel", pnr, proc=True)
    assert r.returncode == fmt.EXIT_USAGE and "--yes" in r.stderr and r.stdout == ""
    assert customer.json("bookings", pnr)["state"] == "CONFIRMED"

    part = customer.json("cancel", pnr, "--passenger", "2", "--yes")
    assert part["state"] == "CONFIRMED" and [p["status"] for p in part["passengers"]] == ["CONFIRMED", "CANCELLED"]
    quote = customer.json("refund-quote", pnr)
    gone = customer.json("cancel", pnr, "--yes")
    assert gone["state"] == "CANCELLED" and gone["refunded_paise"] >= quote["refund_paise"] > 0

    # PNR status needs no login
    anon = Cli(cluster, tmp_path / "nobody.json")
    status = anon.json("pnr", pnr.lower(), "asha rao", proc=True)
    assert status["pnr"] == pnr and status["state"] == "CANCELLED"
    anon.error("pnr", pnr, "Somebody Else", rc=fmt.EXIT_NOT_FOUND, code="NOT_FOUND")
    anon.error("bookings", rc=fmt.EXIT_UNAUTHENTICATED, code="UNAUTHENTICATED")

    # logout ends the saved session; the next command is refused
    out = customer.json("logout", proc=True)
    assert out["success"] and out["session_cleared"] and not customer.session_file.exists()
    customer.error("bookings", rc=fmt.EXIT_UNAUTHENTICATED, code="UNAUTHENTICATED")


def test_admin_commands_add_a_bookable_train_and_customers_may_not(cluster, admin, customer):
    first, last = day(2), day(3)
    # a customer's session: permission denied, nothing added
    customer.error("add-station", "TCA", "Cli Alpha", rc=fmt.EXIT_PERMISSION, code="PERMISSION_DENIED", proc=True)
    customer.error("add-run", "12951", first, rc=fmt.EXIT_PERMISSION, code="PERMISSION_DENIED")
    assert customer.json("stations", "TCA")["stations"] == []

    assert admin.json("whoami")["role"] == "ADMIN"
    assert admin.json("add-station", "tca", "Cli Alpha") == {"id": admin.json("stations", "TCA")["stations"][0]["id"],
                                                              "code": "TCA", "name": "Cli Alpha"}
    admin.json("add-station", "TCB", "Cli Beta")
    admin.error("add-station", "TCB", "Cli Beta", rc=fmt.EXIT_REFUSED, code="ALREADY_EXISTS")

    train = admin.json("add-train", "40101", "Cli Express", "--type", "superfast", "--departs", "09:30",
                       "--stop", "TCA,0,0,0", "--stop", "NDLS,60,70,50", "--stop", "TCB,150,150,120",
                       "--coach", "B,AC3,64,2", "--coach", "S1,SLEEPER,72", proc=True)
    assert train["number"] == 40101 and train["type"] == "SUPERFAST" and train["departure_time"] == "09:30"
    assert [s["station_code"] for s in train["stops"]] == ["TCA", "NDLS", "TCB"]
    assert [(c["label"], c["seat_class"], c["seats"]) for c in train["coaches"]] == [
        ("B1", "AC3", 64), ("B2", "AC3", 64), ("S1", "SLEEPER", 72)]

    made = admin.json("add-run", "40101", first, last)
    assert made["first_date"] == first and [r["date"] for r in made["runs"]] == [first, last]
    assert admin.json("add-run", "40101", first)["runs"] == []  # already scheduled: skipped
    runs = admin.json("runs", "40101", first, last)["runs"]
    assert [r["id"] for r in runs] == [r["id"] for r in made["runs"]] and runs[0]["status"] == "SCHEDULED"

    found = customer.json("search", "TCA", "TCB", first)["results"]
    assert [r["train_number"] for r in found] == [40101]
    assert {c["seat_class"]: c["free_seats"] for c in found[0]["classes"]} == {"AC3": 128, "SLEEPER": 72}
    booked = customer.json("book", str(found[0]["run_id"]), "SLEEPER", "TCA", "NDLS", "--passenger", "Kiran,29,O",
                           "--pay", TEST_CARD)
    assert booked["state"] == "CONFIRMED"

    rep = admin.json("report", str(runs[0]["id"]))
    assert rep["run"]["id"] == runs[0]["id"] and rep["bookings"] == 1 and rep["revenue_paise"] == booked["paid_paise"]
    sleeper = next(c for c in rep["classes"] if c["seat_class"] == "SLEEPER")
    assert sleeper["seats_sold"] == 1 and sleeper["revenue_rupees"] == fmt.rupees(booked["paid_paise"])
    customer.error("report", str(runs[0]["id"]), rc=fmt.EXIT_PERMISSION, code="PERMISSION_DENIED")
    r = admin("report", str(runs[0]["id"]))
    assert r.returncode == 0 and "Occupancy" in r.stdout and "SLEEPER" in r.stdout

    done = admin.json("cancel-run", str(runs[1]["id"]), "--reason", "track work")
    assert done["ok"] and done["run_id"] == runs[1]["id"]
    assert customer.json("search", "TCA", "TCB", last)["results"] == []  # search leaves cancelled runs out
    assert [r["status"] for r in admin.json("runs", "40101", first, last)["runs"]] == ["SCHEDULED", "CANCELLED"]


def test_bad_input_is_refused_clearly_and_writes_nothing(cluster, customer, admin):
    date = day(1)
    run_id = str(customer.json("search", "NDLS", "BCT", date)["results"][0]["run_id"])
    before = customer.json("bookings")["bookings"]
    bad = [
        ("book", run_id, "AC3", "NDLS", "BCT", "--passenger", "Asha,abc,F"),  # age
        ("book", run_id, "AC9", "NDLS", "BCT", "--passenger", "Asha,3,F"),  # class
        ("book", run_id, "AC3", "NDLS", "BCT"),  # no passenger
        ("book", run_id, "AC3", "NDLS", "BCT", "--passenger", "Asha,3,F", "--seat", "B1-x"),
        ("book", "run-one", "AC3", "NDLS", "BCT", "--passenger", "Asha,3,F"),
        ("book", run_id, "AC3", "NDLS", "BCT", "--passenger", "Asha,3,F", "--pay", "1234"),
        ("search", "NDLS", "BCT", "tomorrow"),
        ("pay", "NOTAPNR", TEST_CARD),
    ]
    for args in bad:
        obj = customer.error(*args, rc=fmt.EXIT_USAGE, code="INVALID_ARGUMENT")
        assert obj["error"][0].isupper()
    # the server's own INVALID_ARGUMENT, through a real process
    obj = customer.error("book", run_id, "AC3", "NDLS", "XYZQ", "--passenger", "Asha,3,F", rc=fmt.EXIT_USAGE,
                         code="INVALID_ARGUMENT", proc=True)
    assert "XYZQ" in obj["error"]
    assert customer.json("bookings")["bookings"] == before
    r = customer("book", run_id, "AC3", "NDLS", "BCT", "--passenger", "Asha,abc,F", proc=True)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.strip() == (
        "railraft book: Age of Asha must be a whole number (got 'abc').")

    admin.error("add-train", "40102", "Bad Route", "--departs", "08:00", "--stop", "TCA,0,0,0",
                "--stop", "TCB,60,60,0", "--coach", "B1,AC3,64", rc=fmt.EXIT_USAGE, code="INVALID_ARGUMENT")
    admin.error("add-station", "x", "Nowhere", rc=fmt.EXIT_USAGE, code="INVALID_ARGUMENT")
    admin.error("add-run", "40102", "2026-13-01", rc=fmt.EXIT_USAGE, code="INVALID_ARGUMENT")
    admin.error("add-run", "99998", day(1), rc=fmt.EXIT_NOT_FOUND, code="NOT_FOUND")
    assert admin.json("runs", "40102", day(0), day(DEMO_DAYS))["runs"] == []


def test_unreachable_cluster_is_a_sentence_and_exit_6(tmp_path):
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    c = Cli(None, tmp_path / "s.json", nodes=dead)
    obj = c.error("search", "NDLS", "BCT", day(1), "--timeout", "1", rc=fmt.EXIT_UNAVAILABLE, code="UNAVAILABLE",
                  proc=True)
    assert obj["error"] == fmt.UNAVAILABLE_SENTENCE and dead in obj["detail"]
    r = c("stations", "--timeout", "1")
    assert r.returncode == fmt.EXIT_UNAVAILABLE and r.stdout == "" and "not answering" in r.stderr
