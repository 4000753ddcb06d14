"""web.staff: the back-office pages (ADMIN role), rendered by Quart's test client against a fake cluster client.

FakeStaff extends test_web_app's FakeRailraft with the admin calls; it refuses them (PermissionDenied) for a
customer's token, like the server, and records every call so the tests can check exactly what was sent.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from grpclib.const import Status

from gateway.client import AlreadyExists, NotFound, PermissionDenied, Unavailable
from proto.gen.railraft.v1 import (
    Ack,
    ClassReport,
    Coach,
    RunInfo,
    RunReportResponse,
    SeatClass,
    Session,
    StationInfo,
    Stop,
    TrainInfo,
)
from tests.test_web_app import DEP_MS, FakeRailraft, csrf_of, text
from web.app import UNAVAILABLE_SENTENCE, create_app
from web.staff import REFUSED_SENTENCE, form_request_id, parse_coaches, parse_route

pytestmark = pytest.mark.trio

WRITES = ("add_station", "add_train", "schedule_runs", "cancel_run")
ADMIN_CALLS = WRITES + ("list_runs", "run_report", "trains")
FIRST, LAST = "2030-12-05", "2030-12-07"


class FakeStaff(FakeRailraft):
    """FakeRailraft plus the admin calls; "boss" is an ADMIN (the server's spelling), "asha" a customer."""

    def __init__(self) -> None:
        super().__init__()
        self.users["boss"] = "staff password"
        self.train_rows = [TrainInfo(
            id=1, number=12951, name="Mumbai Rajdhani", type="RAJDHANI", departure_time="16:55",
            stops=[Stop(station_code="NDLS", station_name="New Delhi", arrival_offset_min=0, departure_offset_min=0,
                        distance_km=0),
                   Stop(station_code="KOTA", station_name="Kota Jn", arrival_offset_min=260, departure_offset_min=270,
                        distance_km=465),
                   Stop(station_code="BCT", station_name="Mumbai Central", arrival_offset_min=955,
                        departure_offset_min=955, distance_km=1384)],
            coaches=[Coach(label="H1", seat_class=SeatClass.AC1, seats=24),
                     Coach(label="B1", seat_class=SeatClass.AC3, seats=64),
                     Coach(label="B2", seat_class=SeatClass.AC3, seats=64)])]
        self.runs = [RunInfo(id=41, train_number=12951, train_name="Mumbai Rajdhani", date="2030-12-05",
                             status="SCHEDULED", departure_ms=DEP_MS),
                     RunInfo(id=42, train_number=12951, train_name="Mumbai Rajdhani", date="2030-12-06",
                             status="CANCELLED", departure_ms=DEP_MS + 86_400_000)]

    async def login(self, username: str, password: str, **k: Any) -> Session:
        sess = await super().login(username, password, **k)
        if username == "boss":
            sess.user.role = "ADMIN"
        return sess

    def _admin(self, token: str | None) -> None:
        self._check(token)
        if token != "tok-boss":
            raise PermissionDenied(Status.PERMISSION_DENIED, "only an administrator may do this")

    async def trains(self, **k: Any) -> list[TrainInfo]:
        self._rec("trains", (), k)
        self._check(k.get("token"))
        return list(self.train_rows)

    async def add_station(self, code: str, name: str, **k: Any) -> StationInfo:
        self._rec("add_station", (code, name), k)
        self._admin(k.get("token"))
        if any(s.code == code for s in self.station_rows):
            raise AlreadyExists(Status.ALREADY_EXISTS, f"station {code} already exists")
        s = StationInfo(id=len(self.station_rows) + 1, code=code, name=name)
        self.station_rows.append(s)
        return s

    async def add_train(self, number: int, name: str, type: str, dep: str, stops: list, coaches: list,  # noqa: A002
                        **k: Any) -> TrainInfo:
        self._rec("add_train", (number, name, type, dep, stops, coaches), k)
        self._admin(k.get("token"))
        t = TrainInfo(id=9, number=number, name=name, type=type, departure_time=dep,
                      stops=[Stop(station_code=c, arrival_offset_min=a, departure_offset_min=d, distance_km=km)
                             for c, a, d, km in stops],
                      coaches=[Coach(label=lb, seat_class=SeatClass[cl], seats=n) for lb, cl, n in coaches])
        self.train_rows.append(t)
        return t

    async def schedule_runs(self, number: int, first: str, last: str, **k: Any) -> list[RunInfo]:
        self._rec("schedule_runs", (number, first, last), k)
        self._admin(k.get("token"))
        if number not in {t.number for t in self.train_rows}:
            raise NotFound(Status.NOT_FOUND, f"no train {number}")
        return [RunInfo(id=50 + i, train_number=number, train_name="Mumbai Rajdhani", date=d, status="SCHEDULED")
                for i, d in enumerate(["2030-12-05", "2030-12-06", "2030-12-07"])]

    async def list_runs(self, number: int, first: str, last: str = "", **k: Any) -> list[RunInfo]:
        self._rec("list_runs", (number, first, last), k)
        self._check(k.get("token"))
        return [r for r in self.runs if r.train_number == number]

    async def cancel_run(self, run_id: int, reason: str = "", **k: Any) -> Ack:
        self._rec("cancel_run", (run_id, reason), k)
        self._admin(k.get("token"))
        for r in self.runs:
            if r.id == run_id:
                r.status = "CANCELLED"
        return Ack(ok=True, message=f"run {run_id} cancelled; 2 booking(s) refunded \u20b94,301.00 in total")

    async def run_report(self, run_id: int, **k: Any) -> RunReportResponse:
        self._rec("run_report", (run_id,), k)
        self._admin(k.get("token"))
        run = next((r for r in self.runs if r.id == run_id), None)
        if run is None:
            raise NotFound(Status.NOT_FOUND, f"no run {run_id}")
        return RunReportResponse(
            run=run, bookings=2, waitlisted=1, revenue_paise=430100, refunds_paise=215050,  # revenue: paid - refunded
            classes=[ClassReport(seat_class=SeatClass.AC3, seats=128, seats_sold=3, occupancy_percent=2.34375,
                                 revenue_paise=430100, refunds_paise=215050),
                     ClassReport(seat_class=SeatClass.AC1, seats=24, seats_sold=0, occupancy_percent=0.0)])


@pytest.fixture
def fake() -> FakeStaff:
    return FakeStaff()


@pytest.fixture
def app(fake: FakeStaff) -> Any:
    return create_app(["127.0.0.1:1"], secret_key="test-secret", client=fake)


async def login_as(app: Any, username: str, password: str) -> Any:
    client = app.test_client()
    page = await text(await client.get("/login"))
    resp = await client.post("/login", form={"csrf_token": csrf_of(page), "username": username, "password": password})
    assert resp.status_code == 302
    return client


async def admin(app: Any) -> Any:
    return await login_as(app, "boss", "staff password")


async def customer(app: Any) -> Any:
    return await login_as(app, "asha", "correct horse")


def calls(fake: FakeStaff, name: str) -> list[tuple[tuple, dict]]:
    return [(a, k) for n, a, k in fake.calls if n == name]


def rid_of(html: str) -> str:
    m = re.search(r'name="request_id" value="([0-9a-f]{32})"', html)
    assert m, "no request_id on the form"
    return m.group(1)


async def form_page(client: Any, path: str) -> tuple[str, dict[str, str]]:
    """The page at `path` and the hidden fields its POST form needs."""
    html = await text(await client.get(path))
    return html, {"csrf_token": csrf_of(html), "request_id": rid_of(html)}


ROUTE = "NDLS - 0 0\n\n# a comment\nkota 4:20 270 465\nBCT, 15:55, -, 1384\n"
COACHES = "H1 1A 24\nb1 3a 64\nS1 SL 72\nG1 general 90\n"
GET_PAGES = ["/staff", "/staff/stations", "/staff/trains", "/staff/trains/new", "/staff/trains/12951",
             "/staff/schedule", "/staff/runs", "/staff/runs?train=12951", "/staff/runs/41", "/staff/runs/41/cancel"]
POSTS = {
    "/staff/stations": {"code": "PNBE", "name": "Patna Junction"},
    "/staff/trains/new": {"number": "12309", "name": "Rajdhani", "type": "RAJDHANI", "departure_time": "19:05",
                          "route": ROUTE, "coaches": COACHES},
    "/staff/schedule": {"train": "12951", "first": FIRST, "last": LAST},
    "/staff/runs/41/cancel": {"reason": "flooding"},
}


# ------------------------------------------------------------------------------------------- access


async def test_logged_out_is_sent_to_login(app: Any, fake: FakeStaff) -> None:
    client = app.test_client()
    for path in GET_PAGES:
        resp = await client.get(path)
        assert resp.status_code == 302, path
        assert "/login?next=" in resp.headers["Location"], path
    assert not [c for c in fake.calls if c[0] in ADMIN_CALLS]


async def test_customer_is_refused_every_page_and_post(app: Any, fake: FakeStaff) -> None:
    client = await customer(app)
    for path in GET_PAGES:
        resp = await client.get(path)
        assert resp.status_code == 403, path
        html = await text(resp)
        assert REFUSED_SENTENCE in html, path
        assert "Mumbai Rajdhani" not in html, path
    html = await text(await client.get("/"))
    csrf = csrf_of(html)
    for path, form in POSTS.items():
        resp = await client.post(path, form={"csrf_token": csrf, "request_id": "a" * 32, **form})
        assert resp.status_code == 403, path
        assert REFUSED_SENTENCE in await text(resp), path
    assert not [c for c in fake.calls if c[0] in ADMIN_CALLS]


async def test_staff_link_only_for_admins(app: Any) -> None:
    html = await text(await (await customer(app)).get("/"))
    assert 'href="/staff"' not in html
    html = await text(await (await admin(app)).get("/"))
    assert 'href="/staff">Staff</a>' in html


async def test_server_permission_denied_is_a_sentence(app: Any, fake: FakeStaff) -> None:
    """The session says ADMIN but the server disagrees (e.g. demoted since login): its sentence, a 403."""
    client = await admin(app)
    fake.fail["run_report"] = PermissionDenied(Status.PERMISSION_DENIED, "only an administrator may see reports")
    resp = await client.get("/staff/runs/41")
    assert resp.status_code == 403
    html = await text(resp)
    assert "Only an administrator may see reports" in html and "Traceback" not in html
    _, hidden = await form_page(client, "/staff/stations")
    fake.fail["add_station"] = PermissionDenied(Status.PERMISSION_DENIED, "only an administrator may add stations")
    resp = await client.post("/staff/stations", form={**hidden, "code": "PNBE", "name": "Patna"})
    assert resp.status_code == 403 and "Only an administrator may add stations" in await text(resp)


async def test_unavailable_cluster_is_the_election_sentence(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    fake.fail["trains"] = Unavailable("no node could serve ListTrains")
    resp = await client.get("/staff")
    assert resp.status_code == 503 and UNAVAILABLE_SENTENCE in await text(resp)


# ------------------------------------------------------------------------------------------- security


async def test_post_without_csrf_is_refused_and_calls_nothing(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    await client.get("/staff")
    for path, form in POSTS.items():
        resp = await client.post(path, form={"request_id": "a" * 32, **form})
        assert resp.status_code == 400, path
        resp = await client.post(path, form={"csrf_token": "forged", **form})
        assert resp.status_code == 400, path
    assert not [c for c in fake.calls if c[0] in WRITES]


async def test_every_staff_form_carries_csrf_and_no_external_urls(app: Any) -> None:
    client = await admin(app)
    for path in GET_PAGES:
        resp = await client.get(path)
        assert resp.status_code == 200, path
        html = await text(resp)
        assert "http://" not in html and "https://" not in html, path
        assert "<script>" not in html and "style=" not in html, path  # the CSP forbids inline script and style
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", html, re.S):
            assert 'name="csrf_token"' in form, (path, form[:80])


async def test_output_is_escaped(app: Any, fake: FakeStaff) -> None:
    fake.station_rows.append(StationInfo(id=3, code="XSS", name="<script>alert(1)</script>"))
    fake.train_rows[0].name = "<b>Rajdhani</b>"
    client = await admin(app)
    html = await text(await client.get("/staff/stations"))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    html = await text(await client.get("/staff"))
    assert "<b>Rajdhani</b>" not in html and "&lt;b&gt;Rajdhani&lt;/b&gt;" in html
    _, hidden = await form_page(client, "/staff/stations")
    resp = await client.post("/staff/stations", form={**hidden, "code": "<i>", "name": '"><script>x</script>'})
    html = await text(resp)
    assert resp.status_code == 400 and "<script>x</script>" not in html and "&lt;script&gt;x" in html


# ------------------------------------------------------------------------------------------- stations


async def test_add_station(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    html, hidden = await form_page(client, "/staff/stations")
    assert "NDLS" in html and "Mumbai Central" in html
    resp = await client.post("/staff/stations", form={**hidden, "code": " pnbe ", "name": "  Patna   Junction "})
    assert resp.status_code == 302 and resp.headers["Location"] == "/staff/stations"
    [(args, kw)] = calls(fake, "add_station")
    assert args == ("PNBE", "Patna Junction")
    assert kw["token"] == "tok-boss" and re.fullmatch(r"[0-9a-f]{32}", kw["request_id"])
    html = await text(await client.get("/staff/stations"))
    assert "Station PNBE (Patna Junction) added." in html and "<td>Patna Junction</td>" in html


async def test_add_station_bad_input_makes_no_call(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    _, hidden = await form_page(client, "/staff/stations")
    resp = await client.post("/staff/stations", form={**hidden, "code": "1X", "name": ""})
    assert resp.status_code == 400
    html = await text(resp)
    assert "The station code must be 2 to 6 capital letters" in html and "Enter the station name." in html
    assert 'value="1X"' in html  # the form keeps what was typed
    assert rid_of(html) == hidden["request_id"]  # nothing was sent: the same request id still applies
    assert not calls(fake, "add_station")


async def test_add_station_taken_code_is_shown_on_the_form(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    _, hidden = await form_page(client, "/staff/stations")
    resp = await client.post("/staff/stations", form={**hidden, "code": "NDLS", "name": "Delhi again"})
    assert resp.status_code == 409
    html = await text(resp)
    assert "Station NDLS already exists" in html and 'value="Delhi again"' in html
    assert rid_of(html) != hidden["request_id"]  # the server answered: a corrected form is a new request
    assert len(calls(fake, "add_station")) == 1


# ------------------------------------------------------------------------------------------- trains


async def test_overview_and_train_list(app: Any) -> None:
    client = await admin(app)
    html = await text(await client.get("/staff"))
    assert "Back office" in html and "12951" in html and "Mumbai Rajdhani" in html
    assert "NDLS → BCT" in html and "1×1A, 2×3A" in html and ">152<" in html  # 24 + 64 + 64 seats
    assert 'href="/staff/runs?train=12951"' in html
    html = await text(await client.get("/staff/trains"))
    assert "12951" in html and "RAJDHANI" in html


async def test_train_page_shows_timetable_and_coaches(app: Any, fake: FakeStaff) -> None:
    fake.train_rows[0].departure_time = "22:00"
    client = await admin(app)
    html = await text(await client.get("/staff/trains/12951"))
    # 22:00 + 4:20 = 02:20 next day at Kota; + 4:30 departs 02:30; Mumbai at 22:00 + 15:55 = 13:55 on day 2
    row = re.search(r"<td class=\"mono\">KOTA</td>.*?</tr>", html, re.S).group(0)
    assert "02:20" in row and "02:30" in row and ">2<" in row
    assert "13:55" in html and "AC First Class (1A)" in html and "1384" in html
    assert 'name="train" value="12951"' in html  # the schedule form for this train
    resp = await client.get("/staff/trains/99999")
    assert resp.status_code == 404 and "There is no train 99999" in await text(resp)


async def test_add_train_parses_route_and_coaches(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    _, hidden = await form_page(client, "/staff/trains/new")
    resp = await client.post("/staff/trains/new", form={
        **hidden, "number": "12309", "name": " Patna  Rajdhani ", "type": "vande bharat", "departure_time": "9:05",
        "route": ROUTE, "coaches": COACHES})
    assert resp.status_code == 302 and resp.headers["Location"] == "/staff/trains/12309"
    [(args, kw)] = calls(fake, "add_train")
    assert args == (12309, "Patna Rajdhani", "VANDE_BHARAT", "09:05",
                    [("NDLS", 0, 0, 0), ("KOTA", 260, 270, 465), ("BCT", 955, 955, 1384)],
                    [("H1", "AC1", 24), ("B1", "AC3", 64), ("S1", "SLEEPER", 72), ("G1", "GENERAL", 90)])
    assert kw["token"] == "tok-boss" and re.fullmatch(r"[0-9a-f]{32}", kw["request_id"])
    html = await text(await client.get("/staff/trains/12309"))
    assert "Train 12309 Patna Rajdhani added." in html


async def test_add_train_problems_name_the_line_and_make_no_call(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    _, hidden = await form_page(client, "/staff/trains/new")
    route = "NDLS - 0 0\nKOTA 4:20 4:30\nBCT 15:61 - 1384"
    coaches = "B1 3A 64\nB1 3A 64\nX 9Z 500"
    resp = await client.post("/staff/trains/new", form={
        **hidden, "number": "123456", "name": "", "type": "EXPRESS", "departure_time": "25:00",
        "route": route, "coaches": coaches})
    assert resp.status_code == 400
    html = await text(resp)
    assert "The train number must be a whole number from 1 to 99999." in html
    assert "Enter the train name." in html
    assert "Enter the departure time from the origin as HH:MM" in html
    assert "Route line 2 (KOTA 4:20 4:30): write the station code, arrival, departure and distance" in html
    assert "Route line 3 (BCT 15:61 - 1384): arrival &#39;15:61&#39; is not a time" in html
    assert "Coach line 2 (B1 3A 64): coach B1 is already on line 1." in html
    assert "Coach line 3 (X 9Z 500): &#39;9Z&#39; is not a class (1A, 2A, 3A, SL or GN); seats must be a number" in html
    assert ">NDLS - 0 0\nKOTA 4:20 4:30\nBCT 15:61 - 1384</textarea>" in html  # what was typed is kept
    assert not calls(fake, "add_train")


async def test_add_train_server_refusal_is_shown_on_the_form(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    _, hidden = await form_page(client, "/staff/trains/new")
    fake.fail["add_train"] = NotFound(Status.NOT_FOUND, "unknown station code KOTA")
    resp = await client.post("/staff/trains/new", form={**hidden, **POSTS["/staff/trains/new"]})
    assert resp.status_code == 400
    html = await text(resp)
    assert "Unknown station code KOTA" in html and "kota 4:20 270 465" in html
    assert rid_of(html) != hidden["request_id"]


async def test_new_train_can_start_from_a_copy(app: Any) -> None:
    client = await admin(app)
    html = await text(await client.get("/staff/trains/new?copy=12951"))
    textarea = re.search(r'<textarea id="route"[^>]*>(.*?)</textarea>', html, re.S).group(1)
    stops, problems = parse_route(textarea)
    assert not problems and stops == [("NDLS", 0, 0, 0), ("KOTA", 260, 270, 465), ("BCT", 955, 955, 1384)]
    textarea = re.search(r'<textarea id="coaches"[^>]*>(.*?)</textarea>', html, re.S).group(1)
    assert parse_coaches(textarea) == ([("H1", "AC1", 24), ("B1", "AC3", 64), ("B2", "AC3", 64)], [])


async def test_parse_route_rules() -> None:
    def problems(text: str) -> str:
        return " | ".join(parse_route(text)[1])

    assert parse_route("A1 - 0 0\nB2 1:00 - 50") == ([("A1", 0, 0, 0), ("B2", 60, 60, 50)], [])
    assert "first stop is where the train starts" in problems("AA 0 5 0\nBB 60 - 10")
    assert "first stop is where the train starts" in problems("AA - 0 3\nBB 60 - 10")
    assert "Route line 2 (BB): the train must arrive after it leaves AA" in problems("AA - 10 0\nBB 10 - 10")
    assert "Route line 2 (BB): the departure is before the arrival" in problems("AA - 0 0\nBB 30 20 5\nCC 40 - 9")
    assert "Route line 3 (CC): the distance must be more than at BB (9 km)" in problems("AA - 0 0\nBB 5 6 9\nCC 9 - 9")
    assert "Route line 2 (BB): the last stop is where the train ends" in problems("AA - 0 0\nBB 60 70 10")
    assert "BB is already on line 2" in problems("AA - 0 0\nBB 60 70 10\nBB 80 - 20")
    assert "A route has 2 to 60 stops" in problems("AA - 0 0")
    assert "A route has 2 to 60 stops" in problems("")
    assert "no journey is longer than a week" in problems("AA - 0 0\nBB 200:00 - 10")
    assert "give the arrival or the departure time" in problems("AA - - 0\nBB 1 - 1")
    assert "is not a station code" in problems("A - 0 0\nBB 1 - 1")


async def test_parse_coaches_rules() -> None:
    assert parse_coaches("a1 2A 48\n\n# spare\nGS1, GN, 90") == ([("A1", "AC2", 48), ("GS1", "GENERAL", 90)], [])
    assert parse_coaches("") == ([], ["A train has 1 to 100 coaches, one per line (it has 0)."])
    assert "seats must be a number from 1 to 120" in parse_coaches("B1 3A 0")[1][0]
    assert "write the coach label, class and number of seats" in parse_coaches("B1 3A")[1][0]
    assert "is not a coach label" in parse_coaches("TOOLONG 3A 64")[1][0]


# ------------------------------------------------------------------------------------------- runs


async def test_schedule_runs(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    html, hidden = await form_page(client, "/staff/schedule?train=12951")
    assert re.search(r'<option value="12951" selected>', html)
    resp = await client.post("/staff/schedule", form={**hidden, "train": "12951", "first": FIRST, "last": LAST})
    assert resp.status_code == 302
    assert resp.headers["Location"] == f"/staff/runs?train=12951&from={FIRST}&to={LAST}"
    [(args, kw)] = calls(fake, "schedule_runs")
    assert args == (12951, FIRST, LAST) and kw["token"] == "tok-boss"
    assert re.fullmatch(r"[0-9a-f]{32}", kw["request_id"])
    html = await text(await client.get(resp.headers["Location"]))
    assert f"Scheduled 3 runs of train 12951 Mumbai Rajdhani, {FIRST} to {LAST}." in html


async def test_schedule_bad_dates_make_no_call(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    _, hidden = await form_page(client, "/staff/schedule")
    resp = await client.post("/staff/schedule", form={**hidden, "train": "12951", "first": LAST, "last": FIRST})
    assert resp.status_code == 400 and "The last date is before the first date." in await text(resp)
    resp = await client.post("/staff/schedule", form={**hidden, "train": "12951", "first": "2020-01-01",
                                                      "last": "2020-01-02"})
    assert resp.status_code == 400 and "The first date is in the past" in await text(resp)
    resp = await client.post("/staff/schedule", form={**hidden, "train": "", "first": "2030-01-01",
                                                      "last": "2031-06-01"})
    html = await text(resp)
    assert resp.status_code == 400 and "Choose a train." in html and "Choose at most 366 days" in html
    assert not calls(fake, "schedule_runs")


async def test_schedule_unknown_train_is_shown_on_the_form(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    _, hidden = await form_page(client, "/staff/schedule")
    resp = await client.post("/staff/schedule", form={**hidden, "train": "11111", "first": FIRST, "last": LAST})
    assert resp.status_code == 404 and "No train 11111" in await text(resp)


async def test_runs_list_links_report_and_cancel(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    html = await text(await client.get("/staff/runs"))
    assert not calls(fake, "list_runs") and "Choose a train" in html
    html = await text(await client.get(f"/staff/runs?train=12951&from={FIRST}&to={LAST}"))
    assert calls(fake, "list_runs")[-1] == ((12951, FIRST, LAST), {"token": "tok-boss"})
    assert 'href="/staff/runs/41"' in html and 'href="/staff/runs/41/cancel"' in html
    assert 'href="/staff/runs/42"' in html and 'href="/staff/runs/42/cancel"' not in html  # already cancelled
    assert "Cancelled" in html
    resp = await client.get(f"/staff/runs?train=12951&from={LAST}&to={FIRST}")
    assert resp.status_code == 400 and "The last date is before the first date." in await text(resp)


async def test_cancel_run_confirms_first_then_cancels_once(app: Any, fake: FakeStaff) -> None:
    client = await admin(app)
    html, hidden = await form_page(client, "/staff/runs/41/cancel")
    assert "This cannot be undone" in html and "2 bookings" in html and "1 waitlisted" in html
    assert "up to \u20b94,301.00" in html  # the run's revenue: 6451.50 paid - 2150.50 already refunded
    assert not calls(fake, "cancel_run")

    resp = await client.post("/staff/runs/41/cancel", form={**hidden, "reason": "   "})
    assert resp.status_code == 400 and "Give the reason for cancelling" in await text(resp)
    assert not calls(fake, "cancel_run")

    form = {**hidden, "reason": " track   maintenance "}
    resp = await client.post("/staff/runs/41/cancel", form=form)
    assert resp.status_code == 302 and resp.headers["Location"] == "/staff/runs/41"
    await client.post("/staff/runs/41/cancel", form=form)  # a double submit
    first, second = calls(fake, "cancel_run")
    assert first[0] == (41, "track maintenance") and first[1]["token"] == "tok-boss"
    assert re.fullmatch(r"[0-9a-f]{32}", first[1]["request_id"] or "")
    assert first[1]["request_id"] == second[1]["request_id"]  # the same request: the cluster applies it once
    html = await text(await client.get("/staff/runs/41"))
    assert "Run 41 cancelled; 2 booking(s) refunded \u20b94,301.00 in total." in html
    html = await text(await client.get("/staff/runs/41/cancel"))
    assert "already cancelled" in html and 'action="/staff/runs/41/cancel"' not in html


async def test_run_report_shows_occupancy_and_revenue(app: Any) -> None:
    client = await admin(app)
    resp = await client.get("/staff/runs/41")
    assert resp.status_code == 200
    html = await text(resp)
    assert "12951 Mumbai Rajdhani" in html and "2030-12-05" in html
    ac3 = re.search(r"<td>AC 3 Tier \(3A\)</td>.*?</tr>", html, re.S).group(0)
    assert ">128<" in ac3 and ">3<" in ac3 and "2.3%" in ac3
    # fares paid, refunded, revenue (the server's revenue is already paid - refunded)
    assert ac3.index("\u20b96,451.50") < ac3.index("\u20b92,150.50") < ac3.index("\u20b94,301.00")
    assert html.index("AC First Class (1A)") < html.index("AC 3 Tier (3A)")  # classes in the railway's order
    # totals: 152 seats, 3 sold, occupancy weighted by seats: 2.34375 * 128 / 152 = 1.97%
    foot = re.search(r"<tfoot>.*?</tfoot>", html, re.S).group(0)
    assert ">152<" in foot and ">3<" in foot and "2.0%" in foot
    assert "\u20b96,451.50" in foot and "\u20b94,301.00" in foot
    assert "1 waitlisted" in html
    resp = await client.get("/staff/runs/999")
    assert resp.status_code == 404 and "No run 999" in await text(resp)


async def test_request_id_is_bound_to_the_form_and_its_fields() -> None:
    nonce = "0123456789abcdef" * 2
    a = form_request_id({"request_id": nonce}, "cancel_run", 41, "flood")
    assert a == form_request_id({"request_id": nonce.upper()}, "cancel_run", 41, "flood")
    assert re.fullmatch(r"[0-9a-f]{32}", a)
    assert a != form_request_id({"request_id": nonce}, "cancel_run", 41, "storm")
    assert a != form_request_id({"request_id": "f" * 32}, "cancel_run", 41, "flood")
    assert form_request_id({"request_id": "short"}, "x") is None
    assert form_request_id({}, "x") is None


async def test_the_web_forms_limits_are_the_store_rules() -> None:
    """web/ may not import store/ (it talks to the cluster through the client only), so the form limits are
    copies: they must not drift from the rules the server applies."""
    from store import rules
    from web import app, staff

    for name in ("TRAIN_NUMBER_MAX", "ROUTE_STOPS_MAX", "ROUTE_MINUTES_MAX", "ROUTE_KM_MAX", "COACHES_MAX",
                 "COACH_SEATS_MAX", "SCHEDULE_DAYS_MAX", "REASON_MAX"):
        assert getattr(staff, name) == getattr(rules, name), name
    assert staff.NAME_MAX == rules.STATION_NAME_MAX == rules.TRAIN_NAME_MAX
    assert app.PASSENGERS_MAX == rules.PASSENGERS_MAX
    assert staff.STATION_CODE_RE.pattern == rules._STATION_CODE_RE.pattern
    assert staff.COACH_LABEL_RE.pattern == rules._COACH_LABEL_RE.pattern
