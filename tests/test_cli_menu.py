"""`railraft cli`, the interactive menu (gateway/cli_menu.py), driven through a pseudo-terminal with pexpect.

One real 3-node cluster with the demo data per module (as in tests/test_cli_booking.py).  Each test starts
`python -m gateway.cli cli` in a pty, answers its prompts, and checks what it printed and -- through the JSON
subcommands -- what it did.  Every menu process is ended (and reaped) by the test; the cluster is stopped and
its ports checked free when the module ends.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest

from gateway import cli_format as fmt

from .booking_helpers import ADMIN_PASSWORD, ADMIN_USER, TEST_CARD, day
from .cluster_harness import ROOT, free_ports
from .test_cli_booking import CUSTOMER, DECLINED_CARD, Cli, cli_env, start_demo_cluster

PROMPT = "Choose an option"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_demo_cluster(tmp_path_factory.mktemp("cli-menu"))
    yield c
    try:
        print(c.describe())
    except Exception as e:  # noqa: BLE001
        print(f"(describe failed: {e!r})")
    c.close()


class Menu:
    """A running `railraft cli` in a pty: `step(expected, answer)` waits for text, then types a line."""

    def __init__(self, child: pexpect.spawn, transcript: io.StringIO) -> None:
        self.child = child
        self.transcript = transcript

    def expect(self, pattern: str, timeout: float = 20) -> str:
        """Wait for `pattern` (a regular expression); returns the text before it plus the match."""
        try:
            self.child.expect(pattern, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF):
            raise AssertionError(f"the menu never showed {pattern!r}; transcript:\n{self.transcript.getvalue()}") \
                from None
        return self.child.before + self.child.after

    def step(self, pattern: str, answer: str) -> str:
        seen = self.expect(pattern)
        self.child.sendline(answer)
        return seen

    def quit_with_eof(self) -> int:
        self.expect(PROMPT)
        self.child.sendeof()
        return self.wait_exit()

    def wait_exit(self) -> int:
        self.expect("Goodbye.")
        self.child.expect(pexpect.EOF, timeout=15)
        self.child.close()
        text = self.transcript.getvalue()
        assert "Traceback" not in text, text
        return self.child.exitstatus


@contextmanager
def menu(session_file: Path, *args: str) -> Iterator[Menu]:
    transcript = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-m", "gateway.cli", "cli", *args], env=cli_env(session_file),
                          cwd=str(ROOT), encoding="utf-8", codec_errors="replace", timeout=20,
                          dimensions=(50, 200))
    child.logfile_read = transcript
    try:
        yield Menu(child, transcript)
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.close(force=True)


def test_passenger_logs_in_searches_books_pays_lists_and_cancels(cluster, tmp_path):
    session = tmp_path / "session.json"
    nodes = ",".join(cluster.addrs())
    with menu(session, "--nodes", nodes) as m:
        m.step(PROMPT, "9")
        m.expect("'9' is not an option")
        m.step(PROMPT, "1")  # log in
        m.step("Username", CUSTOMER[0])
        m.step("Password", "wrong-password")
        m.expect("Wrong username or password")
        m.step(PROMPT, "1")
        m.step("Username", CUSTOMER[0])
        m.step("Password", CUSTOMER[1])
        m.expect(r"Logged in as demo \(passenger\)")

        m.step(PROMPT, "1")  # search and book
        m.step(r"From \(code or name\)", "new del")
        m.expect("-> NDLS New Delhi")
        m.step(r"To \(code or name\)", "BCT")
        m.step("Date", day(1))
        table = m.step(r"Book which train \(#\) \(1-1", "1")
        assert "12952 New Delhi Rajdhani" in table and "AC3" in table
        classes = m.step(r"Class \(1-3", "3")
        assert re.search(r"3\s+AC3\s+AC 3 Tier", classes), classes
        m.step("How many passengers", "1")
        m.step("Passenger 1 name", "Asha Rao")
        m.step("Passenger 1 age", "abc")
        m.expect("Enter a whole number from 0 to 125")
        m.step("Passenger 1 age", "34")
        m.step("Passenger 1 berth preference", "L")
        m.step("Choose the seats yourself", "y")
        m.step(r"Coach \(1-", "1")
        seat_map = m.step("Seat numbers in B1", "12 13")
        assert "Coach B1 (AC3)" in seat_map and "12L" in seat_map
        m.expect("more than 1 seat")
        m.step("Seat numbers in B1", "12")
        held = m.step("card number", "1234")
        pnr = re.search(r"PNR ([A-Z0-9]{10})\s+HELD", held).group(1)
        m.expect("A card number is 16 digits")
        m.step("card number", DECLINED_CARD)
        m.expect("(?i)declined")
        m.step("card number", TEST_CARD)
        m.expect("Payment accepted")
        m.expect(rf"PNR {pnr}\s+CONFIRMED")

        m.step(PROMPT, "2")  # my bookings
        listing = m.step("Show which booking", "1")
        assert pnr in listing and "B1-12" in listing
        m.expect(rf"PNR {pnr}\s+CONFIRMED")

        m.step(PROMPT, "3")  # cancel
        m.step("Cancel which booking", "1")
        m.expect("Cancelling now refunds")
        m.step(f"Cancel booking {pnr}", "y")
        m.expect("Cancelled.")
        m.expect(rf"PNR {pnr}\s+CANCELLED")
        assert m.quit_with_eof() == 0

    # what the menu did, seen through the subcommands (the menu saved its session for them)
    me = Cli(cluster, session)
    b = me.json("bookings", pnr)
    assert b["state"] == "CANCELLED" and b["passengers"][0]["seat"] == 12 and b["paid_paise"] > 0
    assert b["refunded_paise"] > 0


def test_admin_adds_stations_train_runs_and_reads_a_report(cluster, tmp_path):
    session = tmp_path / "admin-session.json"
    Cli(cluster, session).login(ADMIN_USER, ADMIN_PASSWORD)  # `railraft login`: the menu picks the session up
    with menu(session, "--nodes", ",".join(cluster.addrs())) as m:
        m.expect(r"Resuming the saved session of admin")
        m.expect(r"Logged in as admin \(administrator\)")
        for code, name in (("tma", "Menu Alpha"), ("TMB", "Menu Beta")):
            m.step(PROMPT, "1")
            m.step("Station code", code)
            m.step("Station name", name)
            m.expect(f"Added station {code.upper()} {name}.")

        m.step(PROMPT, "2")  # add train
        m.step("Train number", "40201")
        m.step("Train name", "Menu Mail")
        m.step("Type", "mail")
        m.step("Departure time", "7:5")
        m.expect("Departure time must be HH:MM")
        m.step("Departure time", "07:05")
        m.step("How many stops", "2")
        m.step(r"Stop 1 \(origin\) station", "TMA")
        m.step(r"Stop 2 \(destination\) station", "Menu B")
        m.expect("-> TMB Menu Beta")
        m.step("arrives at TMB", "0")
        m.expect("Enter a whole number from 1 to")
        m.step("arrives at TMB", "90")
        m.step("distance of TMB", "70")
        m.step("Coach class", "AC3")
        m.step("How many AC3 coaches", "2")
        m.step("Seats per coach", "")
        m.step("Label prefix", "")
        m.expect(r"-> B1, B2 \(64 seats each\)")
        m.step("Coach class", "sl")
        m.step("How many SLEEPER coaches", "")
        m.step("Seats per coach", "10")
        m.step("Label prefix", "")
        m.step("Coach class", "")
        m.expect(r"Added train 40201 Menu Mail \(MAIL\), leaves its origin at 07:05")
        m.step("Schedule runs of it now", "")
        m.step("First date", day(2))
        m.step("Last date", day(3))
        m.expect(f"Scheduled 2 run\\(s\\) of train 40201 from {day(2)} to {day(3)}")

        m.step(PROMPT, "5")  # run report
        m.step("Run id, or train number and date", "40201 someday")
        m.expect("Please try again")
        m.step("Run id, or train number and date", f"40201 {day(2)}")
        report = m.expect("Bookings 0, waitlisted 0")
        assert "train 40201 Menu Mail" in report and "Occupancy" in report and "SLEEPER" in report

        m.step(PROMPT, "9")  # log out
        m.expect("Logged out.")
        m.expect(r"Main menu \(not logged in\)")
        m.step(PROMPT, "q")
        assert m.wait_exit() == 0
    assert not session.exists()

    found = Cli(cluster, tmp_path / "anon.json").json("search", "TMA", "TMB", day(2))["results"]
    assert [(r["train_number"], r["train_type"]) for r in found] == [(40201, "MAIL")]
    assert {c["seat_class"]: c["free_seats"] for c in found[0]["classes"]} == {"AC3": 128, "SLEEPER": 10}


def test_bad_input_reprompts_and_an_unreachable_cluster_is_a_sentence(tmp_path):
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    with menu(tmp_path / "session.json", "--nodes", dead, "--timeout", "1") as m:
        m.expect(r"Main menu \(not logged in\)")
        m.step(PROMPT, "book")
        m.expect("'book' is not an option: enter a number from 0 to 5")
        m.step(PROMPT, "5")  # PNR status
        m.step("PNR", "short")
        m.expect("A PNR is 10 characters")
        m.step("PNR", "ABCDEFGH23")
        m.step("Name of a passenger", "Asha")
        m.expect(fmt.WAITING_TEXT)
        m.expect("The booking system is not answering right now")
        m.step(PROMPT, "4")  # search: Ctrl-C while waiting goes back to the menu
        m.step("From", "NDLS")
        m.expect(fmt.WAITING_TEXT)
        m.child.sendintr()
        m.expect(r"\(back to the menu\)")
        m.step(PROMPT, "4")  # Ctrl-C at a prompt too
        m.expect("From")
        m.child.sendintr()
        m.expect(r"\(back to the menu\)")
        assert m.quit_with_eof() == 0
