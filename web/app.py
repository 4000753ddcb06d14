"""The passenger web app: Quart-Trio in front of a railraft cluster, talking to it only through the gateway client.

    app = create_app(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
    # served by web/__main__.py: hypercorn.trio.serve inside trio_asyncio.open_loop()

One `RailraftClient` serves every user: each call passes the user's session token (`token=`), which lives
in Quart's signed session cookie (HttpOnly, SameSite=Lax) together with the user's name, role and CSRF token.
The client is asyncio (grpclib), so every call goes through `trio_asyncio.aio_as_trio`; tests inject a
Trio-native fake instead (`create_app(..., client=fake)`), which is called directly.

Security: every POST must carry the session's CSRF token in the hidden `csrf_token` field (400 otherwise);
templates are Jinja with autoescape; errors are shown as a sentence (`humanize_error`), never a traceback.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date as date_cls, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from quart import abort, flash, g, redirect, render_template, request, session, url_for
from quart_trio import QuartTrio

from gateway.cli_format import rupees  # one formatting of money for the CLI and the web pages
from gateway.client import (
    BookingError,
    RailraftClient,
    RailraftError,
    Unauthenticated,
    Unavailable,
)
from proto.gen.railraft.v1 import BookingState, SeatClass

log = logging.getLogger("railraft.web")

IST = timezone(timedelta(hours=5, minutes=30), "IST")
PASSENGERS_MAX = 6
SECRET_ENV = "RAILRAFT_WEB_SECRET"
DEFAULT_SECRET_FILE = Path.home() / ".railraft" / "web_secret"

UNAVAILABLE_SENTENCE = "The booking system is busy electing a new leader; please try again in a moment."
INTERNAL_SENTENCE = "Something went wrong on our side; please try again."

CLASS_NAMES = {
    SeatClass.AC1: "AC First Class (1A)",
    SeatClass.AC2: "AC 2 Tier (2A)",
    SeatClass.AC3: "AC 3 Tier (3A)",
    SeatClass.SLEEPER: "Sleeper (SL)",
    SeatClass.GENERAL: "General (GN)",
}
STATE_NAMES = {
    BookingState.HELD: "Held, awaiting payment",
    BookingState.CONFIRMED: "Confirmed",
    BookingState.WAITLISTED: "Waitlisted",
    BookingState.CANCELLED: "Cancelled",
    BookingState.EXPIRED: "Expired",
    BookingState.REFUNDED: "Refunded",
}
BERTHS = ["", "LOWER", "MIDDLE", "UPPER", "SIDE LOWER", "SIDE UPPER", "WINDOW", "AISLE"]


# ============================================================================================ helpers


@dataclass(frozen=True)
class WebContext:
    """What page modules (web/staff.py, web/dashboard.py) share with the passenger pages in create_app."""

    call: Callable[..., Awaitable[Any]]  # await call("method", *args, **kwargs): the client, via trio-asyncio
    token: Callable[[], str]  # the logged-in user's railraft token ("" when logged out)
    login_required: Callable[[Callable], Callable]  # view decorator: redirect to /login when logged out
    error_page: Callable[[str, int], Awaitable[Any]]  # render error.html with a sentence and a status


ADMIN_ROLE = "ADMIN"  # store.rules.ROLE_ADMIN (web/ does not import store/)


def is_admin_role(role: Any) -> bool:
    """Whether a role string (from the session or WhoAmI) is the administrator's; case-insensitive."""
    return str(role or "").strip().upper() == ADMIN_ROLE


def session_is_admin() -> bool:
    """Whether the logged-in session's role (as the cookie has it) is the administrator's."""
    return is_admin_role(session.get("role", ""))


def humanize_error(exc: BaseException) -> str:
    """The sentence a person sees for an exception from the client (never a traceback)."""
    if isinstance(exc, Unavailable):
        return UNAVAILABLE_SENTENCE
    if isinstance(exc, BookingError):
        msg = (exc.message or "").strip()
        if not msg:
            return "The request could not be completed."
        return msg[0].upper() + msg[1:]
    return INTERNAL_SENTENCE


def ist_time(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, IST).strftime("%H:%M")


def ist_datetime(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, IST).strftime("%a %d %b %Y, %H:%M")


def duration(start_ms: int | None, end_ms: int | None) -> str:
    if not start_ms or not end_ms or end_ms < start_ms:
        return ""
    minutes = (end_ms - start_ms) // 60000
    return f"{minutes // 60}h {minutes % 60:02d}m"


def class_name(value: Any) -> str:
    if isinstance(value, str) and value in SeatClass.__members__:  # a class code from a URL, e.g. "AC1"
        value = SeatClass[value]
    try:
        return CLASS_NAMES.get(SeatClass(value), SeatClass(value).name)
    except ValueError:
        return str(value)


def class_code(value: Any) -> str:
    try:
        return SeatClass(value).name
    except ValueError:
        return str(value)


def state_name(value: Any) -> str:
    try:
        return STATE_NAMES.get(BookingState(value), BookingState(value).name.title())
    except ValueError:
        return str(value)


def load_or_create_secret(path: Path | str = DEFAULT_SECRET_FILE) -> str:
    """The session signing key: $RAILRAFT_WEB_SECRET, else the key stored at `path` (created, mode 0600)."""
    env = os.environ.get(SECRET_ENV, "").strip()
    if env:
        return env
    p = Path(path)
    try:
        text = p.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(48)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def _valid_date(text: str) -> bool:
    try:
        date_cls.fromisoformat(text)
        return True
    except ValueError:
        return False


def _today_ist() -> str:
    return datetime.now(IST).date().isoformat()


def _request_id(form: Any) -> str | None:
    """The form's idempotency key (32 hex digits, minted when the form was rendered), or None for a new one."""
    rid = str(form.get("request_id", "")).strip().lower()
    return rid if len(rid) == 32 and all(c in "0123456789abcdef" for c in rid) else None


def _int(text: Any, default: int = 0) -> int:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default


# ============================================================================================ app


def create_app(nodes: Sequence[str] | str, *, secret_key: str | None = None, client: Any = None,
               asyncio_client: bool | None = None, secret_file: Path | str | None = None) -> QuartTrio:
    """The web app for the cluster at `nodes`.

    `client`: a RailraftClient-like object to use instead of building one (tests inject a fake);
    `asyncio_client`: whether its methods are asyncio coroutines to run through trio-asyncio (default: True
    for the client built here, False for an injected one).  `secret_key`: the session signing key (default:
    $RAILRAFT_WEB_SECRET, else one generated and stored in `secret_file`).
    """
    app = QuartTrio(__name__, template_folder="templates", static_folder="static")
    if secret_key is None:
        secret_key = load_or_create_secret(secret_file or DEFAULT_SECRET_FILE)
    app.secret_key = secret_key
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="railraft_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    if client is None:
        client = RailraftClient(nodes)
        if asyncio_client is None:
            asyncio_client = True
    elif asyncio_client is None:
        asyncio_client = False
    app.extensions["railraft_client"] = client

    async def rr(method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the client's `method`; through trio-asyncio when the client is asyncio."""
        fn = getattr(client, method)
        if asyncio_client:
            import trio_asyncio

            return await trio_asyncio.aio_as_trio(functools.partial(fn, *args, **kwargs))()
        return await fn(*args, **kwargs)

    app.extensions["railraft_call"] = rr

    def token() -> str:
        return session.get("token", "")

    # ------------------------------------------------------------------------ templates and security
    def csrf_token() -> str:
        tok = session.get("csrf")
        if not tok:
            tok = session["csrf"] = secrets.token_urlsafe(32)
        return tok

    app.jinja_env.autoescape = True
    app.jinja_env.globals.update(csrf_token=csrf_token, class_name=class_name, class_code=class_code,
                                 state_name=state_name, BookingState=BookingState, PASSENGERS_MAX=PASSENGERS_MAX)
    app.jinja_env.filters.update(rupees=rupees, ist_time=ist_time, ist_datetime=ist_datetime)
    app.jinja_env.globals["duration"] = duration

    @app.context_processor
    async def user_context() -> dict[str, Any]:
        user = None
        if session.get("token"):
            user = {"username": session.get("username", ""), "role": session.get("role", ""),
                    "is_admin": session_is_admin()}
        return {"current_user": user}

    @app.before_request
    async def check_csrf() -> None:
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            form = await request.form
            sent = form.get("csrf_token", "")
            expected = session.get("csrf", "")
            if not expected or not sent or not hmac.compare_digest(str(sent), str(expected)):
                abort(400, "The form has expired or did not come from this site; please reload the page and try again.")

    @app.after_request
    async def security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'")
        return response

    # ------------------------------------------------------------------------------------ errors
    async def error_page(message: str, status: int) -> Any:
        return await render_template("error.html", message=message, status=status), status

    @app.errorhandler(Unauthenticated)
    async def on_unauthenticated(exc: Unauthenticated) -> Any:
        for k in ("token", "username", "role"):
            session.pop(k, None)
        await flash("Your session has ended; please log in again.", "warning")
        return redirect(url_for("login", next=request.full_path if request.method == "GET" else None))

    @app.errorhandler(RailraftError)
    async def on_railraft_error(exc: RailraftError) -> Any:
        status = 503 if isinstance(exc, Unavailable) else 400
        if isinstance(exc, BookingError):
            status = {"NOT_FOUND": 404, "PERMISSION_DENIED": 403, "FAILED_PRECONDITION": 409}.get(
                exc.status.name, 400)
        return await error_page(humanize_error(exc), status)

    @app.errorhandler(400)
    async def on_400(exc: Any) -> Any:
        desc = getattr(exc, "description", "") or "The request was not understood."
        if not isinstance(desc, str) or desc.startswith("<") or "Bad Request" in desc:
            desc = "The request was not understood."
        return await error_page(desc, 400)

    @app.errorhandler(404)
    async def on_404(exc: Any) -> Any:
        return await error_page("There is no such page.", 404)

    @app.errorhandler(405)
    async def on_405(exc: Any) -> Any:
        return await error_page("That page cannot be used this way.", 405)

    @app.errorhandler(413)
    async def on_413(exc: Any) -> Any:
        return await error_page("That form is too large.", 413)

    @app.errorhandler(Exception)
    async def on_exception(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return await error_page(exc.description or "The request could not be completed.", exc.code or 500)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return await error_page(INTERNAL_SENTENCE, 500)

    def login_required(view: Callable) -> Callable:
        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not session.get("token"):
                await flash("Please log in first.", "info")
                return redirect(url_for("login", next=request.full_path))
            return await view(*args, **kwargs)

        return wrapper

    def safe_next(target: str | None) -> str:
        if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
            return target
        return url_for("home")

    async def station_list() -> list[Any]:
        try:
            return await rr("stations")
        except RailraftError:
            return []  # the form still works without type-ahead

    # ------------------------------------------------------------------------------------ pages
    @app.get("/healthz")
    async def healthz() -> Any:
        return {"ok": True}

    @app.get("/")
    async def home() -> Any:
        stations = await station_list()
        return await render_template("home.html", stations=stations, today=_today_ist(),
                                     form={"from": "", "to": "", "date": _today_ist()})

    @app.get("/search")
    async def search() -> Any:
        a = request.args.get("from", "").strip().upper()
        b = request.args.get("to", "").strip().upper()
        day = request.args.get("date", "").strip()
        form = {"from": a, "to": b, "date": day}
        problems = []
        if not a or not b:
            problems.append("Choose both a departure and a destination station.")
        elif a == b:
            problems.append("Departure and destination must be different stations.")
        if not _valid_date(day):
            problems.append("Choose a travel date.")
        stations = await station_list()
        if problems:
            return await render_template("home.html", stations=stations, today=_today_ist(), form=form,
                                         problems=problems), 400
        results = await rr("search", a, b, day)
        names = {s.code: s.name for s in stations}
        return await render_template("results.html", results=results, form=form, names=names,
                                     stations=stations, today=_today_ist())

    def trip_args() -> dict[str, Any]:
        src = request.args if request.method == "GET" else g.form
        return {
            "run": _int(src.get("run")),
            "cls": src.get("cls", "").strip().upper(),
            "from": src.get("from", "").strip().upper(),
            "to": src.get("to", "").strip().upper(),
            "date": src.get("date", "").strip(),
        }

    def check_trip(trip: dict[str, Any]) -> None:
        if not trip["run"] or not trip["from"] or not trip["to"] or trip["cls"] not in SeatClass.__members__ \
                or trip["cls"] == "SEAT_CLASS_UNSPECIFIED":
            abort(400, "That journey is incomplete; please start again from the search.")

    @app.get("/seats")
    @login_required
    async def seats() -> Any:
        trip = trip_args()
        check_trip(trip)
        overview = await rr("seat_map", trip["run"], "", trip["from"], trip["to"])
        coaches = [c for c in overview.coaches if SeatClass(c.seat_class).name == trip["cls"]]
        if not coaches:
            abort(404)
        coach = request.args.get("coach", "").strip().upper()
        if coach not in {c.label for c in coaches}:
            coach = next((c.label for c in coaches if c.free_seats), coaches[0].label)
        cmap = await rr("seat_map", trip["run"], coach, trip["from"], trip["to"])
        return await render_template("seats.html", trip=trip, coaches=coaches, coach=coach, cmap=cmap,
                                     qs=urlencode(trip))

    @app.get("/book")
    @login_required
    async def book() -> Any:
        trip = trip_args()
        check_trip(trip)
        chosen = [s.strip().upper() for s in request.args.getlist("seat") if s.strip()]
        if len(chosen) > PASSENGERS_MAX:
            abort(400, f"At most {PASSENGERS_MAX} passengers can travel on one booking.")
        count = len(chosen) or min(max(_int(request.args.get("count"), 1), 1), PASSENGERS_MAX)
        return await render_template("passengers.html", trip=trip, chosen=chosen, count=count, berths=BERTHS,
                                     passengers=[{} for _ in range(count)], problems=[], qs=urlencode(trip),
                                     request_id=secrets.token_hex(16))

    @app.post("/book")
    @login_required
    async def book_post() -> Any:
        g.form = form = await request.form
        trip = trip_args()
        check_trip(trip)
        chosen = [s.strip().upper() for s in form.getlist("seat") if s.strip()]
        count = min(max(_int(form.get("count"), 1), 1), PASSENGERS_MAX)
        if chosen:
            count = len(chosen)
        passengers, problems = [], []
        for i in range(count):
            name = form.get(f"name{i}", "").strip()
            age = _int(form.get(f"age{i}"), -1)
            berth = form.get(f"berth{i}", "").strip().upper()
            passengers.append({"name": name, "age": form.get(f"age{i}", ""), "berth": berth})
            if not name:
                problems.append(f"Passenger {i + 1}: enter a name.")
            if not 0 < age < 126:
                problems.append(f"Passenger {i + 1}: enter an age between 1 and 125.")
            if berth not in BERTHS:
                problems.append(f"Passenger {i + 1}: choose a berth preference from the list.")
        waitlist = form.get("waitlist") == "1"
        if problems:
            return await render_template("passengers.html", trip=trip, chosen=chosen, count=count, berths=BERTHS,
                                         passengers=passengers, problems=problems, qs=urlencode(trip),
                                         request_id=form.get("request_id") or secrets.token_hex(16)), 400
        booking = await rr(
            "hold", trip["run"], trip["cls"], trip["from"], trip["to"],
            [{"name": p["name"], "age": int(p["age"]), "berth_preference": p["berth"]} for p in passengers],
            chosen_seats=chosen, accept_waitlist=waitlist, token=token(),
            request_id=_request_id(form),
        )
        return redirect(url_for("booking_page", pnr=booking.pnr))

    @app.get("/bookings")
    @login_required
    async def my_bookings() -> Any:
        bookings = await rr("my_bookings", token=token())
        bookings.sort(key=lambda b: (b.departure_ms, b.pnr), reverse=True)
        return await render_template("bookings.html", bookings=bookings)

    @app.get("/bookings/<pnr>")
    @login_required
    async def booking_page(pnr: str) -> Any:
        booking = await rr("booking", pnr, token=token())
        return await render_template("booking.html", b=booking, now_ms=int(time.time() * 1000),
                                     request_id=secrets.token_hex(16))

    @app.post("/bookings/<pnr>/pay")
    @login_required
    async def pay(pnr: str) -> Any:
        form = await request.form
        card = "".join(ch for ch in form.get("card", "") if ch.isdigit())
        if len(card) != 16:
            await flash("Enter the 16 digits of the card number.", "error")
            return redirect(url_for("booking_page", pnr=pnr))
        try:
            await rr("pay", pnr, card, _int(form.get("amount")), token=token(),
                     request_id=_request_id(form))
        except BookingError as exc:
            if isinstance(exc, Unauthenticated):
                raise
            await flash(humanize_error(exc), "error")
            return redirect(url_for("booking_page", pnr=pnr))
        await flash("Payment received: your booking is confirmed.", "success")
        return redirect(url_for("booking_page", pnr=pnr))

    @app.get("/bookings/<pnr>/cancel")
    @login_required
    async def cancel_page(pnr: str) -> Any:
        booking = await rr("booking", pnr, token=token())
        quote = await rr("refund_quote", pnr, token=token())
        return await render_template("cancel.html", b=booking, quote=quote, request_id=secrets.token_hex(16))

    @app.post("/bookings/<pnr>/cancel")
    @login_required
    async def cancel_post(pnr: str) -> Any:
        form = await request.form
        booking = await rr("cancel", pnr, token=token(), request_id=_request_id(form))
        refunded = booking.refunded_paise or sum(r.amount_paise for r in booking.refunds)
        msg = f"Booking {booking.pnr} is cancelled."
        if refunded:
            msg += f" {rupees(refunded)} will be refunded to your card."
        await flash(msg, "success")
        return redirect(url_for("booking_page", pnr=pnr))

    @app.route("/pnr", methods=["GET", "POST"])
    async def pnr_status() -> Any:
        booking, problems = None, []
        form = {"pnr": "", "name": ""}
        if request.method == "POST":
            data = await request.form
            form = {"pnr": data.get("pnr", "").strip().upper(), "name": data.get("name", "").strip()}
            if not form["pnr"] or not form["name"]:
                problems.append("Enter the PNR and the name of one passenger on the booking.")
            else:
                try:
                    booking = await rr("pnr_status", form["pnr"], form["name"])
                except BookingError as exc:
                    problems.append(humanize_error(exc))
        return await render_template("pnr.html", b=booking, form=form, problems=problems), (400 if problems else 200)

    # ------------------------------------------------------------------------------------ accounts
    async def start_session(sess: Any) -> None:
        session.clear()  # a fresh session on login: no fixation
        session.permanent = True
        session["token"] = sess.token
        session["username"] = sess.user.username if sess.user else ""
        session["role"] = sess.user.role if sess.user else ""
        session["csrf"] = secrets.token_urlsafe(32)

    @app.route("/login", methods=["GET", "POST"])
    async def login() -> Any:
        problems = []
        nxt = request.args.get("next", "")
        username = ""
        if request.method == "POST":
            form = await request.form
            username = form.get("username", "").strip()
            password = form.get("password", "")
            nxt = form.get("next", "")
            if not username or not password:
                problems.append("Enter your username and password.")
            else:
                try:
                    sess = await rr("login", username, password, remember=False)
                except (Unauthenticated, BookingError) as exc:
                    if isinstance(exc, Unauthenticated) or exc.status.name in ("NOT_FOUND", "UNAUTHENTICATED"):
                        problems.append("That username and password do not match an account.")
                    else:
                        problems.append(humanize_error(exc))
                else:
                    await start_session(sess)
                    await flash(f"Welcome back, {session['username'] or username}.", "success")
                    return redirect(safe_next(nxt))
        return await render_template("login.html", problems=problems, username=username, next=nxt), \
            (400 if problems else 200)

    @app.route("/register", methods=["GET", "POST"])
    async def register() -> Any:
        problems = []
        username = ""
        if request.method == "POST":
            form = await request.form
            username = form.get("username", "").strip()
            password = form.get("password", "")
            confirm = form.get("confirm", "")
            if not username or not password:
                problems.append("Choose a username and a password.")
            elif password != confirm:
                problems.append("The two passwords do not match.")
            else:
                try:
                    sess = await rr("register", username, password, remember=False)
                    if not sess.token:
                        sess = await rr("login", username, password, remember=False)
                except Unauthenticated as exc:
                    problems.append(humanize_error(exc))
                except BookingError as exc:
                    problems.append(humanize_error(exc))
                else:
                    await start_session(sess)
                    await flash(f"Welcome to railraft, {session['username'] or username}.", "success")
                    return redirect(url_for("home"))
        return await render_template("register.html", problems=problems, username=username), \
            (400 if problems else 200)

    @app.post("/logout")
    async def logout() -> Any:
        tok = session.get("token")
        if tok:
            try:
                await rr("logout", token=tok)
            except RailraftError:
                pass  # the session expires on its own; the browser forgets it now
        session.clear()
        await flash("You are logged out.", "info")
        return redirect(url_for("home"))

    web = WebContext(call=rr, token=token, login_required=login_required, error_page=error_page)
    app.extensions["railraft_web"] = web
    for register_pages in _page_modules():
        register_pages(app, web)
    return app


def _page_modules() -> list[Callable[[QuartTrio, WebContext], None]]:
    """The `register(app, web)` functions of the page modules beside the passenger pages."""
    from web import dashboard, staff

    return [staff.register, dashboard.register]
