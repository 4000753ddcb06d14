"""The nemesis: faults on a seeded schedule, one at a time, each healed and recovered from before the next.

Faults (names as for `--faults`):

  kill          SIGKILL a node (the leader half of the time), restart it after a moment
  kill-leader   SIGKILL the leader right after a burst of concurrent bookings (mid-batch), restart it
  pause         SIGSTOP a node (the leader half of the time), SIGCONT it later
  isolate       cut every link to and from a node (blackhole: silent; or drop: refused), then heal; with 5 or
                more nodes, half the time a split into a minority and a majority instead
  one-way       cut one direction of one link only (leader -> follower or follower -> leader)
  slow          delay every link by 50-300 ms with jitter
  corrupt-tail  SIGKILL a node and leave a torn write at the end of its newest log segment (a partial
                record, garbage or zeros after the last synced record), restart it; it must truncate the
                torn record, say so in its log, and catch up
  lose-tail     (opt-in, not in the default set) SIGKILL a node and truncate or garble the last bytes of its
                last *synced* record -- acknowledged data lost, which Raft's fault model excludes
  disk-full     fill a node's disk (a small tmpfs filled for real, or the RAILRAFT_FAULT_DISK_FULL hook) until
                its writes fail; it must refuse requests with a clear "disk full" error instead of hanging,
                acknowledge nothing it did not persist, and recover by itself once space returns

After each fault is healed the nemesis measures how long the cluster takes to serve again (a write through
the client library succeeds) and to converge (every node applied what the leader had committed); both must
stay within the recovery bound.  Every fault becomes a `FaultRecord` with its checks.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.client import RailraftClient
from tests.cluster_harness import ProcessCluster

from .proxy import ProxyNet
from .workload import COACH, Workload

FAULTS = ("kill", "kill-leader", "pause", "isolate", "one-way", "slow", "corrupt-tail", "disk-full")
OPT_IN = ("lose-tail",)  # outside the fault model Raft is designed for: only when asked for
DISK_ENV = "RAILRAFT_FAULT_DISK_FULL"


@dataclass
class FaultRecord:
    kind: str
    target: str
    started: float
    healed: float = 0.0
    serving_s: float | None = None  # heal -> first successful write
    converged_s: float | None = None  # heal -> every node applied the leader's commit index
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        serve = "never" if self.serving_s is None else f"{self.serving_s:.1f}s"
        conv = "never" if self.converged_s is None else f"{self.converged_s:.1f}s"
        bad = [k for k, ok in self.checks.items() if not ok]
        verdict = "ok" if not bad else "FAILED " + ", ".join(bad)
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.kind:<12} {self.target:<24} serving again {serve:>6}, converged {conv:>6}: {verdict}{extra}"


# ------------------------------------------------------------------------------------------- disks

class DiskFaults:
    """Makes a node's disk full: a size-limited tmpfs per node filled with a filler file when mounting is
    possible (root with CAP_SYS_ADMIN), else the RAILRAFT_FAULT_DISK_FULL hook of raft.filestorage/store.db."""

    def __init__(self, root: Path, mode: str = "auto", size_mb: int = 64) -> None:
        self.root = Path(root)
        self.size_mb = size_mb
        self.mounts: list[Path] = []
        self.mode = self._pick(mode)

    def _pick(self, mode: str) -> str:
        if mode in ("tmpfs", "auto"):
            probe = self.root / "tmpfs-probe"
            probe.mkdir(parents=True, exist_ok=True)
            ok = self._mount(probe, 1)
            if ok:
                self._umount(probe)
            probe.rmdir()
            if ok:
                return "tmpfs"
            if mode == "tmpfs":
                raise RuntimeError("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); use --disk-mode hook")
        return "hook"

    @staticmethod
    def _mount(path: Path, size_mb: int) -> bool:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            return False
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
                           capture_output=True, timeout=20)
        return r.returncode == 0

    @staticmethod
    def _umount(path: Path) -> None:
        r = subprocess.run(["umount", str(path)], capture_output=True, timeout=20)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)

    def prepare(self, cluster: ProcessCluster) -> None:
        """Before the nodes start: mount a tmpfs on each node's data directory, or point the hook at a flag."""
        for nid, n in cluster.nodes.items():
            if self.mode == "tmpfs":
                n.data_dir.mkdir(parents=True, exist_ok=True)
                if not self._mount(n.data_dir, self.size_mb):
                    raise RuntimeError(f"mounting a tmpfs on {n.data_dir} failed")
                self.mounts.append(n.data_dir)
            else:
                n.env = {**n.env, DISK_ENV: str(self._flag(nid))}
        self._dirs = {nid: n.data_dir for nid, n in cluster.nodes.items()}

    def _flag(self, nid: int) -> Path:
        return self.root / f"disk-full-node{nid}"

    def fill(self, nid: int) -> int:
        """Make node `nid`'s disk full now; returns the bytes written to fill it (0 with the hook)."""
        if self.mode == "hook":
            self._flag(nid).write_text("full\n")
            return 0
        filler = self._dirs[nid] / "chaos-filler"
        written = 0
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12):
                buf = b"\0" * chunk
                while True:
                    try:
                        written += os.write(fd, buf)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self, nid: int) -> None:
        if self.mode == "hook":
            self._flag(nid).unlink(missing_ok=True)
        else:
            (self._dirs[nid] / "chaos-filler").unlink(missing_ok=True)

    def free_all(self) -> None:
        for nid in getattr(self, "_dirs", {}):
            self.free(nid)

    def close(self) -> None:
        """Unmount everything mounted (call once the nodes are stopped)."""
        for path in reversed(self.mounts):
            self._umount(path)
        self.mounts.clear()


# --------------------------------------------------------------------------------------- the nemesis

class Nemesis:
    """Runs faults (see the module docstring) against `cluster`, one at a time, on a schedule from `seed`."""

    def __init__(self, cluster: ProcessCluster, net: ProxyNet, disk: DiskFaults, workload: Workload, seed: int,
                 *, say: Callable[[str], None] = print, recovery_bound_s: float = 20.0,
                 kinds: tuple[str, ...] = FAULTS, fault_s: tuple[float, float] = (1.5, 4.0)) -> None:
        self.c = cluster
        self.net = net
        self.disk = disk
        self.workload = workload
        self.rng = random.Random(seed)
        self.say = say
        self.bound = recovery_bound_s
        self.kinds = tuple(kinds)
        self.fault_s = fault_s  # how long each fault lasts: uniform in this range
        self.records: list[FaultRecord] = []
        self._probe = 0
        self.ids = sorted(cluster.nodes)

    # ----------------------------------------------------------------------------------- the schedule
    def run(self, duration: float) -> list[FaultRecord]:
        """Faults until `duration` seconds have passed: every kind once (in a seeded order) before any repeats."""
        end = time.monotonic() + duration
        bag: list[str] = []
        time.sleep(min(1.0, duration / 10))  # some traffic before the first fault
        while time.monotonic() < end - 2.0:
            if not bag:
                bag = list(self.kinds)
                self.rng.shuffle(bag)
            kind = bag.pop()
            self._one(kind)
            quiet = self.rng.uniform(0.2, 1.0)
            time.sleep(max(0.0, min(quiet, end - time.monotonic())))
        return self.records

    def _one(self, kind: str) -> None:
        hold = self.rng.uniform(*self.fault_s)
        rec = FaultRecord(kind, "", time.monotonic())
        self.records.append(rec)
        getattr(self, "_" + kind.replace("-", "_"))(rec, hold)
        rec.healed = time.monotonic()
        self._recover(rec)
        self.say(f"  fault {len(self.records):>2}: {rec.line()}")

    def _pick(self, leader_bias: float = 0.5) -> int:
        lead = self._leader()
        if lead is not None and self.rng.random() < leader_bias:
            return lead
        return self.rng.choice(self.ids)

    def _leader(self) -> int | None:
        try:
            return self.c.leader(self.ids)
        except Exception:  # noqa: BLE001 - a node may not answer; then we just don't know
            return None

    def _role(self, nid: int) -> str:
        return "leader" if nid == self._leader() else "follower"

    # ------------------------------------------------------------------------------------------ faults
    def _kill(self, rec: FaultRecord, hold: float) -> None:
        nid = self._pick()
        rec.target = f"node {nid} ({self._role(nid)})"
        self.c.kill(nid)
        time.sleep(hold)
        self._restart(nid, rec)

    def _kill_leader(self, rec: FaultRecord, hold: float) -> None:
        lead = self._leader() or self._pick()
        rec.target = f"node {lead} (leader)"
        self.workload.burst(12)
        time.sleep(self.rng.uniform(0.005, 0.06))  # the burst is on its way: some proposed, some not yet
        self.c.kill(lead)
        time.sleep(hold)
        self._restart(lead, rec)

    def _pause(self, rec: FaultRecord, hold: float) -> None:
        nid = self._pick()
        rec.target = f"node {nid} ({self._role(nid)})"
        self.c.pause(nid)
        time.sleep(hold)
        self.c.resume(nid)

    def _isolate(self, rec: FaultRecord, hold: float) -> None:
        mode = self.rng.choice(["blackhole", "drop"])
        if len(self.ids) >= 5 and self.rng.random() < 0.5:
            # A full partition into a minority and a majority (with 3 nodes, isolating one is exactly that).
            ids = list(self.ids)
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, (len(ids) - 1) // 2)
            groups = [sorted(ids[:cut]), sorted(ids[cut:])]
            rec.target = f"split {groups[0]}|{groups[1]} ({mode})"
            self.net.partition(groups, mode)
        else:
            nid = self._pick()
            rec.target = f"node {nid} ({self._role(nid)}, {mode})"
            self.net.isolate(nid, mode)
        time.sleep(hold)
        self.net.heal()

    def _one_way(self, rec: FaultRecord, hold: float) -> None:
        lead = self._leader() or self.ids[0]
        other = self.rng.choice([n for n in self.ids if n != lead])
        src, dst = (lead, other) if self.rng.random() < 0.5 else (other, lead)
        rec.target = f"{src}->{dst} cut (leader {lead})"
        self.net.cut(src, dst, "blackhole")
        time.sleep(hold)
        self.net.heal()

    def _slow(self, rec: FaultRecord, hold: float) -> None:
        delay = self.rng.uniform(0.05, 0.3)
        rec.target = f"all links +{delay * 1000:.0f}ms"
        self.net.slow(delay, jitter=delay / 4)
        time.sleep(hold)
        self.net.heal()

    def _corrupt_tail(self, rec: FaultRecord, hold: float) -> None:
        """A torn write: the node died while appending, leaving a partial record after its last synced one."""
        self._damage_tail(rec, hold, lose_acked=False)

    def _lose_tail(self, rec: FaultRecord, hold: float) -> None:
        """Opt-in (outside Raft's fault model): the last *synced* record is damaged, i.e. acknowledged data
        is lost.  Raft assumes it never is; see tests/chaos/README.md for what happens."""
        self._damage_tail(rec, hold, lose_acked=True)

    def _damage_tail(self, rec: FaultRecord, hold: float, lose_acked: bool) -> None:
        nid = self._pick(leader_bias=0.3)
        rec.target = f"node {nid} ({self._role(nid)})"
        self.c.kill(nid)
        raft = self.c.nodes[nid].data_dir / "raft"
        segs = sorted(raft.glob("log-*.seg"))
        damaged = False
        if not segs or segs[-1].stat().st_size == 0:
            rec.notes.append("no log segment to damage")
        elif lose_acked:
            seg = segs[-1]
            size = seg.stat().st_size
            k = min(size, self.rng.randint(1, 20))  # < the smallest record (25 bytes): only the last record
            how = self.rng.choice(["truncate", "garble"])
            with open(seg, "r+b") as f:
                if how == "truncate":
                    f.truncate(size - k)
                else:
                    f.seek(size - k)
                    data = bytes(b ^ 0xA5 for b in f.read(k))
                    f.seek(size - k)
                    f.write(data)
            rec.target += f", {how} {k}B of {seg.name}"
            damaged = True
        else:
            seg = segs[-1]
            how = self.rng.choice(["partial", "garbage", "zeros"])
            if how == "partial":  # a header promising more bytes than made it to the disk
                length = self.rng.randint(40, 400)
                tail = struct.pack("<II", length, self.rng.getrandbits(32))
                tail += self.rng.randbytes(self.rng.randint(0, length - 1))
            elif how == "garbage":
                tail = self.rng.randbytes(self.rng.randint(1, 64))
            else:  # the file grew but its data never did: zeros, as after a power cut
                tail = bytes(self.rng.randint(1, 4096))
            with open(seg, "ab") as f:
                f.write(tail)
            rec.target += f", torn {how} tail of {len(tail)}B on {seg.name}"
            damaged = True
        if damaged:
            with open(seg, "rb+") as f:
                os.fsync(f.fileno())
        before = self.c.log(nid).count("truncated torn tail")
        time.sleep(hold / 2)
        self._restart(nid, rec)
        if damaged:
            rec.checks["torn tail truncated and reported"] = self.c.log(nid).count("truncated torn tail") > before

    def _disk_full(self, rec: FaultRecord, hold: float) -> None:
        nid = self._pick()
        rec.target = f"node {nid} ({self._role(nid)}, {self.disk.mode})"
        before = self.c.log(nid).count("disk full")
        before_ok = self.c.log(nid).count("takes writes again")
        self.disk.fill(nid)
        t0 = time.monotonic()
        # The node notices at its next write (the workload keeps writing).  A linearizable read sent to it
        # alone must then fail quickly with a clear error instead of hanging.
        seen = ""
        overclaims: list[str] = []
        while time.monotonic() - t0 < max(hold, 5.0) and "disk" not in seen:
            seen = self._read_error(nid)
            if "disk" not in seen:
                time.sleep(0.2)
            overclaims += self._acked_beyond_disk(nid)
        while time.monotonic() - t0 < hold:
            overclaims += self._acked_beyond_disk(nid)
            time.sleep(0.2)
        reported = self.c.log(nid).count("disk full") > before
        self.disk.free(nid)
        rec.checks["node reported its disk full"] = reported
        rec.checks["reads refused with a clear disk-full error"] = "disk full" in seen
        # It never acknowledges what it did not persist: the leader never counts more of its log than is on
        # its disk (sampled: the leader's match index first, then the node's log files).
        rec.checks["acknowledged nothing it had not persisted"] = not overclaims
        if overclaims:
            rec.notes.append(overclaims[0])
        if seen:
            m = re.search(r"node \d+: disk full", seen)
            rec.notes.append(f"a read there answered {m.group(0) if m else seen[:80]!r}")
        rec.notes.append(f"full for {time.monotonic() - t0:.1f}s")
        deadline = time.monotonic() + self.bound
        while time.monotonic() < deadline and self.c.log(nid).count("takes writes again") <= before_ok:
            time.sleep(0.1)
        rec.checks["node recovered once space returned"] = self.c.log(nid).count("takes writes again") > before_ok
        if not self.c.nodes[nid].running():
            rec.notes.append(f"node exited with {self.c.nodes[nid].proc.returncode}")
            self._restart(nid, rec)

    def _acked_beyond_disk(self, nid: int) -> list[str]:
        lead = self._leader()
        if lead is None or lead == nid:
            return []
        try:
            st = self.c.status(lead)
        except Exception:  # noqa: BLE001
            return []
        match = next((p["match"] for p in st.get("progress", []) if p["id"] == nid), None)
        if match is None:
            return []
        on_disk = max(durable_last_index(self.c.nodes[nid].data_dir / "raft"), _snapshot_index(self.c, nid))
        if match > on_disk:
            return [f"leader {lead} counts node {nid} up to {match}, its log on disk ends at {on_disk}"]
        return []

    def _read_error(self, nid: int) -> str:
        """A linearizable read at node `nid` only: "" if it answered, else what it said (bounded at 2 s)."""
        runs = self.workload.epochs[0]

        async def go() -> str:
            rr = RailraftClient([self.c.address(nid)], timeout=2.0, attempt_timeout=2.0)
            try:
                await rr.seat_map(runs[0], COACH, "CXA", "CXC")
                return ""
            except Exception as e:  # noqa: BLE001 - the answer is what we want
                return str(e)
            finally:
                rr.close()

        return asyncio.run(go())

    # ---------------------------------------------------------------------------------------- recovery
    def _restart(self, nid: int, rec: FaultRecord) -> None:
        self.c.start(nid)
        try:
            self.c.wait_serving([nid], timeout=self.bound)
        except AssertionError as e:
            rec.notes.append(f"node {nid} did not come back: {str(e)[:200]}")

    def _recover(self, rec: FaultRecord) -> None:
        """Serving again (a write succeeds) and converged, both measured from the heal, within the bound."""
        for nid in self.ids:  # whatever the fault left behind, nothing stays broken
            n = self.c.nodes[nid]
            if n.paused:
                self.c.resume(nid)
            if not n.running():
                rec.notes.append(f"node {nid} was down (exit {n.proc.returncode if n.proc else '?'}); restarted")
                self._restart(nid, rec)
        healed = rec.healed
        self._probe += 1
        ok = self._probe_write(f"chaos-probe-{self._probe}", healed + self.bound)
        if ok:
            rec.serving_s = time.monotonic() - healed
        rec.checks["serving again within bound"] = ok
        conv = self._converge(healed + self.bound)
        if conv:
            rec.converged_s = time.monotonic() - healed
        rec.checks["converged within bound"] = conv

    def _probe_write(self, name: str, deadline: float) -> bool:
        async def go() -> bool:
            rr = RailraftClient(self.c.addrs(self.ids), timeout=max(0.5, deadline - time.monotonic()),
                                attempt_timeout=2.0)
            try:
                await rr.register(name, "chaos-probe-pw", remember=False)
                return True
            except Exception:  # noqa: BLE001 - not serving
                return False
            finally:
                rr.close()

        return asyncio.run(go())

    def _converge(self, deadline: float) -> bool:
        target = None
        while time.monotonic() < deadline:
            try:
                sts = self.c.statuses(self.ids)
            except Exception:  # noqa: BLE001
                sts = {}
            up = {nid: s for nid, s in sts.items() if s.get("up")}
            if target is None:
                lead = [s for s in up.values() if s.get("role") == "leader"]
                if lead:
                    target = max(lead, key=lambda s: s["term"])["commit_index"]
            if target is not None and len(up) == len(self.ids) and all(
                    s["applied_index"] >= target for s in up.values()):
                return True
            time.sleep(0.1)
        return False


_HEADER = struct.Struct("<II")  # raft.filestorage's record: length, crc32, then term u64, index u64, type u8, data
_BODY = struct.Struct("<QQB")


def durable_last_index(raft_dir: Path) -> int:
    """The index of the last intact record in a node's log segments (read-only; 0 if none)."""
    last = 0
    for seg in sorted(raft_dir.glob("log-*.seg")):
        try:
            data = seg.read_bytes()
        except OSError:
            continue
        pos = 0
        while len(data) - pos >= _HEADER.size:
            length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if length < _BODY.size or end > len(data) or zlib.crc32(data[pos + _HEADER.size:end]) != crc:
                break
            last = max(last, _BODY.unpack_from(data, pos + _HEADER.size)[1])
            pos = end
    return last


def _snapshot_index(c: ProcessCluster, nid: int) -> int:
    try:
        return int(json.loads((c.nodes[nid].data_dir / "raft" / "snapshot.meta").read_text())["index"])
    except (OSError, ValueError, KeyError):
        return 0
