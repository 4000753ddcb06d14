"""Proposer-side authentication helpers: validation, password hashing, session tokens.

These run on the node that receives a client request, BEFORE anything is proposed, so they may use the OS's
randomness and CPU-heavy hashing; the state machine never calls them.  Their outputs (a password hash, a
token's SHA-256) go into commands, and every replica applies exactly those values.

A login: `user = db.read(queries.user_by_name, name)`; `verify_password(pw, user.password_hash)`;
`token, digest = new_session_token()`; propose `CreateSession(user_id=user.id, token_sha256=digest, ...)`;
hand `token` to the client.  Later requests present the token; the gateway looks up `token_hash(token)`.

Session proofs.  A CreateSession says "this user logged in"; the node that checked the password proposes it,
and a follower forwards it to the leader over NodeService.Propose.  So that a stranger cannot forge one over
Propose (a session for the administrator, say), the command carries `session_proof(...)`: an HMAC keyed with
the user's stored password hash over the session's fields.  Every node holds the hashes (they are in the
replicated database), nobody outside does; the leader checks the proof before it proposes a forwarded
CreateSession (gateway.booking_core.check_forwarded).  Only an HMAC goes into the log, never the password.

Timing.  `dummy_verify` burns the same scrypt work as a real check, so a login for a name that does not
exist takes as long as a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .rules import validate_password, validate_username

__all__ = [
    "validate_username",
    "validate_password",
    "hash_password",
    "verify_password",
    "new_session_token",
    "token_hash",
    "session_proof",
    "check_session_proof",
    "dummy_verify",
]

# scrypt cost: n=2**14, r=8, p=1 takes ~16 MiB and tens of milliseconds -- the interactive-login setting.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SALT_BYTES = 16
# hashlib.scrypt refuses to use more than `maxmem` (default 32 MiB); allow what the stored parameters need
# (about 128 * r * (n + p + 2) bytes, plus slack) so a hash made with higher costs still verifies.
_MAXMEM_SLACK = 1 << 20
# Refuse absurd parameters from a stored string rather than burning CPU/memory on them (<= 256 MiB).
_MAX_N = 2**17
_MAX_R = 16
_MAX_P = 16


def hash_password(password: str) -> str:
    """Hash `password` with scrypt and a random 16-byte salt: ``scrypt$n$r$p$salt_hex$hash_hex``."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches `stored` (from `hash_password`); False for a wrong password or bad string.

    The comparison is constant-time.  The cost parameters come from `stored`, so hashes made with other
    settings keep working.
    """
    try:
        scheme, n_s, r_s, p_s, salt_hex, hash_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(hash_hex)
    except (ValueError, AttributeError):
        return False
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P and expected):
        return False
    actual = _scrypt(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=128 * r * (n + p + 2) + _MAXMEM_SLACK
    )


def urlsafe_secret(nbytes: int) -> str:
    """`secrets.token_urlsafe(nbytes)` that does not start with "-": such a token or password, typed as a
    command-line argument (`railraft logout TOKEN`, `railraft login NAME PASSWORD`), would be taken for an
    option.  One draw in 64 is redrawn, which costs less than a bit of its 8 * nbytes bits of entropy."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if not token.startswith("-"):
            return token


def new_session_token() -> tuple[str, str]:
    """A fresh bearer token for the client and its SHA-256 hex (what is replicated and stored)."""
    token = urlsafe_secret(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    """The SHA-256 hex digest of a session token, as stored in `sessions.token_sha256`."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------- session proofs

_PROOF_CONTEXT = b"railraft-session-proof-v1"


def session_proof(password_hash: str, user_id: int, token_sha256: str, ts_ms: int, expires_at_ms: int) -> str:
    """Hex HMAC-SHA256, keyed with the user's stored `password_hash`, over a CreateSession's fields."""
    msg = b"\0".join((_PROOF_CONTEXT, str(user_id).encode(), token_sha256.encode("utf-8", "surrogatepass"),
                      str(ts_ms).encode(), str(expires_at_ms).encode()))
    return hmac.new(password_hash.encode("utf-8", "surrogatepass"), msg, hashlib.sha256).hexdigest()


def check_session_proof(password_hash: str, proof: str, user_id: int, token_sha256: str, ts_ms: int,
                        expires_at_ms: int) -> bool:
    """True if `proof` is `session_proof` of these fields (constant-time comparison)."""
    if not password_hash or not isinstance(proof, str) or len(proof) != 64:
        return False
    expected = session_proof(password_hash, user_id, token_sha256, ts_ms, expires_at_ms)
    return hmac.compare_digest(expected.encode(), proof.encode("utf-8", "surrogatepass"))


_dummy_hash: str | None = None


def dummy_verify(password: str) -> bool:
    """Spend a password check's work on nothing (for a login whose account does not exist); always False."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    verify_password(password, _dummy_hash)
    return False
