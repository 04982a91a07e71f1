"""The common shape of every event: versioned, immutable, strict about unknown fields."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, StringConstraints

# Identifiers travel in URLs, headers and logs, so keep them to a safe, bounded alphabet.
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$"),
]
# A label that ends up as a Prometheus label value or a path segment: short and plain.
Slug = Annotated[
    str,
    StringConstraints(min_length=1, max_length=120, pattern=r"^[a-z0-9][a-z0-9_ /&'-]*$"),
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Event(BaseModel):
    """Base of every event on a demandscope topic.

    ``CE_TYPE`` is the CloudEvents ``type`` attribute; it names the schema version so a
    subscriber can route on the header alone, without parsing the value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    CE_TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1

    def event_id(self) -> str:
        """The idempotency key of this event."""
        raise NotImplementedError

    def partition_key(self) -> str:
        """The Kafka record key: decides which partition, and so which instance, sees it."""
        raise NotImplementedError
