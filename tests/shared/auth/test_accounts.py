"""People's accounts: passwords kept as a slow salted hash, roles, disabling, the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.main import app
from shared.auth.account_store import AccountExists, AccountStore
from shared.auth.accounts import Role, hash_password, verify_password
from shared.auth.migrate import upgrade


def test_a_password_is_stored_salted_and_slow_never_as_itself() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second  # salted
    assert first.startswith("scrypt$32768$8$1$")
    assert "correct horse" not in first
    assert verify_password("correct horse battery", first)
    assert not verify_password("correct horse batterY", first)
    assert not verify_password("anything", "sha256$not-a-scrypt-hash")


def test_roles_include_the_ones_below() -> None:
    assert Role.ADMIN.allows(Role.REVIEWER)
    assert Role.REVIEWER.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.REVIEWER)


@pytest.fixture
async def store(tmp_path: Path) -> AccountStore:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    await asyncio.to_thread(upgrade, url)
    return AccountStore(url)


async def test_sign_in_needs_the_right_password_of_an_enabled_account(
    store: AccountStore,
) -> None:
    await store.create("amira", Role.REVIEWER, "a long passphrase")
    person = await store.authenticate("amira", "a long passphrase")
    assert person is not None
    assert person.role is Role.REVIEWER
    assert await store.authenticate("amira", "a long passphrasE") is None
    assert await store.authenticate("nobody", "a long passphrase") is None
    assert await store.disable("amira") is True
    assert await store.authenticate("amira", "a long passphrase") is None
    assert await store.current("amira") is None
    await store.close()


async def test_usernames_are_unique_and_passwords_long_enough(store: AccountStore) -> None:
    await store.create("sam", Role.VIEWER, "twelve chars!")
    with pytest.raises(AccountExists):
        await store.create("sam", Role.ADMIN, "another passphrase")
    with pytest.raises(ValueError, match="12"):
        await store.create("short", Role.VIEWER, "too short")
    with pytest.raises(ValueError, match="username"):
        await store.create("Has Space", Role.VIEWER, "a long passphrase")
    await store.close()


def test_the_cli_creates_lists_and_disables_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    upgrade(url)
    monkeypatch.setenv("DEMANDSCOPE_AUTH_DATABASE_URL", url)
    runner = CliRunner()

    created = runner.invoke(
        app,
        ["accounts", "create", "--username", "jo", "--role", "reviewer", "--password-stdin"],
        input="a long passphrase\n",
    )
    listed = runner.invoke(app, ["accounts", "list"])
    disabled = runner.invoke(app, ["accounts", "disable", "jo"])
    again = runner.invoke(app, ["accounts", "disable", "jo"])

    assert created.exit_code == 0, created.output
    assert "jo" in listed.output
    assert "reviewer" in listed.output
    assert disabled.exit_code == 0
    assert again.exit_code == 1
    assert "a long passphrase" not in created.output + listed.output
