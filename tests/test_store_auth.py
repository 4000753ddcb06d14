"""store.auth: password hashing and verification, session tokens, and input validation messages."""

from __future__ import annotations

import hashlib

import pytest

from store import auth


def test_hash_and_verify() -> None:
    stored = auth.hash_password("correct horse")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    assert auth.verify_password("correct horse", stored)
    assert not auth.verify_password("correct horsE", stored)
    assert auth.hash_password("correct horse") != stored  # fresh salt every time


def test_verify_uses_the_parameters_in_the_stored_string() -> None:
    salt = bytes(range(16))
    digest = hashlib.scrypt(b"pw-pw-pw-pw", salt=salt, n=2**10, r=4, p=2, dklen=24)
    stored = f"scrypt${2**10}$4$2${salt.hex()}${digest.hex()}"
    assert auth.verify_password("pw-pw-pw-pw", stored)
    assert not auth.verify_password("pw-pw-pw-px", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$1$2$3$00$00",
        "scrypt$16384$8$1$zz$00",
        "scrypt$1000$8$1$00$00",  # n not a power of two
        f"scrypt${2**30}$8$1$00$00",  # absurd cost
        "scrypt$16384$8$1$00$",  # empty hash
        "scrypt$16384$8$1$00",
    ],
)
def test_verify_rejects_malformed_hashes(stored: str) -> None:
    assert auth.verify_password("whatever-password", stored) is False


def test_session_tokens() -> None:
    token, digest = auth.new_session_token()
    assert len(token) >= 43 and digest == hashlib.sha256(token.encode()).hexdigest() == auth.token_hash(token)
    assert auth.new_session_token()[0] != token


@pytest.mark.parametrize("name", ["bob", "Bob.Smith-2_x", "a" * 32])
def test_valid_usernames(name: str) -> None:
    assert auth.validate_username(name) == name


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("ab", "3 to 32 characters long (got 2)"),
        ("a" * 33, "3 to 32 characters long (got 33)"),
        ("bob smith", "only letters, digits, '.', '_' and '-'"),
        ("bob@x", "only letters, digits"),
        ("zoë", "only letters, digits"),
        (None, "must be a string"),
    ],
)
def test_invalid_usernames(name, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        auth.validate_username(name)
    assert needle in str(info.value)


def test_password_validation() -> None:
    assert auth.validate_password("12345678") == "12345678"
    assert auth.validate_password("x" * 128)
    for bad in ("1234567", "x" * 129):
        with pytest.raises(ValueError, match="8 to 128 characters") as info:
            auth.validate_password(bad)
        assert bad not in str(info.value)  # never echo a password
    with pytest.raises(ValueError, match="must be a string"):
        auth.validate_password(12345678)


def test_session_proofs_bind_the_session_to_the_stored_password_hash() -> None:
    stored = auth.hash_password("correct horse")
    args = (7, "ab" * 32, 1_700_000_000_000, 1_700_000_360_000)
    proof = auth.session_proof(stored, *args)
    assert len(proof) == 64 and auth.check_session_proof(stored, proof, *args)
    assert not auth.check_session_proof(auth.hash_password("correct horse"), proof, *args)  # another salt
    for i in range(4):  # any field changed
        changed = list(args)
        changed[i] = changed[i] + (1 if isinstance(changed[i], int) else "0")
        assert not auth.check_session_proof(stored, proof, *changed)
    for bad in ("", "0" * 64, proof[:-1], proof.upper(), None):
        assert not auth.check_session_proof(stored, bad, *args)  # type: ignore[arg-type]
    assert not auth.check_session_proof("", auth.session_proof("", *args), *args)


def test_dummy_verify_costs_a_real_check() -> None:
    assert auth.dummy_verify("anything") is False
    assert auth._dummy_hash is not None and auth._dummy_hash.startswith("scrypt$16384$8$1$")


def test_tokens_and_generated_passwords_never_start_with_a_dash(monkeypatch) -> None:
    # `railraft logout TOKEN` with TOKEN = "-Q8E..." was read as an unknown option (seen in CI).
    draws = iter(["-first", "-second", "third"])
    monkeypatch.setattr(auth.secrets, "token_urlsafe", lambda n: next(draws))
    assert auth.urlsafe_secret(32) == "third"
    monkeypatch.undo()
    tokens = [auth.new_session_token()[0] for _ in range(2000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == 2000 and all(len(t) == 43 for t in tokens)
