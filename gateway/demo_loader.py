"""Demo data for `make run`: the store/demo.py catalogue loaded through the API, and the demo accounts.

    railraft demo load --nodes 127.0.0.1:50051,... [--data-dir data]       (or: railraft cluster up --demo)

What it does, as an administrator, through gateway.client.RailraftClient (so every write goes through Raft
like any other client's):

1. logs in as the administrator.  The servers bootstrap that account themselves, from RAILRAFT_ADMIN_PASSWORD,
   once a leader exists; until then the login is refused, so the loader keeps trying for a while;
2. adds the stations and the 12 trains (multi-stop routes and coach compositions) of store.demo that are not
   there yet, and schedules a run of every train for each of the next `days` days that has none;
3. registers the demo customer if it does not exist;
4. returns a report; `format_banner` renders the credentials and the addresses for the operator.

Idempotent: everything is looked up first and only what is missing is written, and each write carries a
deterministic request id (a loader interrupted and restarted within the dedup window is answered with the
first results), so a second `make run` on the same data directory adds nothing.

Credentials: `cluster up --demo` keeps them in DATA/credentials.txt (mode 0600), generated the first time
(random passwords: there is no built-in password, not even in demo mode), so a re-run prints the same ones
and starts the nodes with the same RAILRAFT_ADMIN_PASSWORD.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from store import auth, civil
from store.demo import DEMO_ADMIN, DEMO_CUSTOMER, STATIONS, train_specs

from .client import AlreadyExists, RailraftClient, Unauthenticated, Unavailable

ADMIN_PASSWORD_ENV = "RAILRAFT_ADMIN_PASSWORD"
CREDENTIALS_FILE = "credentials.txt"
DEMO_DAYS = 30
# How long to wait for the servers to bootstrap the administrator after a leader appears.
BOOTSTRAP_WAIT_S = 60.0
CALL_TIMEOUT_S = 30.0  # per write: a fresh cluster may still be electing or catching up
PARALLEL_WRITES = 8  # concurrent proposals: they share log appends and fsyncs, so this is much faster


class DemoError(Exception):
    """The demo data could not be loaded; the message says why and what to do."""


# ======================================================================================= credentials


@dataclass(frozen=True)
class DemoCredentials:
    """The demo administrator and customer."""

    admin_user: str
    admin_password: str
    customer_user: str
    customer_password: str

    def to_text(self) -> str:
        """The credentials file's content."""
        return (
            "# railraft demo credentials, written by `railraft cluster up --demo`.  Keep this file private.\n"
            "# The nodes were started with RAILRAFT_ADMIN_PASSWORD = admin_password.\n"
            f"admin_user = {self.admin_user}\n"
            f"admin_password = {self.admin_password}\n"
            f"customer_user = {self.customer_user}\n"
            f"customer_password = {self.customer_password}\n"
        )

    @classmethod
    def from_text(cls, text: str) -> DemoCredentials:
        """Parse `to_text` output (key = value lines; # comments)."""
        values: dict[str, str] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
        try:
            return cls(values["admin_user"], values["admin_password"], values["customer_user"],
                       values["customer_password"])
        except KeyError as e:
            raise DemoError(f"the credentials file lacks {e.args[0]}") from None


def new_password() -> str:
    """A random password (URL-safe, ~96 bits, never starting with "-": it is typed on command lines)."""
    return auth.urlsafe_secret(12)


def load_or_create_credentials(data_dir: str | Path, *, admin_password: str | None = None) -> tuple[DemoCredentials, bool]:
    """DATA/credentials.txt if it exists, else new credentials written there with mode 0600.

    The admin password of new credentials is `admin_password` (e.g. the operator's RAILRAFT_ADMIN_PASSWORD)
    or a random one; the customer's is always random.  Returns (credentials, created).
    """
    path = Path(data_dir) / CREDENTIALS_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # someone loosened it: secrets stay private
        return DemoCredentials.from_text(path.read_text()), False
    creds = DemoCredentials(DEMO_ADMIN[0], admin_password or new_password(), DEMO_CUSTOMER[0], new_password())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with 0600 from the start (not chmod-ed afterwards), so the secret is never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(creds.to_text())
    return creds, True


# ======================================================================================= loading


@dataclass
class LoadReport:
    """What `load_demo` did."""

    stations_added: int = 0
    trains_added: int = 0
    runs_added: int = 0
    customer_created: bool = False
    customer_login_ok: bool = True
    first_date: str = ""
    last_date: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Did this load write anything (False: the demo data was all there)."""
        return bool(self.stations_added or self.trains_added or self.runs_added or self.customer_created)

    def summary(self) -> str:
        """One human line."""
        if not self.changed:
            return f"demo data already loaded (runs {self.first_date} .. {self.last_date}); nothing to add"
        return (f"demo data loaded in {self.seconds:.1f}s: {self.stations_added} station(s), "
                f"{self.trains_added} train(s), {self.runs_added} run(s) ({self.first_date} .. {self.last_date})"
                + (", demo customer created" if self.customer_created else ""))


def today_ist(now_ms: int | None = None) -> str:
    """Today's date in India ("YYYY-MM-DD"): the demo's runs start today."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return civil.format_date(civil.local_day(ms))


async def admin_login(rr: RailraftClient, user: str, password: str, wait: float) -> None:
    """Log in as the administrator, waiting up to `wait` seconds for the servers to bootstrap the account."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            session = await rr.login(user, password, timeout=max(1.0, min(CALL_TIMEOUT_S, deadline - loop.time())))
        except (Unauthenticated, Unavailable) as e:
            if loop.time() >= deadline:
                why = ("the servers have not created it, or it has another password (was the cluster created with "
                       f"another {ADMIN_PASSWORD_ENV}?)" if isinstance(e, Unauthenticated) else "no leader")
                raise DemoError(f"cannot log in as administrator {user!r} within {wait:g}s: {e}; {why}") from None
            await asyncio.sleep(0.5)
            continue
        if session.user.role != "ADMIN":
            raise DemoError(f"{user!r} is not an administrator (role {session.user.role or 'unknown'})")
        return


async def bounded(limit: int, jobs: Iterable[Callable[[], object]]) -> list:
    """Run the coroutine factories `jobs` at most `limit` at a time; results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], object]) -> object:
        async with sem:
            return await job()  # type: ignore[misc]

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def load_demo(addresses: Sequence[str] | str, creds: DemoCredentials, *, days: int = DEMO_DAYS,
                    start_date: str | None = None, bootstrap_wait: float = BOOTSTRAP_WAIT_S,
                    say: Callable[[str], None] | None = None, client: RailraftClient | None = None) -> LoadReport:
    """Load whatever part of the demo catalogue and accounts is missing (see the module docstring)."""
    say = say or (lambda _text: None)
    t0 = time.monotonic()
    first = start_date or today_ist()
    last = civil.format_date(civil.parse_date(first) + days - 1)
    report = LoadReport(first_date=first, last_date=last)
    rr = client or RailraftClient(addresses, timeout=CALL_TIMEOUT_S)
    try:
        await admin_login(rr, creds.admin_user, creds.admin_password, bootstrap_wait)

        # Stations.
        have = {s.code for s in await rr.stations()}
        missing = [(code, name) for code, name in STATIONS if code not in have]

        async def add_station(code: str, name: str) -> int:
            try:
                await rr.add_station(code, name, request_id=f"demo-station-{code}")
                return 1
            except AlreadyExists:
                return 0  # added by a concurrent loader: fine

        if missing:
            say(f"adding {len(missing)} station(s)")
            report.stations_added = sum(await bounded(PARALLEL_WRITES, [
                lambda c=c, n=n: add_station(c, n) for c, n in missing]))

        # Trains.
        have_trains = {t.number for t in await rr.trains()}
        specs = train_specs()

        async def add_train(number: int, name: str, ttype: str, dep: str, stops: tuple, coaches: tuple) -> int:
            try:
                await rr.add_train(number, name, ttype, dep, stops, coaches, request_id=f"demo-train-{number}")
                return 1
            except AlreadyExists:
                return 0

        todo = [s for s in specs if s[0] not in have_trains]
        if todo:
            say(f"adding {len(todo)} train(s)")
            report.trains_added = sum(await bounded(PARALLEL_WRITES, [
                lambda s=s: add_train(*s) for s in todo]))

        # Runs: a train whose window is complete is left alone; ScheduleRuns itself skips dates that have a run.
        async def runs_for(number: int) -> int:
            existing = await rr.list_runs(number, first, last)
            if len({r.date for r in existing}) >= days:
                return 0
            made = await rr.schedule_runs(number, first, last, request_id=f"demo-runs-{number}-{first}-{days}")
            return len(made)

        counts = await bounded(PARALLEL_WRITES, [lambda n=s[0]: runs_for(n) for s in specs])
        report.runs_added = sum(counts)

        # The demo customer: logging in tells whether it exists with these credentials (a retried Register
        # would not: within the dedup window it answers with the first call's success).
        try:
            probe = await rr.login(creds.customer_user, creds.customer_password, remember=False)
            await rr.logout(token=probe.token)
        except Unauthenticated:
            try:
                await rr.register(creds.customer_user, creds.customer_password, remember=False,
                                  request_id="demo-customer")
                report.customer_created = True
            except AlreadyExists:
                report.customer_login_ok = False
                report.notes.append(f"the demo customer {creds.customer_user!r} exists with another password "
                                    f"(was {CREDENTIALS_FILE} replaced?)")
        try:
            await rr.logout()
        except Exception:  # noqa: BLE001 - the admin session expires by itself; not worth failing the load
            pass
    finally:
        if client is None:
            rr.close()
    report.seconds = time.monotonic() - t0
    return report


# ======================================================================================= output


def format_banner(creds: DemoCredentials, addresses: Sequence[str], *, report: LoadReport | None = None,
                  web_url: str | None = None, data_dir: str | Path | None = None, cli: str = "railraft") -> str:
    """What `make run` prints: where to connect and how to log in (`cli`: how to invoke the railraft CLI)."""
    lines = ["", "=" * 72, "railraft demo is ready", ""]
    if report is not None:
        lines += [f"  {report.summary()}"] + [f"  note: {n}" for n in report.notes] + [""]
    if web_url:
        lines.append(f"  web app:        {web_url}")
    lines.append(f"  gRPC nodes:     {', '.join(addresses)}   (railraft.v1.Booking, train_booking.Ticketing)")
    lines += [
        "",
        f"  administrator:  {creds.admin_user} / {creds.admin_password}",
        f"  demo customer:  {creds.customer_user} / {creds.customer_password}",
    ]
    if data_dir is not None:
        lines.append(f"  (kept in {Path(data_dir) / CREDENTIALS_FILE}, mode 0600)")
    lines += [
        "",
        f"  try:  {cli} status --nodes {','.join(addresses)}",
        f"        {cli} login {creds.customer_user} '{creds.customer_password}' --nodes {','.join(addresses)}",
        "=" * 72,
    ]
    return "\n".join(lines)


__all__ = [
    "DemoCredentials", "DemoError", "LoadReport", "load_demo", "load_or_create_credentials", "format_banner",
    "new_password", "today_ist", "admin_login", "bounded", "ADMIN_PASSWORD_ENV", "CREDENTIALS_FILE",
]
