"""Password hashing takes turns: a burst of registrations or logins never runs more than
gateway.booking_core.PASSWORD_WORKERS scrypt hashes (16 MiB each) at once on a node."""

import threading
import time

import pytest
import trio

from gateway.booking_core import PASSWORD_WORKERS, password_work
from store import auth

pytestmark = pytest.mark.trio


async def test_a_burst_of_password_work_runs_a_few_at_a_time() -> None:
    lock = threading.Lock()
    running = peak = 0

    def slow_hash(password: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)  # real threads: the limit is on threads actually running
        with lock:
            running -= 1
        return password.upper()

    results: list[str] = []

    async def one(i: int) -> None:
        results.append(await password_work(slow_hash, f"pw{i}"))

    async with trio.open_nursery() as n:
        for i in range(4 * PASSWORD_WORKERS):
            n.start_soon(one, i)
    assert sorted(results) == sorted(f"PW{i}" for i in range(4 * PASSWORD_WORKERS))
    assert peak == PASSWORD_WORKERS


async def test_password_work_hashes_and_verifies_for_real() -> None:
    h = await password_work(auth.hash_password, "correct horse")
    assert await password_work(auth.verify_password, "correct horse", h)
    assert not await password_work(auth.verify_password, "wrong horse", h)
