"""A change to the system recorded by a person: the purpose's capability baselines start again."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from shared.events.base import Event, Identifier, ShortText, Slug

MAX_NOTE_LENGTH = 2_000
ChangeNote = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NOTE_LENGTH, strip_whitespace=False)
]


class SystemChanged(Event):
    """A person's word that the system serving a purpose changed at ``changed_at``.

    An event, not a row of the metrics database, so that the log alone holds every figure's
    inputs: ``demandscope metrics rebuild`` replays it like demands and labels, and the
    rebuilt capability limits start again where the live ones do. It rebases every chart of
    the purpose (the limits of a measure are never moved on their own: a change to the
    system changes the system, and so all of its measures).

    The note is a person's words: the writer masks personal data in it before publishing
    (as intake masks a label's note), so the topic never holds what the database may not.
    """

    CE_TYPE: ClassVar[str] = "org.demandscope.system.changed.v1"

    schema_version: Literal[1] = 1
    id: Identifier = Field(description="This change's own event id: the idempotency key.")
    purpose: Slug = Field(description="The purpose whose system changed.")
    changed_at: AwareDatetime = Field(
        description="When the system changed: the baselines start at the first value on or "
        "after it."
    )
    note: ChangeNote = Field(description="What changed and why, personal data masked.")
    recorded_at: AwareDatetime = Field(description="When it was recorded.")
    recorded_by: ShortText | None = Field(
        default=None,
        description="Who recorded it: a person's username (pages) or key:<source> (API).",
    )

    def event_id(self) -> str:
        return self.id

    def partition_key(self) -> str:
        # Keyed by purpose: the changes of one purpose are read in the order recorded.
        return self.purpose
