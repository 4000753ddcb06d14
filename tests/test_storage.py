"""Tests for raft.storage (interface, MemoryStorage) and raft.filestorage (FileStorage).

The file tests corrupt segment files by hand, so they rely on the record layout:
``length u32 | crc32 u32 | term u64 | index u64 | type u8 | data``.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raft.filestorage import FileStorage, segment_name
from raft.storage import CorruptLogError, LogStorage, MemoryStorage, Recovered, StorageClosedError
from raft.types import Configuration, Entry, EntryType, HardState, SnapshotMeta

DATA_LEN = 20
RECORD = 8 + 17 + DATA_LEN  # bytes per record written by `ents`
CONF = Configuration(frozenset({1, 2, 3}), frozenset({4}))


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    """Entries lo..hi inclusive, each with DATA_LEN bytes of data."""
    return [
        Entry(term, i, EntryType.NORMAL, f"cmd-{i:06d}-t{term:03d}".encode().ljust(DATA_LEN, b"."))
        for i in range(lo, hi + 1)
    ]


def segments(d: Path) -> list[Path]:
    """Segment files in index order."""
    return sorted(d.glob("log-*.seg"))


def reopen(d: Path, segment_bytes: int = 64 * 1024 * 1024) -> tuple[FileStorage, Recovered]:
    s = FileStorage(d, segment_bytes)
    return s, s.load()


def indexes(r: Recovered) -> list[int]:
    return [e.index for e in r.entries]


def torn_reports(r: Recovered) -> list[str]:
    return [line for line in r.report if "torn tail" in line]


@pytest.fixture(params=["memory", "file"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> LogStorage:
    s: LogStorage = MemoryStorage() if request.param == "memory" else FileStorage(tmp_path / "raft", 200)
    yield s
    s.close()


# ----- semantics shared by both implementations -----


def test_implementations_satisfy_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryStorage(), LogStorage)
    assert isinstance(FileStorage(tmp_path), LogStorage)


def test_empty(storage: LogStorage) -> None:
    r = storage.load()
    assert (r.hard_state, r.snapshot, r.entries) == (HardState(), SnapshotMeta(), [])
    assert (storage.first_index(), storage.last_index()) == (1, 0)


def test_append_replace_and_hard_state(storage: LogStorage) -> None:
    storage.save(hard_state=HardState(1, 2, 0), entries=ents(1, 10))
    storage.save(entries=ents(6, 8, term=2), hard_state=HardState(2, 3, 5))
    r = storage.load()
    assert r.entries == ents(1, 5) + ents(6, 8, term=2)
    assert r.hard_state == HardState(2, 3, 5)
    assert storage.last_index() == 8
    r.entries.clear()  # load() hands out a copy
    assert len(storage.load().entries) == 8


def test_invalid_requests_change_nothing(storage: LogStorage) -> None:
    storage.save(entries=ents(1, 5, term=2))
    storage.compact(SnapshotMeta(2, 2, CONF))
    before = storage.load()
    bad_calls = [
        lambda: storage.save(entries=ents(7, 8, term=2)),  # gap after last index 5
        lambda: storage.save(entries=ents(2, 3, term=2)),  # not after the snapshot
        lambda: storage.save(entries=ents(4, 5, term=1)),  # term goes backwards
        lambda: storage.save(entries=[Entry(2, 6), Entry(2, 8)]),  # not consecutive
        lambda: storage.save(entries=[Entry(3, 6), Entry(2, 7)]),  # term backwards inside the batch
        lambda: storage.save(snapshot=SnapshotMeta(1, 1)),  # older than the stored snapshot
        lambda: storage.save(snapshot=SnapshotMeta(9, 3), entries=ents(11, 11, term=3)),  # gap after snapshot
        lambda: storage.save(snapshot=SnapshotMeta(9, 3), entries=ents(10, 10, term=2)),  # below snapshot term
        lambda: storage.compact(SnapshotMeta(6, 2)),  # beyond the last index
        lambda: storage.compact(SnapshotMeta(1, 2)),  # below the snapshot
        lambda: storage.compact(SnapshotMeta(4, 1)),  # wrong term
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()
    after = storage.load()
    assert (after.hard_state, after.snapshot, after.entries) == (before.hard_state, before.snapshot, before.entries)


def test_snapshot_discards_all_entries(storage: LogStorage) -> None:
    storage.save(entries=ents(1, 10))
    storage.save(snapshot=SnapshotMeta(4, 1, CONF), entries=ents(5, 6, term=3), hard_state=HardState(3, 0, 4))
    r = storage.load()
    assert r.snapshot == SnapshotMeta(4, 1, CONF)
    assert r.entries == ents(5, 6, term=3)
    assert (storage.first_index(), storage.last_index()) == (5, 6)


def test_closed_storage_refuses_calls(storage: LogStorage) -> None:
    storage.save(entries=ents(1, 1))
    storage.close()
    storage.close()
    with pytest.raises(StorageClosedError):
        storage.save(entries=ents(2, 2))
    with pytest.raises(StorageClosedError):
        storage.load()


# ----- FileStorage on disk -----


def test_missing_directory_is_created(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    s, r = reopen(d)
    assert d.is_dir() and r.entries == []
    s.close()


def test_round_trip_over_restart(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path)
    log = [
        Entry(1, 1),  # a leader's no-op: empty data
        Entry(1, 2, EntryType.CONF, CONF.encode()),
        Entry(2, 3, EntryType.NORMAL, bytes(range(256)) * 10),
    ]
    s.save(hard_state=HardState(1, 1, 0), entries=log[:2])
    s.save(hard_state=HardState(2, 3, 2), entries=log[2:])
    assert s.log_bytes() == sum(8 + 17 + len(e.data) for e in log)
    s.close()
    s, r = reopen(tmp_path)
    assert r.entries == log and r.hard_state == HardState(2, 3, 2) and r.snapshot == SnapshotMeta()
    assert torn_reports(r) == [] and r.report  # a summary line, nothing repaired
    s.close()


def test_hard_state_only_writes_no_log(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path)
    s.save(hard_state=HardState(5, 2, 0))
    assert segments(tmp_path) == [] and s.log_bytes() == 0
    s.close()
    assert reopen(tmp_path)[1].hard_state == HardState(5, 2, 0)


def test_segments_roll_and_suffix_replacement_across_them(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 40))
    names = [p.name for p in segments(tmp_path)]
    assert len(names) >= 8 and names[0] == segment_name(1)
    firsts = [int(n[4:24]) for n in names]
    # Replace from the middle of a segment, across several later segments.
    cut = firsts[3] + 2
    s.save(entries=ents(cut, cut + 3, term=2))
    expected = ents(1, cut - 1) + ents(cut, cut + 3, term=2)
    assert s.load().entries == expected
    assert all(int(p.name[4:24]) <= cut + 3 for p in segments(tmp_path))  # no stale segments
    # Replace from exactly the first index of a segment: that file goes too.
    s.save(entries=ents(firsts[2], firsts[2], term=3))
    expected = ents(1, firsts[2] - 1) + ents(firsts[2], firsts[2], term=3)
    s.close()
    s, r = reopen(tmp_path, 200)
    assert r.entries == expected and torn_reports(r) == []
    assert s.log_bytes() == sum(p.stat().st_size for p in segments(tmp_path))
    s.save(entries=ents(firsts[2] + 1, 60, term=3))
    s.close()
    assert indexes(reopen(tmp_path, 200)[1]) == list(range(1, 61))


def test_big_batch_spans_segments(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 100)
    s.save(entries=ents(1, 30))
    assert len(segments(tmp_path)) >= 10
    s.close()
    assert reopen(tmp_path, 100)[1].entries == ents(1, 30)


def test_compaction_deletes_segments_and_survives_restart(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 50))
    before = segments(tmp_path)
    s.compact(SnapshotMeta(30, 1, CONF))
    after = segments(tmp_path)
    assert len(after) < len(before)
    # Every remaining segment holds something after 30, and the first one starts at or before 31.
    assert int(after[0].name[4:24]) <= 31 < int(after[1].name[4:24])
    assert (s.first_index(), s.last_index()) == (31, 50)
    s.close()
    s, r = reopen(tmp_path, 200)
    assert r.snapshot == SnapshotMeta(30, 1, CONF) and r.entries == ents(31, 50)
    s.save(entries=ents(51, 55))
    s.compact(SnapshotMeta(55, 1, CONF))  # everything: no segment left
    assert segments(tmp_path) == [] and s.log_bytes() == 0
    s.save(entries=ents(56, 57))
    assert [p.name for p in segments(tmp_path)] == [segment_name(56)]
    s.close()
    s, r = reopen(tmp_path, 200)
    assert r.entries == ents(56, 57) and r.snapshot.index == 55
    s.close()


def test_snapshot_beyond_log_starts_fresh_segment(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 20))
    s.save(snapshot=SnapshotMeta(100, 4, CONF), hard_state=HardState(4, 0, 100))
    assert segments(tmp_path) == [] and s.last_index() == 100
    s.save(entries=ents(101, 102, term=4))
    assert [p.name for p in segments(tmp_path)] == [segment_name(101)]
    s.close()
    s, r = reopen(tmp_path, 200)
    assert r.snapshot == SnapshotMeta(100, 4, CONF) and r.entries == ents(101, 102, term=4)
    assert r.hard_state == HardState(4, 0, 100)
    s.close()


def test_interrupted_compaction_is_finished_by_recovery(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 50))
    saved = {p.name: p.read_bytes() for p in segments(tmp_path)}
    s.compact(SnapshotMeta(30, 1))
    s.close()
    for name, data in saved.items():  # as if the deletions never reached the disk
        (tmp_path / name).write_bytes(data)
    s, r = reopen(tmp_path, 200)
    assert r.entries == ents(31, 50)
    assert any("covered by the snapshot" in line for line in r.report)
    assert int(segments(tmp_path)[0].name[4:24]) <= 31
    s.close()


def test_interrupted_snapshot_install_is_finished_by_recovery(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 20))
    s.save(entries=ents(21, 21))  # the segment holding 21 also holds earlier entries
    s.save(snapshot=SnapshotMeta(20, 1))
    s.close()
    # Crash after the truncation and the metadata, before the deletions: old segments ending at 20 remain.
    s2, _ = reopen(tmp_path / "other", 200)
    s2.save(entries=ents(1, 20))
    s2.close()
    for p in segments(tmp_path / "other"):
        shutil.copy(p, tmp_path / p.name)
    s, r = reopen(tmp_path, 200)
    assert r.entries == [] and r.snapshot.index == 20 and segments(tmp_path) == []
    s.save(entries=ents(21, 22, term=2))
    s.close()
    assert reopen(tmp_path, 200)[1].entries == ents(21, 22, term=2)


# ----- torn tails: truncated, reported, and the node carries on -----


def _write_ten(d: Path) -> Path:
    s, _ = reopen(d)
    s.save(entries=ents(1, 10), hard_state=HardState(1, 1, 3))
    s.close()
    [seg] = segments(d)
    assert seg.stat().st_size == 10 * RECORD
    return seg


def _carry_on(d: Path, last: int) -> None:
    s, r = reopen(d)
    assert indexes(r) == list(range(1, last + 1)) and torn_reports(r) == []
    s.save(entries=ents(last + 1, last + 3, term=2))
    s.close()
    s, r = reopen(d)
    assert indexes(r) == list(range(1, last + 4)) and torn_reports(r) == []
    assert r.hard_state == HardState(1, 1, 3)
    s.close()


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 24, 25, RECORD - 1])
def test_torn_tail_cut_short(tmp_path: Path, cut: int) -> None:
    seg = _write_ten(tmp_path)
    os.truncate(seg, 10 * RECORD - cut)
    s, r = reopen(tmp_path)
    assert indexes(r) == list(range(1, 10))
    [line] = torn_reports(r)
    assert "index 10" in line and seg.name in line and f"({RECORD - cut} bytes" in line
    assert seg.stat().st_size == 9 * RECORD
    s.close()
    _carry_on(tmp_path, 9)


@pytest.mark.parametrize("junk", [b"\0" * 100, b"\0" * 3, b"\xff" * 50, bytes(range(7, 250, 3))])
def test_torn_tail_junk_appended(tmp_path: Path, junk: bytes) -> None:
    seg = _write_ten(tmp_path)
    with open(seg, "ab") as f:
        f.write(junk)
    s, r = reopen(tmp_path)
    assert indexes(r) == list(range(1, 11))
    [line] = torn_reports(r)
    assert "index 11" in line and f"({len(junk)} bytes" in line
    s.close()
    _carry_on(tmp_path, 10)


@pytest.mark.parametrize("where", [0, 3, 5, 9, 17, RECORD - 1])  # length, crc, term, index, data bytes
def test_torn_tail_flipped_byte_in_last_record(tmp_path: Path, where: int) -> None:
    seg = _write_ten(tmp_path)
    _flip(seg, 9 * RECORD + where)
    s, r = reopen(tmp_path)
    assert indexes(r) == list(range(1, 10))
    assert len(torn_reports(r)) == 1
    s.close()
    _carry_on(tmp_path, 9)


def test_torn_tail_whole_segment_garbage(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 10))
    s.close()
    last = segments(tmp_path)[-1]
    first = int(last.name[4:24])
    last.write_bytes(b"\0" * last.stat().st_size)
    s, r = reopen(tmp_path, 200)
    assert indexes(r) == list(range(1, first)) and torn_reports(r)
    assert not last.exists()  # an emptied last segment is removed; appends start a new one
    s.save(entries=ents(first, first + 5, term=2))
    s.close()
    assert indexes(reopen(tmp_path, 200)[1]) == list(range(1, first + 6))


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


# ----- damage followed by good data: refuse to start -----


@pytest.mark.parametrize("where", [0, 2, 5, 12, 20, 30])
def test_corrupt_middle_record_in_last_segment(tmp_path: Path, where: int) -> None:
    seg = _write_ten(tmp_path)
    _flip(seg, 4 * RECORD + where)
    size = seg.stat().st_size
    with pytest.raises(CorruptLogError) as info:
        reopen(tmp_path)
    msg = str(info.value)
    assert seg.name in msg and f"offset {4 * RECORD}" in msg and "index 5" in msg
    assert seg.stat().st_size == size  # nothing was truncated


def test_zeroed_middle_record_in_last_segment(tmp_path: Path) -> None:
    seg = _write_ten(tmp_path)
    with open(seg, "r+b") as f:
        f.seek(2 * RECORD)
        f.write(b"\0" * RECORD)
    with pytest.raises(CorruptLogError, match=seg.name):
        reopen(tmp_path)


@pytest.mark.parametrize("record", ["first", "last"])
def test_corrupt_record_in_earlier_segment(tmp_path: Path, record: str) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 20))
    s.close()
    seg = segments(tmp_path)[1]
    _flip(seg, 30 if record == "first" else seg.stat().st_size - 3)
    with pytest.raises(CorruptLogError, match=seg.name):
        reopen(tmp_path, 200)


def test_torn_tail_in_earlier_segment_is_corruption(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 20))
    s.close()
    seg = segments(tmp_path)[1]
    os.truncate(seg, seg.stat().st_size - 5)
    with pytest.raises(CorruptLogError, match=seg.name):
        reopen(tmp_path, 200)


def test_missing_segment_is_corruption(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path, 200)
    s.save(entries=ents(1, 20))
    s.close()
    segments(tmp_path)[1].unlink()
    with pytest.raises(CorruptLogError, match="previous segment ends at"):
        reopen(tmp_path, 200)


def test_intact_record_with_wrong_index_is_corruption(tmp_path: Path) -> None:
    seg = _write_ten(tmp_path)
    with open(seg, "ab") as f:  # a well-formed record for index 12 after index 10
        body = struct.pack("<QQB", 1, 12, 0) + b"x"
        f.write(struct.pack("<II", len(body), zlib.crc32(body)) + body)
    with pytest.raises(CorruptLogError, match="has index 12, expected 11"):
        reopen(tmp_path)


# ----- hard state and snapshot metadata files -----


def test_leftover_temp_files_are_ignored(tmp_path: Path) -> None:
    s, _ = reopen(tmp_path)
    s.save(hard_state=HardState(3, 1, 0), entries=ents(1, 3))
    s.compact(SnapshotMeta(2, 1, CONF))
    s.close()
    # A crash in the middle of an atomic replace leaves a half-written temp file beside the real one.
    (tmp_path / "state.bin.tmp").write_bytes(b"\x01\x02")
    (tmp_path / "snapshot.meta.tmp").write_bytes(b'{"index": 99')
    s, r = reopen(tmp_path)
    assert r.hard_state == HardState(3, 1, 0) and r.snapshot == SnapshotMeta(2, 1, CONF)
    assert sum("temp file" in line for line in r.report) == 2
    assert not (tmp_path / "state.bin.tmp").exists()
    s.save(hard_state=HardState(4, 0, 0))
    s.close()
    assert reopen(tmp_path)[1].hard_state == HardState(4, 0, 0)


@pytest.mark.parametrize("name", ["state.bin", "snapshot.meta"])
def test_corrupt_state_files_are_refused(tmp_path: Path, name: str) -> None:
    s, _ = reopen(tmp_path)
    s.save(hard_state=HardState(3, 1, 0), entries=ents(1, 3))
    s.compact(SnapshotMeta(2, 1, CONF))
    s.close()
    _flip(tmp_path / name, 10)
    with pytest.raises(CorruptLogError, match=name):
        reopen(tmp_path)


# ----- model-based: FileStorage behaves exactly like MemoryStorage, across restarts -----


class StorageTwins(RuleBasedStateMachine):
    """Random save/compact/reopen sequences applied to both implementations must load identically."""

    def __init__(self) -> None:
        super().__init__()
        # Many runs of many fsyncs and renames: on tmpfs (if there is one) they cost nothing, and this test
        # is about agreeing with the twin, not about the disk.
        shm = "/dev/shm"
        fast = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="railraft-storage-", dir=fast)
        self.mem = MemoryStorage()
        self.file: FileStorage | None = None
        self.segment_bytes = 0

    @initialize(segment_bytes=st.sampled_from([1, 60, 150, 400, 1 << 20]))
    def start(self, segment_bytes: int) -> None:
        self.segment_bytes = segment_bytes
        self.file, _ = reopen(Path(self.dir), segment_bytes)

    def teardown(self) -> None:
        if self.file is not None:
            self.file.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, call: str, **kwargs: object) -> None:
        """Apply the same call to both; they must agree on whether it is valid."""
        outcomes = []
        for s in (self.mem, self.file):
            try:
                getattr(s, call)(**kwargs)
                outcomes.append(None)
            except ValueError as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1], (call, kwargs, outcomes)

    def term_at(self, index: int) -> int:
        r = self.mem.load()
        if index == r.snapshot.index:
            return r.snapshot.term
        return r.entries[index - r.snapshot.index - 1].term

    @rule(data=st.data(), count=st.integers(1, 6), bump=st.integers(0, 2), size=st.integers(0, 40),
          with_hs=st.booleans())
    def append(self, data: st.DataObject, count: int, bump: int, size: int, with_hs: bool) -> None:
        first = data.draw(st.integers(self.mem.first_index(), self.mem.last_index() + 1), label="first")
        term = self.term_at(first - 1) + bump
        batch = [Entry(term, i, EntryType(i % 2), bytes([i % 251]) * size) for i in range(first, first + count)]
        hs = HardState(term, 1, min(first, self.mem.last_index())) if with_hs else None
        self.both("save", entries=batch, hard_state=hs)

    @rule(count=st.integers(1, 12), size=st.integers(0, 40))
    def append_at_end(self, count: int, size: int) -> None:
        first = self.mem.last_index() + 1
        batch = [Entry(self.term_at(first - 1), i, data=bytes([i % 251]) * size) for i in range(first, first + count)]
        self.both("save", entries=batch)

    @rule(data=st.data())
    def append_invalid(self, data: st.DataObject) -> None:
        first = data.draw(
            st.sampled_from([self.mem.last_index() + 2, self.mem.first_index() - 1, self.mem.last_index() + 9])
        )
        self.both("save", entries=[Entry(1000, first)])

    @rule(term=st.integers(0, 50), vote=st.integers(0, 5), commit=st.integers(0, 100))
    def hard_state(self, term: int, vote: int, commit: int) -> None:
        self.both("save", hard_state=HardState(term, vote, commit))

    @rule(data=st.data(), ahead=st.integers(0, 4), follow=st.integers(0, 3), bump=st.integers(0, 3))
    def install_snapshot(self, data: st.DataObject, ahead: int, follow: int, bump: int) -> None:
        snap = self.mem.load().snapshot
        index = data.draw(st.integers(snap.index, self.mem.last_index() + ahead), label="index")
        term = snap.term + bump
        meta = SnapshotMeta(index, term, Configuration(frozenset({1, index % 5 + 1})))
        follows = [Entry(term, i, data=b"s") for i in range(index + 1, index + 1 + follow)]
        self.both("save", snapshot=meta, entries=follows)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        snap_index = self.mem.first_index() - 1
        index = data.draw(st.integers(snap_index, self.mem.last_index()), label="index")
        self.both("compact", meta=SnapshotMeta(index, self.term_at(index), CONF))

    @rule(data=st.data())
    def compact_invalid(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.mem.first_index(), self.mem.last_index() + 2), label="index")
        wrong = self.term_at(index) + 1 if index <= self.mem.last_index() else 1
        self.both("compact", meta=SnapshotMeta(index, wrong))

    @precondition(lambda self: self.file is not None)
    @rule()
    def restart(self) -> None:
        assert self.file is not None
        self.file.close()
        self.file, r = reopen(Path(self.dir), self.segment_bytes)
        assert len(r.report) == 1 and r.report[0].startswith("recovered"), r.report  # nothing to repair

    @invariant()
    def same_state(self) -> None:
        if self.file is None:
            return
        a, b = self.mem.load(), self.file.load()
        assert (a.hard_state, a.snapshot, a.entries) == (b.hard_state, b.snapshot, b.entries)
        assert (self.mem.first_index(), self.mem.last_index()) == (self.file.first_index(), self.file.last_index())
        assert self.file.log_bytes() == sum(os.path.getsize(p) for p in segments(Path(self.dir)))


StorageTwins.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_storage_twins = StorageTwins.TestCase
