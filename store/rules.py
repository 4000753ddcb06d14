"""Input rules shared by the proposer (store.auth, the gateway) and the deterministic apply (store.state_machine).

These are pure functions of their arguments: the state machine re-checks every rule when it applies a command,
so a buggy or hostile proposer can never put a malformed row into the replicated database.  The proposer checks
the same rules first, so a user normally gets the error before anything is proposed.
"""

from __future__ import annotations

import re

USERNAME_MIN = 3
USERNAME_MAX = 32
PASSWORD_MIN = 8
PASSWORD_MAX = 128
# ASCII only: usernames are compared case-insensitively (SQLite's NOCASE folds ASCII only), so a non-ASCII
# letter would make "the same name" ambiguous.
_USERNAME_RE = re.compile(r"[A-Za-z0-9._-]+")

ROLE_CUSTOMER = "CUSTOMER"
ROLE_ADMIN = "ADMIN"
ROLES = frozenset({ROLE_CUSTOMER, ROLE_ADMIN})

# Upper bound for a stored password hash: ours are ~140 characters; anything much longer is garbage.
PASSWORD_HASH_MAX = 512


def validate_username(username: object) -> str:
    """Return `username` if it is 3-32 characters of ASCII letters, digits, '.', '_' or '-'; else ValueError."""
    if not isinstance(username, str):
        raise ValueError("username must be a string")
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise ValueError(f"username must be {USERNAME_MIN} to {USERNAME_MAX} characters long (got {len(username)})")
    if not _USERNAME_RE.fullmatch(username):
        raise ValueError("username may contain only letters, digits, '.', '_' and '-'")
    return username


def validate_password(password: object) -> str:
    """Return `password` if it is 8-128 characters long; else ValueError (the message never echoes it)."""
    if not isinstance(password, str):
        raise ValueError("password must be a string")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValueError(f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    return password


def validate_role(role: object) -> str:
    """Return `role` if it is CUSTOMER or ADMIN; else ValueError."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(ROLES))} (got {role!r})")
    return role  # type: ignore[return-value]


_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")


def validate_token_sha256(token_sha256: object) -> str:
    """Return `token_sha256` if it is 64 lowercase hex digits (a SHA-256 digest); else ValueError."""
    if not isinstance(token_sha256, str) or not _SHA256_HEX_RE.fullmatch(token_sha256):
        raise ValueError("token_sha256 must be 64 lowercase hex digits")
    return token_sha256


def validate_host(host: object) -> str:
    """Return `host` if it is a plausible host name or IP literal (1-253 printable ASCII, no spaces)."""
    if not isinstance(host, str) or not 1 <= len(host) <= 253 or not host.isascii() or not host.isprintable() \
            or " " in host:
        raise ValueError(f"host must be a host name or IP address (got {host!r})")
    return host


def validate_port(port: object) -> int:
    """Return `port` if it is an int in 1..65535; else ValueError."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1 to 65535 (got {port!r})")
    return port
