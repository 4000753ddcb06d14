"""Fault-injecting TCP proxies on 127.0.0.1, one per directed peer link.

Node i reaches node j only through the proxy (i -> j) (cluster.toml `dial`, see ProcessCluster.set_dial), and
the messages of a link flow one way (node i's replicator streams i's Raft messages to j; j's answers travel
on j's own link j -> i).  So faulting the proxy (i -> j) faults exactly "i's messages to j".

Modes of one link:

* ``pass``       bytes flow (optionally each delayed by `delay` seconds plus up to `jitter`, order kept);
* ``drop``       every open connection is closed and new ones are accepted and closed at once (a peer that
                 crashed or refuses connections: the sender notices at once);
* ``blackhole``  connections stay open and new ones are accepted, but every byte in both directions of the
                 connection is discarded (a silent one-way cut: the sender only notices by its timeouts).

`ProxyNet` runs all the proxies on one asyncio loop in a thread of its own and offers the topology
operations the nemesis uses (cut one direction, isolate a node, split into groups, delay, heal), all of
them callable from any thread.  Everything binds to 127.0.0.1 only and `close()` frees every port.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

HOST = "127.0.0.1"
MODES = ("pass", "drop", "blackhole")
CHUNK = 1 << 16


@dataclass(eq=False)  # hashed by identity (kept in a set)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task] = field(default_factory=list)

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                w.transport.abort()


class LinkProxy:
    """The proxy of one directed link src -> dst (listens on `port`, forwards to dst's `target_port`)."""

    def __init__(self, src: int, dst: int, target_port: int, rng: random.Random) -> None:
        self.src = src
        self.dst = dst
        self.target_port = target_port
        self.port = 0
        self.mode = "pass"
        self.delay = 0.0
        self.jitter = 0.0
        self.rng = rng
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.bytes = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        await self._drop_all()

    async def set(self, mode: str, delay: float = 0.0, jitter: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        self.mode, self.delay, self.jitter = mode, delay, jitter
        if mode == "drop":
            await self._drop_all()

    async def _drop_all(self) -> None:
        conns, self.conns = list(self.conns), set()
        for c in conns:
            c.abort()
            for t in c.tasks:
                t.cancel()
        for c in conns:
            for t in c.tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "drop":
            writer.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(HOST, self.target_port), 2.0)
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()  # the node behind us is down: refuse, as it would
            return
        conn = _Conn(writer, up_w)
        self.conns.add(conn)
        conn.tasks = [asyncio.ensure_future(self._pump(reader, up_w, conn)),
                      asyncio.ensure_future(self._pump(up_r, writer, conn))]
        try:
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.abort()
            for t in conn.tasks:
                t.cancel()
            self.conns.discard(conn)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, conn: _Conn) -> None:
        """Copy r -> w.  Delays keep order: each chunk is written `delay` after it was read, by a writer task."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def writer() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.mode == "blackhole":
                    continue  # cut while the chunk was in flight: it is lost
                w.write(data)
                await w.drain()

        wt = asyncio.ensure_future(writer())
        try:
            while True:
                data = await r.read(CHUNK)
                if not data:
                    break
                if self.mode != "pass":
                    continue  # blackhole (or a drop racing with us): the bytes vanish
                self.bytes += len(data)
                delay = self.delay + (self.rng.random() * self.jitter if self.jitter else 0.0)
                queue.put_nowait((loop.time() + delay, data))
                if wt.done():
                    break
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await wt
        finally:
            wt.cancel()


class ProxyNet:
    """All directed links of a cluster of `ids`, each through its own LinkProxy; see the module docstring."""

    def __init__(self, ports: dict[int, int], seed: int = 0) -> None:
        self.ids = sorted(ports)
        self._loop = asyncio.SelectorEventLoop()  # not the trio-asyncio policy's loop: a plain one
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxies", daemon=True)
        self._thread.start()
        rng = random.Random(seed)
        self.links: dict[tuple[int, int], LinkProxy] = {
            (i, j): LinkProxy(i, j, ports[j], random.Random(rng.random()))
            for i in self.ids for j in self.ids if i != j
        }
        self._closed = False
        for link in self.links.values():
            self._run(link.start())

    def _run(self, coro):  # noqa: ANN001, ANN202 - any coroutine, its result
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def dial(self) -> dict[int, dict[int, str]]:
        """For ProcessCluster.set_dial: node i dials peer j at its proxy's address."""
        return {i: {j: f"{HOST}:{self.links[(i, j)].port}" for j in self.ids if j != i} for i in self.ids}

    # ----------------------------------------------------------------------------------------- topology
    def set(self, src: int, dst: int, mode: str, delay: float = 0.0, jitter: float = 0.0) -> None:
        self._run(self.links[(src, dst)].set(mode, delay, jitter))

    def cut(self, src: int, dst: int, mode: str = "blackhole") -> None:
        """One-way: src's messages no longer reach dst."""
        self.set(src, dst, mode)

    def isolate(self, node: int, mode: str = "blackhole") -> None:
        """Cut every link to and from `node`."""
        for other in self.ids:
            if other != node:
                self.set(node, other, mode)
                self.set(other, node, mode)

    def partition(self, groups: Iterable[Iterable[int]], mode: str = "blackhole") -> None:
        """Only nodes of the same group talk to each other."""
        side = {n: gi for gi, g in enumerate(groups) for n in g}
        for (i, j) in self.links:
            if side.get(i) != side.get(j):
                self.set(i, j, mode)

    def slow(self, delay: float, jitter: float = 0.0, links: Iterable[tuple[int, int]] | None = None) -> None:
        for (i, j) in (links if links is not None else list(self.links)):
            self.set(i, j, "pass", delay, jitter)

    def heal(self) -> None:
        for (i, j) in self.links:
            self.set(i, j, "pass")

    def modes(self) -> dict[tuple[int, int], str]:
        return {k: (v.mode if not v.delay else f"{v.mode}+{v.delay * 1000:.0f}ms") for k, v in self.links.items()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for link in self.links.values():
                self._run(link.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
