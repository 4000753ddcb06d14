"""`railraft backup` / `railraft restore` (gateway/backup.py, Node.Backup in gateway/services.py).

The unit tests build backup files from a hand-made database and check what restore writes -- and that a
corrupt or truncated file, or a non-empty target, is refused with nothing written.  The process test backs up
a real 3-node cluster while a writer keeps writing, restores the file as a new cluster on new ports, and
checks that the new cluster serves exactly the state at the backup's index: the source's Raft log replayed
up to that index gives the same canonical dump as the backup and as the restored replicas.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from grpclib.const import Status

from actors.config import ClusterConfig, NodeAddress, load_config
from gateway import backup as bk
from gateway.cli import dump_database, main
from proto.gen.railraft.v1 import (
    AddStationRequest,
    AddTrainRequest,
    BookingState,
    ChosenSeat,
    CoachInput,
    GetBookingRequest,
    HoldRequest,
    LoginRequest,
    MyBookingsRequest,
    PassengerInput,
    PayRequest,
    RegisterRequest,
    ScheduleRunsRequest,
    SeatClass,
    StopInput,
)
from raft.filestorage import FileStorage
from store import queries, schema
from store.state_machine import apply_batch

ROOT = Path(__file__).resolve().parents[1]


# ====================================================================================== unit tests


def make_db(path: Path, index: int = 42) -> Path:
    """A small railraft database at `index`, as a single file (like a snapshot), with a member row."""
    conn = schema.connect(path)
    conn.execute("INSERT INTO users (username, password_hash, role, created_ms) VALUES ('asha', 'x', 'CUSTOMER', 1)")
    conn.execute("INSERT INTO users (username, password_hash, role, created_ms) VALUES ('root', 'y', 'ADMIN', 2)")
    conn.execute("INSERT INTO members (node_id, host, port) VALUES (4, '10.0.0.4', 7000)")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'applied_index'", (index,))
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    return path


def make_backup(tmp: Path, index: int = 42, name: str = "b.rrbk") -> Path:
    db = make_db(tmp / f"{name}.src.db", index)
    header = bk.make_header(
        db, cluster_id="src", applied_index=index, term=3, read_index=index - 1, created_ms=1_700_000_000_000,
        source_node=1, source_address="127.0.0.1:1",
        members=[{"id": i, "host": "127.0.0.1", "port": i, "kind": "voter"} for i in (1, 2, 3)],
    )
    out = tmp / name
    bk.write_backup_file(out, header, db)
    return out


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else ["<absent>"]


def test_the_file_reads_back_as_written(tmp_path):
    out = make_backup(tmp_path)
    assert out.read_bytes().startswith(bk.MAGIC)
    assert out.stat().st_mode & 0o777 == 0o600  # password hashes inside
    header = bk.verify_backup(out)
    assert header["applied_index"] == 42 and header["term"] == 3 and header["cluster_id"] == "src"
    assert header["counts"]["users"] == 2 and header["counts"]["admins"] == 1
    assert header["format_version"] == 1 and header["schema_version"] == schema.SCHEMA_VERSION
    assert len(header["payload_sha256"]) == 64 and header["created"].startswith("2023-11-14T")


def test_restore_builds_the_data_directories_of_a_new_cluster(tmp_path, capsys):
    out = make_backup(tmp_path)
    target = tmp_path / "new"
    code = main(["restore", str(out), "--data-dir", str(target), "--nodes", "3", "--port", "41000"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "at index 42 (term 3)" in text and "users 2 (1 admin)" in text and "cluster up --data-dir" in text

    cfg = load_config(target / "cluster.toml")
    assert [(n.id, n.port) for n in cfg.nodes] == [(1, 41000), (2, 41001), (3, 41002)]
    assert cfg.cluster_id.startswith("src-restored-") and cfg.data_dir == target
    assert not [p for p in target.iterdir() if p.name.startswith(".")], "staging left behind"
    dumps = set()
    for nid in (1, 2, 3):
        node = target / f"node{nid}"
        rec = FileStorage(node / "raft").load()
        assert rec.entries == [] and rec.snapshot.index == 42 and rec.snapshot.term == 3
        assert rec.snapshot.conf.voters == {1, 2, 3} and not rec.snapshot.conf.learners
        assert (rec.hard_state.term, rec.hard_state.vote, rec.hard_state.commit) == (3, 0, 42)
        db = node / f"Node{nid}TicketBooking.db"
        snap = node / "snapshots" / "snap-42.db"
        assert db.read_bytes() == snap.read_bytes()
        conn = sqlite3.connect(db)
        assert queries.applied_index(conn) == 42
        assert queries.members(conn) == [], "the source's address book must not leak into the new cluster"
        conn.close()
        dumps.add(dump_database(db))
    assert len(dumps) == 1


def test_restore_into_the_nodes_of_an_existing_cluster_toml(tmp_path):
    out = make_backup(tmp_path)
    cfg = ClusterConfig(cluster_id="fresh", data_dir=Path("data"),
                        nodes=(NodeAddress(1, "127.0.0.1", 45001), NodeAddress(5, "127.0.0.1", 45777)))
    (tmp_path / "cluster.toml").write_text(cfg.to_toml())
    before = (tmp_path / "cluster.toml").read_text()
    res = bk.restore(out, config=tmp_path / "cluster.toml")
    assert res["cluster_id"] == "fresh" and [n["id"] for n in res["nodes"]] == [1, 5]
    assert (tmp_path / "cluster.toml").read_text() == before
    rec = FileStorage(tmp_path / "data" / "node5" / "raft").load()
    assert rec.snapshot.conf.voters == {1, 5}
    assert (tmp_path / "data" / "node5" / "Node5TicketBooking.db").exists()
    with pytest.raises(bk.Refused, match="not empty"):
        bk.restore(out, config=tmp_path / "cluster.toml")
    assert main(["restore", str(out), "--config", str(tmp_path / "cluster.toml"), "--port", "1"]) == 2
    with pytest.raises(bk.Refused, match="cluster id"):
        bk.restore(out, data_dir=tmp_path / "other", cluster_id='bad"id')
    assert not (tmp_path / "other").exists()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGE = {
    "payload byte flipped": (lambda p, h: _flip(p, h + 5000), "does not match"),
    "header byte flipped": (lambda p, h: _flip(p, 40), "checksum"),
    "cut in the database": (lambda p, h: os.truncate(p, h + 3000), "is truncated"),
    "cut in the header": (lambda p, h: os.truncate(p, 30), "is truncated"),
    "empty file": (lambda p, h: os.truncate(p, 0), "is truncated"),
    "trailing bytes": (lambda p, h: p.write_bytes(p.read_bytes() + b"extra"), "unexpected bytes"),
    "not a backup": (lambda p, h: p.write_bytes(b"SQLite format 3\0" + bytes(100)), "not a railraft backup"),
    "newer format": (lambda p, h: p.write_bytes(bk.MAGIC + b"\0\0\0\x02" + p.read_bytes()[20:]), "version 2"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_corrupt_or_truncated_backup_is_refused_and_nothing_written(tmp_path, capsys, damage):
    out = make_backup(tmp_path)
    _, payload_at = bk.read_header(out)
    spoil, says = DAMAGE[damage]
    spoil(out, payload_at)
    with pytest.raises(bk.BackupError, match=says):
        bk.verify_backup(out)

    absent, empty = tmp_path / "absent", tmp_path / "empty"
    empty.mkdir()
    for target in (absent, empty):
        before = tree(target)
        code = main(["restore", str(out), "--data-dir", str(target), "--port", "41000"])
        err = capsys.readouterr().err
        assert code == 1, err
        assert says in err and "nothing written" in err
        assert tree(target) == before


def test_a_damaged_database_inside_a_well_formed_file_is_refused(tmp_path):
    """The checksums match (the file was written that way), but the payload is not a sound database."""
    db = make_db(tmp_path / "x.db")
    header = bk.make_header(db, cluster_id="src", applied_index=42, term=3, read_index=42, created_ms=1,
                            source_node=1, source_address="a:1", members=[])
    data = bytearray(db.read_bytes())
    data[len(data) // 2: len(data) // 2 + 2000] = bytes(2000)  # zero a stretch of pages
    db.write_bytes(bytes(data))
    import hashlib

    header["payload_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    bk.write_backup_file(tmp_path / "b.rrbk", header, db)
    with pytest.raises(bk.BackupError):
        bk.restore(tmp_path / "b.rrbk", data_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_restore_refuses_a_non_empty_directory_unless_forced(tmp_path, capsys):
    out = make_backup(tmp_path)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    code = main(["restore", str(out), "--data-dir", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "is not empty" in err and "--force" in err and "nothing written" in err
    assert tree(target) == ["keep.txt"]

    assert main(["restore", str(out), "--data-dir", str(target), "--force", "--cluster-id", "one"]) == 0
    assert (target / "keep.txt").read_text() == "mine"
    assert load_config(target / "cluster.toml").cluster_id == "one"
    # Forcing over a restored cluster replaces its nodes (a stale Raft log must not survive).
    (target / "node2" / "raft" / "stale").write_text("old")
    assert main(["restore", str(out), "--data-dir", str(target), "--force", "--cluster-id", "two", "--json"]) == 0
    assert '"replaced"' in capsys.readouterr().out
    assert not (target / "node2" / "raft" / "stale").exists()
    assert load_config(target / "cluster.toml").cluster_id == "two"


def test_backup_needs_a_token_and_never_overwrites_by_accident(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAILRAFT_TOKEN", raising=False)
    monkeypatch.setenv("RAILRAFT_SESSION_FILE", str(tmp_path / "no-session.json"))
    out = tmp_path / "b.rrbk"
    code = main(["backup", "--nodes", "127.0.0.1:1", "-o", str(out)])
    assert code == 3 and "administrator" in capsys.readouterr().err
    assert not out.exists()
    out.write_bytes(b"an older backup")
    code = main(["backup", "--nodes", "127.0.0.1:1", "-o", str(out), "--token", "t"])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"an older backup"


# ==================================================================================== process test


def replay_to(raft_dir: Path, index: int, dest: Path) -> str:
    """The canonical dump of a fresh database with the log in `raft_dir` applied up to `index`."""
    rec = FileStorage(raft_dir).load()
    assert rec.snapshot.index == 0, "the source compacted its log; raise snapshot_entries"
    conn = schema.connect(dest)
    try:
        apply_batch(conn, [(e.index, int(e.type), e.data) for e in rec.entries if e.index <= index])
        assert queries.applied_index(conn) == index
        return queries.canonical_dump(conn)
    finally:
        conn.close()


def without_tables(dump: str, *tables: str) -> str:
    """A canonical dump minus the rows of `tables` (the schema lines stay)."""
    out, skip = [], False
    for line in dump.splitlines():
        if line.startswith("table "):
            skip = line.split()[1] in tables
        elif not line.startswith("  "):
            skip = False
        if not skip:
            out.append(line)
    return "\n".join(out)


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=120)


@pytest.mark.slow
def test_backup_of_a_busy_cluster_restores_into_a_new_cluster(tmp_path, capsys):
    from .booking_helpers import ADMIN_PASSWORD, ADMIN_USER, PASSWORD, TEST_CARD, Api, day, expect_error, rid
    from .booking_helpers import quiesce, start_cluster
    from .cluster_harness import NodeProc, ProcessCluster, free_port_range, run, wait_until

    def hold_req(token, run_id, cls=SeatClass.AC2, names=("Pax One",), seats=()):
        return HoldRequest(token=token, request_id=rid(), run_id=run_id, seat_class=cls, from_station="TSA",
                           to_station="TSC", passengers=[PassengerInput(name=n, age=30) for n in names],
                           chosen_seats=[ChosenSeat(coach=c, seat=x) for c, x in seats])

    def pay_req(token, pnr):
        return PayRequest(token=token, request_id=rid(), pnr=pnr, card_number=TEST_CARD)

    # No early hold expiry: the restored cluster must not change what it restored while we compare.
    src = start_cluster(tmp_path / "src", env={"RAILRAFT_TEST_EXPIRY_LOOKAHEAD_MS": "0"})
    restored: ProcessCluster | None = None
    stop = threading.Event()
    acked_users: list[tuple[str, float]] = []
    acked_pnrs: list[tuple[str, float]] = []  # (pnr, when its hold was acknowledged)
    sent_pnrs: list[tuple[str, float]] = []  # (pnr, when its hold was sent)
    writer_errors: list[str] = []
    try:
        # ---- the source: a catalogue, customers with confirmed and held bookings
        async def setup():
            async with Api(src.addrs()) as api:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        admin = (await api.b("login", LoginRequest(username=ADMIN_USER, password=ADMIN_PASSWORD))).token
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
                for code in ("TSA", "TSB", "TSC"):
                    await api.b("add_station", AddStationRequest(token=admin, request_id=rid(), code=code,
                                                                 name=f"St {code}"))
                runs = {}
                for number, coaches in ((12001, [CoachInput(label="A1", seat_class=SeatClass.AC2, seats=10)]),
                                        (12002, [CoachInput(label=f"S{i}", seat_class=SeatClass.SLEEPER, seats=120)
                                                 for i in range(1, 5)])):
                    await api.b("add_train", AddTrainRequest(
                        token=admin, request_id=rid(), number=number, name=f"Train {number}", type="Express",
                        departure_time="08:00", coaches=coaches,
                        stops=[StopInput(station_code=c, arrival_offset_min=a, departure_offset_min=d, distance_km=k)
                               for c, a, d, k in (("TSA", 0, 0, 0), ("TSB", 120, 125, 100), ("TSC", 240, 240, 200))]))
                    sched = await api.b("schedule_runs", ScheduleRunsRequest(
                        token=admin, request_id=rid(), train_number=number, first_date=day(10), last_date=day(10)))
                    runs[number] = sched.runs[0].id
                booked = {}  # pnr -> (user, state, seats)
                for i in range(4):
                    s = await api.b("register", RegisterRequest(username=f"cust{i}", password=PASSWORD,
                                                                request_id=rid()), via=i)
                    h = await api.b("hold", hold_req(s.token, runs[12001], seats=[("A1", 2 * i + 1), ("A1", 2 * i + 2)],
                                                     names=(f"C{i} One", f"C{i} Two")), via=i + 1)
                    if i < 3:
                        h = await api.b("pay", pay_req(s.token, h.pnr), via=i + 2)
                        assert h.state == BookingState.CONFIRMED
                    booked[h.pnr] = (f"cust{i}", h.state, [(p.coach, p.seat) for p in h.passengers])
                w = await api.b("register", RegisterRequest(username="writer", password=PASSWORD, request_id=rid()))
                writer_tok = w.token
                return admin, runs, booked, writer_tok

        admin, runs, booked, writer_tok = run(setup())

        # ---- not an administrator, or no session: refused, nothing written (the CLI, in this process)
        async def customer_token():
            async with Api(src.addrs()) as api:
                return (await api.b("login", LoginRequest(username="cust0", password=PASSWORD))).token
        denied = tmp_path / "denied.rrbk"
        nodes = ",".join(src.addrs())
        assert main(["backup", "--nodes", nodes, "-o", str(denied), "--token", run(customer_token())]) == 4
        assert "PERMISSION_DENIED: only an administrator may do this" in capsys.readouterr().err
        assert main(["backup", "--nodes", nodes, "-o", str(denied), "--token", "not-a-session"]) == 3
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert not denied.exists() and not list(tmp_path.glob(".denied*"))

        # ---- a writer that keeps registering users and holding seats during the backup
        def writer():
            async def main_():
                async with Api(src.addrs()) as api:
                    i = 0
                    while not stop.is_set():
                        i += 1
                        try:
                            await api.b("register", RegisterRequest(username=f"wrt{i}", password=PASSWORD,
                                                                    request_id=rid()), via=i)
                            acked_users.append((f"wrt{i}", time.monotonic()))
                            sent = time.monotonic()
                            h = await api.b("hold", hold_req(writer_tok, runs[12002], cls=SeatClass.SLEEPER,
                                                             names=(f"W {i}",)), via=i)
                            acked_pnrs.append((h.pnr, time.monotonic()))
                            sent_pnrs.append((h.pnr, sent))
                        except Exception as e:  # noqa: BLE001 - reported by the test
                            writer_errors.append(repr(e))
                            return
            asyncio.run(main_())

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        wait_until(lambda: writer_errors or len(acked_pnrs) >= 5, 20, "the writer to get going")
        assert not writer_errors, writer_errors
        # Name only a follower: the CLI must follow its leader hint (the denied calls above found the leader
        # by asking every node's status).
        leader = src.wait_leader()
        follower = src.address(min(n for n in src.nodes if n != leader))
        out = tmp_path / "busy.rrbk"
        started = time.monotonic()
        p = cli("backup", "--nodes", follower, "-o", str(out), "--token", admin)
        finished = time.monotonic()
        wait_until(lambda: writer_errors or len([x for x, at in sent_pnrs if at > finished]) >= 3, 20,
                   "writes after the backup")
        stop.set()
        t.join(30)
        assert not t.is_alive() and not writer_errors, writer_errors
        assert p.returncode == 0, p.stdout + p.stderr
        header = bk.verify_backup(out, extract_to=tmp_path / "payload.db")
        index = header["applied_index"]
        print(p.stdout)
        assert f"wrote {out}" in p.stdout and f"applied index {index} (term {header['term']})" in p.stdout
        assert f"users {header['counts']['users']} (1 admin)" in p.stdout and "verified" in p.stdout
        # Served by the leader, though the CLI was given a follower (it followed the leader hint).
        assert header["source_address"] == src.address(header["source_node"]) != follower
        assert [m["id"] for m in header["members"]] == [1, 2, 3]
        assert header["read_index"] <= index
        for n in src.nodes.values():  # the leader's temporary copy is gone
            assert not list((n.data_dir / "snapshots").glob("backup-*")), n.id

        # Everything acknowledged before the command started is in it; the writer went on during it.
        before_users = {u for u, at in acked_users if at < started}
        before_pnrs = {x for x, at in acked_pnrs if at < started}
        conn = sqlite3.connect(tmp_path / "payload.db")
        have_users = {r[0] for r in conn.execute("SELECT username FROM users")}
        have_pnrs = {r[0] for r in conn.execute("SELECT pnr FROM bookings")}
        conn.close()
        assert before_users <= have_users and before_pnrs <= have_pnrs and set(booked) <= have_pnrs
        after = {x for x, at in sent_pnrs if at > finished}
        assert after and not after & have_pnrs, "writes sent after the backup cannot be in it"

        # The backup is exactly the source's state at its index: replay the source's own log up to there.
        src.close()
        leader_raft = src.nodes[leader].data_dir / "raft"
        replayed = replay_to(leader_raft, index, tmp_path / "replayed.db")
        assert dump_database(tmp_path / "payload.db") == replayed

        # ---- restore as a new cluster on new ports, then start it
        port = free_port_range(3)
        new_dir = tmp_path / "restored"
        p = cli("restore", str(out), "--data-dir", str(new_dir), "--nodes", "3", "--port", str(port),
                "--cluster-id", "restored-test")
        print(p.stdout)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"at index {index}" in p.stdout and "restored-test" in p.stdout

        class Restored(ProcessCluster):
            """The harness on a cluster.toml that restore wrote (ProcessCluster would write its own)."""

            def __init__(self, config_path: Path) -> None:
                self.root = config_path.parent
                self.cfg = load_config(config_path)
                self.config_path = config_path
                self.log_format = "text"
                self.env = {"RAILRAFT_HOUSEKEEPING_INTERVAL_MS": "200"}
                self.nodes = {n.id: NodeProc(n.id, n.host, n.port, self.cfg.node_dir(n.id),
                                             self.root / f"node{n.id}.log") for n in self.cfg.nodes}
                self.removed = set()

        restored = Restored(new_dir / "cluster.toml")
        restored.start_all()
        restored.wait_serving()
        new_leader = restored.wait_leader(timeout=15)
        st = restored.status(new_leader)
        assert st["cluster_id"] == "restored-test" and st["term"] > header["term"]
        assert {m["address"] for m in st["members"]} == {f"127.0.0.1:{port + i}" for i in range(3)}
        # Every replica holds the backup's state; only the applied index moved (the new leader's empty entry).
        # Read from the running nodes (WAL: a reader in another process sees the last committed batch).
        quiesce(restored)
        state = without_tables(replayed, "meta", "members")
        for nid in sorted(restored.nodes):
            assert without_tables(restored.dump(nid), "meta", "members") == state, f"node {nid} differs"

        # ---- it serves: old passwords, every acknowledged booking with its seats, new bookings
        async def check():
            async with Api(restored.addrs()) as api:
                admin2 = (await api.b("login", LoginRequest(username=ADMIN_USER, password=ADMIN_PASSWORD))).token
                for i in range(4):
                    s = await api.b("login", LoginRequest(username=f"cust{i}", password=PASSWORD), via=i)
                    mine = await api.b("my_bookings", MyBookingsRequest(token=s.token), via=i + 1)
                    got = {b.pnr: (b.state, [(x.coach, x.seat) for x in b.passengers]) for b in mine.bookings}
                    want = {pnr: (state, seats) for pnr, (user, state, seats) in booked.items() if user == f"cust{i}"}
                    assert got == want
                await expect_error(Status.UNAUTHENTICATED,
                                   api.b("login", LoginRequest(username="cust0", password="wrong-password")))
                for pnr in sorted(before_pnrs)[:20]:
                    b = await api.b("get_booking", GetBookingRequest(token=admin2, pnr=pnr))
                    assert b.state == BookingState.HELD and len(b.passengers) == 1 and b.passengers[0].seat
                # A user acknowledged before the backup logs in with the old password.
                some = sorted(before_users)[0]
                await api.b("login", LoginRequest(username=some, password=PASSWORD))
                # New writes: a booking on a seat nobody holds, and a new account.
                s = await api.b("register", RegisterRequest(username="newbie", password=PASSWORD, request_id=rid()))
                h = await api.b("hold", hold_req(s.token, runs[12001], seats=[("A1", 9)], names=("New One",)))
                h = await api.b("pay", pay_req(s.token, h.pnr))
                assert h.state == BookingState.CONFIRMED and [(x.coach, x.seat) for x in h.passengers] == [("A1", 9)]
                # The restored allocations hold: the one seat left is 10, then the coach is sold out.
                h = await api.b("hold", hold_req(s.token, runs[12001]))
                assert [(x.coach, x.seat) for x in h.passengers] == [("A1", 10)]
                await expect_error(Status.FAILED_PRECONDITION, api.b("hold", hold_req(s.token, runs[12001])),
                                   "sold out")

        run(check())
    finally:
        stop.set()
        errors = []
        for c in (restored, src):
            if c is not None:
                try:
                    c.close()
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
        assert not errors, errors
