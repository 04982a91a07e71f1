"""The metrics HTTP API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.metrics import repository


class PurposeSummary(BaseModel):
    purpose: str
    volume: int
    value: int = Field(description="Value demands.")
    failure: int = Field(description="Failure demands.")
    unknown: int = Field(description="Demands whose type could not be told.")
    failure_share: float | None = Field(description="failure / (value + failure).")


def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]

router = APIRouter(prefix="/v1", tags=["purposes"])


@router.get("/purposes", response_model=list[PurposeSummary], summary="Counts per purpose")
async def list_purposes(sessions: Sessions) -> list[PurposeSummary]:
    """Value and failure demand per customer purpose, largest volume first."""
    async with sessions() as session:
        counts = await repository.purpose_counts(session)
    return [
        PurposeSummary(
            purpose=c.purpose,
            volume=c.volume,
            value=c.value,
            failure=c.failure,
            unknown=c.unknown,
            failure_share=c.failure_share,
        )
        for c in counts
    ]
