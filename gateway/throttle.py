"""Login throttling: too many failed logins for one account, or from one address, and logins stop for a while.

Both client APIs log in through `BookingCore.authenticate`, which asks a `LoginThrottle` before it looks at
the password (so a throttled guess costs no scrypt either) and tells it about every failure and success:

* per account (the username stripped and case-folded -- accounts are case-insensitive): `ACCOUNT_LIMIT`
  failures within `WINDOW_S` lock the account for `LOCKOUT_S`.  Only accounts that exist are counted: a
  client that polls Login while the first administrator is still being created must not lock that account
  before it exists, and spraying made-up names must not fill the table.  That this tells an attacker which
  names exist reveals nothing new -- Register already answers "username taken";
* per client address (the IP address grpclib reports for the connection; every failure, known account or
  not): `ADDRESS_LIMIT` failures within `WINDOW_S` lock the address for `LOCKOUT_S`.  Higher, because many
  people may share an address.

A locked login is refused without checking the password: gRPC RESOURCE_EXHAUSTED (railraft.v1.Booking) or
`success=false` (train_booking.Ticketing), "Too many failed login attempts; try again in N minutes".
Attempts refused that way are not counted (the lockout ends when it says it does).  A successful login
clears its account's failures, never its address's (a client with one good account must not be able to
reset the counter between guesses at others).

Node-local, by design.  The counters live in the memory of the node that received the login and are not
replicated: a login is a read plus one CreateSession, and putting every failed guess through Raft would let
an attacker fill the log (and every replica's disk) with failures.  The price: an attacker who spreads
guesses over N nodes gets N times the budget, and a restarted node forgets its counters.  With 5 guesses per
15 minutes per node that is still only a few hundred guesses per account per day on a 3-node cluster.

Known trade-offs: a per-account lockout lets anyone lock a victim out for `LOCKOUT_S` by guessing wrong on
purpose (the usual price of account lockout; it is short for that reason), and every user of one proxy --
e.g. the web app, which talks to the cluster from one address -- shares one address budget (the web tier
should throttle per browser itself).

Time comes from an injectable monotonic `clock` (seconds), so tests run under a fake clock without sleeping.
Memory is bounded: at most `max_keys` accounts and addresses are tracked, the least recently failed dropped
first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginThrottle", "Throttled", "ACCOUNT_LIMIT", "ADDRESS_LIMIT", "WINDOW_S", "LOCKOUT_S"]

ACCOUNT_LIMIT = 5  # failed logins per account within WINDOW_S before it is locked
ADDRESS_LIMIT = 100  # failed logins per client address within WINDOW_S before it is locked
WINDOW_S = 15 * 60.0
LOCKOUT_S = 15 * 60.0
MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Throttled:
    """Why a login is refused now: which key is locked, and for how many more seconds."""

    scope: str  # "account" or "address"
    retry_after_s: float

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.retry_after_s / 60))
        unit = "minute" if minutes == 1 else "minutes"
        return f"Too many failed login attempts; try again in {minutes} {unit}"


class _Counter:
    """Failure times within the window, and the end of a lockout (0 = none)."""

    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.locked_until = 0.0


class _Keyed:
    """Counters per key (an LRU of at most `max_keys`)."""

    def __init__(self, limit: int, window_s: float, lockout_s: float, max_keys: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_keys = max_keys
        self.counters: OrderedDict[str, _Counter] = OrderedDict()

    def locked_for(self, key: str, now: float) -> float:
        """Seconds left of `key`'s lockout (0 if it is not locked)."""
        c = self.counters.get(key)
        if c is None or c.locked_until <= now:
            return 0.0
        return c.locked_until - now

    def fail(self, key: str, now: float) -> None:
        c = self.counters.get(key)
        if c is None:
            c = self.counters[key] = _Counter()
            while len(self.counters) > self.max_keys:
                self.counters.popitem(last=False)
        else:
            self.counters.move_to_end(key)
        while c.failures and c.failures[0] <= now - self.window_s:
            c.failures.popleft()
        c.failures.append(now)
        if len(c.failures) >= self.limit:
            c.locked_until = now + self.lockout_s
            c.failures.clear()

    def clear(self, key: str) -> None:
        self.counters.pop(key, None)


class LoginThrottle:
    """Per-account and per-address failed-login limits of one node (see the module docstring)."""

    def __init__(self, *, account_limit: int = ACCOUNT_LIMIT, address_limit: int = ADDRESS_LIMIT,
                 window_s: float = WINDOW_S, lockout_s: float = LOCKOUT_S, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if account_limit < 1 or address_limit < 1 or window_s <= 0 or lockout_s <= 0 or max_keys < 1:
            raise ValueError("limits, window, lockout and max_keys must be positive")
        self.clock = clock
        self._accounts = _Keyed(account_limit, window_s, lockout_s, max_keys)
        self._addresses = _Keyed(address_limit, window_s, lockout_s, max_keys)

    @staticmethod
    def account_key(username: str) -> str:
        """The key of an account: usernames are case-insensitive and stripped before the lookup."""
        return username.strip().casefold()

    def check(self, username: str, address: str = "") -> Throttled | None:
        """None if a login for `username` from `address` may be tried now, else why not and for how long."""
        now = self.clock()
        left = self._addresses.locked_for(address, now) if address else 0.0
        if left > 0:
            return Throttled("address", left)
        left = self._accounts.locked_for(self.account_key(username), now)
        if left > 0:
            return Throttled("account", left)
        return None

    def failed(self, username: str, address: str = "", *, account_exists: bool = True) -> None:
        """Count a failed login: against the account if it exists, and against the address."""
        now = self.clock()
        if account_exists:
            self._accounts.fail(self.account_key(username), now)
        if address:
            self._addresses.fail(address, now)

    def succeeded(self, username: str, address: str = "") -> None:
        """A successful login clears its account's failures (not its address's)."""
        self._accounts.clear(self.account_key(username))
