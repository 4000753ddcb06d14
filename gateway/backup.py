"""`railraft backup` and `railraft restore`: a consistent copy of a running cluster, and a new cluster from it.

    railraft backup --nodes 127.0.0.1:50051,127.0.0.1:50052 -o nightly.rrbk     (or --config cluster.toml)
    railraft restore nightly.rrbk --data-dir restored --nodes 3 --port 51051 [--cluster-id NAME]
    railraft cluster up --data-dir restored                                      (serves the restored data)

Backup
------
The CLI calls `Node.Backup` (proto/node.proto), a server stream served by the LEADER only (a follower answers
UNAVAILABLE with the leader hint; the CLI follows it).  The leader first runs a linearizable read barrier
(ReadIndex), then copies its database with `Database.snapshot` -- the same single-file SQLite copy a lagging
follower receives through InstallSnapshot -- at whatever index is applied by then.  So the backup holds every
write acknowledged before the command started (and possibly some later ones), at a known applied index and
term.  The CLI checks the streamed bytes against the SHA-256 the leader announced, checks the database
(SQLite integrity check, schema version, applied index), writes the file atomically (mode 0600: it holds
password hashes), reads it back through the same verification `restore` uses, and prints what it wrote.

Authorization.  A backup is every account's password hash and every booking, so it needs an administrator's
live session token: `--token`, else $RAILRAFT_TOKEN, else the session `railraft login` saved (see
gateway/cli_booking.py).  The leader checks it after the read barrier (a token revoked before the call is
refused): UNAUTHENTICATED without a live session, PERMISSION_DENIED for a customer.  (The membership RPCs of
the same service take the cluster secret or an administrator's token instead; see gateway/peer_auth.py.)

File format (version 1)
-----------------------
    "RAILRAFT-BACKUP\\n"      16 bytes, magic
    version                  u32 big-endian (1)
    header length H          u32 big-endian (at most 1 MiB)
    header                   H bytes of UTF-8 JSON (sorted keys), see `HEADER_FIELDS`
    SHA-256 of the header    32 bytes
    payload                  the SQLite database, exactly header["payload_size"] bytes, whose SHA-256 is
                             header["payload_sha256"]; nothing may follow it

The header says: format version, the source cluster id, the applied index and its term, the read index of
the barrier, the membership at that index (id, host, port, voter/learner), the creation time (ms and ISO
UTC), the node that served it, the schema version, the payload size and SHA-256, row counts, and the
railraft version that wrote it.

Restore
-------
`restore` verifies the whole file first (magic, version, header checksum, payload size and SHA-256, SQLite
integrity, applied index) and only then touches the target; a corrupt or truncated backup is refused with a
message saying what is wrong, and nothing is written.  It refuses a target that is not empty unless
`--force` (which replaces only cluster.toml and the new nodes' directories).  It builds, for a NEW cluster:

* DIR/cluster.toml: the new nodes (ids 1..N on HOST:PORT..PORT+N-1) and a new cluster id (`--cluster-id`,
  default "<source id>-restored-<random>", so the new cluster can never be mistaken for the source by a peer);
  or, with `--config cluster.toml`, the cluster that file describes (it is not rewritten);
* per node, DIR/nodeN/: the database at the backup's index; snapshots/snap-<index>.db, the same file, which the
  leader ships to any node that joins later; raft/ holding no log entries, only the snapshot metadata
  (index, term, membership = the new nodes as voters) and the hard state (that term, no vote, commit = index).
  A node started on it recovers "log empty after snapshot <index>" and the cluster elects a leader at the next
  term, exactly as after a log compaction.

The database's replicated address book (`members`) is emptied in the restored copy: it holds the source's
host:port for nodes that were added at run time, and the new nodes must not talk to those.  Everything else --
users, sessions, bookings, the exactly-once table, the replicated clock -- is restored as it was.  Sessions
therefore stay valid until they expire; log everyone out (or let them expire) if that matters.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import struct
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import betterproto
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status

from proto.gen.railraft.node.v1 import BackupChunk, BackupInfo, BackupRequest

MAGIC = b"RAILRAFT-BACKUP\n"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct(">II")  # format version, header length
HEADER_MAX = 1 << 20
_SHA = 32
COPY_CHUNK = 1 << 20
BACKUP_PATH = "/railraft.node.v1.Node/Backup"
DEFAULT_TIMEOUT_S = 30.0
DISCOVERY_TIMEOUT_S = 2.0  # Node.Status of every node, asked at once, to find the leader

# Every header of format 1 has these keys (with these JSON types).
HEADER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "cluster_id": str,
    "applied_index": int,
    "term": int,
    "read_index": int,
    "members": list,
    "created_ms": int,
    "created": str,
    "source_node": int,
    "source_address": str,
    "schema_version": int,
    "payload_size": int,
    "payload_sha256": str,
    "counts": dict,
    "railraft_version": str,
}

# Exit codes, as gateway/cli_booking.py documents them for every command.
EXIT_OK = 0
EXIT_FAILED = 1  # a corrupt or truncated backup file, or a failure while writing
EXIT_USAGE = 2  # bad input or a target that would be overwritten: nothing was written
EXIT_UNAUTHENTICATED = 3
EXIT_PERMISSION = 4
EXIT_UNAVAILABLE = 6

_RETRYABLE = frozenset({Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED})


class BackupError(Exception):
    """A backup file (or a streamed backup) is unusable; the message says why."""


class Refused(Exception):
    """The command will not write to its target (it exists / is not empty, bad arguments); nothing was written."""


class BackupDenied(Exception):
    """The cluster refused the backup call itself (not logged in, not an administrator, bad request)."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClusterUnavailable(Exception):
    """No node could serve the backup before the deadline; the message says what each node said."""


# ============================================================================================ the file


def _utc_iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_header(header: dict[str, Any]) -> bytes:
    """Magic, version, length, header JSON and its SHA-256: everything before the payload."""
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(body) > HEADER_MAX:
        raise BackupError(f"backup header too large ({len(body)} bytes)")
    return MAGIC + _PREAMBLE.pack(FORMAT_VERSION, len(body)) + body + hashlib.sha256(body).digest()


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The header of a backup file and the offset its payload starts at.  BackupError if the file is not a
    version-1 railraft backup, its header is damaged, or it is shorter than the header says."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise BackupError(f"no backup file at {path}") from None
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e}") from None
    with f:
        total = os.fstat(f.fileno()).st_size
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            if MAGIC.startswith(magic):
                raise BackupError(f"{path} is truncated: {total} bytes, not even a complete header")
            raise BackupError(f"{path} is not a railraft backup (it does not start with {MAGIC[:-1].decode()!r})")
        pre = f.read(_PREAMBLE.size)
        if len(pre) < _PREAMBLE.size:
            raise BackupError(f"{path} is truncated: {total} bytes, not even a complete header")
        version, hlen = _PREAMBLE.unpack(pre)
        if version != FORMAT_VERSION:
            raise BackupError(f"{path} has backup format version {version}; this railraft reads version "
                              f"{FORMAT_VERSION} (a newer railraft wrote it?)")
        if hlen > HEADER_MAX:
            raise BackupError(f"{path} is corrupt: header length {hlen} is impossible")
        body = f.read(hlen)
        digest = f.read(_SHA)
        if len(body) < hlen or len(digest) < _SHA:
            raise BackupError(f"{path} is truncated: {total} bytes, the header alone needs "
                              f"{len(MAGIC) + _PREAMBLE.size + hlen + _SHA}")
        if hashlib.sha256(body).digest() != digest:
            raise BackupError(f"{path} is corrupt: the header's checksum does not match")
        try:
            header = json.loads(body)
        except ValueError as e:
            raise BackupError(f"{path} is corrupt: unreadable header ({e})") from None
        if not isinstance(header, dict):
            raise BackupError(f"{path} is corrupt: the header is not an object")
        for key, typ in HEADER_FIELDS.items():
            if not isinstance(header.get(key), typ) or isinstance(header.get(key), bool):
                raise BackupError(f"{path} is corrupt: header field {key!r} is missing or not a {typ.__name__}")
        offset = f.tell()
    want = offset + header["payload_size"]
    if total < want:
        raise BackupError(f"{path} is truncated: the database should be {header['payload_size']} bytes, only "
                          f"{total - offset} are there ({total} of {want} bytes)")
    if total > want:
        raise BackupError(f"{path} is corrupt: {total - want} unexpected bytes after the database")
    return header, offset


def verify_backup(path: str | os.PathLike[str], extract_to: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Check a backup file completely; return its header.  With `extract_to`, the payload (the SQLite
    database) is also written there and checked as a database (integrity, schema version, applied index).
    BackupError says what is wrong; a partial `extract_to` is removed."""
    header, offset = read_header(path)
    h = hashlib.sha256()
    out = open(extract_to, "wb") if extract_to is not None else None
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            left = header["payload_size"]
            while left:
                chunk = f.read(min(COPY_CHUNK, left))
                if not chunk:
                    raise BackupError(f"{path} is truncated (it shrank while being read)")
                h.update(chunk)
                if out is not None:
                    out.write(chunk)
                left -= len(chunk)
        if h.hexdigest() != header["payload_sha256"]:
            raise BackupError(f"{path} is corrupt: the database's SHA-256 does not match the header's")
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
            out.close()
            out = None
            check_database(extract_to, header["applied_index"], header["schema_version"])  # type: ignore[arg-type]
    except BaseException:
        if out is not None:
            out.close()
        if extract_to is not None:
            Path(extract_to).unlink(missing_ok=True)
        raise
    return header


def check_database(path: str | os.PathLike[str], applied_index: int, schema_version: int | None = None) -> None:
    """Is `path` an intact railraft database at `applied_index`, of a schema this railraft understands?"""
    from store import schema
    from store.state_machine import read_meta_int

    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise BackupError(f"the backup's database cannot be opened: {e}") from None
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"the backup's database is corrupt: {ok}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if schema_version is not None and version != schema_version:
            raise BackupError(f"the backup's database has schema version {version}, its header says {schema_version}")
        if not 1 <= version <= schema.SCHEMA_VERSION:
            raise BackupError(f"the backup's database has schema version {version}; this railraft understands "
                              f"1..{schema.SCHEMA_VERSION} (restore it with a newer railraft)")
        index = read_meta_int(conn, "applied_index")
    except sqlite3.DatabaseError as e:
        raise BackupError(f"the backup's payload is not a railraft database: {e}") from None
    except RuntimeError as e:  # read_meta_int: no meta row
        raise BackupError(f"the backup's payload is not a railraft database: {e}") from None
    finally:
        conn.close()
    if index != applied_index:
        raise BackupError(f"the backup's database is at index {index}, its header says {applied_index}")


def database_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """Row counts an operator recognises: users (and admins), bookings by state, catalogue, payments."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        one = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
        counts = {
            "users": one("SELECT count(*) FROM users"),
            "admins": one("SELECT count(*) FROM users WHERE role = 'ADMIN'"),
            "members": one("SELECT count(*) FROM members"),
        }
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in ("stations", "trains", "runs", "bookings", "payments", "refunds"):
            if table in tables:
                counts[table] = one(f"SELECT count(*) FROM {table}")
        if "bookings" in tables:
            for status, n in conn.execute("SELECT status, count(*) FROM bookings GROUP BY status ORDER BY status"):
                counts[f"bookings_{status.lower()}"] = int(n)
    finally:
        conn.close()
    return counts


def make_header(payload: Path, *, cluster_id: str, applied_index: int, term: int, read_index: int,
                members: list[dict[str, Any]], created_ms: int, source_node: int, source_address: str
                ) -> dict[str, Any]:
    """The header of a backup of the database file `payload` (checked here: integrity, applied index)."""
    from .cli import version

    h = hashlib.sha256()
    size = 0
    with open(payload, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            h.update(chunk)
            size += len(chunk)
    conn = sqlite3.connect(f"{Path(payload).resolve().as_uri()}?mode=ro", uri=True)
    try:
        schema_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as e:
        raise BackupError(f"the database is unreadable: {e}") from None
    finally:
        conn.close()
    check_database(payload, applied_index, schema_version)
    return {
        "format_version": FORMAT_VERSION,
        "cluster_id": cluster_id,
        "applied_index": applied_index,
        "term": term,
        "read_index": read_index,
        "members": members,
        "created_ms": created_ms,
        "created": _utc_iso(created_ms),
        "source_node": source_node,
        "source_address": source_address,
        "schema_version": schema_version,
        "payload_size": size,
        "payload_sha256": h.hexdigest(),
        "counts": database_counts(payload),
        "railraft_version": version(),
    }


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_backup_file(out: Path, header: dict[str, Any], payload: Path) -> None:
    """Header + payload into `out`, atomically (temp file, fsync, rename, fsync dir), mode 0600."""
    tmp = out.with_name(f".{out.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode_header(header))
            with open(payload, "rb") as src:
                shutil.copyfileobj(src, f, COPY_CHUNK)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(out.parent)


# ========================================================================================== fetching


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class _StreamBroken(Exception):
    """The backup stream ended or misbehaved mid-transfer: retry from the start."""


async def _fetch_from(addr: str, token: str, dest: Path, timeout: float, chunk_bytes: int) -> BackupInfo:
    """One attempt on one node: stream the backup into `dest`, checking offsets, size and SHA-256."""
    host, port = _split(addr)
    ch = Channel(host, port)
    try:
        async with ch.request(BACKUP_PATH, Cardinality.UNARY_STREAM, BackupRequest, BackupChunk) as stream:
            await asyncio.wait_for(stream.send_message(BackupRequest(token=token, chunk_bytes=chunk_bytes),
                                                       end=True), timeout)
            h = hashlib.sha256()
            info: BackupInfo | None = None
            size = 0
            with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                while True:
                    # Idle timeout per message: the first one waits for the barrier and the copy.
                    chunk = await asyncio.wait_for(stream.recv_message(), timeout)
                    if chunk is None:
                        raise _StreamBroken("the stream ended before the last chunk")
                    if info is None:
                        if not betterproto.serialized_on_wire(chunk.info) or chunk.offset != 0:
                            raise _StreamBroken("the first chunk carries no backup description")
                        info = chunk.info
                    if chunk.offset != size:
                        raise _StreamBroken(f"chunk at offset {chunk.offset}, expected {size}")
                    f.write(chunk.data)
                    h.update(chunk.data)
                    size += len(chunk.data)
                    if chunk.last:
                        break
                f.flush()
                os.fsync(f.fileno())
            if size != info.size or h.hexdigest() != info.sha256:
                raise _StreamBroken(f"received {size} bytes with SHA-256 {h.hexdigest()[:16]}..., the node announced "
                                    f"{info.size} bytes with {info.sha256[:16]}...")
            return info
    finally:
        ch.close()


async def fetch_backup(addrs: Sequence[str], token: str, dest: Path, *, timeout: float = DEFAULT_TIMEOUT_S,
                       chunk_bytes: int = 0) -> tuple[BackupInfo, str]:
    """Stream a backup from the leader into `dest`; returns (its description, the address that served it).

    Asks every node's Status at once to find the leader and goes there first; then tries the others, follows
    leader hints, skips nodes that are down or answer UNAVAILABLE, and starts over (a new copy) if a stream
    breaks, until `timeout` has passed.  `timeout` also bounds the wait for each message of the stream (the
    first one comes once the leader has copied its database).  BackupDenied for a refusal
    (UNAUTHENTICATED, PERMISSION_DENIED, ...), ClusterUnavailable when no node could serve it.
    """
    from .client import CONNECT_ERRORS, RailraftClient
    from .leader_hint import parse_leader_hint

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    known = list(addrs)
    attempts: dict[str, str] = {}
    delay = 0.1
    follow: str | None = None
    rr = RailraftClient(known)
    try:
        await rr.status(timeout=min(DISCOVERY_TIMEOUT_S, timeout / 3))
        follow = rr.leader  # the address the leader answered at, if one did
    finally:
        rr.close()
    while True:
        order = ([follow] if follow else []) + [a for a in known if a != follow]
        follow = None
        for addr in order:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await _fetch_from(addr, token, dest, timeout, chunk_bytes), addr
            except GRPCError as e:
                if e.status not in _RETRYABLE:
                    raise BackupDenied(e.status, e.message or e.status.name) from None
                attempts[addr] = f"{e.status.name}: {e.message}"
                _, hint = parse_leader_hint(e.message)
                if hint and hint != addr:
                    if hint not in known:
                        known.append(hint)
                    follow = hint
                    break
            except (_StreamBroken, *CONNECT_ERRORS) as e:
                attempts[addr] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if loop.time() >= deadline:
            detail = "; ".join(f"{a}: {w}" for a, w in attempts.items()) or "no node could be tried"
            raise ClusterUnavailable(f"no node could serve the backup within {timeout:g}s ({detail})")
        if follow is None:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 1.0)


def take_backup(addrs: Sequence[str], token: str, out: str | os.PathLike[str], *, force: bool = False,
                timeout: float = DEFAULT_TIMEOUT_S, chunk_bytes: int = 0) -> dict[str, Any]:
    """`railraft backup`: fetch, check, write and re-verify `out`; returns the header (plus `path`)."""
    out = Path(out)
    if out.is_dir():
        raise Refused(f"{out} is a directory")
    if out.exists() and not force:
        raise Refused(f"{out} exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise Refused(f"directory {out.parent} does not exist")
    partial = out.with_name(f".{out.name}.partial-{secrets.token_hex(4)}")
    from .client import run as client_run

    try:
        info, served_by = client_run(fetch_backup(addrs, token, partial, timeout=timeout, chunk_bytes=chunk_bytes))
        header = make_header(
            partial, cluster_id=info.cluster_id, applied_index=info.applied_index, term=info.term,
            read_index=info.read_index, created_ms=info.created_ms, source_node=info.node_id,
            source_address=served_by,
            members=[{"id": m.id, "host": m.host, "port": m.port, "kind": m.kind} for m in info.members],
        )
        if (header["payload_size"], header["payload_sha256"], header["schema_version"]) != (
                info.size, info.sha256, info.schema_version):
            raise BackupError("the received database does not match what the node described")
        write_backup_file(out, header, partial)
    finally:
        partial.unlink(missing_ok=True)
    verified = verify_backup(out)  # read back what is on disk, as restore will
    if verified != header:
        raise BackupError(f"{out} reads back differently from what was written")
    return {**header, "path": str(out), "file_size": out.stat().st_size}


# =========================================================================================== restore


_CLUSTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _copy_synced(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prepare_database(path: Path, applied_index: int) -> None:
    """Empty the replicated address book of the restored copy (see the module docstring); the copy stays a
    single-file (rollback journal) database, as snapshots are."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM members")
        conn.execute("COMMIT")
    finally:
        conn.close()
    check_database(path, applied_index)


def _build_node(node_dir: Path, node_id: int, db: Path, header: dict[str, Any], voters: list[int]) -> None:
    """One node's data directory: database, snapshot file, and a Raft log that starts at the snapshot."""
    from raft.filestorage import FileStorage
    from raft.types import Configuration, HardState, SnapshotMeta

    index, term = header["applied_index"], header["term"]
    (node_dir / "snapshots").mkdir(parents=True)
    _copy_synced(db, node_dir / f"Node{node_id}TicketBooking.db")
    _copy_synced(db, node_dir / "snapshots" / f"snap-{index}.db")
    storage = FileStorage(node_dir / "raft")
    try:
        storage.load()
        storage.save(
            hard_state=HardState(term=term, vote=0, commit=index),
            snapshot=SnapshotMeta(index=index, term=term, conf=Configuration(frozenset(voters), frozenset())),
        )
    finally:
        storage.close()
    _fsync_dir(node_dir / "snapshots")
    _fsync_dir(node_dir)


def restore(backup: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None, nodes: int = 3,
            port: int = 50051, host: str = "127.0.0.1", cluster_id: str | None = None,
            config: str | os.PathLike[str] | None = None, snapshot_entries: int | None = None,
            force: bool = False) -> dict[str, Any]:
    """`railraft restore` (see the module docstring); returns a report.  Refused / BackupError leave
    the target untouched."""
    from actors.config import ConfigError, default_config, load_config

    backup = Path(backup)
    if cluster_id is not None and not _CLUSTER_ID.fullmatch(cluster_id):
        raise Refused(f"cluster id {cluster_id!r}: use 1 to 100 letters, digits, '.', '_' or '-'")
    if config is not None:
        if cluster_id is not None or snapshot_entries is not None:
            raise Refused("with --config the cluster id and snapshot_entries come from that file")
        cfg = load_config(config)
        root = cfg.data_dir
        config_path: Path | None = None  # the operator's file stays as it is
    else:
        if data_dir is None:
            raise Refused("say where the new cluster goes: --data-dir DIR (or --config cluster.toml)")
        if nodes < 1:
            raise Refused("a cluster needs at least one node")
        if not 0 < port <= 65535 - nodes + 1:
            raise Refused(f"ports {port}..{port + nodes - 1} are not all valid ports")
        root = Path(data_dir)
        cfg = default_config(nodes, port, data_dir=".")
        cfg = replace(cfg, nodes=tuple(replace(n, host=host) for n in cfg.nodes))
        if snapshot_entries is not None:
            if snapshot_entries < 1:
                raise Refused("--snapshot-entries must be >= 1")
            cfg = replace(cfg, snapshot_entries=snapshot_entries)
        config_path = root / "cluster.toml"
    if root.exists() and not root.is_dir():
        raise Refused(f"{root} exists and is not a directory")
    node_dirs = {n.id: (root / f"node{n.id}") if config is None else cfg.node_dir(n.id) for n in cfg.nodes}
    if config is None:
        occupied = sorted(p.name for p in root.iterdir()) if _is_nonempty_dir(root) else []
    else:
        occupied = sorted(str(d) for d in node_dirs.values() if d.exists() and (not d.is_dir() or _is_nonempty_dir(d)))
    if occupied and not force:
        shown = ", ".join(occupied[:5]) + (", ..." if len(occupied) > 5 else "")
        raise Refused(f"{root} is not empty ({shown}); restore builds a new cluster in an empty directory "
                      "(pass --force to replace cluster.toml and the node directories there)")

    with tempfile.TemporaryDirectory(prefix="railraft-restore-") as tmp:
        db = Path(tmp) / "restored.db"
        header = verify_backup(backup, extract_to=db)  # everything is checked before the target is touched
        if cluster_id is None and config is None:
            base = re.sub(r"[^A-Za-z0-9._-]", "-", header["cluster_id"])[:80] or "railraft"
            cluster_id = f"{base}-restored-{secrets.token_hex(3)}"
        if config is None:
            cfg = replace(cfg, cluster_id=cluster_id)
        _prepare_database(db, header["applied_index"])
        counts = database_counts(db)

        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=root))
        try:
            voters = sorted(node_dirs)
            for nid in voters:
                _build_node(staging / f"node{nid}", nid, db, header, voters)
            if config_path is not None:
                (staging / "cluster.toml").write_text(cfg.to_toml())
                try:
                    load_config(staging / "cluster.toml")
                except ConfigError as e:  # pragma: no cover - default_config always renders a valid file
                    raise Refused(f"the new cluster.toml does not load: {e}") from None
            # Into place: with --force, only what restore writes is replaced.
            replaced = []
            moves = [(staging / f"node{nid}", node_dirs[nid]) for nid in voters]
            if config_path is not None:
                moves.append((staging / "cluster.toml", config_path))
            for src, dest in moves:
                if dest.is_dir() and not dest.is_symlink():
                    if any(dest.iterdir()):
                        replaced.append(str(dest))
                    shutil.rmtree(dest)
                elif dest.exists() or dest.is_symlink():
                    dest.unlink()
                    replaced.append(str(dest))
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
            _fsync_dir(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    final_cfg = load_config(config_path if config_path is not None else config)  # type: ignore[arg-type]
    return {
        "backup": str(backup),
        "source_cluster_id": header["cluster_id"],
        "applied_index": header["applied_index"],
        "term": header["term"],
        "created": header["created"],
        "source_node": header["source_node"],
        "cluster_id": final_cfg.cluster_id,
        "config": str(config_path if config_path is not None else config),
        "data_dir": str(root),
        "nodes": [{"id": n.id, "address": n.address, "data_dir": str(node_dirs[n.id])} for n in final_cfg.nodes],
        "counts": counts,
        "replaced": replaced,
    }


# =============================================================================================== CLI


def _counts_text(c: dict[str, Any]) -> str:
    states = [(k.removeprefix("bookings_"), v) for k, v in sorted(c.items()) if k.startswith("bookings_")]
    parts = [f"users {c.get('users', 0)} ({c.get('admins', 0)} admin)"]
    book = f"bookings {c.get('bookings', 0)}"
    if states:
        book += " (" + ", ".join(f"{s} {n}" for s, n in states) + ")"
    parts.append(book)
    for k in ("stations", "trains", "runs", "payments"):
        if k in c:
            parts.append(f"{k} {c[k]}")
    return ", ".join(parts)


def _say_error(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"railraft {args.command}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}, sort_keys=True))
    return code


def _cmd_backup(args: argparse.Namespace) -> int:
    from actors.config import ConfigError

    from .cli_booking import addresses, resolve_token

    try:
        addrs = addresses(args)
    except (ConfigError, ValueError) as e:
        return _say_error(args, str(e), EXIT_USAGE)
    token = resolve_token(args)
    if not token:
        return _say_error(args, "a backup needs an administrator's session: run `railraft login ADMIN PASSWORD` "
                                "first, or pass --token (or set RAILRAFT_TOKEN)", EXIT_UNAUTHENTICATED)
    if args.timeout <= 0:
        return _say_error(args, "--timeout must be positive", EXIT_USAGE)
    try:
        res = take_backup(addrs, token, args.output, force=args.force, timeout=args.timeout)
    except Refused as e:
        return _say_error(args, str(e), EXIT_USAGE)
    except BackupDenied as e:
        code = {Status.UNAUTHENTICATED: EXIT_UNAUTHENTICATED, Status.PERMISSION_DENIED: EXIT_PERMISSION,
                Status.INVALID_ARGUMENT: EXIT_USAGE}.get(e.status, EXIT_FAILED)
        return _say_error(args, f"{e.status.name}: {e}", code)
    except ClusterUnavailable as e:
        return _say_error(args, str(e), EXIT_UNAVAILABLE)
    except (BackupError, OSError) as e:
        return _say_error(args, f"backup failed, nothing written: {e}", EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 - a sentence, never a traceback
        return _say_error(args, f"backup failed, nothing written: {type(e).__name__}: {e}", EXIT_FAILED)
    if args.json:
        print(json.dumps({"ok": True, **res}, sort_keys=True))
        return EXIT_OK
    voters = ", ".join(f"{m['id']}@{m['host']}:{m['port']}" + ("" if m["kind"] == "voter" else " (learner)")
                       for m in res["members"])
    print(f"wrote {res['path']} ({res['file_size']} bytes; database {res['payload_size']} bytes)")
    print(f"  cluster {res['cluster_id']!r}, applied index {res['applied_index']} (term {res['term']}), "
          f"read index {res['read_index']}, taken {res['created']} by node {res['source_node']} "
          f"({res['source_address']})")
    print(f"  members: {voters}")
    print(f"  {_counts_text(res['counts'])}")
    print(f"  sha256 {res['payload_sha256']}; verified (checksums, database integrity, applied index)")
    return EXIT_OK


def _cmd_restore(args: argparse.Namespace) -> int:
    from actors.config import ConfigError

    from .cluster import cli_prefix

    if args.config is not None:
        given = [flag for flag, value in (("--data-dir", args.data_dir), ("--nodes", args.nodes),
                                          ("--port", args.port), ("--host", args.host)) if value is not None]
        if given:
            return _say_error(args, f"--config describes the new cluster; drop {', '.join(given)}; nothing written",
                              EXIT_USAGE)
    try:
        res = restore(args.backup, data_dir=args.data_dir, nodes=3 if args.nodes is None else args.nodes,
                      port=50051 if args.port is None else args.port, host=args.host or "127.0.0.1",
                      cluster_id=args.cluster_id, config=args.config, snapshot_entries=args.snapshot_entries,
                      force=args.force)
    except (Refused, ConfigError) as e:
        return _say_error(args, f"{e}; nothing written", EXIT_USAGE)
    except BackupError as e:
        return _say_error(args, f"{e}; nothing written", EXIT_FAILED)
    except OSError as e:
        return _say_error(args, f"restore failed: {e}", EXIT_FAILED)
    if args.json:
        print(json.dumps({"ok": True, **res}, sort_keys=True))
        return EXIT_OK
    print(f"restored {res['backup']}: cluster {res['source_cluster_id']!r} at index {res['applied_index']} "
          f"(term {res['term']}), taken {res['created']}")
    print(f"  {_counts_text(res['counts'])}")
    print(f"new cluster {res['cluster_id']!r} in {res['data_dir']} ({res['config']}): "
          + ", ".join(f"{n['id']}@{n['address']}" for n in res["nodes"]))
    if res["replaced"]:
        print("  replaced: " + ", ".join(res["replaced"]))
    if args.config is None:
        print(f"start it with: {cli_prefix()} cluster up --data-dir {res['data_dir']}")
    else:
        print(f"start each node with: {cli_prefix()} node --id N --config {res['config']}")
    return EXIT_OK


def add_backup_commands(sub: Any) -> None:
    """Register `railraft backup` and `railraft restore` on the CLI's subparsers."""
    b = sub.add_parser("backup", help="write a consistent backup of a running cluster (administrators only)",
                       description="Ask the leader for a consistent copy of the database (after a linearizable "
                                   "read barrier: everything acknowledged before the command is in it) and write "
                                   "it to one verified file.  Needs an administrator's session.")
    b.add_argument("-o", "--output", required=True, metavar="FILE", help="the backup file to write (mode 0600)")
    b.add_argument("--token", default=None, help="an administrator's session token (default: $RAILRAFT_TOKEN, else "
                                                "the session `railraft login` saved)")
    b.add_argument("--force", action="store_true", help="replace FILE if it exists")
    b.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"how long to keep trying to reach a leader that can serve it, and the longest wait "
                        f"for any part of the transfer (default {DEFAULT_TIMEOUT_S:g})")
    b.add_argument("--nodes", metavar="HOST:PORT,...",
                   help="node addresses (default: as for every railraft command: --config's nodes, else "
                        "127.0.0.1:50051-50053)")
    b.add_argument("--config", metavar="PATH", help="cluster.toml to take node addresses from")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_backup)

    r = sub.add_parser("restore", help="build the data directories of a NEW cluster from a backup file",
                       description="Verify a backup file, then write DIR/cluster.toml and DIR/nodeN for a new "
                                   "cluster whose nodes start from the backup as their snapshot.  Refuses a "
                                   "corrupt backup or a non-empty DIR (unless --force); nothing is written then.")
    r.add_argument("backup", metavar="BACKUP", help="the file `railraft backup` wrote")
    r.add_argument("--data-dir", metavar="DIR", help="where the new cluster's cluster.toml and node data go")
    r.add_argument("--nodes", type=int, default=None, metavar="N", help="number of nodes (default 3)")
    r.add_argument("--port", type=int, default=None, metavar="P", help="first port (default 50051)")
    r.add_argument("--host", default=None, help="the nodes' host (default 127.0.0.1)")
    r.add_argument("--cluster-id", default=None, metavar="ID",
                   help="the new cluster's id (default: the source's id + '-restored-' + random)")
    r.add_argument("--config", metavar="PATH",
                   help="instead of --data-dir/--nodes/--port: an existing cluster.toml describing the new "
                        "cluster (its nodes' data directories are written, the file is left as it is)")
    r.add_argument("--snapshot-entries", type=int, default=None, metavar="N",
                   help="snapshot_entries of the new cluster.toml (default 10000)")
    r.add_argument("--force", action="store_true",
                   help="write into a non-empty DIR, replacing cluster.toml and the nodeN directories")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=_cmd_restore)


__all__ = [
    "MAGIC", "FORMAT_VERSION", "BackupError", "Refused", "BackupDenied", "ClusterUnavailable",
    "encode_header", "read_header", "verify_backup", "check_database", "database_counts", "make_header",
    "write_backup_file",
    "fetch_backup", "take_backup", "restore", "add_backup_commands",
]
