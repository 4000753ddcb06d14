"""Supervision on Trio: actors restarted one-for-one with backoff, escalation after too many restarts.

An actor is an async function `run(task_status=...)` that reads its inbox (a bounded Trio memory channel
that the node creates and keeps, so a restarted actor resumes on the same inbox) and talks to other actors
only by sending them frozen-dataclass messages.  `supervise` runs one actor:

* readiness: it is started with `nursery.start(supervise, spec)`; that returns once the actor's first
  incarnation has called `task_status.started()`;
* a crash (any Exception) is logged and the actor restarted after an exponential backoff;
* more than `max_restarts` crashes within `window_s` seconds escalate: `EscalationError` propagates, which
  cancels the whole node; the runner logs the cause and the process exits non-zero;
* an actor that returns normally is finished (used for graceful stop).

Cancellation (trio.Cancelled, a BaseException) is never caught, so stopping the node stops every actor.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger("railraft.actors")


@dataclass(frozen=True)
class RestartPolicy:
    """How hard to try before giving up on an actor."""

    max_restarts: int = 5
    window_s: float = 30.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0


@dataclass(frozen=True)
class ActorSpec:
    """A named actor body.  `run` must accept `task_status` and call `task_status.started()` when ready."""

    name: str
    run: Callable[..., Awaitable[Any]]
    policy: RestartPolicy = RestartPolicy()


class EscalationError(Exception):
    """An actor crashed too often; the node must stop."""

    def __init__(self, name: str, restarts: int, window_s: float, cause: BaseException) -> None:
        super().__init__(f"actor {name!r} crashed {restarts} times within {window_s:g}s; last error: {cause!r}")
        self.actor = name
        self.cause = cause


class ActorCrashInjector:
    """Test hook: arm it to make a named actor raise at its next checkpoint (`maybe_crash`)."""

    def __init__(self) -> None:
        self._armed: dict[str, int] = {}

    def arm(self, name: str, times: int = 1) -> None:
        """Make the next `times` calls of `maybe_crash(name)` raise."""
        self._armed[name] = self._armed.get(name, 0) + times

    def maybe_crash(self, name: str) -> None:
        """Raise InjectedCrash if armed for this actor."""
        left = self._armed.get(name, 0)
        if left:
            self._armed[name] = left - 1
            raise InjectedCrash(f"injected crash in actor {name!r}")


class InjectedCrash(RuntimeError):
    """The crash an ActorCrashInjector asked for."""


class _Status:
    """Forwards `started()` to the real task_status once, and remembers whether it was called."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.called = False

    def started(self, value: Any = None) -> None:
        if not self.called:
            self.called = True
            self.inner.started(value)


async def supervise(spec: ActorSpec, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run `spec` forever, restarting it when it crashes; see the module docstring."""
    policy = spec.policy
    crashes: deque[float] = deque()
    delay = policy.backoff_initial_s
    status = _Status(task_status)
    restarts = 0
    while True:
        began = trio.current_time()
        try:
            await spec.run(task_status=status)
            log.info("actor %s finished", spec.name)
            return
        except Exception as exc:  # noqa: BLE001 - a supervisor's job is to catch whatever the child raises
            if not status.called:
                raise  # it never became ready: the node cannot start, so there is nothing to restart
            now = trio.current_time()
            if now - began > policy.window_s:
                delay = policy.backoff_initial_s  # it ran fine for a while: start the backoff over
            crashes.append(now)
            while crashes and crashes[0] < now - policy.window_s:
                crashes.popleft()
            if len(crashes) > policy.max_restarts:
                log.error("actor %s crashed too often, escalating: %r", spec.name, exc)
                raise EscalationError(spec.name, len(crashes), policy.window_s, exc) from exc
            restarts += 1
            log.warning("actor %s crashed (%r); restart #%d in %.2fs", spec.name, exc, restarts, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, policy.backoff_max_s)
