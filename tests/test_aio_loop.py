"""gateway.aio_loop: trio-asyncio runs its ready asyncio callbacks in bursts, and behaves as before.

What a node relies on: callbacks run in the order queued, due timers fire even while callbacks keep coming,
cancelled handles are skipped, Trio-flavoured calls from asyncio work, sniffio names asyncio inside a
callback, other Trio tasks keep getting turns, and closing the loop runs what was queued before it.  The
burst itself (the point of the module) is checked by counting Trio turns.
"""

from __future__ import annotations

import asyncio

import pytest
import sniffio
import trio
import trio_asyncio

from gateway import aio_loop


@pytest.fixture(params=["burst", "original"])
def loop_kind(request):
    """Each behaviour test runs with the burst loop and with trio-asyncio's own, which must agree."""
    if request.param == "original":
        aio_loop.uninstall()
    else:
        aio_loop.install()
    yield request.param
    aio_loop.install()  # the state every other test runs in (gateway/rpc.py installs it)


async def _until(predicate, limit: int = 10_000) -> None:
    for _ in range(limit):
        if predicate():
            return
        await trio.sleep(0)
    raise AssertionError("condition never became true")


@pytest.mark.trio
async def test_callbacks_run_in_the_order_queued(loop_kind):
    async with trio_asyncio.open_loop() as loop:
        seen: list[int] = []

        def chain(i: int) -> None:
            seen.append(i)
            if i % 10 == 0 and i < 300:  # callbacks queued from callbacks go after those already queued
                loop.call_soon(chain, i + 1000)

        for i in range(500):
            loop.call_soon(chain, i)
        await _until(lambda: len(seen) == 500 + 30)
        assert seen[:500] == list(range(500))
        assert seen[500:] == [i + 1000 for i in range(0, 300, 10)]


@pytest.mark.trio
async def test_a_burst_runs_many_callbacks_in_one_trio_turn():
    aio_loop.install()
    async with trio_asyncio.open_loop() as loop:
        ran: list[int] = []
        turns = 0
        for i in range(400):
            loop.call_soon(ran.append, i)
        while len(ran) < 400:
            turns += 1
            await trio.sleep(0)
        # trio-asyncio's own loop takes one callback per turn (about 400 turns here); bursts of BURST take 7.
        assert turns <= 400 // aio_loop.BURST + 3
        assert ran == list(range(400))


@pytest.mark.trio
async def test_trio_tasks_get_turns_while_asyncio_is_always_busy(loop_kind):
    async with trio_asyncio.open_loop() as loop:
        spins = 0
        stop = False

        def spin() -> None:
            nonlocal spins
            spins += 1
            if not stop:
                loop.call_soon(spin)

        for _ in range(4 * aio_loop.BURST):  # the queue never empties
            loop.call_soon(spin)
        gaps = []
        try:
            for _ in range(50):
                before = spins
                await trio.sleep(0)
                gaps.append(spins - before)
        finally:
            stop = True  # else closing the loop would wait for an endless queue
        # Between two turns of this task the loop's task had at most two turns (Trio may run it last in one batch
        # of runnable tasks and first in the next), each one burst (trio-asyncio's own loop: one callback), plus
        # the first callback, which went straight to the loop's task while it waited on the empty queue.
        per_turn = aio_loop.BURST if loop_kind == "burst" else 1
        assert max(gaps) <= 2 * per_turn + 1
        assert sum(gaps) > 0


@pytest.mark.trio
async def test_due_timers_fire_while_callbacks_keep_coming(loop_kind, mock_clock):
    async with trio_asyncio.open_loop() as loop:
        fired = trio.Event()
        busy = 0

        def keep_busy() -> None:
            nonlocal busy
            busy += 1
            if not fired.is_set():
                loop.call_soon(keep_busy)

        loop.call_soon(keep_busy)
        loop.call_later(0.5, fired.set)  # queued behind a callback: a burst takes it from the queue
        for _ in range(3 * aio_loop.BURST):
            loop.call_soon(keep_busy)
        try:
            for _ in range(20):
                await trio.sleep(0)
            assert not fired.is_set()
            mock_clock.jump(1.0)
            await _until(fired.is_set, limit=100)
        finally:
            fired.set()
        assert busy > 0


@pytest.mark.trio
async def test_cancelled_handles_are_skipped(loop_kind):
    async with trio_asyncio.open_loop() as loop:
        ran: list[str] = []
        handles = [loop.call_soon(ran.append, name) for name in "abcdef"]
        handles[1].cancel()
        handles[4].cancel()
        timer = loop.call_later(0.0, ran.append, "timer")
        timer.cancel()
        await _until(lambda: "f" in ran)
        await trio.sleep(0.01)
        assert ran == ["a", "c", "d", "f"]


@pytest.mark.trio
async def test_callbacks_see_asyncio_and_trio_code_calls_in_between(loop_kind):
    async with trio_asyncio.open_loop() as loop:
        libraries: list[str] = []
        for _ in range(3):
            loop.call_soon(lambda: libraries.append(sniffio.current_async_library()))

        async def on_trio(x: int) -> int:
            await trio.sleep(0)
            libraries.append(sniffio.current_async_library())
            return x * 2

        async def on_asyncio() -> list[int]:
            calls = [trio_asyncio.trio_as_aio(on_trio)(i) for i in range(5)]
            return list(await asyncio.gather(*calls))

        assert await trio_asyncio.aio_as_trio(on_asyncio)() == [0, 2, 4, 6, 8]
        assert libraries[:3] == ["asyncio"] * 3
        assert libraries[3:] == ["trio"] * 5
        assert sniffio.current_async_library() == "trio"


@pytest.mark.trio
async def test_closing_the_loop_runs_what_was_queued(loop_kind):
    ran: list[int] = []
    async with trio_asyncio.open_loop() as loop:
        for i in range(3 * aio_loop.BURST):
            loop.call_soon(ran.append, i)
    assert ran == list(range(3 * aio_loop.BURST))


@pytest.mark.trio
async def test_an_error_in_a_callback_reaches_the_loops_owner(loop_kind):
    def boom() -> None:
        raise ValueError("callback failed")

    async def run() -> None:
        async with trio_asyncio.open_loop() as loop:
            for _ in range(5):
                loop.call_soon(lambda: None)
            loop.call_soon(boom)
            await trio.sleep(1)

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="callback failed"), flatten_subgroups=True):
        await run()


@pytest.mark.trio
async def test_call_soon_checks_its_callback_in_debug_mode_as_asyncio_does(loop_kind):
    async def not_a_callback() -> None:
        pass

    async with trio_asyncio.open_loop() as loop:
        loop.set_debug(True)
        with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
            loop.call_soon(not_a_callback)
        with pytest.raises(TypeError, match="a callable object was expected"):
            loop.call_soon(42)
        loop.set_debug(False)
        if loop_kind == "burst":
            loop.call_soon(not_a_callback).cancel()  # as asyncio's own loop: no check outside debug mode
        else:
            with pytest.raises(TypeError):
                loop.call_soon(not_a_callback)  # trio-asyncio's own call_soon checks always
        ran = trio.Event()
        loop.call_soon(ran.set)
        await ran.wait()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


@pytest.mark.trio
@pytest.mark.parametrize("keep_serving", [True, False])
async def test_a_report_without_an_exception_is_logged_and_no_longer_stops_the_loop(keep_serving, caplog):
    """What grpclib reports when it garbage-collects a Channel whose close() raced its connect (it has closed
    the connection itself): trio-asyncio's default handler raised it into the loop and a chaos run lost a node
    to it; with keep_serving_on_reports the loop logs it and goes on."""
    report = {"message": "Unclosed connection: Channel('127.0.0.1', 42115, ..., path=None)"}
    try:
        async with trio_asyncio.open_loop() as loop:
            if keep_serving:
                aio_loop.keep_serving_on_reports(loop)
            loop.call_exception_handler(report)
            await trio.sleep(0.05)
            assert await trio_asyncio.aio_as_trio(asyncio.sleep)(0, result=7) == 7  # asyncio still runs
    except BaseException as e:  # noqa: BLE001 - the default handler's error, checked below
        assert not keep_serving
        assert any(isinstance(x, RuntimeError) and "Unclosed connection" in str(x) for x in _leaves(e))
    else:
        assert keep_serving
    assert "Unclosed connection" in caplog.text  # logged either way


@pytest.mark.trio
async def test_a_report_with_an_exception_still_stops_the_loop():
    with pytest.raises(BaseException) as raised:
        async with trio_asyncio.open_loop() as loop:
            aio_loop.keep_serving_on_reports(loop)
            loop.call_exception_handler({"message": "a callback failed", "exception": ValueError("boom")})
            await trio.sleep(1)
    assert any(isinstance(x, ValueError) and str(x) == "boom" for x in _leaves(raised.value))
