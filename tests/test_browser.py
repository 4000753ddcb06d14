"""Browser tests: headless Debian Chromium (playwright) against a real 3-node cluster and the web app.

What a person does, click by click: a passenger's whole journey (register, search, pick seats, hold, pay, see the
booking, cancel, see the refund, PNR status without login), the same pages at phone width, and what happens while
the cluster loses its leader.  Screenshots of every page land in test-artifacts/browser/.

`make test-browser` runs this module alone; `make test` runs it with everything else.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from .browser_stack import BrowserStack, browser_page, chromium_available, playwright_session, reset_artifacts, \
    screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="Debian chromium is not installed (.ci/run installs it)"),
]

TEST_CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserStack]:
    reset_artifacts()
    with BrowserStack(tmp_path_factory.mktemp("browser")) as s:
        yield s


@pytest.fixture(scope="module")
def browser(stack: BrowserStack) -> Iterator[Any]:
    with playwright_session() as b:
        yield b


def register(page: Any, stack: BrowserStack, username: str, password: str) -> None:
    """Create an account through the register form; the app logs the new user in."""
    page.goto(stack.url("/register"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.fill("input[name=confirm]", password)
    page.click("button:has-text('Register')")
    page.wait_for_selector(f"text=Welcome to railraft, {username}")


def login(page: Any, stack: BrowserStack, username: str, password: str) -> None:
    """Log in through the login form."""
    page.goto(stack.url("/login"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form button:has-text('Log in')")
    page.wait_for_selector("text=Log out")


def search(page: Any, stack: BrowserStack, a: str, b: str, day: str) -> None:
    """Fill the search form on the home page and submit it."""
    page.goto(stack.url("/"))
    page.fill("input[name=from]", a)
    page.fill("input[name=to]", b)
    page.fill("input[name=date]", day)
    page.click("button:has-text('Search trains')")
    page.wait_for_selector("section.run")


def no_horizontal_scroll(page: Any) -> bool:
    """True when the page fits the viewport's width (nothing sticks out at phone width)."""
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_a_passengers_whole_journey(stack: BrowserStack, browser: Any) -> None:
    user, password = f"asha{secrets.token_hex(3)}", "correct horse battery"
    try:
        with browser_page(browser) as page:
            register(page, stack, user, password)
            screenshot(page, "01-registered-home")

            # The station picker offers type-ahead: the datalist holds every station.
            assert page.locator("datalist#stations option[value=NDLS]").count() == 1

            search(page, stack, "NDLS", "BCT", stack.travel_date)
            screenshot(page, "02-results")
            first = page.locator("section.run").first
            assert re.search(r"\d\d:\d\d", first.inner_text())  # departure/arrival times
            assert "₹" in first.inner_text()  # fares
            first.locator("a:has-text('Pick seats')").first.click()

            page.wait_for_selector("#seat-form")
            screenshot(page, "03-seat-map")
            free = page.locator("#seat-form label.seat:not(.taken)")
            assert free.count() >= 2
            chosen = [free.nth(i).locator("input").get_attribute("value") for i in (0, 1)]
            free.nth(0).click()  # a person clicks the seat; the checkbox inside is visually hidden
            free.nth(1).click()
            assert page.locator("#seat-form input[name=seat]:checked").count() == 2
            page.click("button:has-text('Continue with these seats')")

            page.wait_for_selector("text=Passenger details")
            page.fill("input[name=name0]", "Asha Rao")
            page.fill("input[name=age0]", "34")
            page.fill("input[name=name1]", "Ravi Rao")
            page.fill("input[name=age1]", "36")
            screenshot(page, "04-passengers")
            page.click("button:has-text('Hold seats')")

            page.wait_for_selector("text=Your seats are held")
            countdown = page.locator("#countdown")
            first_text = countdown.inner_text()
            page.wait_for_function(
                "t => document.querySelector('#countdown').innerText !== t", arg=first_text, timeout=5000)
            assert re.search(r"\d+:\d\d", countdown.inner_text()), countdown.inner_text()  # a live mm:ss
            screenshot(page, "05-hold-countdown")
            page.fill("input[name=card]", TEST_CARD)
            page.click("#pay-form button[type=submit]")

            page.wait_for_selector("text=Booking confirmed")
            screenshot(page, "06-confirmed")
            pnr = page.locator(".confirmation .pnr").first.inner_text().strip()
            assert re.fullmatch(r"[A-Z0-9]{6,12}", pnr), pnr
            seats_text = page.locator(".confirmation").inner_text()
            for seat in chosen:
                assert seat in seats_text

            page.click("nav >> text=My bookings")
            page.wait_for_selector(f"a.pnr:has-text('{pnr}')")
            screenshot(page, "07-my-bookings")
            row = page.locator("tr", has=page.locator(f"a.pnr:has-text('{pnr}')"))
            row.locator("a:has-text('Cancel')").click()

            page.wait_for_selector(f"text=Cancel booking {pnr}?")
            screenshot(page, "08-refund-quote")
            button = page.locator("button:has-text('Yes, cancel and refund')")
            quoted = re.search(r"₹[\d,.]+", button.inner_text()).group(0)
            button.click()

            page.wait_for_selector("text=Refunds")
            screenshot(page, "09-cancelled-refund")
            body = page.locator("main").inner_text()
            assert quoted in body and "90%" in body, body
            assert page.errors == [], page.errors

        # PNR status works without logging in (a fresh context has no cookies).
        with browser_page(browser) as anon:
            anon.goto(stack.url("/pnr"))
            anon.fill("input[name=pnr]", pnr)
            anon.fill("input[name=name]", "Asha Rao")
            anon.click("button:has-text('Check status')")
            anon.wait_for_selector(".card >> text=Cancelled")
            screenshot(anon, "10-pnr-status-logged-out")
    except Exception:
        print(stack.describe())
        raise


def test_pages_fit_a_phone_screen(stack: BrowserStack, browser: Any) -> None:
    with browser_page(browser, width=375, height=740) as page:
        login(page, stack, stack.creds.customer_user, stack.creds.customer_password)
        for name, path in [("phone-home", "/"), ("phone-pnr", "/pnr"), ("phone-bookings", "/bookings")]:
            page.goto(stack.url(path))
            assert no_horizontal_scroll(page), f"{path} is wider than a phone screen"
            screenshot(page, name)
        search(page, stack, "NDLS", "BCT", stack.travel_date)
        assert no_horizontal_scroll(page), "search results are wider than a phone screen"
        screenshot(page, "phone-results")
        page.locator("a:has-text('Pick seats')").first.click()
        page.wait_for_selector("#seat-form")
        assert no_horizontal_scroll(page), "the seat map is wider than a phone screen"
        screenshot(page, "phone-seat-map")
        assert page.errors == [], page.errors


def test_nothing_is_loaded_from_outside(stack: BrowserStack, browser: Any) -> None:
    with browser_page(browser) as page:
        urls: list[str] = []
        page.on("request", lambda req: urls.append(req.url))
        page.goto(stack.url("/"))
        page.goto(stack.url("/login"))
        page.wait_for_load_state("networkidle")
        assert urls and all(u.startswith(stack.url("")) for u in urls), urls


def test_an_admin_adds_a_train_that_a_passenger_then_finds(stack: BrowserStack, browser: Any) -> None:
    number = str(20000 + secrets.randbelow(9000))
    name = f"Konkan Test Express {number}"
    try:
        with browser_page(browser) as admin:
            login(admin, stack, stack.creds.admin_user, stack.creds.admin_password)
            admin.click("nav >> text=Staff")
            admin.wait_for_selector("h1")
            screenshot(admin, "20-staff-home")
            admin.goto(stack.url("/staff/trains/new"))
            admin.fill("input[name=number]", number)
            admin.fill("input[name=name]", name)
            admin.fill("input[name=type]", "EXPRESS")
            admin.fill("input[name=departure_time]", "06:15")
            admin.fill("textarea[name=route]", "NDLS - 0 0\nAGC 2:10 2:15 195\nBPL 8:40 - 702")
            admin.fill("textarea[name=coaches]", "S1 SL 72\nB1 3A 64")
            screenshot(admin, "21-staff-new-train")
            admin.click("button:has-text('Add train')")
            admin.wait_for_selector(f"text=Train {number} {name} added")
            screenshot(admin, "22-staff-train")

            admin.fill("form.staff-section input[name=first]", stack.travel_date)
            admin.fill("form.staff-section input[name=last]", stack.travel_date)
            admin.click("form.staff-section button:has-text('Schedule runs')")
            admin.wait_for_selector("text=Scheduled 1 run")
            screenshot(admin, "23-staff-runs")
            admin.locator("table a:text-is('Report')").first.click()
            admin.wait_for_selector("main >> text=Revenue")
            screenshot(admin, "24-staff-run-report")
            assert admin.errors == [], admin.errors

        with browser_page(browser) as passenger:
            login(passenger, stack, stack.creds.customer_user, stack.creds.customer_password)
            search(passenger, stack, "AGC", "BPL", stack.travel_date)
            runs = passenger.locator("section.run", has_text=name)
            assert runs.count() == 1, passenger.locator("main").inner_text()
            text = runs.first.inner_text()
            assert "08:30" in text and "14:55" in text, text  # leaves AGC 06:15 + 2:15, reaches BPL 06:15 + 8:40
            assert "Sleeper (SL)" in text and "AC 3 Tier (3A)" in text
            screenshot(passenger, "25-passenger-finds-new-train")
            # Staff pages refuse customers.
            passenger.goto(stack.url("/staff"))
            assert "This page is for railway staff" in passenger.locator("main").inner_text()
    except Exception:
        print(stack.describe())
        raise


def _leader_in_table(page: Any) -> int | None:
    rows = page.locator("#nodes tr.is-leader")
    if rows.count() != 1:
        return None
    m = re.search(r"Node (\d+)", rows.first.locator("[data-field=node]").inner_text())
    return int(m.group(1)) if m else None


def test_the_dashboard_shows_a_new_leader_after_the_old_one_is_killed(stack: BrowserStack, browser: Any) -> None:
    cluster = stack.cluster
    try:
        with browser_page(browser) as page:
            login(page, stack, stack.creds.admin_user, stack.creds.admin_password)
            page.click("nav >> text=Cluster")
            page.wait_for_selector("#nodes tr.is-leader")
            old = stack.off_thread(cluster.wait_leader)
            page.wait_for_function("() => document.querySelectorAll('#nodes tr.node-row').length === 3")
            assert _leader_in_table(page) == old
            text = page.locator("#nodes").inner_text()
            assert "leader" in text and "follower" in text and "healthy" in text
            screenshot(page, "30-dashboard")

            with browser_page(browser) as passenger:
                login(passenger, stack, stack.creds.customer_user, stack.creds.customer_password)
                cluster.kill(old)  # SIGKILL, by the PID the harness started
                # A passenger's request during the leader change waits for the new leader and succeeds.
                search(passenger, stack, "NDLS", "BCT", stack.travel_date)
                assert passenger.locator("section.run").count() >= 1
            # No reload: the page's own polling must show the new leader and the dead node.
            page.wait_for_function(
                "old => { const r = document.querySelector('#nodes tr.is-leader [data-field=node]');"
                " const m = r && r.innerText.match(/^Node (\\d+)/); return m && Number(m[1]) !== old; }",
                arg=old, timeout=20_000)
            new = _leader_in_table(page)
            assert new is not None and new != old
            dead = page.locator("#nodes tr.node-row", has_text=f"Node {old}")
            page.wait_for_function(
                "old => [...document.querySelectorAll('#nodes tr.node-row')].some("
                "r => r.innerText.match(new RegExp('^Node ' + old + '\\\\b')) && r.innerText.includes('down'))",
                arg=old, timeout=20_000)
            assert "down" in dead.first.inner_text()
            page.wait_for_selector(f"#changes li:has-text('node {new}')", timeout=10_000)
            screenshot(page, "31-dashboard-new-leader")

            # Bring the old leader back, then hand leadership to it with its "Make leader" button.
            cluster.restart(old)
            stack.off_thread(cluster.wait_caught_up)
            row = page.locator("#nodes tr.node-row", has_text=f"Node {old}")
            page.wait_for_function(
                "old => [...document.querySelectorAll('#nodes tr.node-row')].some("
                "r => r.innerText.match(new RegExp('^Node ' + old + '\\\\b')) && r.querySelector('button'))",
                arg=old, timeout=20_000)
            row.first.locator("button:has-text('Make leader')").click()
            page.wait_for_selector(f"text=Node {old} is now the leader", timeout=20_000)
            page.wait_for_function(
                "old => { const r = document.querySelector('#nodes tr.is-leader [data-field=node]');"
                " return r && r.innerText.match(new RegExp('^Node ' + old + '\\\\b')); }", arg=old, timeout=20_000)
            screenshot(page, "32-dashboard-transferred")
            assert page.errors == [], page.errors
    except Exception:
        print(stack.describe())
        raise
