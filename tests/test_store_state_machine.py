"""store.state_machine: the apply is deterministic, exactly-once, idempotent on replay, and isolates failures.

Synchronous tests over plain sqlite3 connections (store.schema.connect); the async wrapper is in
test_store_db.py.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import queries, schema, state_machine
from store.commands import (
    ALREADY_EXISTS,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    CreateSession,
    RegisterUser,
    RemoveMember,
    Result,
    RevokeSession,
    SetMember,
    encode_command,
)
from store.state_machine import KIND_CONF, KIND_NORMAL, ApplyOrderError, apply_batch

HOUR = 3_600_000
T0 = 1_700_000_000_000
TOKEN_A = "a" * 64
TOKEN_B = "b" * 64

_rid = itertools.count(1)


def cmd(cls, *, client: str = "c1", rid: str | None = None, ts: int = T0, **fields):
    """A command with fresh request id unless one is given."""
    return cls(request_id=rid if rid is not None else f"r{next(_rid)}", client_id=client, ts_ms=ts, **fields)


def register(username: str, role: str = "CUSTOMER", **kw) -> RegisterUser:
    return cmd(RegisterUser, username=username, password_hash="scrypt$16384$8$1$00$00", role=role, **kw)


def entries(commands, start: int = 1) -> list[tuple[int, int, bytes]]:
    """Log entries for commands (bytes are passed through, e.g. b"" for a no-op)."""
    return [
        (start + i, KIND_NORMAL, c if isinstance(c, bytes) else encode_command(c)) for i, c in enumerate(commands)
    ]


@pytest.fixture
def conn(tmp_path: Path):
    c = schema.connect(tmp_path / "node.db")
    yield c
    c.close()


def dump(c: sqlite3.Connection) -> str:
    return queries.canonical_dump(c)


# ------------------------------------------------------------------------------------------- schema


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = schema.connect(path)
    before = dump(first)
    assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert first.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    first.close()
    again = schema.connect(path)
    assert dump(again) == before
    assert queries.applied_index(again) == 0
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    c = schema.connect(path)
    c.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(schema.SchemaTooNewError):
        schema.connect(path)


def test_reader_connection_is_query_only(tmp_path: Path) -> None:
    schema.connect(tmp_path / "q.db").close()
    reader = schema.connect(tmp_path / "q.db", reader=True)
    with pytest.raises(sqlite3.OperationalError):
        reader.execute("DELETE FROM users")
    reader.close()


# ------------------------------------------------------------------------------------ user flows


def test_register_login_logout_flow(conn) -> None:
    [alice, dup, case_dup, bob] = apply_batch(
        conn,
        entries([register("alice"), register("alice"), register("ALICE"), register("bob", role="ADMIN")]),
    )
    assert alice == Result(True, OK, "registered user 'alice'", {"user_id": 1})
    assert dup == Result(False, ALREADY_EXISTS, "username 'alice' is already taken", {})
    assert case_dup.code == ALREADY_EXISTS and "'ALICE'" in case_dup.message
    assert bob.ok and bob.data == {"user_id": 2}

    user = queries.user_by_name(conn, "Alice")  # case-insensitive lookup
    assert user is not None and (user.id, user.username, user.role, user.created_ms) == (1, "alice", "CUSTOMER", T0)
    assert queries.user_by_id(conn, 2).role == "ADMIN"
    assert queries.user_by_name(conn, "carol") is None

    [login, ghost, clash, past] = apply_batch(
        conn,
        entries(
            [
                cmd(CreateSession, user_id=1, token_sha256=TOKEN_A, expires_at_ms=T0 + HOUR, ts=T0 + 5),
                cmd(CreateSession, user_id=99, token_sha256=TOKEN_B, expires_at_ms=T0 + HOUR),
                cmd(CreateSession, user_id=2, token_sha256=TOKEN_A, expires_at_ms=T0 + HOUR),
                cmd(CreateSession, user_id=2, token_sha256=TOKEN_B, expires_at_ms=T0 - 1),
            ],
            start=5,
        ),
    )
    assert login.ok
    assert login.data == {"user_id": 1, "username": "alice", "role": "CUSTOMER", "expires_at_ms": T0 + HOUR}
    assert ghost.code == NOT_FOUND and "user 99" in ghost.message
    assert clash.code == ALREADY_EXISTS
    assert past.code == INVALID_ARGUMENT
    s = queries.session(conn, TOKEN_A)
    assert s == queries.SessionInfo(1, "alice", "CUSTOMER", T0 + HOUR, False)
    assert s.is_live(T0 + 10) and not s.is_live(T0 + HOUR)
    assert queries.session(conn, TOKEN_B) is None

    before = dump(conn)
    [logout, again, unknown, malformed] = apply_batch(
        conn,
        entries(
            [
                cmd(RevokeSession, token_sha256=TOKEN_A, ts=T0 + 100),
                cmd(RevokeSession, token_sha256=TOKEN_A, ts=T0 + 200),
                cmd(RevokeSession, token_sha256=TOKEN_B),
                cmd(RevokeSession, token_sha256="not-a-hash"),
            ],
            start=9,
        ),
    )
    assert logout.ok and logout.data == {"user_id": 1}
    assert again.code == NOT_FOUND and unknown.code == NOT_FOUND
    assert malformed.code == INVALID_ARGUMENT
    assert queries.session(conn, TOKEN_A).revoked
    row = conn.execute("SELECT revoked_ms FROM sessions WHERE token_sha256 = ?", (TOKEN_A,)).fetchone()
    assert row == (T0 + 100,)  # the failed second revoke changed nothing
    assert dump(conn) != before  # the first revoke did


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        (register("ab"), "3 to 32 characters"),
        (register("x" * 33), "3 to 32 characters"),
        (register("bob smith"), "only letters, digits"),
        (register("bøb"), "only letters, digits"),
        (register("bob", role="ROOT"), "role must be one of"),
        (cmd(RegisterUser, username="bob", password_hash="", role="CUSTOMER"), "password_hash"),
        (cmd(SetMember, node_id=0, host="h", port=1), "node_id"),
        (cmd(SetMember, node_id=1, host="", port=1), "host"),
        (cmd(SetMember, node_id=1, host="h", port=70000), "port"),
        (register("bob", ts=-1), "ts_ms"),
    ],
)
def test_invalid_commands_change_nothing_but_the_index(conn, command, needle: str) -> None:
    before = dump(conn)
    [result] = apply_batch(conn, entries([command]))
    assert result.code == INVALID_ARGUMENT and needle in result.message
    after = dump(conn)
    assert queries.user_by_name(conn, "bob") is None and queries.members(conn) == []
    # Only the index, the clock and the remembered result differ.
    changed = set(after.splitlines()) - set(before.splitlines())
    assert all(line.startswith(("  'applied_index'", "  'clock_ms'", "  'c1'")) for line in changed), changed


def test_members_address_book(conn) -> None:
    results = apply_batch(
        conn,
        entries(
            [
                cmd(SetMember, node_id=2, host="10.0.0.2", port=7002),
                cmd(SetMember, node_id=1, host="10.0.0.1", port=7001),
                cmd(SetMember, node_id=2, host="node2.local", port=7012),  # update
                cmd(RemoveMember, node_id=1),
                cmd(RemoveMember, node_id=1),
            ]
        ),
    )
    assert [r.code for r in results] == [OK, OK, OK, OK, NOT_FOUND]
    assert queries.members(conn) == [queries.Member(2, "node2.local", 7012)]


def test_undecodable_entry_is_an_error_result(conn) -> None:
    log = [(1, KIND_NORMAL, b'{"t":"nope"}'), (2, KIND_NORMAL, encode_command(register("bob")))]
    [bad, good] = apply_batch(conn, log)
    assert bad.code == INVALID_ARGUMENT and "unknown command type 'nope'" in bad.message
    assert good.ok and queries.applied_index(conn) == 2


# --------------------------------------------------------------------------------- index handling


def test_noops_and_conf_entries_only_advance_the_index(conn) -> None:
    before = dump(conn)
    assert apply_batch(conn, [(1, KIND_NORMAL, b""), (2, KIND_CONF, b'{"voters":[1,2,3]}')]) == [None, None]
    assert queries.applied_index(conn) == 2
    assert dump(conn) == before.replace("'applied_index'|0", "'applied_index'|2")


def test_entries_at_or_below_applied_index_are_skipped(conn) -> None:
    log = entries([register("alice"), register("bob"), register("carol")])
    first = apply_batch(conn, log[:2])
    state = dump(conn)
    assert apply_batch(conn, log[:2]) == [None, None]
    assert dump(conn) == state
    results = apply_batch(conn, log)  # overlapping redelivery: only index 3 is new
    assert results[:2] == [None, None] and results[2].data == {"user_id": 3}
    assert first[1].data == {"user_id": 2}


def test_gap_in_indexes_applies_nothing(conn) -> None:
    apply_batch(conn, entries([register("alice")]))
    state = dump(conn)
    with pytest.raises(ApplyOrderError):
        apply_batch(conn, entries([register("bob")], start=2) + entries([register("carol")], start=4))
    assert dump(conn) == state and not conn.in_transaction
    with pytest.raises(ValueError, match="unknown entry kind"):
        apply_batch(conn, [(2, 7, b"x")])
    assert dump(conn) == state


def test_empty_batch(conn) -> None:
    assert apply_batch(conn, []) == []


# ------------------------------------------------------------------------------------- isolation


def test_failing_command_in_the_middle_leaves_the_others_applied(conn) -> None:
    results = apply_batch(conn, entries([register("alice"), register("alice"), register("bob")]))
    assert [r.code for r in results] == [OK, ALREADY_EXISTS, OK]
    assert [u for u in ("alice", "bob") if queries.user_by_name(conn, u)] == ["alice", "bob"]
    assert queries.applied_index(conn) == 3


def test_exception_part_way_rolls_back_only_that_command(conn) -> None:
    """A handler that writes, then crashes: its write is undone, the result is INTERNAL, the batch goes on."""
    real = state_machine._HANDLERS[SetMember]

    def half_then_crash(c, command):
        real(c, command)  # the member row is written...
        raise KeyError("boom")  # ...then a bug

    log = entries([register("alice"), cmd(SetMember, node_id=1, host="h", port=1, rid="sm"), register("bob")])
    with mock.patch.dict(state_machine._HANDLERS, {SetMember: half_then_crash}):
        results = apply_batch(conn, log)
    assert [r.code for r in results] == [OK, INTERNAL, OK]
    assert "KeyError" in results[1].message
    assert queries.members(conn) == []
    # INTERNAL results are not remembered: a retry of the same request runs again (here: fixed code).
    [retry] = apply_batch(conn, [(4, KIND_NORMAL, log[1][2])])
    assert retry.ok and queries.members(conn) == [queries.Member(1, "h", 1)]


def test_environmental_error_aborts_the_whole_batch(conn) -> None:
    def disk_trouble(c, command):
        raise sqlite3.OperationalError("disk I/O error")

    state = dump(conn)
    with mock.patch.dict(state_machine._HANDLERS, {SetMember: disk_trouble}):
        with pytest.raises(sqlite3.OperationalError):
            apply_batch(conn, entries([register("alice"), cmd(SetMember, node_id=1, host="h", port=1)]))
    assert dump(conn) == state and not conn.in_transaction


# ---------------------------------------------------------------------------------- exactly-once


def test_duplicate_request_returns_first_result_without_reapplying(conn) -> None:
    first = register("alice", rid="req-1")
    retry_later = register("alice-renamed", rid="req-1", ts=T0 + 50)  # same request id, different content
    other_client = register("bob", client="c2", rid="req-1")
    results = apply_batch(conn, entries([first, retry_later, other_client]))
    assert results[0] == results[1] == Result(True, OK, "registered user 'alice'", {"user_id": 1})
    assert results[2].data == {"user_id": 2}  # request ids are per client
    assert queries.user_by_name(conn, "alice-renamed") is None

    # Failures are remembered too: the retry of a failed request gets the same failure even after the cause
    # went away.
    fail = cmd(RevokeSession, token_sha256=TOKEN_A, rid="logout-1")
    [f1] = apply_batch(conn, entries([fail], start=4))
    apply_batch(conn, entries([cmd(CreateSession, user_id=1, token_sha256=TOKEN_A, expires_at_ms=T0 + HOUR)], start=5))
    [f2] = apply_batch(conn, entries([fail], start=6))
    assert f1 == f2 and f1.code == NOT_FOUND
    assert not queries.session(conn, TOKEN_A).revoked


def test_a_request_id_reused_for_another_kind_of_command_is_not_a_retry(conn) -> None:
    [first] = apply_batch(conn, entries([register("alice", client="user:9", rid="same")]))
    assert first.ok
    before = dump(conn)
    # Same client, same request id, another command: refused, nothing applied, nothing remembered.
    [other] = apply_batch(conn, entries([cmd(SetMember, node_id=3, host="h", port=3, client="user:9", rid="same")],
                                        start=2))
    assert other.code == INVALID_ARGUMENT and "already used for another kind of request" in other.message
    assert queries.members(conn) == []
    assert dump(conn).replace("'applied_index'|2", "'applied_index'|1") == before
    # The real retry still gets the first answer; the stored kind is the command's type tag.
    [again] = apply_batch(conn, entries([register("alice", client="user:9", rid="same")], start=3))
    assert again == first
    assert conn.execute("SELECT command FROM client_requests").fetchall() == [("register_user",)]
    with pytest.raises(queries.RequestIdReused):
        queries.request_result(conn, "user:9", "same", "set_member")
    assert queries.request_result(conn, "user:9", "same", "register_user") is not None


def test_empty_request_id_opts_out_of_deduplication(conn) -> None:
    a = cmd(SetMember, node_id=1, host="h", port=1, rid="")
    b = cmd(SetMember, node_id=1, host="h2", port=2, rid="")
    assert [r.ok for r in apply_batch(conn, entries([a, b]))] == [True, True]
    assert queries.members(conn) == [queries.Member(1, "h2", 2)]
    assert conn.execute("SELECT COUNT(*) FROM client_requests").fetchone()[0] == 0


def test_pruning_is_deterministic_and_bounded(conn) -> None:
    with mock.patch.object(state_machine, "PRUNE_EVERY", 4):
        apply_batch(
            conn,
            entries(
                [
                    register("alice", rid="old", ts=T0),
                    cmd(CreateSession, user_id=1, token_sha256=TOKEN_A, expires_at_ms=T0 + HOUR, ts=T0),
                    register("bob", rid="new", ts=T0 + 30 * HOUR),
                ]
            ),
        )
        assert conn.execute("SELECT COUNT(*) FROM client_requests").fetchone()[0] == 3
        apply_batch(conn, [(4, KIND_NORMAL, b"")])  # index 4: prune, with the replicated clock at T0 + 30 h
    rows = conn.execute("SELECT request_id FROM client_requests").fetchall()
    assert rows == [("new",)]
    assert queries.session(conn, TOKEN_A) is None  # expired more than 24 h ago
    # A retry of the pruned request is applied afresh (and fails on its own merits).
    [again] = apply_batch(conn, entries([register("alice", rid="old", ts=T0 + 31 * HOUR)], start=5))
    assert again.code == ALREADY_EXISTS


def test_clock_is_the_largest_ts_seen(conn) -> None:
    apply_batch(conn, entries([register("a1b", ts=T0 + 10), register("b2c", ts=T0 + 5)]))
    assert state_machine.read_meta_int(conn, "clock_ms") == T0 + 10


# ---------------------------------------------------------------------------------- determinism


def test_same_log_gives_identical_databases_and_twice_equals_once(tmp_path: Path) -> None:
    log = entries(
        [
            register("alice"),
            register("alice"),
            b"",
            cmd(CreateSession, user_id=1, token_sha256=TOKEN_A, expires_at_ms=T0 + HOUR),
            cmd(SetMember, node_id=3, host="10.0.0.3", port=7003),
            cmd(RevokeSession, token_sha256=TOKEN_A, ts=T0 + 10),
            b"garbage",
        ]
    )
    a, b = schema.connect(tmp_path / "a.db"), schema.connect(tmp_path / "b.db")
    try:
        ra = apply_batch(a, log)
        rb = [apply_batch(b, [e])[0] for e in log]
        assert ra == rb
        assert dump(a) == dump(b)
        state = dump(a)
        assert apply_batch(a, log) == [None] * len(log)
        assert dump(a) == state
    finally:
        a.close()
        b.close()


# Small pools so that random sequences collide: duplicate names, request ids, tokens, members.
_names = st.sampled_from(["alice", "ALICE", "bob", "carol", "x", "bad name"])
_tokens = st.sampled_from([TOKEN_A, TOKEN_B, "c" * 64, "bad"])
_clients = st.sampled_from(["c1", "c2"])
_rids = st.sampled_from(["", "r1", "r2", "r3", "r4", "r5"])


@st.composite
def _log(draw) -> list[tuple[int, int, bytes]]:
    n = draw(st.integers(1, 40))
    ts = T0
    out = []
    for index in range(1, n + 1):
        ts += draw(st.sampled_from([0, 1, 1000, -5, 13 * HOUR]))  # may go backwards; big jumps prune
        base = {"request_id": draw(_rids), "client_id": draw(_clients), "ts_ms": ts}
        kind = draw(st.integers(0, 8))
        if kind == 0:
            role = draw(st.sampled_from(["CUSTOMER", "ADMIN", "ROOT"]))
            c = RegisterUser(**base, username=draw(_names), password_hash="h", role=role)
        elif kind == 1:
            c = CreateSession(**base, user_id=draw(st.integers(0, 4)), token_sha256=draw(_tokens),
                              expires_at_ms=ts + draw(st.sampled_from([-1, HOUR, 40 * HOUR])))
        elif kind == 2:
            c = RevokeSession(**base, token_sha256=draw(_tokens))
        elif kind == 3:
            c = SetMember(**base, node_id=draw(st.integers(0, 3)), host=draw(st.sampled_from(["h1", "h2"])),
                          port=draw(st.sampled_from([1, 7000, 0])))
        elif kind == 4:
            c = RemoveMember(**base, node_id=draw(st.integers(1, 3)))
        if kind <= 4:
            out.append((index, KIND_NORMAL, encode_command(c)))
        elif kind == 5:
            out.append((index, KIND_NORMAL, b""))
        elif kind == 6:
            out.append((index, KIND_CONF, b'{"voters":[1]}'))
        elif kind == 7:
            out.append((index, KIND_NORMAL, draw(st.binary(max_size=8))))
        else:  # re-propose an earlier command verbatim (a client retry through a new leader)
            earlier = [e for e in out if e[1] == KIND_NORMAL and e[2]]
            out.append((index, KIND_NORMAL, earlier[-1][2] if earlier else b""))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=_log(), data=st.data())
def test_random_batchings_equal_one_by_one(log, data) -> None:
    """Any batching, with any overlapping redelivery, gives the same results and byte-identical state."""
    with mock.patch.object(state_machine, "PRUNE_EVERY", 7):
        one = schema.connect(":memory:")
        many = schema.connect(":memory:")
        try:
            expected = [apply_batch(one, [e])[0] for e in log]
            got: dict[int, Result | None] = {}
            pos = 0  # first index not yet delivered
            while pos < len(log):
                back = data.draw(st.integers(0, min(pos, 3)), label="redeliver")
                size = data.draw(st.integers(1, 10), label="batch")
                chunk = log[pos - back : pos + size]
                results = apply_batch(many, chunk)
                assert results[:back] == [None] * back
                for (index, _, _), r in zip(chunk[back:], results[back:]):
                    got[index] = r
                pos += size
            assert [got[i] for i in range(1, len(log) + 1)] == expected
            assert dump(many) == dump(one)
            assert apply_batch(many, log) == [None] * len(log)
            assert dump(many) == dump(one)
        finally:
            one.close()
            many.close()
