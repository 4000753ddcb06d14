"""On-disk Raft storage: segmented append-only log, atomically replaced hard state and snapshot metadata.

Directory layout::

    log-<first index, 20 digits>.seg   log segments, in index order
    state.bin                          hard state (term, vote, commit), replaced atomically when the term or
                                       vote changes (the commit index is not written on its own)
    snapshot.meta                      latest snapshot's metadata (JSON), replaced atomically

Each log record is ``length u32 | crc32 u32 | term u64 | index u64 | type u8 | data`` (little-endian), where
`length` and `crc32` (zlib) both cover everything from `term` to the end of `data`.  A segment is closed
once it reaches `segment_bytes`; the next record starts a new file named after its index.

Crash safety rests on a few orderings, each explained where it happens:

* a batch is written and fsynced before `save` returns (one log fsync per call, plus one per segment that
  fills up in the middle of the batch, so that only the newest segment can ever have a torn tail);
* files holding state are replaced by write-temp / fsync / rename / fsync-directory;
* dropping a log suffix is made durable (file and directory fsync) before anything new is written, so a
  crash never leaves new records after stale ones or a gap between segments;
* snapshot metadata is made durable before the entries it covers are deleted, so a half-done compaction
  only leaves files that recovery recognises as covered and removes.

Recovery (`load`) truncates a torn or corrupt tail of the last segment and reports it, but raises
`CorruptLogError` for damage that is followed by valid data: that data was acknowledged, and dropping it
silently could lose committed entries.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path

from .storage import (
    CorruptLogError,
    Recovered,
    StorageClosedError,
    check_compact,
    check_save,
    needs_hard_state_write,
)
from .types import Configuration, Entry, EntryType, HardState, SnapshotMeta

__all__ = ["FileStorage"]

STATE_FILE = "state.bin"
SNAPSHOT_FILE = "snapshot.meta"
TMP_SUFFIX = ".tmp"
_SEGMENT_RE = re.compile(r"^log-(\d{20})\.seg$")

_HEADER = struct.Struct("<II")  # length, crc32
_BODY = struct.Struct("<QQB")  # term, index, entry type; the data follows
_MIN_LENGTH = _BODY.size
_MAX_LENGTH = 0xFFFFFFFF

_STATE = struct.Struct("<4sHQQQ")  # magic, version, term, vote, commit; then crc32 of those bytes
_STATE_MAGIC = b"RRHS"
_STATE_VERSION = 1
_CRC = struct.Struct("<I")

# Test hook (never set in production): RAILRAFT_FAULT_DISK_FULL=<path> -- while a file exists at <path>, every
# write of the log and of the state files fails with ENOSPC, as on a full disk (store.db honours it too).  The
# fault-injection suite (tests/chaos) uses it where it cannot mount a small tmpfs to fill for real.
DISK_FULL_ENV = "RAILRAFT_FAULT_DISK_FULL"


def fault_disk_full() -> None:
    """Raise OSError(ENOSPC) if the RAILRAFT_FAULT_DISK_FULL test hook says the disk is full (see above)."""
    flag = os.environ.get(DISK_FULL_ENV)
    if flag and os.path.exists(flag):
        raise OSError(errno.ENOSPC, f"No space left on device (test hook {DISK_FULL_ENV})")


# How many indexes past the damaged one we look for when deciding whether damage is followed by valid
# records.  A single damaged record is followed by index+1; a wider scan also catches a run of damage.
_LOOKAHEAD_INDEXES = 16


def segment_name(first_index: int) -> str:
    """File name of the segment whose first record has `first_index`."""
    return f"log-{first_index:020d}.seg"


class _Segment:
    __slots__ = ("first", "path", "size")

    def __init__(self, first: int, path: str, size: int) -> None:
        self.first = first
        self.path = path
        self.size = size


class FileStorage:
    """`LogStorage` in a directory (created if missing).  See the module docstring for formats and guarantees.

    Recovery happens on the first call of any method (normally `load()`), and `load()` always re-reads the
    directory.  Methods raise `CorruptLogError` when recovery finds damage it must not repair, `ValueError`
    for a request that would break the log's invariants (nothing is written then), and `StorageClosedError`
    after `close()` or after an I/O error: once a write or fsync has failed the durable state is unknown,
    and retrying could acknowledge data that is not on disk.
    """

    def __init__(self, directory: str | os.PathLike[str], segment_bytes: int = 64 * 1024 * 1024) -> None:
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        self._dir = os.fspath(Path(directory))
        self._segment_bytes = segment_bytes
        self._hard = HardState()
        self._snap = SnapshotMeta()
        self._segs: list[_Segment] = []
        # Position and term of every entry after the snapshot: entry i lives at _offsets[i - base] in the
        # segment found by bisecting _segs, where base = snapshot index + 1.
        self._offsets = array("Q")
        self._terms = array("Q")
        self._fd: int | None = None  # the last segment, open for appending
        self._loaded = False
        self._closed = False
        self._failed: BaseException | None = None

    # ----- the LogStorage interface -----

    def load(self) -> Recovered:
        """Recover from disk: validate every segment, repair a torn tail, return the state and a report."""
        self._check_usable()
        self._close_fd()
        self._loaded = False  # if recovery raises, every later call retries it (and raises again)
        return self._recover()

    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Durably apply snapshot, then entries, then hard state; return once all of it is on disk."""
        self._ensure_loaded()
        check_save(
            snap=self._snap, last_index=self.last_index(), term_at=self._term, entries=entries, snapshot=snapshot
        )
        try:
            if snapshot is not None:
                self._install_snapshot(snapshot)
            if entries:
                self._append(entries)
            if hard_state is not None and needs_hard_state_write(self._hard, hard_state):
                self._write_atomic(STATE_FILE, _encode_hard_state(hard_state))
                self._hard = hard_state
        except BaseException as exc:
            self._failed = exc
            raise

    def compact(self, meta: SnapshotMeta) -> None:
        """Durably record a snapshot at meta.index, then delete the segments it covers entirely."""
        self._ensure_loaded()
        check_compact(snap=self._snap, last_index=self.last_index(), term_at=self._term, meta=meta)
        if meta == self._snap:
            return
        try:
            # The metadata goes first: until it is durable, the entries it covers are the only copy.
            self._write_atomic(SNAPSHOT_FILE, _encode_snapshot_meta(meta))
            drop = 0
            for i in range(len(self._segs)):
                last = self._segs[i + 1].first - 1 if i + 1 < len(self._segs) else self.last_index()
                if last > meta.index:
                    break
                drop += 1
            if drop == len(self._segs):
                self._close_fd()
            for seg in self._segs[:drop]:
                os.remove(seg.path)
            del self._segs[:drop]
            if drop:
                self._fsync_dir()
            del self._offsets[: meta.index - self._snap.index]
            del self._terms[: meta.index - self._snap.index]
            self._snap = meta
        except BaseException as exc:
            self._failed = exc
            raise

    def first_index(self) -> int:
        """Snapshot index + 1."""
        self._ensure_loaded()
        return self._snap.index + 1

    def last_index(self) -> int:
        """Index of the last stored entry, or the snapshot index when there is none."""
        self._ensure_loaded()
        return self._snap.index + len(self._offsets)

    def log_bytes(self) -> int:
        """Total size of the log segment files."""
        self._ensure_loaded()
        return sum(seg.size for seg in self._segs)

    def close(self) -> None:
        """Close the open segment (idempotent); later calls raise `StorageClosedError`."""
        self._close_fd()
        self._closed = True

    # ----- writing -----

    def _append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        if first <= self.last_index():
            self._truncate_from(first)
        seg = self._segs[-1] if self._segs else None
        if seg is not None and self._fd is None:
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
        buf = bytearray()  # records for `seg` not yet written
        created = False  # was `seg` created by this call?
        for e in entries:
            if seg is None or seg.size + len(buf) >= self._segment_bytes:
                if seg is not None and buf:
                    self._write_all(buf)
                    seg.size += len(buf)
                    buf.clear()
                    # Make the full segment (and its name) durable before its successor exists: recovery
                    # then only ever has to repair the last segment, and damage or a gap anywhere else is
                    # real corruption.
                    assert self._fd is not None
                    os.fsync(self._fd)
                    if created:
                        self._fsync_dir()
                self._close_fd()
                seg = self._create_segment(e.index)
                created = True
            self._offsets.append(seg.size + len(buf))
            self._terms.append(e.term)
            _encode_record(buf, e)
        self._write_all(buf)
        assert seg is not None and self._fd is not None
        seg.size += len(buf)
        os.fsync(self._fd)
        if created:
            self._fsync_dir()

    def _create_segment(self, first: int) -> _Segment:
        path = os.path.join(self._dir, segment_name(first))
        # O_EXCL: a file of that name would mean our view of the directory is wrong; better to stop.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        seg = _Segment(first, path, 0)
        self._segs.append(seg)
        return seg

    def _truncate_from(self, index: int) -> None:
        """Durably drop every entry >= index (snapshot index < index <= last index)."""
        base = self._snap.index + 1
        i = bisect_right(self._segs, index, key=lambda s: s.first) - 1
        offset = self._offsets[index - base]
        keep_segment = offset > 0
        self._close_fd()
        # Newest first, each deletion durable before the next: whatever a crash leaves is a prefix of the
        # old log (a gap between segments would read as corruption).
        for seg in reversed(self._segs[i + (1 if keep_segment else 0) :]):
            os.remove(seg.path)
            self._fsync_dir()
        del self._segs[i + (1 if keep_segment else 0) :]
        if keep_segment:
            seg = self._segs[i]
            fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
            self._fd = fd
            os.ftruncate(fd, offset)
            # Durable before new records land after it, or a crash could mix stale and new records.
            os.fsync(fd)
            seg.size = offset
        del self._offsets[index - base :]
        del self._terms[index - base :]

    def _install_snapshot(self, meta: SnapshotMeta) -> None:
        # Cut the log back to the snapshot index first: if we crash before the metadata is written, the
        # log is a prefix of what it was (as after a conflict truncation); once it is written, everything
        # left in the segments is covered by it and recovery removes it.
        if self.last_index() > meta.index:
            self._truncate_from(meta.index + 1)
        self._write_atomic(SNAPSHOT_FILE, _encode_snapshot_meta(meta))
        self._close_fd()
        for seg in self._segs:
            os.remove(seg.path)
        if self._segs:
            self._fsync_dir()
        self._segs.clear()
        del self._offsets[:]
        del self._terms[:]
        self._snap = meta

    def _write_all(self, buf: bytes | bytearray) -> None:
        assert self._fd is not None
        fault_disk_full()
        view = memoryview(buf)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _write_atomic(self, name: str, data: bytes) -> None:
        path = os.path.join(self._dir, name)
        tmp = path + TMP_SUFFIX
        fault_disk_full()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ----- recovery -----

    def _recover(self) -> Recovered:
        report: list[str] = []
        os.makedirs(self._dir, exist_ok=True)
        dir_dirty = False
        for name in (STATE_FILE, SNAPSHOT_FILE):
            tmp = os.path.join(self._dir, name + TMP_SUFFIX)
            if os.path.exists(tmp):
                # An unfinished atomic write: the file it was meant to replace is still intact.
                os.remove(tmp)
                dir_dirty = True
                report.append(f"removed leftover temp file {name + TMP_SUFFIX}")
        hard = _read_hard_state(os.path.join(self._dir, STATE_FILE))
        snap = _read_snapshot_meta(os.path.join(self._dir, SNAPSHOT_FILE))

        segs: list[_Segment] = []
        for name in os.listdir(self._dir):
            m = _SEGMENT_RE.match(name)
            if m:
                path = os.path.join(self._dir, name)
                segs.append(_Segment(int(m.group(1)), path, os.path.getsize(path)))
        segs.sort(key=lambda s: s.first)

        # Segments wholly covered by the snapshot (a compaction or snapshot install interrupted before its
        # deletions were durable) go without being read: their content is in the snapshot.
        while len(segs) > 1 and segs[1].first - 1 <= snap.index:
            os.remove(segs[0].path)
            dir_dirty = True
            report.append(f"removed {os.path.basename(segs[0].path)}: covered by the snapshot at {snap.index}")
            segs.pop(0)

        entries: list[Entry] = []
        offsets = array("Q")
        prev_index: int | None = None  # last index of the previous segment
        prev_term = snap.term
        for n, seg in enumerate(segs):
            is_last = n == len(segs) - 1
            name = os.path.basename(seg.path)
            if prev_index is not None and seg.first != prev_index + 1:
                raise CorruptLogError(
                    f"{name}: starts at index {seg.first} but the previous segment ends at {prev_index}"
                )
            with open(seg.path, "rb") as f:
                data = f.read()
            end, prev_index, prev_term, problem = _scan(data, seg.first, snap.index, prev_term, name, entries, offsets)
            if problem is not None:
                expected = prev_index + 1
                if not is_last:
                    raise CorruptLogError(
                        f"{name}: corrupt record at offset {end} (index {expected}): {problem}; "
                        "it is not in the last segment, so acknowledged entries follow it"
                    )
                found = _valid_record_after(data, end, expected)
                if found is not None:
                    raise CorruptLogError(
                        f"{name}: corrupt record at offset {end} (index {expected}): {problem}; "
                        f"a valid record (index {found[1]}) follows at offset {found[0]}"
                    )
                with open(seg.path, "r+b") as f:
                    f.truncate(end)
                    f.flush()
                    os.fsync(f.fileno())
                seg.size = end
                report.append(
                    f"truncated torn tail at index {expected} ({len(data) - end} bytes, {problem}) "
                    f"in {name} at offset {end}"
                )
        if entries and entries[0].index != snap.index + 1:
            raise CorruptLogError(
                f"log starts at index {entries[0].index} but the snapshot ends at {snap.index}: entries are missing"
            )
        # A last segment left with nothing after the snapshot (empty after a repair, or wholly covered) is
        # removed so that appends always go to a segment that ends at last_index.
        if segs and (not entries or entries[-1].index < segs[-1].first):
            seg = segs.pop()
            os.remove(seg.path)
            dir_dirty = True
            report.append(f"removed {os.path.basename(seg.path)}: holds no entry after the snapshot at {snap.index}")
        if dir_dirty:
            self._fsync_dir()

        self._hard, self._snap, self._segs = hard, snap, segs
        self._offsets = offsets
        self._terms = array("Q", (e.term for e in entries))
        if segs:
            self._fd = os.open(segs[-1].path, os.O_WRONLY | os.O_APPEND)
        self._loaded = True
        span = f"entries {entries[0].index}..{entries[-1].index}" if entries else "no entries"
        report.append(
            f"recovered {span} from {len(segs)} segment(s) after snapshot {snap.index} (term {snap.term}); "
            f"hard state term={hard.term} vote={hard.vote} commit={hard.commit}"
        )
        return Recovered(hard, snap, entries, report)

    # ----- helpers -----

    def _term(self, index: int) -> int:
        return self._terms[index - self._snap.index - 1]

    def _ensure_loaded(self) -> None:
        self._check_usable()
        if not self._loaded:
            self.load()

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageClosedError(f"storage in {self._dir} is closed")
        if self._failed is not None:
            raise StorageClosedError(f"storage in {self._dir} failed earlier: {self._failed!r}") from self._failed

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


# ----- record and file formats -----


def _encode_record(buf: bytearray, e: Entry) -> None:
    data = bytes(e.data)
    body = _BODY.pack(e.term, e.index, int(e.type))
    length = len(body) + len(data)
    if length > _MAX_LENGTH:
        raise ValueError(f"entry {e.index} is too large ({len(data)} bytes)")
    buf += _HEADER.pack(length, zlib.crc32(data, zlib.crc32(body)))
    buf += body
    buf += data


def _record_at(data: bytes, pos: int) -> tuple[int, str | None]:
    """Length of the well-formed record at `pos`, or (0, what is wrong)."""
    if len(data) - pos < _HEADER.size:
        return 0, f"short header ({len(data) - pos} bytes)"
    length, crc = _HEADER.unpack_from(data, pos)
    if length < _MIN_LENGTH:
        return 0, f"impossible length {length}"
    end = pos + _HEADER.size + length
    if end > len(data):
        return 0, f"length {length} runs past the end of the file"
    if zlib.crc32(memoryview(data)[pos + _HEADER.size : end]) != crc:
        return 0, "CRC mismatch"
    return length, None


def _scan(
    data: bytes,
    first: int,
    snap_index: int,
    prev_term: int,
    name: str,
    entries: list[Entry],
    offsets: array[int],
) -> tuple[int, int, int, str | None]:
    """Parse one segment, appending the entries after the snapshot (and their offsets).

    Returns (offset where parsing stopped, last good index, last kept term, problem or None).  A record
    that is intact (CRC valid) but out of place is never a torn write, so it raises at once.
    """
    pos = 0
    index = first - 1
    while pos < len(data):
        length, problem = _record_at(data, pos)
        if problem is not None:
            return pos, index, prev_term, problem
        term, rec_index, typ = _BODY.unpack_from(data, pos + _HEADER.size)
        where = f"{name}: record at offset {pos}"
        if rec_index != index + 1:
            raise CorruptLogError(f"{where} has index {rec_index}, expected {index + 1}")
        try:
            etype = EntryType(typ)
        except ValueError:
            raise CorruptLogError(f"{where} (index {rec_index}) has unknown entry type {typ}") from None
        if rec_index > snap_index:
            if term < prev_term:
                raise CorruptLogError(f"{where} (index {rec_index}) has term {term}, below the previous {prev_term}")
            start = pos + _HEADER.size + _BODY.size
            entries.append(Entry(term, rec_index, etype, data[start : pos + _HEADER.size + length]))
            offsets.append(pos)
            prev_term = term
        index = rec_index
        pos += _HEADER.size + length
    return pos, index, prev_term, None


def _valid_record_after(data: bytes, pos: int, expected: int) -> tuple[int, int] | None:
    """(offset, index) of an intact record after damage at `pos`, if one can be found.

    A record's length field may itself be damaged, so rather than trusting it we search for the index
    field of the records that would follow (expected .. expected + lookahead) and check each candidate's CRC.
    """
    index_field = _HEADER.size + 8
    best: tuple[int, int] | None = None
    for idx in range(expected, expected + _LOOKAHEAD_INDEXES + 1):
        needle = struct.pack("<Q", idx)
        hit = data.find(needle, pos + 1 + index_field)
        while hit != -1:
            start = hit - index_field
            _, problem = _record_at(data, start)
            if problem is None:
                if best is None or start < best[0]:
                    best = (start, idx)
                break
            hit = data.find(needle, hit + 1)
    return best


def _encode_hard_state(hs: HardState) -> bytes:
    body = _STATE.pack(_STATE_MAGIC, _STATE_VERSION, hs.term, hs.vote, hs.commit)
    return body + _CRC.pack(zlib.crc32(body))


def _read_hard_state(path: str) -> HardState:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return HardState()
    name = os.path.basename(path)
    if len(raw) != _STATE.size + _CRC.size:
        raise CorruptLogError(f"{name}: {len(raw)} bytes, expected {_STATE.size + _CRC.size}")
    body = raw[: _STATE.size]
    if _CRC.unpack_from(raw, _STATE.size)[0] != zlib.crc32(body):
        raise CorruptLogError(f"{name}: CRC mismatch")
    magic, version, term, vote, commit = _STATE.unpack(body)
    if magic != _STATE_MAGIC or version != _STATE_VERSION:
        raise CorruptLogError(f"{name}: unknown format {magic!r} v{version}")
    return HardState(term, vote, commit)


def _snapshot_fields(meta: SnapshotMeta) -> dict[str, object]:
    return {
        "index": meta.index,
        "term": meta.term,
        "voters": sorted(meta.conf.voters),
        "learners": sorted(meta.conf.learners),
    }


def _canonical(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    fields = _snapshot_fields(meta)
    # A checksum, because a flipped digit would otherwise still parse and move the start of the log.
    return _canonical({**fields, "crc32": zlib.crc32(_canonical(fields))}) + b"\n"


def _read_snapshot_meta(path: str) -> SnapshotMeta:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return SnapshotMeta()
    name = os.path.basename(path)
    try:
        obj = json.loads(raw)
        crc = obj.pop("crc32")
        if zlib.crc32(_canonical(obj)) != crc:
            raise CorruptLogError(f"{name}: CRC mismatch")
        return SnapshotMeta(
            index=int(obj["index"]),
            term=int(obj["term"]),
            conf=Configuration(frozenset(obj["voters"]), frozenset(obj["learners"])),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptLogError(f"{name}: unreadable ({exc})") from exc
