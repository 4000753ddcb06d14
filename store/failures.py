"""`CommandFailed`, the exception a command handler raises for an expected failure, and `check`.

Its own module so that store.state_machine and the domain handlers (store.booking) can share it without
importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .commands import INVALID_ARGUMENT

T = TypeVar("T")


class CommandFailed(Exception):
    """Raised by a handler for an expected failure: the command's changes roll back, `code` is returned.

    `data` travels in the failed Result (e.g. {"void_charge": true} tells the proposer to refund a card
    charge the state machine refused).
    """

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = dict(data or {})


def check(rule: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a rules.validate_* function, turning its ValueError into an INVALID_ARGUMENT failure."""
    try:
        return rule(*args, **kwargs)
    except ValueError as e:
        raise CommandFailed(INVALID_ARGUMENT, str(e)) from None
