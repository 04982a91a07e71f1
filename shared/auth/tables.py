"""The api_keys and accounts tables. Queries live in shared/auth/repository.py, nowhere else."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.database.naming import named_metadata


class AuthBase(DeclarativeBase):
    metadata = named_metadata()


class ApiKeyRow(AuthBase):
    """One key. Only the hash of the plaintext is kept; the key id is public."""

    __tablename__ = "auth_api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), index=True)
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated Scope values
    hash: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AccountRow(AuthBase):
    """A person who signs in to the pages. Only a slow (scrypt) hash of the password is kept."""

    __tablename__ = "auth_accounts"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer, reviewer or admin
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
