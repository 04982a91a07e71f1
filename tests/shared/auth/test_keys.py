"""API keys: their shape, their hash, verification and scopes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from shared.auth.keys import (
    ApiKeyRecord,
    Scope,
    generate_key,
    hash_secret,
    matches,
    parse_key,
    stored_digest,
    verify,
)

CREATED = datetime(2024, 3, 12, tzinfo=UTC)


def test_generated_key_has_prefix_key_id_and_a_256_bit_secret() -> None:
    plaintext, key_id = generate_key()
    prefix, rest = plaintext.split("_", 1)
    assert prefix == "ds"
    assert rest.startswith(key_id + "_")
    assert len(key_id) == 16
    assert parse_key(plaintext) == (key_id, rest[len(key_id) + 1 :])
    assert len(rest[len(key_id) + 1 :]) == 43  # 32 random bytes, URL-safe base64


def test_generated_keys_differ() -> None:
    keys = {generate_key("acme")[0] for _ in range(50)}
    assert len(keys) == 50
    assert all(key.startswith("acme_") for key in keys)


@pytest.mark.parametrize("prefix", ["", "DS", "d_s", "1ds"])
def test_rejects_prefixes_that_would_break_parsing(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        generate_key(prefix)


def test_parses_a_secret_that_contains_underscores() -> None:
    secret = "a_b-" + "c" * 39
    assert parse_key(f"ds_0123456789abcdef_{secret}") == ("0123456789abcdef", secret)


@pytest.mark.parametrize(
    "plaintext",
    [
        "",
        "ds",
        "ds_0123456789abcdef",
        "ds_0123456789abcdef_short",
        "ds_0123456789ABCDEF_" + "c" * 43,
        "ds_0123456789abcdef_" + "c" * 44,
        "Bearer ds_0123456789abcdef_" + "c" * 43,
    ],
)
def test_malformed_keys_do_not_parse(plaintext: str) -> None:
    assert parse_key(plaintext) is None


def test_hash_is_sha256_of_the_whole_key_with_its_scheme() -> None:
    key = "ds_0123456789abcdef_" + "c" * 43
    assert hash_secret(key) == "sha256$" + hashlib.sha256(key.encode()).hexdigest()


def test_verify_accepts_the_key_and_rejects_anything_else() -> None:
    plaintext, _ = generate_key()
    stored = hash_secret(plaintext)
    other, _ = generate_key()
    assert verify(plaintext, stored)
    assert not verify(other, stored)
    assert not verify(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"), stored)
    assert not verify(plaintext, stored.upper())
    assert not verify("not a key", hash_secret("not a key"))


def test_matching_a_stored_digest_is_verify() -> None:
    # What the store compares each request's key with: the digest its stored hash names.
    keys = [generate_key()[0] for _ in range(20)]
    near = [key[:-1] + ("A" if key[-1] != "A" else "B") for key in keys]
    for stored_key in keys:
        stored = hash_secret(stored_key)
        digest = stored_digest(stored)
        assert digest == hashlib.sha256(stored_key.encode()).digest()
        for presented in keys + near:
            assert matches(presented, digest) == verify(presented, stored)


@pytest.mark.parametrize(
    "stored",
    [
        "bcrypt$" + "0" * 64,  # another scheme
        "sha256$" + "AB" * 32,  # not hash_secret's lower-case hex: verify refuses it too
        "sha256$" + "ab" * 31,  # too short
        "sha256$" + "ab" * 33,
        "sha256$" + "zz" * 32,
        "sha256$",
        "",
    ],
)
def test_a_hash_no_key_verifies_against_names_no_digest(stored: str) -> None:
    assert stored_digest(stored) is None


def record(scopes: set[Scope], revoked_at: datetime | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id="0123456789abcdef",
        source="genesys-eu",
        scopes=frozenset(scopes),
        hash="sha256$00",
        created_at=CREATED,
        revoked_at=revoked_at,
    )


def test_scopes_are_the_documented_strings() -> None:
    assert [scope.value for scope in Scope] == [
        "demands:write",
        "labels:write",
        "read",
        "model:write",
        "sources:all",
    ]
    assert Scope("labels:write") is Scope.LABELS_WRITE


def test_a_key_reaches_its_own_source_unless_organisation_wide() -> None:
    assert record({Scope.READ}).reach == "genesys-eu"
    assert record({Scope.READ, Scope.SOURCES_ALL}).reach is None
    # A revoked key allows nothing, sources:all included: its reach is its own source.
    assert record({Scope.READ, Scope.SOURCES_ALL}, revoked_at=CREATED).reach == "genesys-eu"


def test_a_key_allows_only_its_scopes() -> None:
    key = record({Scope.DEMANDS_WRITE})
    assert key.allows(Scope.DEMANDS_WRITE)
    assert not key.allows(Scope.LABELS_WRITE)
    assert not key.allows(Scope.READ)


def test_a_revoked_key_allows_nothing() -> None:
    key = record(set(Scope), revoked_at=CREATED)
    assert not any(key.allows(scope) for scope in Scope)
