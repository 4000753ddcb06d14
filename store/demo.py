"""Demo and benchmark data, as lists of commands (so `make run` and the benchmark propose them through Raft).

* `account_commands` -- the demo administrator and customer (demo mode only: outside it there is no built-in
  password; the first admin comes from RAILRAFT_ADMIN_PASSWORD).
* `catalogue_commands` -- 32 real Indian stations, 12 trains (6 up/down pairs: Rajdhani, Shatabdi and
  long-distance expresses, one over 2,900 km and two nights) with multi-stop routes and realistic coach
  compositions, and runs for `days` days from a start date.
* `benchmark_commands` -- the benchmark dataset: by default 100 stations, 50 trains of 20 coaches x 72 seats
  with 10-stop routes, runs for 30 days (1,500 runs, 2.16 million seats).

Timetables are computed from distances (an average speed per train type plus halts), so they are plausible
rather than the real ones.  Everything is a pure function of the arguments: the same call gives the same
commands (and deterministic request ids, so re-seeding an existing cluster is harmless within the dedup
window, and is refused with ALREADY_EXISTS after it).
"""

from __future__ import annotations

from . import auth, civil, rules
from .commands import (
    AddTrain,
    BootstrapAdmin,
    CoachSpec,
    CommandBase,
    CreateSession,
    CreateStation,
    RegisterUser,
    ScheduleRuns,
    StopSpec,
)

DEMO_ADMIN = ("admin", "railraft-admin")
DEMO_CUSTOMER = ("demo", "railraft-demo")
DEMO_CLIENT_ID = "railraft-demo"

STATIONS: tuple[tuple[str, str], ...] = (
    ("NDLS", "New Delhi"),
    ("BCT", "Mumbai Central"),
    ("CSMT", "Mumbai Chhatrapati Shivaji Maharaj Terminus"),
    ("HWH", "Howrah Junction"),
    ("MAS", "Chennai Central"),
    ("SBC", "KSR Bengaluru City"),
    ("KPD", "Katpadi Junction"),
    ("SC", "Secunderabad Junction"),
    ("ADI", "Ahmedabad Junction"),
    ("BRC", "Vadodara Junction"),
    ("ST", "Surat"),
    ("RTM", "Ratlam Junction"),
    ("KOTA", "Kota Junction"),
    ("JP", "Jaipur Junction"),
    ("AGC", "Agra Cantt"),
    ("GWL", "Gwalior Junction"),
    ("JHS", "Jhansi Junction"),
    ("BPL", "Bhopal Junction"),
    ("ET", "Itarsi Junction"),
    ("NGP", "Nagpur Junction"),
    ("BZA", "Vijayawada Junction"),
    ("CNB", "Kanpur Central"),
    ("PRYJ", "Prayagraj Junction"),
    ("DDU", "Pt. Deen Dayal Upadhyaya Junction"),
    ("GAYA", "Gaya Junction"),
    ("ASN", "Asansol Junction"),
    ("LKO", "Lucknow Charbagh"),
    ("PUNE", "Pune Junction"),
    ("CBE", "Coimbatore Junction"),
    ("ERS", "Ernakulam Junction"),
    ("TVC", "Thiruvananthapuram Central"),
    ("MAO", "Madgaon Junction"),
)

# Average speed (km/h, including slowdowns) and halt (minutes) per train type.
_SPEED = {"RAJDHANI": 82, "SHATABDI": 78, "SUPERFAST": 58, "EXPRESS": 52}
_HALT = {"RAJDHANI": 5, "SHATABDI": 3, "SUPERFAST": 10, "EXPRESS": 10}


def _coaches(*groups: tuple[str, str, int, int, tuple[str, ...]]) -> tuple[CoachSpec, ...]:
    """(prefix, class, count, seats, berth pattern or ()) groups -> H1, A1, A2, ... coach specs."""
    return tuple(
        CoachSpec(label=f"{prefix}{i}", travel_class=cls, seats=seats, berths=berths)
        for prefix, cls, count, seats, berths in groups
        for i in range(1, count + 1)
    )


_CHAIR_EXEC = ("WINDOW", "AISLE", "AISLE", "WINDOW")  # 2+2 executive chair car
_CHAIR = ("WINDOW", "MIDDLE", "AISLE", "AISLE", "WINDOW")  # 3+2 chair car

COMPOSITIONS: dict[str, tuple[CoachSpec, ...]] = {
    "RAJDHANI": _coaches(("H", "AC1", 1, 24, ()), ("A", "AC2", 5, 48, ()), ("B", "AC3", 10, 64, ())),
    "SHATABDI": _coaches(("E", "AC1", 1, 56, _CHAIR_EXEC), ("C", "AC3", 8, 78, _CHAIR)),
    "SUPERFAST": _coaches(("H", "AC1", 1, 24, ()), ("A", "AC2", 2, 48, ()), ("B", "AC3", 4, 64, ()),
                          ("S", "SLEEPER", 8, 72, ()), ("G", "GENERAL", 2, 90, ())),
    "EXPRESS": _coaches(("A", "AC2", 1, 48, ()), ("B", "AC3", 3, 64, ()), ("S", "SLEEPER", 8, 72, ()),
                        ("G", "GENERAL", 3, 90, ())),
}

# (up number, down number, name up, name down, type, up departure, down departure, [(station, km)]).
TRAINS: tuple[tuple[int, int, str, str, str, str, str, tuple[tuple[str, int], ...]], ...] = (
    (12951, 12952, "Mumbai Rajdhani", "New Delhi Rajdhani", "RAJDHANI", "17:00", "16:55",
     (("BCT", 0), ("ST", 263), ("BRC", 392), ("RTM", 653), ("KOTA", 921), ("NDLS", 1386))),
    (12301, 12302, "Howrah Rajdhani", "New Delhi Rajdhani", "RAJDHANI", "16:50", "16:55",
     (("HWH", 0), ("ASN", 200), ("GAYA", 458), ("DDU", 661), ("PRYJ", 813), ("CNB", 1007), ("NDLS", 1447))),
    (12009, 12010, "Ahmedabad Shatabdi", "Mumbai Shatabdi", "SHATABDI", "06:25", "14:40",
     (("BCT", 0), ("ST", 263), ("BRC", 392), ("ADI", 492))),
    (12027, 12028, "Bengaluru Shatabdi", "Chennai Shatabdi", "SHATABDI", "06:00", "17:30",
     (("MAS", 0), ("KPD", 129), ("SBC", 362))),
    (12621, 12622, "Tamil Nadu Express", "Tamil Nadu Express", "SUPERFAST", "22:30", "22:00",
     (("NDLS", 0), ("AGC", 195), ("GWL", 313), ("JHS", 403), ("BPL", 702), ("ET", 794), ("NGP", 1091),
      ("BZA", 1751), ("MAS", 2182))),
    (12625, 12626, "Kerala Express", "Kerala Express", "EXPRESS", "20:10", "11:15",
     (("NDLS", 0), ("AGC", 195), ("JHS", 403), ("BPL", 702), ("ET", 794), ("NGP", 1091), ("BZA", 1751),
      ("KPD", 2185), ("CBE", 2538), ("ERS", 2735), ("TVC", 2956))),
)


def _route(stations_km: tuple[tuple[str, int], ...], train_type: str) -> tuple[StopSpec, ...]:
    """Stops with times computed from the distances: km / speed, plus a halt at every intermediate stop."""
    speed, halt = _SPEED[train_type], _HALT[train_type]
    stops, clock, prev_km = [], 0, 0
    for i, (code, km) in enumerate(stations_km):
        clock += -(-(km - prev_km) * 60 // speed)  # minutes of running, rounded up
        last = i == len(stations_km) - 1
        arrive = clock
        depart = clock if (i == 0 or last) else clock + halt
        stops.append(StopSpec(station_code=code, arrive_min=arrive, depart_min=depart, km=km))
        clock, prev_km = depart, km
    return tuple(stops)


def _reverse(stations_km: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    total = stations_km[-1][1]
    return tuple((code, total - km) for code, km in reversed(stations_km))


def train_specs() -> list[tuple[int, str, str, str, tuple[StopSpec, ...], tuple[CoachSpec, ...]]]:
    """The 12 demo trains: (number, name, type, departure "HH:MM", stops, coaches), by number."""
    out = []
    for up, down, name_up, name_down, ttype, dep_up, dep_down, route in TRAINS:
        out.append((up, name_up, ttype, dep_up, _route(route, ttype), COMPOSITIONS[ttype]))
        out.append((down, name_down, ttype, dep_down, _route(_reverse(route), ttype), COMPOSITIONS[ttype]))
    return sorted(out)


def account_commands(ts_ms: int, *, admin: tuple[str, str] = DEMO_ADMIN, customer: tuple[str, str] = DEMO_CUSTOMER,
                     client_id: str = DEMO_CLIENT_ID) -> list[CommandBase]:
    """BootstrapAdmin for the admin and RegisterUser for the customer (hashing the passwords: ~0.1 s)."""
    return [
        BootstrapAdmin(request_id="demo-admin", client_id=client_id, ts_ms=ts_ms, username=admin[0],
                       password_hash=auth.hash_password(admin[1])),
        RegisterUser(request_id="demo-customer", client_id=client_id, ts_ms=ts_ms, username=customer[0],
                     password_hash=auth.hash_password(customer[1]), role=rules.ROLE_CUSTOMER),
    ]


def session_command(user_id: int, ts_ms: int, *, ttl_ms: int = 3_600_000, client_id: str = DEMO_CLIENT_ID
                    ) -> tuple[str, CreateSession]:
    """A fresh session for `user_id` (e.g. the admin, to propose the catalogue): (bearer token, command)."""
    token, digest = auth.new_session_token()
    return token, CreateSession(request_id=f"demo-session-{digest[:16]}", client_id=client_id, ts_ms=ts_ms,
                                user_id=user_id, token_sha256=digest, expires_at_ms=ts_ms + ttl_ms)


def catalogue_commands(token_sha256: str, start_date: str, ts_ms: int, *, days: int = 30,
                       client_id: str = DEMO_CLIENT_ID) -> list[CommandBase]:
    """Stations, the 12 trains, and a run of each for `days` days from `start_date` (admin session `token_sha256`)."""
    first = civil.parse_date(start_date)
    last = civil.format_date(first + days - 1)
    cmds: list[CommandBase] = [
        CreateStation(request_id=f"demo-station-{code}", client_id=client_id, ts_ms=ts_ms, token_sha256=token_sha256,
                      code=code, name=name)
        for code, name in STATIONS
    ]
    for number, name, ttype, dep, stops, coaches in train_specs():
        cmds.append(AddTrain(request_id=f"demo-train-{number}", client_id=client_id, ts_ms=ts_ms,
                             token_sha256=token_sha256, number=number, name=name, train_type=ttype, depart_time=dep,
                             stops=stops, coaches=coaches))
    for number, *_ in train_specs():
        cmds.append(ScheduleRuns(request_id=f"demo-runs-{number}-{start_date}-{days}", client_id=client_id,
                                 ts_ms=ts_ms, token_sha256=token_sha256, train_number=number,
                                 first_date=start_date, last_date=last))
    return cmds


# ============================================================================================ benchmark

BENCH_CLIENT_ID = "railraft-bench"
BENCH_FIRST_TRAIN = 20001
_BENCH_CLASSES = (("A", "AC2", 3), ("B", "AC3", 6), ("S", "SLEEPER", 9), ("G", "GENERAL", 2))


def bench_station_code(i: int) -> str:
    """Code of benchmark station i (0-based): BS000, BS001, ..."""
    return f"BS{i:03d}"


def bench_route(train_index: int, *, stations: int = 100, stops: int = 10) -> tuple[StopSpec, ...]:
    """The route of benchmark train `train_index` (0-based): `stops` distinct stations walking a ring with a
    train-specific stride, 40-130 km apart, at 70 km/h with 5-minute halts."""
    if stations < 7 * stops:
        raise ValueError("benchmark routes need at least 7 stations per stop (distinct stations on every stride)")
    stride = 1 + train_index % 7
    start = (train_index * 13) % stations
    codes = [bench_station_code((start + k * stride) % stations) for k in range(stops)]
    kms = [0]
    for k in range(1, stops):
        kms.append(kms[-1] + 40 + (train_index * 31 + k * 17) % 91)
    out, clock = [], 0
    for k, (code, km) in enumerate(zip(codes, kms)):
        if k:
            clock += -(-(km - kms[k - 1]) * 60 // 70)
        dep = clock if k in (0, stops - 1) else clock + 5
        out.append(StopSpec(station_code=code, arrive_min=clock, depart_min=dep, km=km))
        clock = dep
    return tuple(out)


def bench_coaches(coaches: int = 20, seats: int = 72) -> tuple[CoachSpec, ...]:
    """`coaches` coaches of `seats` seats: AC2, AC3, SLEEPER and GENERAL in the proportions 3:6:9:2."""
    groups = []
    total = sum(n for _, _, n in _BENCH_CLASSES)
    left = coaches
    for i, (prefix, cls, n) in enumerate(_BENCH_CLASSES):
        count = left if i == len(_BENCH_CLASSES) - 1 else max(1, coaches * n // total)
        count = min(count, left)
        left -= count
        groups.extend(
            CoachSpec(label=f"{prefix}{j}", travel_class=cls, seats=seats) for j in range(1, count + 1)
        )
    return tuple(groups)


def benchmark_commands(token_sha256: str, start_date: str, ts_ms: int, *, trains: int = 50, days: int = 30,
                       coaches: int = 20, seats: int = 72, stations: int = 100, stops: int = 10,
                       client_id: str = BENCH_CLIENT_ID) -> list[CommandBase]:
    """The benchmark dataset as commands: `stations` stations, `trains` trains (numbers from 20001) of
    `coaches` x `seats` seats with `stops`-stop routes, each run daily for `days` days from `start_date`."""
    first = civil.parse_date(start_date)
    last = civil.format_date(first + days - 1)
    composition = bench_coaches(coaches, seats)
    cmds: list[CommandBase] = [
        CreateStation(request_id=f"bench-station-{i}", client_id=client_id, ts_ms=ts_ms, token_sha256=token_sha256,
                      code=bench_station_code(i), name=f"Bench Station {i}")
        for i in range(stations)
    ]
    for t in range(trains):
        cmds.append(AddTrain(request_id=f"bench-train-{t}", client_id=client_id, ts_ms=ts_ms,
                             token_sha256=token_sha256, number=BENCH_FIRST_TRAIN + t, name=f"Bench Express {t}",
                             train_type="EXPRESS", depart_time=civil.format_hhmm(300 + 37 * t),
                             stops=bench_route(t, stations=stations, stops=stops), coaches=composition))
    for t in range(trains):
        cmds.append(ScheduleRuns(request_id=f"bench-runs-{t}-{start_date}-{days}", client_id=client_id, ts_ms=ts_ms,
                                 token_sha256=token_sha256, train_number=BENCH_FIRST_TRAIN + t,
                                 first_date=start_date, last_date=last))
    return cmds
