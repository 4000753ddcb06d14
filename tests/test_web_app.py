"""web.app: the passenger pages, rendered by Quart's test client against a fake cluster client (no cluster).

The fake (FakeRailraft) answers like gateway.client.RailraftClient, with the same generated proto messages and
the same exceptions, but is Trio-native, so create_app(..., client=fake) calls it directly.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from grpclib.const import Status

from gateway.client import FailedPrecondition, NotFound, Unauthenticated, Unavailable
from proto.gen.railraft.v1 import (
    BookingInfo,
    BookingState,
    ClassAvailability,
    Coach,
    Passenger,
    Refund,
    RefundQuoteResponse,
    SearchResult,
    SeatClass,
    SeatInfo,
    SeatMapResponse,
    Session,
    StationInfo,
    UserInfo,
)
from web.app import UNAVAILABLE_SENTENCE, create_app, humanize_error, rupees

pytestmark = pytest.mark.trio

DAY = "2030-12-05"
DEP_MS = 1_922_610_600_000  # some epoch ms; shown in IST


class FakeRailraft:
    """Enough of RailraftClient for the web pages; records the calls; `fail[method] = exc` makes one fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail: dict[str, BaseException] = {}
        self.station_rows = [StationInfo(id=1, code="NDLS", name="New Delhi"),
                             StationInfo(id=2, code="BCT", name="Mumbai Central")]
        self.users = {"asha": "correct horse"}
        self.bookings: dict[str, BookingInfo] = {}

    def _rec(self, name: str, args: tuple, kwargs: dict) -> None:
        self.calls.append((name, args, kwargs))
        if name in self.fail:
            raise self.fail[name]

    def _check(self, token: str | None) -> None:
        if not token or not token.startswith("tok-"):
            raise Unauthenticated(Status.UNAUTHENTICATED, "not logged in")

    async def stations(self, *a: Any, **k: Any) -> list[StationInfo]:
        self._rec("stations", a, k)
        return list(self.station_rows)

    async def login(self, username: str, password: str, **k: Any) -> Session:
        self._rec("login", (username, password), k)
        if self.users.get(username) != password:
            raise Unauthenticated(Status.UNAUTHENTICATED, "wrong username or password")
        return Session(token=f"tok-{username}", user=UserInfo(id=1, username=username, role="customer"))

    async def register(self, username: str, password: str, **k: Any) -> Session:
        self._rec("register", (username, password), k)
        self.users[username] = password
        return Session(token=f"tok-{username}", user=UserInfo(id=2, username=username, role="customer"))

    async def logout(self, **k: Any) -> None:
        self._rec("logout", (), k)

    async def search(self, a: str, b: str, day: str, **k: Any) -> list[SearchResult]:
        self._rec("search", (a, b, day), k)
        return [SearchResult(
            run_id=7, train_number=12951, train_name="Rajdhani <Express>", train_type="RAJ", date=day,
            from_station=a, to_station=b, departure_ms=DEP_MS, arrival_ms=DEP_MS + 16 * 3600_000, distance_km=1384,
            status="SCHEDULED",
            classes=[ClassAvailability(seat_class=SeatClass.AC3, free_seats=12, fare_paise=215050),
                     ClassAvailability(seat_class=SeatClass.AC1, free_seats=0, fare_paise=480000)])]

    async def seat_map(self, run_id: int, coach: str, a: str, b: str, **k: Any) -> SeatMapResponse:
        self._rec("seat_map", (run_id, coach, a, b), k)
        coaches = [Coach(label="B1", seat_class=SeatClass.AC3, seats=8, free_seats=6),
                   Coach(label="H1", seat_class=SeatClass.AC1, seats=4, free_seats=0)]
        resp = SeatMapResponse(run_id=run_id, coach=coach, coaches=coaches)
        if coach:
            resp.seat_class = SeatClass.AC3
            resp.seats = [SeatInfo(number=n, berth="LOWER", free=n not in (3, 4)) for n in range(1, 9)]
        return resp

    def _booking(self, pnr: str, state: BookingState, passengers: list[Passenger]) -> BookingInfo:
        return BookingInfo(pnr=pnr, state=state, run_id=7, train_number=12951, train_name="Rajdhani", date=DAY,
                           from_station="NDLS", to_station="BCT", departure_ms=DEP_MS, seat_class=SeatClass.AC3,
                           passengers=passengers, amount_paise=215050 * len(passengers),
                           hold_expires_ms=int(time.time() * 1000) + 600_000)

    async def hold(self, run_id: int, cls: str, a: str, b: str, passengers: list, **k: Any) -> BookingInfo:
        self._rec("hold", (run_id, cls, a, b, passengers), k)
        self._check(k.get("token"))
        seats = list(k.get("chosen_seats") or [])
        ps = [Passenger(index=i, name=p["name"], age=p["age"], coach="B1",
                        seat=int(seats[i].split("-")[1]) if seats else i + 1, berth="LOWER", status="HELD")
              for i, p in enumerate(passengers)]
        b = self.bookings["PNR1234567"] = self._booking("PNR1234567", BookingState.HELD, ps)
        return b

    async def booking(self, pnr: str, **k: Any) -> BookingInfo:
        self._rec("booking", (pnr,), k)
        self._check(k.get("token"))
        if pnr not in self.bookings:
            raise NotFound(Status.NOT_FOUND, f"no booking {pnr}")
        return self.bookings[pnr]

    async def pay(self, pnr: str, card: str, amount: int = 0, **k: Any) -> BookingInfo:
        self._rec("pay", (pnr, card, amount), k)
        self._check(k.get("token"))
        if card == "4000000000000002":
            raise FailedPrecondition(Status.FAILED_PRECONDITION, "the card was declined")
        b = self.bookings[pnr]
        b.state, b.paid_paise = BookingState.CONFIRMED, b.amount_paise
        return b

    async def my_bookings(self, **k: Any) -> list[BookingInfo]:
        self._rec("my_bookings", (), k)
        self._check(k.get("token"))
        return list(self.bookings.values())

    async def refund_quote(self, pnr: str, *a: Any, **k: Any) -> RefundQuoteResponse:
        self._rec("refund_quote", (pnr,), k)
        return RefundQuoteResponse(refund_paise=161288, percent=75, rule="75% back until 12 hours before departure")

    async def cancel(self, pnr: str, *a: Any, **k: Any) -> BookingInfo:
        self._rec("cancel", (pnr,), k)
        b = self.bookings[pnr]
        b.state, b.refunded_paise = BookingState.CANCELLED, 161288
        b.refunds = [Refund(amount_paise=161288, percent=75, reason="cancelled by passenger", at_ms=DEP_MS)]
        return b

    async def pnr_status(self, pnr: str, name: str, **k: Any) -> BookingInfo:
        self._rec("pnr_status", (pnr, name), k)
        if pnr not in self.bookings:
            raise NotFound(Status.NOT_FOUND, f"no booking with PNR {pnr} and passenger {name}")
        return self.bookings[pnr]


@pytest.fixture
def fake() -> FakeRailraft:
    return FakeRailraft()


@pytest.fixture
def app(fake: FakeRailraft) -> Any:
    return create_app(["127.0.0.1:1"], secret_key="test-secret", client=fake)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


async def text(resp: Any) -> str:
    return await resp.get_data(as_text=True)


async def logged_in(app: Any) -> Any:
    client = app.test_client()
    page = await text(await client.get("/login"))
    resp = await client.post("/login", form={"csrf_token": csrf_of(page), "username": "asha",
                                             "password": "correct horse"})
    assert resp.status_code == 302
    return client


# ------------------------------------------------------------------------------------------- pages


async def test_home_renders_search_form_with_station_datalist(app: Any) -> None:
    resp = await app.test_client().get("/")
    assert resp.status_code == 200
    html = await text(resp)
    assert '<datalist id="stations">' in html
    assert 'value="NDLS"' in html and "New Delhi" in html
    assert 'list="stations"' in html
    assert "/static/style.css" in html
    assert "http://" not in html and "https://" not in html  # no CDN: everything is served by the app


async def test_static_css_and_js_are_served_locally(app: Any) -> None:
    client = app.test_client()
    for path in ("/static/style.css", "/static/countdown.js", "/static/seats.js"):
        resp = await client.get(path)
        assert resp.status_code == 200, path


async def test_search_results_show_times_fares_and_free_seats(app: Any) -> None:
    resp = await app.test_client().get(f"/search?from=ndls&to=BCT&date={DAY}")
    html = await text(resp)
    assert resp.status_code == 200
    assert "12951" in html and "Rajdhani &lt;Express&gt;" in html
    assert "\u20b92,150.50" in html  # 215050 paise
    assert "AC 3 Tier (3A)" in html and ">12<" in html
    assert "Waitlist" in html  # AC1 has no free seats
    assert "Pick seats" in html and "run=7" in html


async def test_search_form_problems_are_sentences(app: Any) -> None:
    resp = await app.test_client().get("/search?from=NDLS&to=NDLS&date=")
    assert resp.status_code == 400
    html = await text(resp)
    assert "must be different stations" in html and "Choose a travel date" in html


async def test_seat_map_needs_login_then_shows_free_and_taken_seats(app: Any) -> None:
    q = f"/seats?run=7&cls=AC3&from=NDLS&to=BCT&date={DAY}"
    resp = await app.test_client().get(q)
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    client = await logged_in(app)
    html = await text(await client.get(q))
    assert 'value="B1-1"' in html
    assert re.search(r'value="B1-3" disabled', html)
    # The AC1 coach is not offered for AC3.  The random CSRF token is cut out first: it may contain "H1".
    assert "H1" not in re.sub(r'name="csrf_token" value="[^"]*"', "", html)


async def test_whole_passenger_journey(app: Any, fake: FakeRailraft) -> None:
    client = await logged_in(app)
    page = await text(await client.get(f"/book?run=7&cls=AC3&from=NDLS&to=BCT&date={DAY}&seat=B1-1&seat=B1-2"))
    assert "Passenger 2" in page and "B1-2" in page
    rid = re.search(r'name="request_id" value="([0-9a-f]{32})"', page).group(1)
    form = {"csrf_token": csrf_of(page), "request_id": rid, "run": "7", "cls": "AC3", "from": "NDLS", "to": "BCT",
            "date": DAY, "count": "2", "seat": "B1-1", "name0": "Asha", "age0": "34", "name1": "Ravi", "age1": "36"}
    resp = await client.post("/book", form=form)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/bookings/PNR1234567")
    hold = [c for c in fake.calls if c[0] == "hold"][-1]
    assert hold[2]["token"] == "tok-asha" and hold[2]["request_id"] == rid

    html = await text(await client.get("/bookings/PNR1234567"))
    assert 'id="countdown"' in html and "data-expires=" in html and "countdown.js" in html
    assert "4111 1111 1111 1111" in html  # the test card hint
    resp = await client.post("/bookings/PNR1234567/pay", form={"csrf_token": csrf_of(html),
                                                               "card": "4111 1111 1111 1111"})
    assert resp.status_code == 302
    html = await text(await client.get("/bookings/PNR1234567"))
    assert "Booking confirmed" in html and "PNR1234567" in html and "B1-1" in html

    html = await text(await client.get("/bookings"))
    assert "PNR1234567" in html and "Cancel" in html
    html = await text(await client.get("/bookings/PNR1234567/cancel"))
    assert "\u20b91,612.88" in html and "75%" in html  # the refund quote, before confirming
    assert not [c for c in fake.calls if c[0] == "cancel"]
    resp = await client.post("/bookings/PNR1234567/cancel", form={"csrf_token": csrf_of(html)})
    assert resp.status_code == 302
    html = await text(await client.get("/bookings/PNR1234567"))
    assert "Cancelled" in html and "\u20b91,612.88" in html


async def test_declined_card_is_a_sentence_on_the_hold_page(app: Any, fake: FakeRailraft) -> None:
    client = await logged_in(app)
    await fake.hold(7, "AC3", "NDLS", "BCT", [{"name": "Asha", "age": 34}], token="tok-asha")
    html = await text(await client.get("/bookings/PNR1234567"))
    resp = await client.post("/bookings/PNR1234567/pay", form={"csrf_token": csrf_of(html),
                                                               "card": "4000000000000002"})
    assert resp.status_code == 302
    html = await text(await client.get("/bookings/PNR1234567"))
    assert "The card was declined" in html and "Your seats are held" in html


async def test_passenger_form_validation(app: Any) -> None:
    client = await logged_in(app)
    page = await text(await client.get(f"/book?run=7&cls=AC3&from=NDLS&to=BCT&date={DAY}&count=2"))
    resp = await client.post("/book", form={"csrf_token": csrf_of(page), "run": "7", "cls": "AC3", "from": "NDLS",
                                            "to": "BCT", "date": DAY, "count": "2", "name0": "Asha", "age0": "0"})
    assert resp.status_code == 400
    html = await text(resp)
    assert "Passenger 1: enter an age" in html and "Passenger 2: enter a name" in html


async def test_pnr_status_without_login(app: Any, fake: FakeRailraft) -> None:
    await fake.hold(7, "AC3", "NDLS", "BCT", [{"name": "Asha", "age": 34}], token="tok-asha")
    client = app.test_client()
    page = await text(await client.get("/pnr"))
    resp = await client.post("/pnr", form={"csrf_token": csrf_of(page), "pnr": "pnr1234567", "name": "Asha"})
    assert resp.status_code == 200
    assert "PNR1234567" in await text(resp)
    resp = await client.post("/pnr", form={"csrf_token": csrf_of(page), "pnr": "NOPE", "name": "Asha"})
    assert resp.status_code == 400 and "No booking with PNR NOPE" in await text(resp)


# ------------------------------------------------------------------------------------------ accounts


async def test_login_sets_httponly_samesite_cookie(app: Any) -> None:
    client = app.test_client()
    page = await text(await client.get("/login"))
    resp = await client.post("/login", form={"csrf_token": csrf_of(page), "username": "asha",
                                             "password": "correct horse"})
    assert resp.status_code == 302
    cookies = [c for c in resp.headers.getlist("Set-Cookie") if c.startswith("railraft_session=")]
    assert cookies
    assert "HttpOnly" in cookies[-1] and "SameSite=Lax" in cookies[-1]
    html = await text(await client.get("/"))
    assert "Log out" in html and "asha" in html


async def test_wrong_password_is_a_sentence(app: Any) -> None:
    client = app.test_client()
    page = await text(await client.get("/login"))
    resp = await client.post("/login", form={"csrf_token": csrf_of(page), "username": "asha", "password": "x"})
    assert resp.status_code == 400
    assert "do not match an account" in await text(resp)


async def test_register_logs_in_and_logout_ends_session(app: Any, fake: FakeRailraft) -> None:
    client = app.test_client()
    page = await text(await client.get("/register"))
    resp = await client.post("/register", form={"csrf_token": csrf_of(page), "username": "ravi",
                                                "password": "pw12345678", "confirm": "pw12345678"})
    assert resp.status_code == 302
    html = await text(await client.get("/"))
    assert "ravi" in html
    resp = await client.post("/logout", form={"csrf_token": csrf_of(html)})
    assert resp.status_code == 302
    assert ("logout", (), {"token": "tok-ravi"}) in fake.calls
    html = await text(await client.get("/"))
    assert "Log in" in html and "Log out" not in html


async def test_login_redirect_only_to_local_paths(app: Any) -> None:
    client = app.test_client()
    page = await text(await client.get("/login"))
    resp = await client.post("/login", form={"csrf_token": csrf_of(page), "username": "asha",
                                             "password": "correct horse", "next": "//evil.example/"})
    assert resp.headers["Location"] == "/"


async def test_expired_session_sends_to_login(app: Any, fake: FakeRailraft) -> None:
    client = await logged_in(app)
    fake.fail["my_bookings"] = Unauthenticated(Status.UNAUTHENTICATED, "session expired")
    resp = await client.get("/bookings")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


# ------------------------------------------------------------------------------------------ security


async def test_post_without_csrf_token_is_refused(app: Any, fake: FakeRailraft) -> None:
    client = app.test_client()
    await client.get("/login")
    resp = await client.post("/login", form={"username": "asha", "password": "correct horse"})
    assert resp.status_code == 400
    assert not [c for c in fake.calls if c[0] == "login"]
    resp = await client.post("/login", form={"csrf_token": "forged", "username": "asha",
                                             "password": "correct horse"})
    assert resp.status_code == 400
    logged = await logged_in(app)
    resp = await logged.post("/bookings/PNR1234567/cancel", form={})
    assert resp.status_code == 400
    assert not [c for c in fake.calls if c[0] == "cancel"]


async def test_every_form_carries_a_csrf_token(app: Any, fake: FakeRailraft) -> None:
    client = await logged_in(app)
    await fake.hold(7, "AC3", "NDLS", "BCT", [{"name": "Asha", "age": 34}], token="tok-asha")
    for path in ("/", "/login", "/register", "/pnr", "/bookings/PNR1234567", "/bookings/PNR1234567/cancel",
                 f"/book?run=7&cls=AC3&from=NDLS&to=BCT&date={DAY}"):
        html = await text(await client.get(path))
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", html, re.S):
            assert 'name="csrf_token"' in form, (path, form[:80])


async def test_station_names_are_escaped(app: Any, fake: FakeRailraft) -> None:
    fake.station_rows.append(StationInfo(id=3, code="XSS", name="<script>alert(1)</script>"))
    html = await text(await app.test_client().get("/"))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_security_headers(app: Any) -> None:
    resp = await app.test_client().get("/")
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"


# ------------------------------------------------------------------------------------------ errors


async def test_unavailable_shows_the_leader_election_sentence(app: Any, fake: FakeRailraft) -> None:
    fake.fail["search"] = Unavailable("no node could serve Search within 10s (a: refused)")
    resp = await app.test_client().get(f"/search?from=NDLS&to=BCT&date={DAY}")
    assert resp.status_code == 503
    html = await text(resp)
    assert UNAVAILABLE_SENTENCE in html
    assert "Traceback" not in html and "refused" not in html


async def test_booking_error_shows_its_message(app: Any, fake: FakeRailraft) -> None:
    fake.fail["search"] = NotFound(Status.NOT_FOUND, "no station with code QQQ")
    resp = await app.test_client().get(f"/search?from=QQQ&to=BCT&date={DAY}")
    assert resp.status_code == 404
    assert "No station with code QQQ" in await text(resp)


async def test_unexpected_exception_is_a_sentence_not_a_traceback(app: Any, fake: FakeRailraft) -> None:
    fake.fail["search"] = RuntimeError("boom <secret internals>")
    resp = await app.test_client().get(f"/search?from=NDLS&to=BCT&date={DAY}")
    assert resp.status_code == 500
    html = await text(resp)
    assert "Something went wrong" in html and "boom" not in html and "Traceback" not in html


async def test_stations_down_still_renders_home(app: Any, fake: FakeRailraft) -> None:
    fake.fail["stations"] = Unavailable("down")
    resp = await app.test_client().get("/")
    assert resp.status_code == 200 and "Search trains" in await text(resp)


async def test_unknown_page_is_a_sentence(app: Any) -> None:
    resp = await app.test_client().get("/no/such/page")
    assert resp.status_code == 404 and "There is no such page" in await text(resp)


async def test_helpers() -> None:
    assert rupees(215050) == "\u20b92,150.50"
    assert rupees(12345678) == "\u20b91,23,456.78"
    assert rupees(5) == "\u20b90.05"
    assert humanize_error(Unavailable("x")) == UNAVAILABLE_SENTENCE
    assert humanize_error(FailedPrecondition(Status.FAILED_PRECONDITION, "sold out")) == "Sold out"


# ------------------------------------------------------------------------------------------ trio-asyncio


class AsyncioFake:
    """The fake's methods as asyncio coroutines (they await asyncio.sleep, which only works on an asyncio loop),
    standing in for the real grpclib-based client."""

    def __init__(self, inner: FakeRailraft) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        import asyncio

        method = getattr(self.inner, name)

        async def call(*a: Any, **k: Any) -> Any:
            await asyncio.sleep(0)
            # the fake's own methods never await anything, so driving the coroutine by hand is enough
            coro = method(*a, **k)
            try:
                coro.send(None)
            except StopIteration as stop:
                return stop.value
            raise AssertionError("fake method awaited something")

        return call


async def test_asyncio_client_is_called_through_trio_asyncio(fake: FakeRailraft) -> None:
    import trio_asyncio

    app = create_app(["127.0.0.1:1"], secret_key="k", client=AsyncioFake(fake), asyncio_client=True)
    async with trio_asyncio.open_loop():
        resp = await app.test_client().get(f"/search?from=NDLS&to=BCT&date={DAY}")
        assert resp.status_code == 200 and "12951" in await text(resp)
        fake.fail["search"] = Unavailable("down")
        resp = await app.test_client().get(f"/search?from=NDLS&to=BCT&date={DAY}")
        assert resp.status_code == 503 and UNAVAILABLE_SENTENCE in await text(resp)


async def test_secret_key_from_env_or_generated_file(tmp_path: Any, monkeypatch: Any) -> None:
    from web.app import load_or_create_secret

    monkeypatch.setenv("RAILRAFT_WEB_SECRET", "from-env")
    assert load_or_create_secret(tmp_path / "s") == "from-env"
    monkeypatch.delenv("RAILRAFT_WEB_SECRET")
    first = load_or_create_secret(tmp_path / "s")
    assert len(first) >= 32 and load_or_create_secret(tmp_path / "s") == first
    assert (tmp_path / "s").stat().st_mode & 0o077 == 0


async def test_main_parses_arguments() -> None:
    from web.__main__ import parse_args

    args = parse_args(["--nodes", "127.0.0.1:7001,127.0.0.1:7002", "--port", "8081"])
    assert args.nodes == "127.0.0.1:7001,127.0.0.1:7002" and args.port == 8081
