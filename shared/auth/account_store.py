"""AccountStore: create, list, disable accounts and check a person's password.

Shares the auth database (and its engine) with the API keys. Hashing runs in a thread: a
slow hash must not stall the event loop for everybody else's requests.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from shared.auth import repository
from shared.auth.accounts import (
    AccountRecord,
    Person,
    Role,
    check_password,
    check_username,
    decoy_hash,
    hash_password,
    verify_password,
)
from shared.database.engine import create_engine


class AccountExists(ValueError):
    """An account of that username is already there (disabled ones too: names are not reused)."""


class AccountStore:
    def __init__(self, engine: AsyncEngine | str) -> None:
        self._owns_engine = isinstance(engine, str)
        self._engine = create_engine(engine) if isinstance(engine, str) else engine
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    async def create(self, username: str, role: Role, password: str) -> AccountRecord:
        check_username(username)
        check_password(password)
        record = AccountRecord(
            username=username,
            role=role,
            password_hash=await asyncio.to_thread(hash_password, password),
            created_at=datetime.now(UTC),
        )
        async with self._sessions.begin() as session:
            if await repository.find_account(session, username) is not None:
                raise AccountExists(f"an account {username!r} exists already")
            await repository.insert_account(session, record)
        return record

    async def find(self, username: str) -> AccountRecord | None:
        async with self._sessions() as session:
            return await repository.find_account(session, username)

    async def list_accounts(self) -> list[AccountRecord]:
        async with self._sessions() as session:
            return await repository.all_accounts(session)

    async def disable(self, username: str) -> bool:
        """True when an enabled account was disabled now: its sessions end at their next use."""
        async with self._sessions.begin() as session:
            return await repository.mark_disabled(session, username, datetime.now(UTC))

    async def authenticate(self, username: str, password: str) -> Person | None:
        """The person, when the account exists, is enabled and the password is right."""
        record = await self.find(username) if len(username) <= 64 else None
        stored = record.password_hash if record is not None else await asyncio.to_thread(decoy_hash)
        matches = await asyncio.to_thread(verify_password, password, stored)
        if record is None or not record.enabled or not matches:
            return None
        return Person(username=record.username, role=record.role)

    async def current(self, username: str) -> Person | None:
        """The person behind a session now: None once the account is disabled or gone."""
        record = await self.find(username)
        if record is None or not record.enabled:
            return None
        return Person(username=record.username, role=record.role)

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()
