"""A cheaper main loop for trio-asyncio: the asyncio callbacks that are ready run in one Trio turn.

trio-asyncio 0.16 runs its asyncio callbacks one per turn of Trio's scheduler: for each one it opens a
`move_on_after` cancel scope and awaits its queue, so every callback (a grpclib frame read, a future's
wake-up, a task step) costs a cancel scope and a full pass of Trio's run loop.  On a busy leader that
machinery was about 12% of the CPU.

`install()` replaces `BaseTrioEventLoop._main_loop_one` with a version that, when callbacks are already
queued, runs them back to back (at most `BURST`, including those they queue), as asyncio's own loop runs its
ready handles once per iteration, and then yields to Trio once.  With nothing queued it waits exactly as
before.
What stays the same: callbacks run in the order they were queued, a due timer runs before the queue's next
callback, a Trio-flavoured handle (`AsyncHandle`) is started and waited for as before, a cancelled handle is
skipped, each callback runs with sniffio saying "asyncio", and `stop()`'s callback ends the loop as before
(it raises out of the burst).
Other Trio tasks still get a turn after every burst.  tests/test_aio_loop.py checks these.

It also makes `call_soon` check its callback (not a coroutine, callable) only in debug mode, as asyncio's own
loop does; trio-asyncio checks always, and the check was 1-2% of a node's CPU.

`keep_serving_on_reports(loop)` is for the long-running processes (a node, the web app).  trio-asyncio's
default exception handler raises everything an asyncio library reports into the loop's nursery, which stops
the whole process.  That includes reports that carry no exception, only a message.  grpclib makes one when it
garbage-collects a Channel that a close() raced with its connect: "Unclosed connection".  It has closed that
connection itself by then.  A chaos run saw exactly this end a node.  Such reports are now logged, as asyncio
itself does; reports that carry an exception still stop the loop, as before.
"""

from __future__ import annotations

import asyncio
import heapq

import trio
from sniffio import thread_local as sniffio_library
from trio_asyncio._base import BaseTrioEventLoop
from trio_asyncio._handles import AsyncHandle

__all__ = ["BURST", "install", "installed", "keep_serving_on_reports", "uninstall"]

# Most callbacks one burst runs before other Trio tasks get a turn.  A callback takes tens of microseconds,
# so a full burst keeps Raft's tasks waiting a few milliseconds at most.
BURST = 64

_ORIGINAL = BaseTrioEventLoop._main_loop_one
_ORIGINAL_CALL_SOON = BaseTrioEventLoop.call_soon


def _call_soon(self, callback, *args, **context):  # type: ignore[no-untyped-def]
    """asyncio's call_soon, checking the callback in debug mode only, as asyncio's own loop does (the check
    asks whether the callback is a coroutine function, which is slow, on every future's wake-up)."""
    if self._debug:
        self._check_callback(callback, "call_soon")
    return self._queue_handle(asyncio.Handle(callback, args, self, **context))


async def _main_loop_one(self, no_wait: bool = False) -> None:
    """Run the callbacks (and due timers) that are ready, up to BURST, then yield once; with none ready, wait as
    trio-asyncio does."""
    if no_wait:
        await _ORIGINAL(self, no_wait)  # shutdown's drain: trio-asyncio's own path
        return
    timers = self._timers
    receive_nowait = self._q_recv.receive_nowait
    ran = 0
    while ran < BURST:
        if timers and timers[0]._when <= self.time():
            handle = heapq.heappop(timers)
        else:
            try:
                handle = receive_nowait()
            except trio.WouldBlock:
                if not ran:
                    # Nothing ready: trio-asyncio's own path waits for the next callback or timer.
                    await _ORIGINAL(self)
                    return
                break
            if isinstance(handle, asyncio.TimerHandle):
                heapq.heappush(timers, handle)
                continue
        ran += 1
        if isinstance(handle, AsyncHandle):
            handle._context.run(self._nursery.start_soon, handle._run, name=handle._callback)
            await handle._started.wait()
        elif not handle._cancelled:
            previous, sniffio_library.name = sniffio_library.name, "asyncio"
            try:
                handle._run()
            finally:
                sniffio_library.name = previous
    # The loop's task runs inside a shield (trio-asyncio's _main_loop), so this is a plain yield to the others.
    await trio.lowlevel.cancel_shielded_checkpoint()


def install() -> None:
    """Make every trio-asyncio loop run its ready callbacks in bursts (idempotent).

    Only over the loop internals this module was written against (trio-asyncio 0.16's `_q_recv` queue and
    `_timers` heap): a release that reworked them keeps its own loop (and tests/test_aio_loop.py says so).
    """
    if not {"_q_recv", "_timers", "_nursery"} <= set(_ORIGINAL.__code__.co_names):
        return
    BaseTrioEventLoop._main_loop_one = _main_loop_one
    BaseTrioEventLoop.call_soon = _call_soon


def uninstall() -> None:
    """Put trio-asyncio's own one-callback-per-turn loop back (for tests comparing the two)."""
    BaseTrioEventLoop._main_loop_one = _ORIGINAL
    BaseTrioEventLoop.call_soon = _ORIGINAL_CALL_SOON


def installed() -> bool:
    """True while the burst loop is in place."""
    return BaseTrioEventLoop._main_loop_one is _main_loop_one


def _log_or_raise(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    if context.get("exception") is None:
        # A report without an exception: log it, as asyncio's own loop does, and go on.
        asyncio.BaseEventLoop.default_exception_handler(loop, context)  # type: ignore[arg-type]
    else:
        loop.default_exception_handler(context)  # trio-asyncio's: log it and raise it into the loop


def keep_serving_on_reports(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop` (a trio-asyncio loop) log the reports that carry no exception instead of raising them
    (see the module docstring)."""
    loop.set_exception_handler(_log_or_raise)
